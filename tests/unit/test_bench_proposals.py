"""The proposer benchmark's metrics and its MLflow run (a SQLite tracking store in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.proposals import (
    BENCH_EXPERIMENT,
    PROPOSERS,
    log_run,
    metrics,
    percentile,
    run_metrics,
)
from labeling.policy import load_policy
from labeling.proposals import Proposal, ProposeStats
from labeling.taxonomy import load_taxonomy

POLICY = load_policy()
TAXONOMY = load_taxonomy(categories=POLICY.categories)
TRAVEL = TAXONOMY.name_to_id("Travel")
SPORTS = TAXONOMY.name_to_id("Sports")


def proposal(cid: str, sensitive: dict[str, float], interests: dict[str, float]) -> Proposal:
    return Proposal(
        conversation_id=cid, interests=interests, sensitive=sensitive, uncertainty=0.1,
        proposer_id="p", prompt_hash="ph", model_id="m", embedding_model_id=None, llm_called=True,
        source="llm",
    )  # fmt: skip


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.95) == pytest.approx(3.85)


def test_precision_recall_f1_per_label_kind() -> None:
    health = POLICY.categories[0]
    gold = {
        "a": SimpleNamespace(sensitive=[health], interests=["Travel"]),
        "b": SimpleNamespace(sensitive=[], interests=["Sports"]),
        "c": SimpleNamespace(sensitive=[health], interests=None),
    }
    props = [
        proposal("a", {health: 0.9}, {TRAVEL: 0.8, SPORTS: 0.6}),  # interest tp + fp
        proposal("b", {health: 0.7}, {}),  # sensitive fp, interest fn
        proposal("c", {}, {}),  # sensitive fn
    ]
    m = metrics(props, gold, TAXONOMY, POLICY.categories, ProposeStats(n=3, wall_s=1.5))
    assert m["per_category"][health] == {"support": 2, "recall": 0.5, "precision": 0.5, "f1": 0.5}
    assert (m["sensitive_precision"], m["sensitive_recall"], m["sensitive_f1"]) == (0.5, 0.5, 0.5)
    # interests: tp 1 (Travel), fp 1 (Sports on a), fn 1 (Sports on b); c has no gold interests
    assert m["interest_precision"] == 0.5 and m["interest_recall"] == 0.5
    assert m["interest_micro_f1"] == 0.5


def _results() -> dict[str, Any]:
    health = POLICY.categories[0]
    base = {"n": 10, "sensitive_recall": 0.9, "interest_micro_f1": 0.6, "invalid": 0,
            "per_category": {health: {"support": 4, "recall": 0.75, "precision": None, "f1": 0.5}},
            "cascade": {"knn_sure": 3}, "conversations_per_s": 2.0, "llm_calls_per_s": 0.5}  # fmt: skip
    results: dict[str, Any] = {name: dict(base) for name in PROPOSERS}
    results["combined"].update(latency_p50_s=0.4, latency_p95_s=1.2, llm_latency_p95_s=None)
    results["setup"] = {"prompt_hash": "abc123def456", "model_id": "llamacpp:q.gguf@0123",
                        "provider": "llamacpp", "knn_k": 10, "fewshot_k": 4, "n_eval": 10,
                        "seconds": 12.5}  # fmt: skip
    return results


def test_benchmark_is_logged_as_an_mlflow_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = _results()
    report = tmp_path / "proposals.json"
    report.write_text(json.dumps(results))
    url = log_run(results, report, tracking_uri=uri)
    log_run(results, report, tracking_uri=uri)  # a second run joins the same experiment

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(BENCH_EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    run = next(r for r in runs if r.info.run_id in url)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow-artifacts").as_uri())
    p = run.data.params
    assert (p["prompt_hash"], p["model_id"], p["provider"], p["knn_k"], p["fewshot_k"]) == (
        "abc123def456", "llamacpp:q.gguf@0123", "llamacpp", "10", "4",
    )  # fmt: skip
    m = run.data.metrics
    assert m["combined.latency_p95_s"] == 1.2 and m["combined.llm_calls_per_s"] == 0.5
    assert m["llm.sensitive_recall"] == 0.9
    assert m[f"knn.{POLICY.categories[0]}.recall"] == 0.75
    assert "combined.llm_latency_p95_s" not in m  # None: not measured, not logged as 0
    assert f"knn.{POLICY.categories[0]}.precision" not in m
    assert run.data.tags["prompt_hash"] == "abc123def456"
    (art,) = client.list_artifacts(run.info.run_id)
    assert art.path == "proposals.json"
    assert set(run_metrics(results)) == set(m)
