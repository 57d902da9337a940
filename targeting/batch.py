"""Batch filtering of a JSONL file through the service's code path (:class:`FilterEngine`).

Streams the input in chunks (memory is bounded by ``chunk_size`` records, whatever the input
size), writes one public decision per non-empty input line (in order; no sensitive category) to
``<output>.partial`` and renames it to ``output`` at the end, so a crash never leaves a file that
looks complete. Lines that are not JSON, not UTF-8, nested too deeply for the parser, hold a number
too long to convert, or are not valid records become ``invalid_record`` decisions and quarantine
entries (file, line, conversation id, reason); nothing a line holds crashes the run.

**Interrupted runs resume.** After every chunk the run records its progress in
``<output>.partial.state`` (input identity, bytes and lines consumed, output and quarantine sizes,
counts). A run killed mid-way (kill -9, power loss of the process, an audit log that became
unwritable) leaves ``.partial`` and ``.partial.state``; the next run on the same input and output
truncates both files to the last recorded chunk and continues with the same ``run_id``, so the
final output holds every decision exactly once and the audit entries of the run continue at the
right index. The chunk that was in flight when the process died may have been audited without
reaching the output: it is decided again, so the audit log can hold a superseded entry (same
``request_id`` and ``index``; the later one is the one in the output) for at most one chunk per
interruption. A ``.partial`` that cannot be resumed (the input changed, no state file) is never
deleted: it is moved aside to ``<output>.interrupted-<run_id>`` and reported
(:attr:`FilterReport.interrupted`). Two runs writing the same output at once are refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from labeling.records import InvalidJSONError, QuarantinedRecord, QuarantineWriter, loads_json
from targeting.engine import BadInput, BatchStats, FilterEngine

STATE_VERSION = 1


class OutputBusyError(RuntimeError):
    """Another run is writing the same output file."""


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
    resumed_from: int = 0
    """Decisions carried over from an interrupted run of the same input (0: a fresh run)."""
    interrupted: dict[str, Any] | None = None
    """An earlier interrupted run that could not be resumed: run_id, decisions, where kept."""

    @property
    def per_second(self) -> float:
        done = self.stats.records - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0

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
            "resumed_from": self.resumed_from,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class RunState:
    """Progress of a run, as recorded in ``<output>.partial.state`` after every chunk."""

    run_id: str
    input: str
    input_size: int
    input_mtime_ns: int
    input_bytes: int
    lines_done: int
    nonblank_lines: int
    output_bytes: int
    quarantine: str | None
    quarantine_bytes: int
    quarantined: int
    records: int
    eligible: int
    by_reason: dict[str, int]
    model_versions: list[str]
    version: int = STATE_VERSION

    def matches(self, input_path: Path) -> bool:
        """True if ``input_path`` is the very file this run was reading (path, size, mtime)."""
        try:
            st = input_path.stat()
        except OSError:
            return False
        return (
            self.version == STATE_VERSION
            and self.input == str(input_path.resolve())
            and self.input_size == st.st_size
            and self.input_mtime_ns == st.st_mtime_ns
        )


def partial_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + ".partial")


def state_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + ".partial.state")


def interrupted_run(output_path: Path) -> RunState | None:
    """The recorded progress of an interrupted run writing ``output_path``, if any."""
    sp = state_path(output_path)
    if not partial_path(output_path).exists() or not sp.exists():
        return None
    try:
        raw = json.loads(sp.read_text(encoding="utf-8"))
        return RunState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def resumable_run(input_path: Path, output_path: Path) -> RunState | None:
    """The interrupted run that a new run on ``input_path`` -> ``output_path`` would resume."""
    st = interrupted_run(output_path)
    return st if st is not None and st.matches(input_path) else None


def _lines(
    fh: BinaryIO, start_line: int = 0, start_bytes: int = 0
) -> Iterator[tuple[int, int, bytes]]:
    """(line number, bytes consumed so far, line) for non-blank lines."""
    consumed = start_bytes
    for n, raw in enumerate(fh, start=start_line + 1):
        consumed += len(raw)
        if raw.strip():
            yield n, consumed, raw


def _decode(raw: bytes, lineno: int) -> Any:
    """The line's JSON value, or a :class:`BadInput` saying why not; never raises."""
    try:
        return loads_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return BadInput(f"line {lineno}: not UTF-8")
    except InvalidJSONError as exc:
        return BadInput(f"line {lineno}: not valid JSON ({exc})")
    except Exception as exc:  # anything else one line can do
        return BadInput(f"line {lineno}: unreadable ({type(exc).__name__})")


def _write_state(path: Path, state: RunState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state.__dict__), encoding="utf-8")
    tmp.replace(path)


def _set_aside(partial: Path, output_path: Path) -> dict[str, Any]:
    """Move a partial that cannot be resumed out of the way (never delete decisions)."""
    old = interrupted_run(output_path)
    rid = old.run_id if old is not None else time.strftime("%Y%m%dT%H%M%S")
    kept = output_path.with_name(f"{output_path.name}.interrupted-{rid}")
    with partial.open("rb") as fh:
        decisions = sum(1 for line in fh if line.endswith(b"\n"))
    partial.replace(kept)
    state_path(output_path).unlink(missing_ok=True)
    return {
        "run_id": old.run_id if old is not None else None,
        "decisions": decisions,
        "kept_at": str(kept),
        "why": "no progress record" if old is None else "the input file changed",
        "audit": "its decisions are in the audit log under request_id = its run_id",
    }


def filter_file(
    engine: FilterEngine,
    input_path: Path,
    output_path: Path,
    *,
    chunk_size: int = 256,
    quarantine_path: Path | None = None,
    run_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    resume: bool = True,
) -> FilterReport:
    """Decide every record of ``input_path``; ``on_progress(bytes_read, records_done)``.

    With ``resume`` (the default) an interrupted run on the same input and output is continued
    (its ``run_id`` and quarantine file are kept); without, its partial output is set aside."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    input_path, output_path = Path(input_path), Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = output_path.with_name(output_path.name + ".lock")
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"another run is writing {output_path}") from None
        try:
            return _filter_locked(
                engine, input_path, output_path, chunk_size, quarantine_path, run_id,
                on_progress, resume,
            )  # fmt: skip
        finally:
            with contextlib.suppress(OSError):
                lock_path.unlink()


def _filter_locked(
    engine: FilterEngine,
    input_path: Path,
    output_path: Path,
    chunk_size: int,
    quarantine_path: Path | None,
    run_id: str | None,
    on_progress: Callable[[int, int], None] | None,
    resume: bool,
) -> FilterReport:
    partial, sp = partial_path(output_path), state_path(output_path)
    prior = resumable_run(input_path, output_path) if resume else None
    interrupted = None
    if prior is None and partial.exists():
        interrupted = _set_aside(partial, output_path)
    if prior is not None:
        run_id = prior.run_id
        quarantine_path = Path(prior.quarantine) if prior.quarantine else quarantine_path
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = FilterReport(input_path, output_path, run_id, quarantine_path=quarantine_path)
    report.interrupted = interrupted
    start_bytes = start_line = 0
    if prior is not None:
        with partial.open("r+b") as fh:
            fh.truncate(prior.output_bytes)
        if quarantine_path is not None and quarantine_path.exists():
            with quarantine_path.open("r+b") as fh:
                fh.truncate(prior.quarantine_bytes)
        start_bytes, start_line = prior.input_bytes, prior.lines_done
        report.lines = prior.nonblank_lines
        report.stats = BatchStats(prior.records, prior.eligible, dict(prior.by_reason))
        report.model_versions = set(prior.model_versions)
        report.resumed_from = prior.records
    prior_quarantined = prior.quarantined if prior is not None else 0
    in_stat = input_path.stat()
    source = f"batch:{input_path.name}"
    t0 = time.perf_counter()
    qw = QuarantineWriter(quarantine_path) if quarantine_path is not None else None
    try:
        with input_path.open("rb") as fin, partial.open("ab") as fout:
            fin.seek(start_bytes)
            chunk: list[tuple[int, bytes, Any]] = []
            pos = {"bytes": start_bytes, "line": start_line}

            def flush() -> None:
                items = [obj for _, _, obj in chunk]
                decisions = engine.decide(
                    items, source=source, request_id=run_id, first_index=report.stats.records
                )
                fout.write(
                    "".join(
                        json.dumps(d.public(), ensure_ascii=False) + "\n" for d in decisions
                    ).encode("utf-8")
                )
                report.stats.add(decisions)
                for (lineno, raw, _), d in zip(chunk, decisions, strict=True):
                    if d.model_version is not None:
                        report.model_versions.add(d.model_version)
                    if d.excluded_reason == "invalid_record" and qw is not None:
                        qw.write(
                            QuarantinedRecord(
                                str(input_path),
                                lineno,
                                d.conversation_id,
                                None,
                                d.detail or "invalid record",
                                raw.decode("utf-8", "replace").rstrip("\n"),
                            )
                        )
                chunk.clear()
                fout.flush()
                if qw is not None:
                    qw.flush()
                _write_state(
                    sp,
                    RunState(
                        run_id=report.run_id,
                        input=str(input_path.resolve()),
                        input_size=in_stat.st_size,
                        input_mtime_ns=in_stat.st_mtime_ns,
                        input_bytes=pos["bytes"],
                        lines_done=pos["line"],
                        nonblank_lines=report.lines,
                        output_bytes=fout.tell(),
                        quarantine=str(quarantine_path) if quarantine_path else None,
                        quarantine_bytes=qw.size() if qw is not None else 0,
                        quarantined=prior_quarantined + (qw.count if qw is not None else 0),
                        records=report.stats.records,
                        eligible=report.stats.eligible,
                        by_reason=dict(report.stats.by_reason),
                        model_versions=sorted(report.model_versions),
                    ),
                )
                if on_progress is not None:
                    on_progress(pos["bytes"], report.stats.records)

            for lineno, nbytes, raw in _lines(fin, start_line, start_bytes):
                report.lines += 1
                chunk.append((lineno, raw, _decode(raw, lineno)))
                if len(chunk) >= chunk_size:
                    pos["bytes"], pos["line"] = nbytes, lineno
                    flush()
            if chunk:
                pos["bytes"], pos["line"] = in_stat.st_size, chunk[-1][0]
                flush()
            elif on_progress is not None:
                on_progress(in_stat.st_size, report.stats.records)
        partial.replace(output_path)
        sp.unlink(missing_ok=True)
    finally:
        # On an error the partial output and its state stay: the next run resumes from them.
        if qw is not None:
            qw.close()
            report.quarantined = prior_quarantined + qw.count
    report.seconds = time.perf_counter() - t0
    return report
