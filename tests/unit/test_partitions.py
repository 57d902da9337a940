"""Partitioned batch scoring (targeting.partitions): planning JSONL byte ranges and Parquet row
groups, scoring a partition with its own output and decision log, the manifest that makes a
rerun skip finished partitions, one model load per worker process. The cluster here is Dask in
this process (threads); tests/integration/test_cluster_scoring.py uses worker processes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from targeting.audit import verify
from targeting.partitions import (
    LOADS,
    MANIFEST,
    ScoringSpec,
    plan_partitions,
    read_manifest,
    read_partition,
    score_partition,
    score_partitions,
)
from tests.conftest import make_record


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The keyword reference model saved as a local MLflow pyfunc directory."""
    import warnings

    import mlflow.pyfunc

    from labeling.policy import DEFAULT_POLICY_PATH
    from tests.support.reference_model import KeywordFilterModel

    path = tmp_path_factory.mktemp("model") / "filter"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(str(path), python_model=KeywordFilterModel(),
                                 artifacts={"policy": str(DEFAULT_POLICY_PATH)},
                                 pip_requirements=["mlflow"])  # fmt: skip
    return path


def _spec(model_dir: Path, tmp_path: Path, **kw: Any) -> ScoringSpec:
    return ScoringSpec(model_uri=str(model_dir), tracking_uri=f"file://{tmp_path / 'mlruns'}",
                       model_cache_dir=str(tmp_path / "models"), chunk_size=7, **kw)  # fmt: skip


def _records(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    recs = []
    for i in range(n):
        text = "Which hiking boots are good after my knee surgery?" if i % 5 == 0 else (
            f"Plan a {i}-day trip to Lisbon with good food")  # fmt: skip
        recs.append(make_record(conversation_id=f"{prefix}-{i}",
                                turns=[{"role": "user", "text": text}]))  # fmt: skip
    return recs


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _write_parquet(path: Path, recs: list[dict[str, Any]], row_group_size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=row_group_size)
    return path


def test_jsonl_partitions_cover_every_line_exactly_once(tmp_path: Path) -> None:
    recs = _records(50)
    lines: list[Any] = [*recs[:20], "", "{not json", *recs[20:]]
    src = _write_jsonl(tmp_path / "day.jsonl", lines)
    parts = plan_partitions([src], partition_bytes=700)
    assert len(parts) > 5
    assert parts[0].start == 0 and parts[-1].end == src.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    data = src.read_bytes()
    assert all(data[p.end - 1 : p.end] == b"\n" for p in parts)
    seen = [item for p in parts for _, item, _ in read_partition(p)]
    assert len(seen) == 51  # 50 records + the broken line (the blank one is skipped)
    ids = [x["conversation_id"] for x in seen if isinstance(x, dict)]
    assert ids == [r["conversation_id"] for r in recs]
    assert len({p.name for p in parts}) == len(parts)


def test_parquet_partitions_are_row_groups(tmp_path: Path) -> None:
    recs = _records(25)
    src = _write_parquet(tmp_path / "day.parquet", recs, row_group_size=4)  # 7 row groups
    parts = plan_partitions([tmp_path], partition_rows=8)  # a directory: its files
    assert [(p.start, p.end) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    rows = [item for p in parts for _, item, _ in read_partition(p)]
    assert [r["conversation_id"] for r in rows] == [r["conversation_id"] for r in recs]
    assert rows[0]["turns"] == recs[0]["turns"]
    assert plan_partitions([src])[0].kind == "parquet"
    with pytest.raises(ValueError, match=r"not a \.jsonl or \.parquet"):
        plan_partitions([_write_jsonl(tmp_path / "x.txt", ["{}"])])


def test_one_partition_gives_its_decisions_and_its_own_verified_log(
    model_dir: Path, tmp_path: Path
) -> None:
    recs = _records(12)
    src = _write_jsonl(tmp_path / "in.jsonl", [*recs[:6], "{broken", *recs[6:]])
    (part,) = plan_partitions([src])
    res = score_partition(part, str(tmp_path / "out"), _spec(model_dir, tmp_path))
    out = [json.loads(x) for x in Path(res.output).read_text().splitlines()]
    assert res.records == len(out) == 13
    assert [d["conversation_id"] for d in out] == [r["conversation_id"] for r in recs[:6]] + [
        None] + [r["conversation_id"] for r in recs[6:]]  # fmt: skip
    assert out[6]["excluded_reason"] == "invalid_record"
    assert res.by_reason["sensitive_topic"] == 3 and res.by_reason["eligible"] == 9
    assert all("sensitive_category" not in d for d in out)
    assert tuple(verify(Path(res.audit))) == (True, 13, None)
    assert not Path(res.output + ".partial").exists()


def _client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


@pytest.fixture
def client() -> Iterator[Any]:
    yield from _client()


def test_rerun_skips_finished_partitions_and_rescores_changed_or_missing_ones(
    model_dir: Path, tmp_path: Path, client: Any
) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", _records(30, "a"))
    b = _write_parquet(tmp_path / "b.parquet", _records(20, "b"), row_group_size=5)
    out = tmp_path / "out"
    spec = _spec(model_dir, tmp_path)
    parts = plan_partitions([a, b], partition_bytes=1500, partition_rows=10)
    loads_before = LOADS[spec.model_uri]
    ticks: list[tuple[int, int]] = []
    first = score_partitions(
        client, parts, out, spec, on_progress=lambda d, t: ticks.append((d, t))
    )
    assert ticks == [(i, len(parts)) for i in range(len(parts) + 1)]
    assert first.failed == {}
    assert (first.scored, first.skipped, first.records) == (len(parts), 0, 50)
    assert first.by_reason == {"eligible": 40, "sensitive_topic": 10}
    # the model was loaded once in this process, not once per partition
    assert LOADS[spec.model_uri] - loads_before == 1
    manifest = read_manifest(out)
    assert set(manifest["partitions"]) == {p.name for p in parts}
    for p in parts:
        entry = manifest["partitions"][p.name]
        assert tuple(verify(Path(entry["audit"]))) == (True, entry["records"], None)

    ticks.clear()
    again = score_partitions(client, plan_partitions([a, b], partition_bytes=1500,
                                                     partition_rows=10), out, spec,
                             on_progress=lambda d, t: ticks.append((d, t)))  # fmt: skip
    assert (again.scored, again.skipped, again.records) == (0, len(parts), 0)
    assert ticks == [(len(parts), len(parts))]  # partitions done before count as finished

    # an output that went missing, and an input that changed: only those are scored again
    lost = parts[0]
    Path(manifest["partitions"][lost.name]["output"]).unlink()
    _write_parquet(b, _records(20, "b2"), row_group_size=5)
    parts3 = plan_partitions([a, b], partition_bytes=1500, partition_rows=10)
    third = score_partitions(client, parts3, out, spec)
    changed = [p for p in parts3 if p.path == str(b.resolve())]
    assert third.scored == 1 + len(changed)
    assert third.skipped == len(parts3) - third.scored
    doc = json.loads((out / MANIFEST).read_text())
    b_ids = [json.loads(x)["conversation_id"] for p in changed
             for x in Path(doc["partitions"][p.name]["output"]).read_text().splitlines()]  # fmt: skip
    assert b_ids == [f"b2-{i}" for i in range(20)]


def test_a_partition_that_fails_is_reported_and_the_others_finish(
    model_dir: Path, tmp_path: Path, client: Any
) -> None:
    good = _write_jsonl(tmp_path / "good.jsonl", _records(5))
    parts = plan_partitions([good])
    gone = tmp_path / "gone.jsonl"
    _write_jsonl(gone, _records(3, "g"))
    parts += plan_partitions([gone])
    gone.unlink()  # vanished between planning and scoring
    ticks: list[tuple[int, int]] = []
    rep = score_partitions(client, parts, tmp_path / "out", _spec(model_dir, tmp_path),
                           on_progress=lambda d, t: ticks.append((d, t)))  # fmt: skip
    assert ticks == [(0, 2), (1, 2), (2, 2)]  # the failed partition counts as finished
    assert rep.scored == 1 and rep.records == 5
    assert list(rep.failed) == [parts[1].name] and "FileNotFoundError" in rep.failed[parts[1].name]
    assert list(read_manifest(tmp_path / "out")["partitions"]) == [parts[0].name]
