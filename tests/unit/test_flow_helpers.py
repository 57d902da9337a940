from __future__ import annotations

from flows.common import drift, md_table, task_runner
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


def test_label_error_check_never_fails_the_retrain_and_is_audited(isolated_env) -> None:
    from flows.loop import queue_label_errors_from
    from labelloop.runtime import Runtime

    s = Settings(_env_file=None, label_studio_url="http://127.0.0.1:9")  # type: ignore[call-arg]
    assert queue_label_errors_from(s, {}, ["653"], run_id="r0") == {
        "issues": 0, "conversations": 0, "queued": 0,
    }  # fmt: skip
    out = queue_label_errors_from(s, {"c1": {"653": 0.99}}, ["653"], run_id="r1")
    assert "error" in out and "Error" in out["error"]  # Label Studio is not running there
    store = Runtime(s).store
    assert store.verify_audit() >= 1
    with store.session() as sess:
        from sqlalchemy import select

        from labelloop.store.models import AuditRow

        rows = list(sess.scalars(select(AuditRow).where(AuditRow.kind == "label_errors")))
    assert [r.subject for r in rows] == ["r1"] and "error" in rows[0].payload


def test_demo_summary_says_when_the_demo_forced_a_promotion(capsys) -> None:
    from labelloop.cli import _demo_summary

    out = {
        "synth": {"records": 1},
        "sample_and_propose": {
            "ingest": {"by_surface": {"assistant_chat": 1}, "by_reason": {"eligible": 1}},
            "propose": {"n": 1, "llm_call_rate": 1.0, "input_tokens": 1, "output_tokens": 1},
            "push": {"imported": 1},
        },
        "annotate_sim": {"annotations": 2},
        "collect_reviews": {"gold_created": 1},
        "annotate_sim_adjudication": {"annotations": 0},
        "collect_reviews_2": {"gold_created": 0},
        "retrain": {"version": "1", "gate": {"summary": "failed: recall"},
                    "train": {"run_url": "http://mlflow/run"}},
        "promote": {"forced": True},
        "score_batch": {"by_reason": {"eligible": 1}},
        "timings": {},
    }  # fmt: skip
    _demo_summary(Settings(_env_file=None), out, 1.0)  # type: ignore[call-arg]
    assert "FORCED" in capsys.readouterr().out
    out["promote"] = {"approved": True}
    _demo_summary(Settings(_env_file=None), out, 1.0)  # type: ignore[call-arg]
    assert "FORCED" not in capsys.readouterr().out


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
