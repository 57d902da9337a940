"""score_batch on a real Dask cluster (2 worker processes) through LABELLOOP_DASK_ADDRESS:
partitioned JSONL and Parquet input, one model load per worker whatever the partition count,
a decisions file and a decision log per partition, signals, and a rerun that skips them all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from targeting.audit import verify
from tests.unit.test_partitions import _records, _write_jsonl, _write_parquet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    # generous: the machine may be busy while the worker processes start
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      death_timeout=300) as lc, Client(lc, timeout=300) as client:  # fmt: skip
        client.wait_for_workers(2, timeout=300)
        yield lc, client


def test_score_batch_on_dask_loads_the_model_once_per_worker_and_reruns_skip(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    import mlflow.pyfunc

    from flows.loop import score_partitions_task
    from labeling.policy import DEFAULT_POLICY_PATH
    from labelloop.settings import Settings
    from tests.support.reference_model import KeywordFilterModel

    lc, client = cluster
    model = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model), python_model=KeywordFilterModel(),
                             artifacts={"policy": str(DEFAULT_POLICY_PATH)}, pip_requirements=["mlflow"])  # fmt: skip
    monkeypatch.setenv("LABELLOOP_DASK_ADDRESS", lc.scheduler_address)
    monkeypatch.setenv("LABELLOOP_FILTER_MODEL_URI", str(model))
    monkeypatch.setenv("LABELLOOP_MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    monkeypatch.setenv("LABELLOOP_SCORE_PARTITION_BYTES", "4000")
    monkeypatch.setenv("LABELLOOP_SCORE_PARTITION_ROWS", "20")
    settings = Settings()
    a = _write_jsonl(tmp_path / "a.jsonl", [*_records(200, "a"), "{broken"])
    b = _write_parquet(tmp_path / "b.parquet", _records(100, "b"), row_group_size=10)
    from targeting import partitions

    n_parts = len(partitions.plan_partitions([a, b], partition_bytes=4000, partition_rows=20))
    assert n_parts >= 8

    from flows.progress import listen

    seen: list[tuple[str, int, int]] = []
    with listen(lambda step, done, total: seen.append((step, done, total))):
        out = score_partitions_task.fn(settings, [str(a), str(b)], "run-1")
    assert out["failed"] == {} and out["scored"] == n_parts and out["workers"] == 2
    # the flow's progress (the score-progress artifact on a run) counts finished partitions
    assert seen[0] == ("score partitions", 0, n_parts)
    assert seen[-1] == ("score partitions", n_parts, n_parts)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
    assert out["records_scored"] == 301
    assert out["by_reason"] == {"eligible": 240, "sensitive_topic": 60, "invalid_record": 1}
    # one model load in each worker process, not one per partition
    loads = client.run(lambda: dict(partitions.LOADS))
    assert sorted(v.get(str(model), 0) for v in loads.values()) == [1, 1]
    manifest = json.loads((settings.signals / "partitioned" / "manifest.json").read_text())
    assert len(manifest["partitions"]) == n_parts
    assert len({e["worker"] for e in manifest["partitions"].values()}) == 2
    for e in manifest["partitions"].values():
        assert tuple(verify(Path(e["audit"]))) == (True, e["records"], None)
    signals = [
        json.loads(x)
        for f in out["files"]
        for x in Path(f["signals_path"]).read_text().splitlines()
    ]
    assert len(signals) == 240 and all(s["interests"] for s in signals)

    seen.clear()
    with listen(lambda step, done, total: seen.append((step, done, total))):
        again = score_partitions_task.fn(settings, [str(a), str(b)], "run-2")
    assert (again["scored"], again["skipped"], again["records_scored"]) == (0, n_parts, 0)
    # nothing left to score: the step opens and is complete at once
    assert seen[-1] == ("score partitions", n_parts, n_parts)
    assert {d for _, d, _ in seen} <= {0, n_parts}
