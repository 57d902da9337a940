from __future__ import annotations

from flows.common import drift, md_table, task_runner
from flows.demo import proposal_sources
from flows.loop import _mean_confidence, _sum_stats, all_flows
from labelloop.settings import Settings


def test_md_table_from_mapping_and_rows():
    assert (
        md_table({"a": 1, "b": 0.123456}, ("k", "v"))
        == "| k | v |\n|---|---|\n| a | 1 |\n| b | 0.1235 |"
    )
    rows = md_table([{"x": 1, "y": None}, {"x": 2, "y": {"p": 0.5}}])
    assert rows.splitlines() == ["| x | y |", "|---|---|", "| 1 | - |", "| 2 | p: 0.5 |"]
    assert md_table([]) == "_none_"


def test_drift_against_previous_run():
    assert drift({"a": 0.5}, None) == {"a": "0.500 (first run)"}
    assert drift({"a": 0.5, "b": 0.2}, {"a": 0.7, "c": 0.1}) == {
        "a": "0.500 (-0.200)",
        "b": "0.200 (+0.200)",
        "c": "0.000 (-0.100)",
    }


def test_batch_stats_roll_up():
    batches = [
        {"n": 3, "llm_called": 1, "input_tokens": 10, "flags": {"possible_sensitive": 1},
         "confidence_sum": {"sensitive:health": 1.5}},
        {"n": 1, "llm_called": 1, "input_tokens": 5, "flags": {"possible_sensitive": 2},
         "confidence_sum": {"sensitive:health": 0.5, "interest:653": 1.0}},
    ]  # fmt: skip
    total = _sum_stats(batches)
    assert (total["n"], total["llm_called"], total["input_tokens"]) == (4, 2, 15)
    assert total["llm_call_rate"] == 0.5
    assert total["flags"] == {"possible_sensitive": 3}
    assert _mean_confidence(batches, 4) == {"interest:653": 0.25, "sensitive:health": 0.5}
    assert _sum_stats([])["llm_call_rate"] == 0.0


def test_batch_stats_roll_up_sources_and_seconds_per_answer():
    batches = [
        {"n": 64, "llm_called": 10, "llm_calls": 11, "cache_hits": 1, "llm_latency_s": 60.0,
         "by_source": {"llm": 10, "knn_over_budget": 50, "knn": 4},
         "cascade": {"far_from_gold": 60, "skipped_confident": 4}},
        {"n": 18, "llm_called": 3, "llm_calls": 3, "cache_hits": 0, "llm_latency_s": 20.0,
         "by_source": {"llm": 3, "knn_over_budget": 15}, "cascade": {"far_from_gold": 18}},
    ]  # fmt: skip
    total = _sum_stats(batches)
    assert total["by_source"] == {"llm": 13, "knn_over_budget": 65, "knn": 4}
    assert total["cascade"] == {"far_from_gold": 78, "skipped_confident": 4}
    assert total["llm_s_per_call"] == round(80.0 / 13, 3)  # cache hits are not answers
    assert _sum_stats([])["llm_s_per_call"] == 0.0


def test_task_runner_by_setting(isolated_env):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner(Settings()), ThreadPoolTaskRunner)
    assert isinstance(task_runner(Settings(task_runner="dask", dask_workers=2)), DaskTaskRunner)
    assert isinstance(
        task_runner(Settings(task_runner="dask", dask_address="tcp://x:8786")), DaskTaskRunner
    )


def test_every_flow_is_registered_and_served(isolated_env):
    from flows.serve import deployments

    assert set(all_flows()) == {
        "sample_and_propose",
        "collect_reviews",
        "retrain",
        "promote",
        "score_batch",
    }
    deps = deployments(Settings(schedule_retrain="5 1 * * *"))
    assert len(deps) == 5
    crons = {d.flow_name: [s.schedule.cron for s in d.schedules] for d in deps}
    assert crons["retrain"] == ["5 1 * * *"]
    assert crons["promote"] == []
    # a run never overlaps the previous one of the same deployment
    for d in deps:
        assert d.concurrency_limit == 1, d.flow_name
        assert d.concurrency_options.collision_strategy == "CANCEL_NEW", d.flow_name


def test_label_error_check_never_fails_the_retrain_and_is_audited(isolated_env) -> None:
    from labelloop.runtime import Runtime
    from labelloop.stages import queue_label_errors

    s = Settings(_env_file=None, label_studio_url="http://127.0.0.1:9")  # type: ignore[call-arg]
    assert queue_label_errors(Runtime(s), {}, ["653"], run_id="r0") == {
        "issues": 0, "conversations": 0, "queued": 0,
    }  # fmt: skip
    out = queue_label_errors(Runtime(s), {"c1": {"653": 0.99}}, ["653"], run_id="r1")
    assert "error" in out and "Error" in out["error"]  # Label Studio is not running there
    store = Runtime(s).store
    assert store.verify_audit() >= 1
    with store.session() as sess:
        from sqlalchemy import select

        from labelloop.store.models import AuditRow

        rows = list(sess.scalars(select(AuditRow).where(AuditRow.kind == "label_errors")))
    assert [r.subject for r in rows] == ["r1"] and "error" in rows[0].payload


def _demo_out(promote: dict) -> dict:
    return {
        "synth": {"records": 1},
        "sample_and_propose": {
            "ingest": {"by_surface": {"assistant_chat": 1}, "by_reason": {"eligible": 1}},
            "propose": {"n": 1, "llm_call_rate": 1.0, "input_tokens": 1, "output_tokens": 1,
                        "llm_s_per_call": 2.0},
            "push": {"imported": 1, "review_project": 7},
        },
        "annotate_sim": {"annotations": 2},
        "collect_reviews": {"gold_created": 1},
        "annotate_sim_adjudication": {"annotations": 0},
        "collect_reviews_2": {"gold_created": 0},
        "retrain": {"version": "1", "train": {"run_url": "http://mlflow/run"},
                    "gate": {"passed": False, "summary": "failed: recall[health]", "failed_checks": [
                        {"check": "recall[health]", "value": 0.5, "threshold": 0.98,
                         "detail": "4 items"}]}},
        "promote": promote,
        "score_batch": {"by_reason": {"model_unavailable": 1}},
        "timings": {},
    }  # fmt: skip


def test_demo_summary_says_why_a_model_was_not_promoted_and_how_to_log_in(capsys) -> None:
    from flows.demo import _promote
    from labelloop.cli import _demo_summary
    from labelloop.settings import DEV_LS_PASSWORD

    out = _demo_out(_promote(_demo_out({})["retrain"]))
    assert out["promote"]["approved"] is None and "failed its gate" in out["promote"]["reason"]
    _demo_summary(Settings(_env_file=None), out, 1.0)  # type: ignore[call-arg]
    text = capsys.readouterr().out
    assert "NOT promoted" in text and "recall[health]: 0.500 (needs 0.980)" in text
    assert "approve 1 --force" in text  # the way to promote it anyway
    # the login: user and the documented dev password, the review project's URL
    assert "log in as admin@labelloop.local / " + DEV_LS_PASSWORD in text
    assert "/projects/7/data" in text
    assert "Next steps" in text and "demo --human" in text
    out["promote"] = {"approved": "1", "version": "1"}
    _demo_summary(Settings(_env_file=None), out, 1.0)  # type: ignore[call-arg]
    text = capsys.readouterr().out
    assert "NOT promoted" not in text and "production -> version 1" in text
    # a real password is never printed, only where it is set
    s = Settings(_env_file=None, label_studio_password="a-real-secret-0b9e")  # type: ignore[call-arg]
    _demo_summary(s, out, 1.0)
    text = capsys.readouterr().out
    assert "a-real-secret" not in text and "LABELLOOP_LABEL_STUDIO_PASSWORD" in text


def test_wait_for_human_labels_until_enough_or_timeout() -> None:
    from flows.demo import wait_for_human_labels

    counts = iter([3, 3, 5, 8, 14])  # 3 existed before the pause
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    said: list[str] = []
    got = wait_for_human_labels(lambda: next(counts), want=10, timeout_s=600, poll_s=10,
                                say=said.append, clock=lambda: now[0], sleep=sleep)  # fmt: skip
    assert got == {"labels": 11, "timed_out": False, "waited_s": 30.0}
    assert said[-1] == "   11 of 10 labels received"
    now[0] = 0.0
    got = wait_for_human_labels(lambda: 2, want=5, timeout_s=25, poll_s=10,
                                say=said.append, clock=lambda: now[0], sleep=sleep)  # fmt: skip
    assert got["timed_out"] is True and got["labels"] == 0 and got["waited_s"] == 30.0


def test_step_progress_reaches_listeners_and_is_monotone() -> None:
    from flows.progress import StepProgress, listen, step_progress

    seen: list[tuple[str, int, int]] = []
    with listen(lambda *a: seen.append(a)):
        p = StepProgress("run-1", "proposals", 4, artifacts=False).start()
        assert step_progress("run-1") is p
        p.advance()
        p.advance()
        p.at_least(1)  # a flow that only sees finished batches never moves it back
        p.at_least(3)
        p.finish()
    assert [d for _, d, _ in seen] == [0, 1, 2, 3, 4]
    assert step_progress("run-1") is None and p.percent == 100.0
    p2 = StepProgress("run-2", "x", 2, artifacts=False).start()
    p2.advance()
    assert len(seen) == 5  # no listener any more


def test_reporting_to_overrides_settings_read_at_import(monkeypatch):
    """prefect has read its settings already (this module imported it): the environment is
    ignored from here on, reporting_to is not, and it turns ephemeral servers off."""
    import prefect  # noqa: F401
    from prefect.settings import get_current_settings

    from flows.demo import reporting_to

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    before = get_current_settings().api.url
    assert before != "http://127.0.0.1:1/api"  # why the tests needed this
    with reporting_to("http://127.0.0.1:2/api"):
        s = get_current_settings()
        assert s.api.url == "http://127.0.0.1:2/api" and s.server.ephemeral.enabled is False
    assert get_current_settings().api.url == before


def test_publish_outside_a_flow_run_returns_the_body_without_a_server(monkeypatch):
    from flows import common

    calls: list[dict] = []
    monkeypatch.setattr(common, "create_markdown_artifact", lambda **kw: calls.append(kw))
    assert common.publish("k", "T", {"A": "x"}) == "# T\n\n## A\n\nx"
    assert calls == []  # (it used to try, which made prefect start a temporary server)


def test_proposal_sources_in_words():
    prop = {"by_source": {"llm": 24, "knn_over_budget": 57, "knn": 1}, "llm_budget": 24}
    assert proposal_sources(prop) == (
        "24 by the LLM, 1 by kNN alone (sure), 57 by kNN alone (over the LLM budget: to review)"
        " (LLM budget 24)"
    )
    assert proposal_sources({"by_source": {"llm": 3, "other": 2}}) == "3 by the LLM, 2 other"
    assert proposal_sources({}) == "none"
