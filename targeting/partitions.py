"""Batch scoring over a cluster: partitioned input, one model per worker, a manifest for reruns.

The production filter (:class:`~targeting.engine.FilterEngine`: validation, gate, model, audit)
scored partition by partition, each partition a task on a Dask cluster
(``distributed.Client``: ``LABELLOOP_DASK_ADDRESS``, or a local cluster):

* **Partitions** (:func:`plan_partitions`): a JSONL file is cut into byte ranges of about
  ``partition_bytes`` that end on a line break; a Parquet file into its row groups (grouped up to
  ``partition_rows`` rows). A partition is named ``<file stem>-<hash of its path>-<index>`` and
  fingerprinted by the file's size and mtime and its range, so an edited input is rescored.
* **One model load per worker process, not per task** (:func:`worker_engine`): the first task
  on a worker loads the model into a module-level cache keyed by :class:`ScoringSpec`; every
  later task on that worker reuses it (a lock makes concurrent first tasks load it once).
* **Per partition**, in ``out_dir``: ``<partition>.decisions.jsonl`` (public decisions, one per
  non-blank input line / row, in order; written to ``.partial`` and renamed when complete) and
  ``<partition>.audit.jsonl`` (its own hash-chained decision log, with its ``.head``).
* **Manifest** (``out_dir/manifest.json``): written by the driver after each partition finishes
  (atomically); a rerun over the same inputs skips every partition recorded there whose
  fingerprint still matches and whose output is still there with the recorded size, and
  scores the others. A partition interrupted mid-way (worker killed) is scored again from its
  start: its decision file is rewritten, and its audit log then holds the superseded entries
  of the interrupted attempt too (same ``request_id`` = partition name and ``index``; the later
  one is the one in the output).

Nothing connects at import time; ``distributed`` is imported only by :func:`dask_client`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_PARTITION_BYTES = 32 * 1024 * 1024
DEFAULT_PARTITION_ROWS = 100_000


@dataclass(frozen=True)
class Partition:
    """A slice of one input file: bytes ``[start, end)`` of a JSONL file, or row groups
    ``[start, end)`` of a Parquet file."""

    name: str
    path: str
    kind: str  # "jsonl" | "parquet"
    start: int
    end: int
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        return f"{self.kind}:{self.size}:{self.mtime_ns}:{self.start}-{self.end}"


@dataclass(frozen=True)
class ScoringSpec:
    """What a worker needs to build the engine (picklable, hashable: the model cache key)."""

    model_uri: str
    tracking_uri: str
    model_cache_dir: str
    policy_path: str | None = None
    max_text_chars: int = 20_000
    max_turns: int = 200
    onnx_threads: int | None = 1
    embed_cache: int = 20_000
    chunk_size: int = 256
    audit_fsync: bool = False
    require_training_numerics: bool = True


@dataclass
class PartitionResult:
    name: str
    fingerprint: str
    input: str
    output: str
    output_bytes: int
    audit: str
    records: int
    eligible: int
    by_reason: dict[str, int]
    model_versions: list[str]
    seconds: float
    worker: str
    finished_at: str


@dataclass
class ClusterReport:
    out_dir: Path
    partitions: int = 0
    skipped: int = 0
    scored: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    records: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    model_versions: set[str] = field(default_factory=set)
    seconds: float = 0.0
    workers: int = 0

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "partitions": self.partitions,
            "skipped": self.skipped,
            "scored": self.scored,
            "failed": self.failed,
            "records_scored": self.records,
            "by_reason": dict(sorted(self.by_reason.items())),
            "model_versions": sorted(self.model_versions),
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.per_second, 1),
            "workers": self.workers,
        }


# ------------------------------------------------------------------------------ planning
def _jsonl_ranges(path: Path, size: int, target: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``target`` bytes, each ending right after a line break (or at EOF)."""
    if size == 0:
        return []
    out: list[tuple[int, int]] = []
    start = 0
    with path.open("rb") as fh:
        while start < size:
            guess = start + target
            if guess >= size:
                out.append((start, size))
                break
            fh.seek(guess)
            fh.readline()  # to the end of the line the guess fell in
            end = min(fh.tell(), size)
            out.append((start, end))
            start = end
    return out


def plan_partitions(
    inputs: Iterable[Path],
    *,
    partition_bytes: int = DEFAULT_PARTITION_BYTES,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
) -> list[Partition]:
    """The partitions of every input file (``.jsonl``, ``.parquet``; a directory: its files of
    those kinds, sorted)."""
    if partition_bytes < 1 or partition_rows < 1:
        raise ValueError("partition_bytes and partition_rows must be >= 1")
    files: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".jsonl", ".parquet"))
        else:
            files.append(p)
    parts: list[Partition] = []
    for f in files:
        st = f.stat()
        tag = hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:8]
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(f).metadata
            groups: list[tuple[int, int]] = []
            g0, rows = 0, 0
            for g in range(meta.num_row_groups):
                rows += meta.row_group(g).num_rows
                if rows >= partition_rows:
                    groups.append((g0, g + 1))
                    g0, rows = g + 1, 0
            if g0 < meta.num_row_groups:
                groups.append((g0, meta.num_row_groups))
            ranges, kind = groups, "parquet"
        elif f.suffix == ".jsonl":
            ranges, kind = _jsonl_ranges(f, st.st_size, partition_bytes), "jsonl"
        else:
            raise ValueError(f"{f}: not a .jsonl or .parquet file")
        for i, (a, b) in enumerate(ranges):
            parts.append(
                Partition(f"{f.stem}-{tag}-{i:05d}", str(f.resolve()), kind, a, b,
                          st.st_size, st.st_mtime_ns)
            )  # fmt: skip
    return parts


# ------------------------------------------------------------------------------ reading
def read_partition(part: Partition) -> Iterator[tuple[int, Any, str]]:
    """``(position, item, raw)`` per record of the partition: the decoded JSON value or a
    :class:`~targeting.engine.BadInput` (never raises for a bad line or row)."""
    from targeting.batch import _decode

    if part.kind == "jsonl":
        with Path(part.path).open("rb") as fh:
            fh.seek(part.start)
            pos = part.start
            n = 0
            while pos < part.end:
                raw = fh.readline()
                if not raw:
                    break
                pos += len(raw)
                n += 1
                if raw.strip():
                    yield n, _decode(raw, n), raw.decode("utf-8", "replace").rstrip("\n")
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(part.path)
    n = 0
    for g in range(part.start, part.end):
        for row in pf.read_row_group(g).to_pylist():
            n += 1
            # columns a record lacks come back as nulls: drop them (absent, as in JSONL)
            yield n, {k: v for k, v in row.items() if v is not None}, ""


# ------------------------------------------------------------------------------ worker side
_ENGINE_LOCK = threading.Lock()
_HOLDERS: dict[ScoringSpec, Any] = {}
LOADS = Counter[str]()  # model loads in this process, by model URI (benchmarks, tests)


def worker_holder(spec: ScoringSpec) -> Any:
    """The model holder of this worker process for ``spec``: loaded by the first task only."""
    with _ENGINE_LOCK:
        holder = _HOLDERS.get(spec)
        if holder is None:
            from targeting.holder import ModelHolder, serving_configurer

            configure = serving_configurer(
                onnx_threads=spec.onnx_threads, embed_cache=spec.embed_cache,
                require_training_numerics=spec.require_training_numerics,
            )  # fmt: skip

            holder = ModelHolder.for_uri(spec.model_uri, spec.tracking_uri, poll_s=0.0,
                                         cache_dir=Path(spec.model_cache_dir), configure=configure)  # fmt: skip
            res = holder.refresh()
            LOADS[spec.model_uri] += 1
            if holder.current is None:  # not cached: the next task tries again
                raise RuntimeError(f"cannot load the filter model {spec.model_uri}: {res.error}")
            _HOLDERS[spec] = holder
        return holder


def worker_engine(spec: ScoringSpec, audit_path: Path) -> Any:
    """An engine over this worker's model, logging to ``audit_path``."""
    from labeling.policy import load_policy
    from labeling.records import Limits
    from targeting.audit import AuditLog
    from targeting.engine import FilterEngine

    holder = worker_holder(spec)
    policy = load_policy(Path(spec.policy_path) if spec.policy_path else None)
    return FilterEngine(
        holder,
        policy,
        AuditLog(audit_path, fsync=spec.audit_fsync),
        limits=Limits(max_text_chars=spec.max_text_chars, max_turns=spec.max_turns),
    )


def score_partition(part: Partition, out_dir: str, spec: ScoringSpec) -> PartitionResult:
    """Score one partition into ``out_dir`` (runs on a worker)."""
    from targeting.engine import BatchStats

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{part.name}.decisions.jsonl"
    partial = dest.with_name(dest.name + ".partial")
    audit = out / f"{part.name}.audit.jsonl"
    engine = worker_engine(spec, audit)
    stats = BatchStats()
    versions: set[str] = set()
    try:
        with partial.open("wb") as fout:
            chunk: list[Any] = []

            def flush() -> None:
                decisions = engine.decide(
                    chunk, source=f"cluster:{Path(part.path).name}", request_id=part.name,
                    first_index=stats.records,
                )  # fmt: skip
                fout.write("".join(json.dumps(d.public(), ensure_ascii=False) + "\n"
                                   for d in decisions).encode("utf-8"))  # fmt: skip
                stats.add(decisions)
                versions.update(d.model_version for d in decisions if d.model_version)
                chunk.clear()

            for _, item, _ in read_partition(part):
                chunk.append(item)
                if len(chunk) >= spec.chunk_size:
                    flush()
            if chunk:
                flush()
            fout.flush()
            os.fsync(fout.fileno())
        partial.replace(dest)
    finally:
        if engine.audit is not None:
            engine.audit.close()
    return PartitionResult(
        name=part.name,
        fingerprint=part.fingerprint,
        input=part.path,
        output=str(dest),
        output_bytes=dest.stat().st_size,
        audit=str(audit),
        records=stats.records,
        eligible=stats.eligible,
        by_reason=dict(stats.by_reason),
        model_versions=sorted(versions),
        seconds=round(time.perf_counter() - t0, 3),
        worker=f"{os.uname().nodename}:{os.getpid()}",
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# ------------------------------------------------------------------------------ manifest
def read_manifest(out_dir: Path) -> dict[str, Any]:
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return {"version": MANIFEST_VERSION, "partitions": {}}
    doc = json.loads(p.read_text(encoding="utf-8"))
    if doc.get("version") != MANIFEST_VERSION or not isinstance(doc.get("partitions"), dict):
        raise ValueError(f"{p}: not a version {MANIFEST_VERSION} manifest")
    return doc


def write_manifest(out_dir: Path, doc: dict[str, Any]) -> None:
    p = Path(out_dir) / MANIFEST
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(p)


def is_done(part: Partition, entry: dict[str, Any] | None) -> bool:
    """A partition recorded in the manifest, same input, output still there and complete."""
    if not entry or entry.get("fingerprint") != part.fingerprint:
        return False
    out = Path(entry.get("output", ""))
    return out.is_file() and out.stat().st_size == entry.get("output_bytes")


# ------------------------------------------------------------------------------ driver


def score_partitions(
    client: Any,
    parts: Sequence[Partition],
    out_dir: Path,
    spec: ScoringSpec,
    *,
    on_done: Callable[[PartitionResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ClusterReport:
    """Score every partition not already done (see the manifest) on ``client`` (a
    ``distributed.Client``); the manifest is updated as each one finishes.

    ``on_progress(finished, total)`` (partitions): once at the start, where the partitions done
    before count as finished, then after each partition, scored or failed."""
    from distributed import as_completed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    manifest["model_uri"] = spec.model_uri
    done = manifest["partitions"]
    report = ClusterReport(out_dir, partitions=len(parts))
    report.workers = len(client.scheduler_info().get("workers", {}))
    todo = [p for p in parts if not is_done(p, done.get(p.name))]
    report.skipped = len(parts) - len(todo)
    finished = report.skipped
    if on_progress is not None:
        on_progress(finished, len(parts))
    t0 = time.perf_counter()
    futures = {
        client.submit(score_partition, p, str(out_dir), spec, key=f"score-{p.name}-{p.fingerprint}",
                      pure=False, retries=1): p
        for p in todo
    }  # fmt: skip
    for fut in as_completed(futures):
        part = futures[fut]
        finished += 1
        try:
            res: PartitionResult = fut.result()
        except Exception as exc:  # one bad partition does not stop the others; rerun retries it
            report.failed[part.name] = f"{type(exc).__name__}: {exc}"[:500]
            if on_progress is not None:
                on_progress(finished, len(parts))
            continue
        done[part.name] = asdict(res)
        write_manifest(out_dir, manifest)
        report.scored += 1
        report.records += res.records
        report.by_reason.update(res.by_reason)
        report.model_versions.update(res.model_versions)
        if on_done is not None:
            on_done(res)
        if on_progress is not None:
            on_progress(finished, len(parts))
    report.seconds = time.perf_counter() - t0
    return report


def dask_client(address: str | None, *, n_workers: int = 2, threads_per_worker: int = 1) -> Any:
    """A client of the cluster at ``address``, or of a new local cluster (worker processes)."""
    from distributed import Client, LocalCluster

    if address:
        return Client(address)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=None)  # fmt: skip
    return Client(cluster)
