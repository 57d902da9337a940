"""Batch filtering of a JSONL file through the service's code path (:class:`FilterEngine`).

Streams the input in chunks (memory is bounded by ``chunk_size`` records, whatever the input
size), writes one public decision per non-empty input line (in order; no sensitive category) to
``<output>.partial`` and renames it to ``output`` at the end, so a crash never leaves a file that
looks complete. Lines that are not JSON or not valid records become ``invalid_record`` decisions
and quarantine entries (file, line, conversation id, reason); nothing crashes the run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from labeling.records import QuarantinedRecord, QuarantineWriter
from targeting.engine import BadInput, BatchStats, FilterEngine


@dataclass
class FilterReport:
    input: Path
    output: Path
    run_id: str
    lines: int = 0
    quarantined: int = 0
    quarantine_path: Path | None = None
    seconds: float = 0.0
    stats: BatchStats = field(default_factory=BatchStats)
    model_versions: set[str] = field(default_factory=set)

    @property
    def per_second(self) -> float:
        return self.stats.records / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "run_id": self.run_id,
            "records": self.stats.records,
            "eligible": self.stats.eligible,
            "by_reason": dict(sorted(self.stats.by_reason.items())),
            "by_language": dict(sorted(self.stats.by_language.items())),
            "quarantined": self.quarantined,
            "quarantine": str(self.quarantine_path) if self.quarantined else None,
            "model_versions": sorted(self.model_versions),
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.per_second, 1),
        }


def _lines(fh: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """(line number, bytes consumed so far, line) for non-blank lines."""
    consumed = 0
    for n, raw in enumerate(fh, start=1):
        consumed += len(raw)
        if raw.strip():
            yield n, consumed, raw


def _decode(raw: bytes, lineno: int) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadInput(f"line {lineno}: not UTF-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return BadInput(f"line {lineno}: not valid JSON ({exc.msg})")


def filter_file(
    engine: FilterEngine,
    input_path: Path,
    output_path: Path,
    *,
    chunk_size: int = 256,
    quarantine_path: Path | None = None,
    run_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FilterReport:
    """Decide every record of ``input_path``; ``on_progress(bytes_read, records_done)``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = FilterReport(
        Path(input_path), Path(output_path), run_id, quarantine_path=quarantine_path
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    source = f"batch:{input_path.name}"
    t0 = time.perf_counter()
    qw = QuarantineWriter(quarantine_path) if quarantine_path is not None else None
    try:
        with input_path.open("rb") as fin, partial.open("w", encoding="utf-8") as fout:
            chunk: list[tuple[int, bytes, Any]] = []
            pos = {"bytes": 0}

            def flush() -> None:
                items = [obj for _, _, obj in chunk]
                decisions = engine.decide(
                    items, source=source, request_id=run_id, first_index=report.stats.records
                )
                fout.write(
                    "".join(json.dumps(d.public(), ensure_ascii=False) + "\n" for d in decisions)
                )
                report.stats.add(decisions)
                for (lineno, raw, obj), d in zip(chunk, decisions, strict=True):
                    if d.model_version is not None:
                        report.model_versions.add(d.model_version)
                    if d.excluded_reason == "invalid_record" and qw is not None:
                        cid = obj.get("conversation_id") if isinstance(obj, dict) else None
                        qw.write(
                            QuarantinedRecord(
                                str(input_path),
                                lineno,
                                cid if isinstance(cid, str) else None,
                                None,
                                d.detail or "invalid record",
                                raw.decode("utf-8", "replace").rstrip("\n"),
                            )
                        )
                chunk.clear()
                if on_progress is not None:
                    on_progress(pos["bytes"], report.stats.records)

            for lineno, nbytes, raw in _lines(fin):
                pos["bytes"] = nbytes
                report.lines += 1
                chunk.append((lineno, raw, _decode(raw, lineno)))
                if len(chunk) >= chunk_size:
                    flush()
            if chunk:
                flush()
            elif on_progress is not None:
                on_progress(pos["bytes"], report.stats.records)
        partial.replace(output_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if qw is not None:
            qw.close()
            report.quarantined = qw.count
    report.seconds = time.perf_counter() - t0
    return report
