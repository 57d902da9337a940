"""The stage functions of ``labelloop.stages`` and their callers: every command and every Prefect
task of a stage calls the one shared function (replaced here by a recorder), so the CLI and the
flows cannot drift apart again."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from labeling.collection import PullReport
from labeling.sampling import SampleReport
from labeling.studio import PushReport
from labelloop import stages
from labelloop.runtime import Runtime
from labelloop.settings import Settings
from tests.conftest import make_record

runner = CliRunner()


class Calls:
    """Records the calls of one replaced stage function and answers with ``result``."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result(*args, **kwargs) if callable(self.result) else self.result


def _replace(monkeypatch: pytest.MonkeyPatch, name: str, result: Any) -> Calls:
    calls = Calls(result)
    monkeypatch.setattr(stages, name, calls)
    return calls


def _cli(*args: str) -> Any:
    from labelloop.cli import app

    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res


# ----------------------------------------------------------------------------- the CLI
def test_sample_calls_ingest(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(make_record()) + "\n", encoding="utf-8")
    calls = _replace(
        monkeypatch, "ingest", stages.IngestReport("r-1", 1, SampleReport(inserted=5, eligible=4))
    )
    res = _cli("sample", "-i", str(src), "--cap-per-surface", "3", "--seed", "9", "--json")
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime) and list(args[1]) == [src]
    assert kwargs == {"cap_per_surface": 3, "seed": 9}
    assert json.loads(res.stdout)["inserted"] == 5


def test_review_push_calls_push_reviews(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = PushReport("review-push-1", imported=7)
    calls = _replace(monkeypatch, "push_reviews", stages.PushReviewsReport(report.run_id, report))
    res = _cli("review", "push", "--budget", "5", "--batch-size", "3", "--json")
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime)
    assert (kwargs["budget"], kwargs["batch_size"]) == (5, 3)
    assert json.loads(res.stdout)["imported"] == 7


def test_review_pull_calls_pull_reviews(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = PullReport("review-pull-1", gold_created=4)
    calls = _replace(monkeypatch, "pull_reviews", stages.PullReviewsReport(report.run_id, report))
    res = _cli("review", "pull", "--reindex", "--json")
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime) and kwargs["reindex"] is True
    assert json.loads(res.stdout)["gold_created"] == 4


def test_filter_calls_score_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from labelloop import runtime
    from targeting.batch import FilterReport

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(make_record()) + "\n", encoding="utf-8")
    engine = SimpleNamespace(holder=SimpleNamespace(current=object()), audit=None)
    monkeypatch.setattr(runtime, "engine_from_settings", lambda *a, **k: engine)
    done = stages.ScoreReport(FilterReport(src, out, "f-1"), tmp_path / "q.jsonl")
    calls = _replace(monkeypatch, "score_file", done)
    res = _cli("filter", "-i", str(src), "-o", str(out), "--chunk-size", "8", "--json")
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime) and args[1:] == (src, out)
    assert kwargs["engine"] is engine and kwargs["chunk_size"] == 8
    assert json.loads(res.stdout)["run_id"] == "f-1"


def test_propose_ingests_then_calls_propose_pending(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from labeling.proposals import ProposeStats
    from labeling.sampling import GatedRecords
    from labelloop import runtime

    src, out = tmp_path / "in.jsonl", tmp_path / "proposals.jsonl"
    src.write_text(json.dumps(make_record()) + "\n", encoding="utf-8")
    row = {"conversation_id": "c-1", "eligible": True, "redacted_turns": [{"role": "user"}]}
    ingested = _replace(
        monkeypatch, "ingest_records", GatedRecords([row], 1, 0, None, {"eligible": 1})
    )
    proposer = SimpleNamespace(model_id="m")
    monkeypatch.setattr(runtime, "build_proposer", lambda *a, **k: proposer)

    def propose(*args: Any, **kwargs: Any) -> stages.ProposeReport:
        return stages.ProposeReport(kwargs["run_id"], kwargs["stats"], 0, 0, {}, ())

    proposed = _replace(monkeypatch, "propose_pending", propose)
    _cli("propose", "-i", str(src), "-o", str(out), "--limit", "2", "--no-llm")
    [(args, kwargs)] = ingested.calls
    assert list(args[1]) == [src] and kwargs["limit"] == 2
    [(args, kwargs)] = proposed.calls
    assert args[1] is proposer and list(args[2]) == ["c-1"]
    assert kwargs["turns"] == {"c-1": [{"role": "user"}]} and kwargs["write_each"] is True
    assert isinstance(kwargs["stats"], ProposeStats)


def _outcome(version: str = "4") -> Any:
    """What ``experiments.registry.train_and_register`` returns, as far as the callers read it."""
    return SimpleNamespace(
        run_id="run-4", run_url="http://mlflow/run-4", model_uri=f"models:/filter/{version}",
        version=version, snapshot_hash="ab" * 32,
        metrics={"leak_rate": 0.01, "false_block_rate": 0.02, "interest_micro_f1": 0.9, "n_eval": 50},
    )  # fmt: skip


def _gate_result(version: str, passed: bool) -> Any:
    from experiments.gate import Check, GateResult

    checks = [Check("recall[health]", True, 1.0, 1.0, 0.98, "4 items"),
              Check("leak_rate <= champion", passed, 0.01, 0.02, 0.02, "")]  # fmt: skip
    return GateResult(version, "3", passed, checks, {"leak_rate": 0.01}, {"leak_rate": 0.02}, 50,
                      gate_run_id="gate-run-1")  # fmt: skip


def test_train_calls_train(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = tmp_path / "gold.jsonl"
    src.write_text(json.dumps(make_record()) + "\n", encoding="utf-8")
    trained = _replace(monkeypatch, "train", stages.TrainReport(_outcome()))
    gated = _replace(monkeypatch, "gate", lambda *a, **k: pytest.fail("gate without --evaluate"))
    res = _cli("train", "--from-records", str(src), "--no-embeddings")
    [(args, kwargs)] = trained.calls
    assert isinstance(args[0], Runtime) and kwargs["from_records"] == [src]
    assert kwargs["use_embeddings"] is False and callable(kwargs["progress"])
    assert gated.calls == []
    assert "models:/filter/4 (version 4)" in res.stdout and "leak_rate=0.0100" in res.stdout


def test_train_evaluate_calls_train_then_gate(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = _replace(monkeypatch, "train", stages.TrainReport(_outcome("5")))
    promoted = stages.PromoteReport("5", "3", changed=True)
    gated = _replace(monkeypatch, "gate", stages.GateReport(_gate_result("5", True), promoted))
    res = _cli("train", "--evaluate")
    assert len(trained.calls) == 1 and trained.calls[0][1]["from_records"] is None
    [(args, kwargs)] = gated.calls
    assert isinstance(args[0], Runtime) and args[1] == "5" and kwargs == {}
    assert "PASSED" in res.stdout and "auto-approved: version 5 is now @production" in res.stdout
    assert "| recall[health] |" in res.stdout  # the table is printed as it is, not as markup


@pytest.mark.parametrize("passed", [True, False])
def test_evaluate_calls_gate(
    passed: bool, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelloop.cli import app

    calls = _replace(monkeypatch, "gate", stages.GateReport(_gate_result("7", passed)))
    res = runner.invoke(app, ["evaluate", "7", "--json"])
    assert res.exit_code == (0 if passed else 1), res.output
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime) and args[1] == "7"
    assert kwargs == {}  # auto-approval follows the gate_auto_approve setting
    assert json.loads(res.stdout) == {
        "version": "7", "champion": "3", "passed": passed,
        "summary": "passed" if passed else "failed: leak_rate <= champion",
        "gate_run_id": "gate-run-1", "approved": False,
    }  # fmt: skip


@pytest.mark.parametrize("forced", [False, True])
def test_approve_calls_promote(
    forced: bool, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _replace(monkeypatch, "promote", stages.PromoteReport("7", "6", True, forced=forced))
    args_in = ["approve", "7"] + (["--force", "--reason", "drill"] if forced else [])
    res = _cli(*args_in)
    [(args, kwargs)] = calls.calls
    assert isinstance(args[0], Runtime) and args[1] == "7"
    expected = {"force": True, "reason": "drill"} if forced else {"force": False, "reason": None}
    assert kwargs == expected
    assert "@production -> version 7 (previous: 6)" in res.stdout
    assert ("[forced]" in res.stdout) is forced


def test_approve_refused_by_the_gate_exits_1(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments.gate import GateError
    from labelloop.cli import app

    def refuse(*_a: Any, **_k: Any) -> stages.PromoteReport:
        raise GateError("version 7 has gate status 'failed'")

    calls = _replace(monkeypatch, "promote", refuse)
    res = runner.invoke(app, ["approve", "7"])
    assert res.exit_code == 1 and len(calls.calls) == 1
    assert "refused" in res.output and "gate status" in res.output


# ----------------------------------------------------------------------------- the flows
def test_flow_tasks_call_the_stages(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import loop
    from labeling.proposals import ProposeStats

    settings = Settings()
    ingest = _replace(
        monkeypatch, "ingest", stages.IngestReport("sample-1", 1, SampleReport(inserted=2))
    )
    assert loop.ingest_task.fn(settings, ["a.jsonl"], "sample-1")["inserted"] == 2
    assert ingest.calls[0][0][1] == [Path("a.jsonl")]
    assert ingest.calls[0][1]["run_id"] == "sample-1"
    assert loop.ingest_task.fn(settings, None, "sample-2")["inserted"] == 2
    assert ingest.calls[1][0][1] is None  # the source folder's new files

    proposer = SimpleNamespace(prompt=SimpleNamespace(sha256="p"), model_id="m")
    monkeypatch.setattr(loop, "_proposer", lambda *_a: proposer)
    pending = _replace(monkeypatch, "pending_proposals", stages.PendingProposals(("c",), "p", "m"))
    assert loop.pending_task.fn(settings, 3)["ids"] == ["c"]
    assert pending.calls[0][0][1:] == (proposer, 3)
    proposed = _replace(
        monkeypatch, "propose_pending", stages.ProposeReport("s", ProposeStats(n=1), 1, 0, {}, ())
    )
    assert loop.propose_batch_task.fn(settings, ["c"], "s", False)["inserted"] == 1
    assert proposed.calls[0][0][1:] == (proposer, ["c"])

    push = _replace(
        monkeypatch, "push_reviews", stages.PushReviewsReport("s", PushReport("s", imported=3))
    )
    assert loop.push_task.fn(settings, "s")["imported"] == 3
    assert push.calls[0][1] == {"run_id": "s"}
    pull = _replace(
        monkeypatch, "pull_reviews", stages.PullReviewsReport("c", PullReport("c", gold_created=2))
    )
    assert loop.pull_task.fn(settings, "c")["gold_created"] == 2
    assert pull.calls[0][1] == {"run_id": "c"}


def test_flow_model_tasks_call_the_stages(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import loop

    settings = Settings()
    trained = _replace(
        monkeypatch, "train", stages.TrainReport(_outcome("8"), {"issues": 0, "queued": 0})
    )
    out = loop.train_task.fn(settings)
    [(args, kwargs)] = trained.calls
    assert isinstance(args[0], Runtime) and kwargs["label_errors"] is True
    assert callable(kwargs["progress"])  # the training progress artifacts
    assert out["version"] == "8" and out["label_errors"] == {"issues": 0, "queued": 0}
    assert out["metrics"]["n_eval"] == 50

    gated = _replace(monkeypatch, "gate", stages.GateReport(_gate_result("8", False)))
    verdict = loop.gate_task.fn(settings, "8")
    [(args, kwargs)] = gated.calls
    assert args[1] == "8" and kwargs == {"auto_approve": False}  # promotion runs on the event
    assert verdict["passed"] is False and verdict["approved"] is False
    assert verdict["failed_checks"] == [
        {"check": "leak_rate <= champion", "value": 0.01, "threshold": 0.02, "detail": ""}
    ]
    assert verdict["table"].startswith("gate for v8 vs champion v3: **FAILED**")

    promoted = _replace(monkeypatch, "promote", stages.PromoteReport("8", "7", changed=True))
    assert loop.approve_task.fn(settings, "8") == {
        "approved": "8", "previous": "7", "changed": True, "forced": False,
    }  # fmt: skip
    [(args, kwargs)] = promoted.calls
    assert args[1] == "8" and kwargs == {}


def test_promote_flow_approves_through_the_stage(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import loop

    promoted = _replace(monkeypatch, "promote", stages.PromoteReport("9", "8", changed=True))
    monkeypatch.setattr(loop, "approve_task", loop.approve_task.fn)  # no Prefect server needed
    published: list[tuple[str, str]] = []
    monkeypatch.setattr(
        loop, "publish", lambda key, title, _sections: published.append((key, title))
    )
    out = loop.promote.fn(version="9", approve=True, reload=False)
    assert len(promoted.calls) == 1 and promoted.calls[0][0][1] == "9"
    assert out["approved"] == "9" and published == [("promote", "promoted version 9")]
    pending = loop.promote.fn(version="10", approve=False, reload=False)
    assert pending["approved"] is None and len(promoted.calls) == 1


def test_score_file_task_calls_score_file_and_writes_signals(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows import loop
    from targeting.batch import FilterReport

    settings = Settings()
    src = tmp_path / "day.jsonl"
    decisions = [
        {"conversation_id": "a", "eligible": True, "interests": ["653"], "model_version": "3"},
        {"conversation_id": "b", "eligible": False, "interests": []},
    ]

    def score(rt: Runtime, path: Path, output: Path, **kw: Any) -> stages.ScoreReport:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("".join(json.dumps(d) + "\n" for d in decisions), encoding="utf-8")
        return stages.ScoreReport(FilterReport(path, output, kw["run_id"]), tmp_path / "q")

    calls = _replace(monkeypatch, "score_file", score)
    out = loop.score_file_task.fn(settings, str(src), "score-1")
    [(args, kwargs)] = calls.calls
    assert args[1] == src and args[2].name == "day.score-1.jsonl"
    assert kwargs["quarantine_prefix"] == "score"
    assert out["signals"] == 1 and out["run_id"] == "score-1"
    lines = Path(out["signals_path"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["conversation_id"] for x in lines] == ["a"]


# ----------------------------------------------------------------------------- ingest itself
def test_ingest_reads_the_source_folder_once(isolated_env: Path, tmp_path: Path) -> None:
    src_dir = tmp_path / "incoming"
    src_dir.mkdir()
    recs = [make_record(conversation_id=f"c-{i}") for i in range(3)]
    (src_dir / "a.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in recs) + "not json\n", encoding="utf-8"
    )
    rt = Runtime(Settings(source_dir=src_dir))
    first = stages.ingest(rt, run_id="ingest-1")
    assert (first.files, first.inserted, first.eligible) == (1, 3, 3)
    assert first.sample is not None and first.sample.quarantined == 1
    again = stages.ingest(rt, run_id="ingest-2")  # the file was marked read
    assert again.as_dict() == {
        "files": 0, "inserted": 0, "eligible": 0, "by_surface": {}, "by_reason": {},
    }  # fmt: skip
    explicit = stages.ingest(rt, [src_dir / "a.jsonl"], run_id="ingest-3")
    assert explicit.files == 1 and explicit.inserted == 0  # known conversations are not re-added
    assert explicit.sample is not None and explicit.sample.already_known == 3


def test_training_pairs_are_added_with_their_lineage_and_can_be_turned_off(
    tmp_path: Path,
) -> None:
    from experiments.contrast import ContrastPair, PairRequest
    from experiments.dataset import Example, Snapshot
    from experiments.training import TrainConfig
    from labelloop.runtime import training_pairs

    def pair(i: int, sensitive: str, clean: str, error: str = "") -> ContrastPair:
        req = PairRequest(i, "health", "sub", "a cat", "situation", "writer")
        return ContrastPair(req, sensitive, clean, "h" * 64, "fake", error)

    path = tmp_path / "pairs.jsonl"
    rows = [pair(0, "my diabetes", "my cat"), pair(1, "", "", "timeout")]
    path.write_text("\n".join(json.dumps(p.to_row()) for p in rows), encoding="utf-8")
    on = training_pairs(
        Settings(_env_file=None, train_contrast_pairs=True, train_contrast_pairs_path=path)
    )
    assert (
        on is not None and on.pairs == tuple(rows) and on.source.startswith("pairs.jsonl sha256:")
    )
    assert training_pairs(Settings(_env_file=None, train_contrast_pairs=False)) is None
    shipped = training_pairs(Settings(_env_file=None))  # on by default: the shipped file
    assert shipped is not None and len(shipped.pairs) >= 200
    assert shipped.source.startswith("contrast_pairs.jsonl sha256:")

    gold = (
        Example("c1", ("user: hello",), (), None, 1.0, "gold"),
        Example("s1", ("user: my chemo",), ("health",), None, 1.0, "gold"),
    )
    snap = Snapshot(gold, (), ("health",), {"source": "records"})
    out = stages.with_training_pairs(snap, on, TrainConfig())
    assert len(out.train) == 4 and out.train[:2] == gold  # the pair with an error is left out
    assert out.lineage == {
        "source": "records",
        "contrast_pairs": f"1 of 2 from {on.source}",
        "contrast_clean_weight": "1.000",
    }
    assert stages.with_training_pairs(snap, None, TrainConfig()) is snap

    # with a cap on clean conversations, the clean sides balance against what the cap keeps
    many = gold + tuple(
        Example(f"d{k}", ("user: hi", "user: bye"), (), None, 1.0, "gold") for k in range(5)
    )
    capped = stages.with_training_pairs(
        Snapshot(many, (), ("health",)), on, TrainConfig(max_clean_conversations=2)
    )
    # the two kept clean conversations have 1 + 2 or 2 + 2 segments; the sensitive weight is 1
    assert capped.lineage["contrast_clean_weight"] in ("3.000", "4.000")
    assert (
        stages.with_training_pairs(Snapshot(many, (), ("health",)), on, TrainConfig()).lineage[
            "contrast_clean_weight"
        ]
        == "11.000"
    )
