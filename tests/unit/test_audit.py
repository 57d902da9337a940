"""The decision audit log: hash chain, tamper detection, concurrent appends."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from targeting.audit import GENESIS, AuditError, AuditLog, entry_hash, head_path, verify


def _fill(path: Path, n: int = 6) -> None:
    with AuditLog(path) as log:
        for i in range(n):
            log.append(
                {
                    "conversation_id": f"c-{i}",
                    "eligible": i % 2 == 0,
                    "sensitive_category": "health" if i % 3 == 0 else None,
                }
            )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def test_chain_is_valid_and_linked(tmp_path: Path) -> None:
    p = tmp_path / "audit" / "decisions.jsonl"
    _fill(p)
    ok, n, bad = verify(p)
    assert (ok, n, bad) == (True, 6, None)
    entries = [json.loads(line) for line in _lines(p)]
    assert entries[0]["prev"] == GENESIS
    for a, b in itertools.pairwise(entries):
        assert b["prev"] == a["hash"]
    assert [e["seq"] for e in entries] == list(range(6))
    assert entry_hash(entries[3], entries[2]["hash"]) == entries[3]["hash"]
    assert entries[0]["sensitive_category"] == "health"


def test_missing_log_is_an_empty_valid_chain(tmp_path: Path) -> None:
    assert tuple(verify(tmp_path / "nope.jsonl")) == (True, 0, None)


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p, 3)
    _fill(p, 2)  # a new AuditLog reads the tail
    res = verify(p)
    assert res.ok and res.n == 5


def test_edited_line_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    lines = _lines(p)
    e = json.loads(lines[2])
    e["eligible"] = not e["eligible"]  # flip a decision, keep the old hash
    lines[2] = json.dumps(e) + "\n"
    _write(p, lines)
    res = verify(p)
    assert not res.ok and res.first_bad_line == 3 and res.n == 2
    assert "edited" in res.reason


def test_edited_line_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    lines = _lines(p)
    e = json.loads(lines[3])
    assert e["sensitive_category"] == "health"
    e["sensitive_category"] = None
    e["hash"] = entry_hash(e, e["prev"])  # a careful forger re-hashes the entry...
    lines[3] = json.dumps(e) + "\n"
    _write(p, lines)
    res = verify(p)
    assert not res.ok and res.first_bad_line == 5  # ...but the next entry no longer links


def test_deleted_line_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    lines = _lines(p)
    del lines[3]
    _write(p, lines)
    res = verify(p)
    assert not res.ok and res.first_bad_line == 4


def test_reordered_lines_are_detected(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    lines = _lines(p)
    lines[1], lines[4] = lines[4], lines[1]
    _write(p, lines)
    res = verify(p)
    assert not res.ok and res.first_bad_line == 2


def test_truncated_tail_is_detected_by_the_head_file(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    assert head_path(p).exists()
    _write(p, _lines(p)[:-2])
    res = verify(p)
    assert not res.ok and res.n == 4 and "head" in res.reason
    assert verify(p, check_head=False).ok  # the chain alone cannot see a cut tail


def test_garbage_line_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p, 3)
    lines = _lines(p)
    lines.insert(1, "not json\n")
    _write(p, lines)
    res = verify(p)
    assert not res.ok and res.first_bad_line == 2


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    log = AuditLog(p)
    other = AuditLog(p)  # a second appender on the same file (like a batch run beside the service)

    def work(t: int) -> None:
        target = log if t % 2 else other
        for i in range(50):
            target.append_many([{"t": t, "i": i, "k": k} for k in range(3)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    other.close()
    res = verify(p)
    assert res.ok, res
    assert res.n == 8 * 50 * 3


def test_unwritable_log_raises_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditError, match="cannot append"):
        AuditLog(blocker / "d.jsonl").append({"a": 1})


def test_verify_decisions_cli(tmp_path: Path) -> None:
    import typer

    from labelloop.cli_filter import register

    app = typer.Typer()
    audit_app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    register(app, audit_app)
    p = tmp_path / "d.jsonl"
    _fill(p)
    runner = CliRunner()
    res = runner.invoke(app, ["audit", "verify-decisions", str(p)])
    assert res.exit_code == 0, res.output
    assert "6 entries" in res.output
    lines = _lines(p)
    lines[0] = lines[0].replace('"eligible":true', '"eligible":false')
    _write(p, lines)
    res = runner.invoke(app, ["audit", "verify-decisions", str(p)])
    assert res.exit_code == 1
    out = " ".join(res.output.split())
    assert "TAMPERED" in out and "line 1" in out


def test_rehashed_last_entry_is_detected_by_the_head_file(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    lines = _lines(p)
    e = json.loads(lines[-1])
    e["eligible"] = True
    e["hash"] = entry_hash(e, e["prev"])  # the chain alone cannot see this (it is the last)
    lines[-1] = json.dumps(e) + "\n"
    _write(p, lines)
    assert verify(p, check_head=False).ok
    res = verify(p)
    assert not res.ok and res.first_bad_line == 6


def test_verify_while_a_writer_appends(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    log = AuditLog(p)
    stop = threading.Event()

    def writer() -> None:
        # bounded: each verify reads the whole log, so an unbounded writer makes the test
        # quadratic on a busy machine
        i = 0
        while not stop.is_set() and i < 2_000:
            log.append_many([{"i": i, "k": k} for k in range(5)])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            res = verify(p)
            assert res.ok, res
    finally:
        stop.set()
        t.join()
        log.close()
    assert verify(p).ok


def test_deleting_the_head_file_does_not_hide_a_truncation(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    _fill(p)
    _write(p, _lines(p)[:-2])
    head_path(p).unlink()
    res = verify(p)
    assert not res.ok and res.n == 4 and "missing" in res.reason
    import typer

    from labelloop.cli_filter import verify_decisions_command

    app = typer.Typer()
    app.command()(verify_decisions_command)
    out = CliRunner().invoke(app, [str(p)])
    assert out.exit_code == 1 and "TAMPERED" in out.output and "missing" in out.output


def test_a_writer_recreates_a_deleted_head_file(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    with AuditLog(p) as log:
        log.append({"i": 0})
        head_path(p).unlink()
        log.append({"i": 1})
        assert head_path(p).exists()
    assert verify(p).ok and verify(p).n == 2


def test_head_file_exists_before_the_first_entry(tmp_path: Path, monkeypatch) -> None:
    """A verifier that runs while the first entry is being written never sees log-without-head."""
    import os

    p = tmp_path / "d.jsonl"
    seen: list[bool] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        seen.append(head_path(p).exists())
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    AuditLog(p).append({"i": 0})
    assert seen and all(seen)


def test_an_entry_that_cannot_be_serialised_writes_nothing(tmp_path: Path) -> None:
    from targeting.audit import AuditEntryError, encodable

    p = tmp_path / "d.jsonl"
    assert not encodable({"conversation_id": "\ud800"}) and encodable({"x": "é"})
    with AuditLog(p) as log:
        log.append({"i": 0})
        with pytest.raises(AuditEntryError, match="entry 1"):
            log.append_many([{"i": 1}, {"conversation_id": "\ud800"}])
        log.append({"i": 2})
    assert verify(p).ok and verify(p).n == 2


def test_a_torn_last_line_is_set_aside_and_the_chain_continues(tmp_path: Path) -> None:
    """A writer that died mid-line (power loss, kill -9 between two writes) leaves a last line
    without its newline: no decision was answered for it. The next writer sets it aside and
    continues the chain, instead of failing every append from then on."""
    p = tmp_path / "d.jsonl"
    _fill(p, 3)
    torn = b'{"conversation_id":"c-3","eligible":tr'
    with p.open("ab") as fh:
        fh.write(torn)
    assert not verify(p).ok
    with AuditLog(p) as log:
        log.append({"conversation_id": "c-4"})
    res = verify(p)
    assert res.ok and res.n == 4
    (aside,) = tmp_path.glob("d.jsonl.torn-*")
    assert aside.read_bytes() == torn


def test_a_failed_partial_write_is_rolled_back(tmp_path: Path, monkeypatch) -> None:
    """Disk full half-way through a batch: the append fails (callers fail closed) and leaves no
    half line behind, so appends work again once there is space."""
    import errno
    import os

    p = tmp_path / "d.jsonl"
    _fill(p, 2)
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    log = AuditLog(p)
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(AuditError, match="No space"):
        log.append_many([{"i": k} for k in range(5)])
    monkeypatch.setattr(os, "write", real_write)
    log.append({"i": "after"})
    log.close()
    res = verify(p)
    assert res.ok and res.n == 3


def test_a_head_file_created_during_the_scan_is_checked_not_reported_missing(
    tmp_path: Path, monkeypatch
) -> None:
    """The first writer may create the head and append between verify's look for the head and
    its scan of the log: verify checks again against that head instead of failing."""
    import targeting.audit as audit

    p = tmp_path / "d.jsonl"
    _fill(p)
    head = head_path(p).read_bytes()
    head_path(p).unlink()
    real_check = audit._check_line
    calls = {"n": 0}

    def writer_creates_head(line: str, prev: str, seq: int) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            head_path(p).write_bytes(head)
        return real_check(line, prev, seq)

    monkeypatch.setattr(audit, "_check_line", writer_creates_head)
    res = verify(p)
    assert res.ok and res.n == len(_lines(p)), res
    # a head that is still missing after the scan is reported, as before
    head_path(p).unlink()
    res = verify(p)
    assert not res.ok and "missing" in res.reason
