"""The append-only, hash-chained audit log of targeting decisions (JSONL).

One line per decision, written by the filter service and by ``labelloop filter``. Each entry holds
the decision, the sensitive category if any (the only place it is ever written), the model and
policy versions, the time, its sequence number, the hash of the previous entry (``prev``) and its
own hash::

    hash = sha256(prev_hash + canonical_json(entry without "hash"))

where ``canonical_json`` is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
and the first entry's ``prev`` is :data:`GENESIS` (64 zeros). Editing, deleting, inserting or
reordering any line breaks the chain at that line; :func:`verify` reports the first bad line.

Removing lines *at the end* leaves a valid (shorter) chain, so every append also rewrites a small
sidecar ``<log>.head`` (``{"n": entries, "hash": last hash}``, one fixed-size in-place write); :func:`verify`
compares the chain's end with it and reports a truncation. A non-empty log without its head file
does not verify either (deleting the head would otherwise hide a truncation); a writer that finds
its head file deleted writes a new one. (An attacker who rewrites the head too, or deletes both
files, is out of scope; ship the head hashes elsewhere, e.g. the label-store audit table, for that.)

Every entry is serialised before anything is written: an entry that cannot be (a string that is
not valid UTF-8) raises :class:`AuditEntryError` naming it and nothing of the batch is written;
callers check :func:`encodable` first and replace such an entry (one record affects only itself).

A last line without its newline (its writer died mid-write: that decision was never answered) is
copied to ``<log>.torn-<time>`` and cut off by the next writer, which then continues the chain; a
write that fails half-way (disk full) is rolled back to the previous end of the log.

Appends are serialised by a thread lock *and* an exclusive ``flock`` on the log file, so the
service's request threads and a concurrent batch run in another process extend one chain. Nothing
is opened at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("labelloop.targeting")

GENESIS = "0" * 64
_TAIL_BLOCK = 64 * 1024
_HEAD_SIZE = 128


class AuditError(RuntimeError):
    """The audit log cannot be written (the caller must fail closed)."""


class AuditEntryError(AuditError):
    """One entry of a batch cannot be serialised; nothing of the batch was written."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"audit entry {index} of the batch cannot be written: {reason}")
        self.index = index


def canonical_json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def encodable(entry: Mapping[str, Any]) -> bool:
    """True if the entry can be written (its canonical JSON is valid UTF-8)."""
    try:
        canonical_json(entry).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return False
    return True


def entry_hash(entry: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry without its hash."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    n: int
    """Entries verified as a valid chain (all of them when ``ok``)."""
    first_bad_line: int | None
    """1-based line number of the first entry that breaks the chain (None when ok)."""
    reason: str = ""

    def __iter__(self) -> Iterator[Any]:
        """Allows ``ok, n, first_bad_line = verify(path)``."""
        return iter((self.ok, self.n, self.first_bad_line))


def verify(path: Path, *, check_head: bool = True) -> VerifyResult:
    """Check the whole chain (streaming; constant memory). ``(ok, n, first_bad_line)``.

    A missing or empty log is a valid chain of 0 entries (unless a head file says otherwise).
    """
    path = Path(path)
    res, head_missing = _verify_once(path, check_head=check_head)
    if head_missing and not res.ok and head_path(path).exists():
        # The first writer created the head file (and appended) while we scanned the log:
        # check again, now against that head, rather than report it missing.
        res, _ = _verify_once(path, check_head=check_head)
    return res


def _verify_once(path: Path, *, check_head: bool) -> tuple[VerifyResult, bool]:
    """One scan; also says whether the head file was missing when the scan began."""
    head: tuple[int, str] | None = None
    if check_head and head_path(path).exists():
        # Read the head *before* the log: entries appended while we scan are fine, the head
        # must match the entry it names (no lock needed against a live writer).
        head = _read_head(head_path(path))
        if head is None:
            return VerifyResult(False, 0, 1, f"head file {head_path(path)} is unreadable"), False
    head_missing = check_head and head is None
    prev = GENESIS
    n = 0
    lineno = 0
    if path.exists():
        with path.open("r", encoding="utf-8", errors="strict") as fh:
            for lineno, line in enumerate(fh, start=1):
                bad = _check_line(line, prev, n)
                if bad:
                    return VerifyResult(False, n, lineno, bad), head_missing
                prev = json.loads(line)["hash"]
                n += 1
                if head is not None and n == head[0] and prev != head[1]:
                    return VerifyResult(
                        False, n - 1, lineno, "entry's hash differs from the head file (rewritten)"
                    ), head_missing
    if head is not None and n < head[0]:
        return VerifyResult(
            False,
            n,
            lineno + 1,
            f"log ends after {n} entries but the head file records {head[0]} (truncated)",
        ), head_missing
    if head_missing and n > 0:
        return VerifyResult(
            False,
            n,
            None,
            f"head file {head_path(path)} is missing, so a truncation of the log cannot be "
            "ruled out",
        ), head_missing
    return VerifyResult(True, n, None), head_missing


def _read_head(hp: Path) -> tuple[int, str] | None:
    for _ in range(3):  # a concurrent in-place rewrite is a single small write; retry once or two
        try:
            raw = hp.read_bytes().rstrip(b"\x00 \n")
            if not raw:  # created, not yet written
                return (0, GENESIS)
            head = json.loads(raw)
            return int(head["n"]), str(head["hash"])
        except (ValueError, KeyError, TypeError, OSError):
            time.sleep(0.01)
    return None


def _check_line(line: str, prev: str, seq: int) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return "not valid JSON"
    if not isinstance(entry, dict):
        return "not a JSON object"
    h = entry.get("hash")
    if not isinstance(h, str):
        return "missing hash"
    if entry.get("prev") != prev:
        return "prev hash does not match the previous entry (line deleted, inserted or reordered)"
    if entry.get("seq") != seq:
        return f"sequence number {entry.get('seq')!r}, expected {seq}"
    if entry_hash(entry, prev) != h:
        return "hash does not match the entry's content (entry edited)"
    return ""


def _read_tail(fh: Any, size: int) -> tuple[int, str] | None:
    """(seq, hash) of the last entry of an open binary file of ``size`` bytes, or None if empty."""
    if size == 0:
        return None
    block = _TAIL_BLOCK
    while True:
        start = max(0, size - block)
        fh.seek(start)
        data = fh.read(size - start)
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            last = json.loads(lines[-1])
            return int(last["seq"]), str(last["hash"])
        block *= 4


class AuditLog:
    """Thread- and process-safe appender of hash-chained entries.

    ``append_many`` writes a batch of entries under one lock (one ``write`` call, one flush);
    ``fsync=True`` also fsyncs every batch (durable, slower).
    """

    def __init__(self, path: Path, *, fsync: bool = False, write_head: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.write_head = write_head
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._cached: tuple[int, int, str] | None = None  # (file size, next seq, last hash)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def _state(self, fd: int) -> tuple[int, str]:
        """(next seq, last hash) — from the cache when the file did not change since our write."""
        size = os.fstat(fd).st_size
        if self._cached is not None and self._cached[0] == size:
            return self._cached[1], self._cached[2]
        size = self._set_aside_torn_tail(fd, size)
        with os.fdopen(os.dup(fd), "rb") as fh:
            tail = _read_tail(fh, size)
        if tail is None:
            return 0, GENESIS
        return tail[0] + 1, tail[1]

    def _set_aside_torn_tail(self, fd: int, size: int) -> int:
        """A last line without its newline was being written when its writer died (nobody got
        that decision): copy it to ``<log>.torn-<time>`` and cut it off. Returns the new size."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        start = max(0, size - _TAIL_BLOCK)
        while True:
            block = os.pread(fd, size - start, start)
            nl = block.rfind(b"\n")
            if nl >= 0 or start == 0:
                keep = start + nl + 1  # 0 if the whole file is one torn line
                break
            start = max(0, start - _TAIL_BLOCK)
        torn = os.pread(fd, size - keep, keep)
        aside = self.path.with_name(
            f"{self.path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{keep}"
        )
        aside.write_bytes(torn)
        os.ftruncate(fd, keep)
        log.warning(
            "decision audit log %s ended in a torn line of %d bytes (a writer died mid-write); "
            "set aside in %s",
            self.path,
            len(torn),
            aside,
        )
        return keep

    def append_many(self, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Chain and append entries; return them as written (with seq, prev, hash).

        Raises :class:`AuditError` when the log cannot be written.
        """
        items = [dict(e) for e in entries]
        if not items:
            return []
        for n, e in enumerate(items):
            if not encodable(e):
                raise AuditEntryError(n, "not serialisable as UTF-8 JSON")
        with self._lock:
            try:
                fd = self._open()
                if self.write_head:
                    self._head()  # exists before the log has entries (verify demands it)
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    seq, prev = self._state(fd)
                    size_before = os.fstat(fd).st_size
                    lines = []
                    for e in items:
                        for k in ("seq", "prev", "hash"):
                            e.pop(k, None)
                        e["seq"] = seq
                        e["prev"] = prev
                        e["hash"] = prev = entry_hash(e, prev)
                        seq += 1
                        lines.append(canonical_json(e))
                    data = ("\n".join(lines) + "\n").encode("utf-8")
                    written = 0
                    try:
                        while written < len(data):
                            written += os.write(fd, data[written:])
                    except OSError:
                        # e.g. the disk filled up half-way: leave no half line behind
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, size_before)
                        raise
                    if self.fsync:
                        os.fsync(fd)
                    self._cached = (os.fstat(fd).st_size, seq, prev)
                    if self.write_head:
                        self._write_head(seq, prev)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except (OSError, ValueError, KeyError) as exc:
                self._cached = None
                raise AuditError(
                    f"cannot append to the decision audit log {self.path}: {exc}"
                ) from exc
        return items

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        return self.append_many([entry])[0]

    def _head(self) -> int:
        if self._head_fd is not None and os.fstat(self._head_fd).st_nlink == 0:
            os.close(self._head_fd)  # the head file was deleted under us: write a new one
            self._head_fd = None
        if self._head_fd is None:
            self._head_fd = os.open(head_path(self.path), os.O_RDWR | os.O_CREAT, 0o640)
            if os.fstat(self._head_fd).st_size < _HEAD_SIZE:
                os.ftruncate(self._head_fd, _HEAD_SIZE)
        return self._head_fd

    def _write_head(self, n: int, last_hash: str) -> None:
        # One fixed-size pwrite at offset 0 (no rename: a rename per request costs milliseconds
        # on some filesystems); a single small write is not torn on Linux.
        rec = json.dumps({"n": n, "hash": last_hash}).encode("utf-8").ljust(_HEAD_SIZE - 1) + b"\n"
        os.pwrite(self._head(), rec, 0)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._head_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._head_fd = None
            self._cached = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
