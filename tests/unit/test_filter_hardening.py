"""The filter under hostile input: one bad record affects only itself, every decision that leaves
the process is in the audit log, bodies the service cannot take get the fail-closed shape."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from labelloop.runtime import service_config
from labelloop.settings import Settings
from targeting.audit import AuditError, AuditLog, verify
from targeting.engine import FilterEngine
from targeting.service import create_app
from tests.conftest import make_record
from tests.unit.test_filter_service import (
    API,
    POLICY,
    holder_with,
    loaded_of,
    reference_loaded,
    settings_,  # noqa: F401  (fixture)
)

SURROGATE_ID = "evil-\ud800"


def _body(records: list[Any]) -> bytes:
    return json.dumps({"records": records}).encode("ascii")  # "\ud800" travels as an escape


def _post_raw(c: TestClient, records: list[Any]) -> Any:
    return c.post(
        "/v1/decisions",
        content=_body(records),
        headers={**API, "Content-Type": "application/json"},
    )


def _audit_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_engine_one_unloggable_record_affects_only_itself(tmp_path: Path) -> None:
    audit = tmp_path / "d.jsonl"
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    groups = [
        ([make_record(conversation_id="a1"), make_record(conversation_id=SURROGATE_ID)], "r1"),
        ([make_record(conversation_id="b1")], "r2"),
    ]
    (ga, gb) = engine.decide_groups(groups)
    assert [d.eligible for d in ga] == [True, False] and gb[0].eligible
    assert ga[1].excluded_reason == "invalid_record"
    assert ga[1].conversation_id == "evil-\\ud800"  # shown escaped: loggable and returnable
    entries = _audit_entries(audit)
    assert [(e["request_id"], e["index"], e["conversation_id"]) for e in entries] == [
        ("r1", 0, "a1"),
        ("r1", 1, "evil-\\ud800"),
        ("r2", 0, "b1"),
    ]
    assert verify(audit).ok


class _UnloggableModel:
    """Says eligible, with an interest id that cannot be written as UTF-8, for one record."""

    def predict(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "conversation_id": r["conversation_id"],
                "eligible": True,
                "interests": [
                    {"id": "653\udc00" if r["conversation_id"] == "x" else "653", "score": 0.9}
                ],
                "excluded_reason": None,
                "sensitive_category": None,
            }
            for r in data
        ]


def test_engine_decision_that_cannot_be_logged_fails_closed_and_is_logged(tmp_path: Path) -> None:
    audit = tmp_path / "d.jsonl"
    engine = FilterEngine(holder_with(loaded_of(_UnloggableModel())), POLICY, AuditLog(audit))
    ds = engine.decide([make_record(conversation_id=c) for c in ("w", "x", "y")])
    assert [d.eligible for d in ds] == [True, False, True]
    assert ds[1].excluded_reason == "model_unavailable" and ds[1].interests == []
    entries = _audit_entries(audit)
    assert [e["conversation_id"] for e in entries] == ["w", "x", "y"]
    assert entries[1]["eligible"] is False and "could not be logged" in entries[1]["detail"]


def test_audit_log_unavailable_returns_no_decision(tmp_path: Path, settings_: Settings) -> None:  # noqa: F811
    blocker = tmp_path / "f"
    blocker.write_text("x")
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(blocker / "d.jsonl"))
    with pytest.raises(AuditError):
        engine.decide([make_record()])
    app = create_app(
        service_config(settings_), holder=holder_with(reference_loaded()),
        audit=AuditLog(blocker / "d.jsonl"), start_holder=False,
    )  # fmt: skip
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post_raw(c, [make_record()])
    assert r.status_code == 503
    assert r.json()["fail_closed"] is True and r.json()["decisions"] == []


def test_service_surrogate_requests_do_not_knock_others_out_of_the_log(
    settings_: Settings,  # noqa: F811
) -> None:
    """60 requests with a lone surrogate in conversation_id among 300 normal ones, concurrently:
    every decision a client receives is in the audit log, and only the bad records are
    affected."""
    app = create_app(
        service_config(settings_), holder=holder_with(reference_loaded()), start_holder=False
    )

    def one(i: int) -> tuple[int, Any]:
        cid = f"bad-{i}-\ud800" if i % 6 == 0 else f"ok-{i}"
        return i, _post_raw(c, [make_record(conversation_id=cid)])

    with TestClient(app) as c, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(360)))
    bad = [r for i, r in results if i % 6 == 0]
    good = [r for i, r in results if i % 6 != 0]
    assert len(bad) == 60 and len(good) == 300
    assert all(r.status_code == 200 for _, r in results)
    assert all(r.json()["decisions"][0]["eligible"] for r in good)
    assert all(r.json()["decisions"][0]["excluded_reason"] == "invalid_record" for r in bad)
    logged = {
        (e["request_id"], e["index"]): e for e in _audit_entries(settings_.decisions_audit_path)
    }
    for _, r in results:
        body = r.json()
        d = body["decisions"][0]
        e = logged[(body["request_id"], 0)]
        assert (e["conversation_id"], e["eligible"], e["excluded_reason"]) == (
            d["conversation_id"],
            d["eligible"],
            d["excluded_reason"],
        )
    assert len(logged) == 360 and verify(settings_.decisions_audit_path).ok


# ---------------------------------------------------------------- batch: hostile lines


def test_batch_hostile_lines_are_quarantined_and_the_run_finishes(tmp_path: Path) -> None:
    from targeting.batch import filter_file

    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps(make_record(conversation_id="ok-1")).encode(),
        b"[" * 5000 + b"]" * 5000,
        b'{"conversation_id": "n", "x": ' + b"9" * 5000 + b"}",
        json.dumps(make_record(conversation_id="\ud800")).encode(),
        json.dumps(
            make_record(conversation_id="t", turns=[{"role": "user", "text": "\udc00"}])
        ).encode(),
        b'{"conversation_id": "latin1-\xe9"}',
        json.dumps(make_record(conversation_id="ok-2")).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    audit = tmp_path / "audit.jsonl"
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    out, q = tmp_path / "out.jsonl", tmp_path / "q.jsonl"
    rep = filter_file(engine, src, out, chunk_size=3, quarantine_path=q)
    ds = [json.loads(x) for x in out.read_bytes().decode("utf-8").splitlines()]
    assert len(ds) == 7 and rep.stats.records == 7
    assert [d["eligible"] for d in ds] == [True, False, False, False, False, False, True]
    assert {d["excluded_reason"] for d in ds[1:6]} == {"invalid_record"}
    assert ds[3]["conversation_id"] == "\\ud800"
    quarantined = [json.loads(x) for x in q.read_bytes().decode("utf-8").splitlines()]
    assert [x["line"] for x in quarantined] == [2, 3, 4, 5, 6] and rep.quarantined == 5
    reasons = [x["reason"] for x in quarantined]
    assert "nested too deeply" in reasons[0] and "number too long" in reasons[1]
    assert "Unicode" in reasons[2] and "Unicode" in reasons[3] and "not UTF-8" in reasons[4]
    assert verify(audit).ok and verify(audit).n == 7


# ---------------------------------------------------------------- batch: interrupted runs


class _Killed(BaseException):
    """Stands for the process dying (nothing after it runs, like kill -9)."""


def _input(tmp_path: Path, n: int = 23) -> Path:
    src = tmp_path / "in.jsonl"
    recs = [make_record(conversation_id=f"c{i}") for i in range(n)]
    recs[5] = {"conversation_id": "broken"}  # quarantined
    src.write_text("".join(json.dumps(r) + "\n" for r in recs) + "\n{oops\n")
    return src


def _dying_engine(audit: Path, die_on_call: int) -> FilterEngine:
    calls = {"n": 0}

    class Dying(FilterEngine):
        def decide(self, items: Any, **kw: Any) -> Any:
            out = super().decide(items, **kw)  # audited...
            calls["n"] += 1
            if calls["n"] == die_on_call:
                raise _Killed  # ...but never written to the output
            return out

    return Dying(holder_with(reference_loaded()), POLICY, AuditLog(audit))


def test_interrupted_batch_resumes_with_every_decision_once(tmp_path: Path) -> None:
    from targeting.batch import filter_file, partial_path, resumable_run

    src = _input(tmp_path)
    audit = tmp_path / "audit.jsonl"
    out, q = tmp_path / "out.jsonl", tmp_path / "q-first.jsonl"
    with pytest.raises(_Killed):
        filter_file(_dying_engine(audit, 3), src, out, chunk_size=5, quarantine_path=q)
    assert not out.exists() and partial_path(out).exists()
    state = resumable_run(src, out)
    assert state is not None and state.records == 10  # two chunks made it to the output

    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    rep = filter_file(engine, src, out, chunk_size=5, quarantine_path=tmp_path / "q-new.jsonl")
    assert rep.run_id == state.run_id and rep.resumed_from == 10
    assert rep.quarantine_path == q  # the interrupted run's quarantine file is continued
    ds = [json.loads(x) for x in out.read_text().splitlines()]
    reference = tmp_path / "ref.jsonl"
    ref_engine = FilterEngine(holder_with(reference_loaded()), POLICY, None)
    filter_file(ref_engine, src, reference, chunk_size=5)
    assert ds == [json.loads(x) for x in reference.read_text().splitlines()]
    assert rep.stats.records == 24 and rep.lines == 24 and rep.stats.eligible == 22
    assert [json.loads(x)["line"] for x in q.read_text().splitlines()] == [6, 25]
    assert rep.quarantined == 2
    assert not partial_path(out).exists() and resumable_run(src, out) is None
    # the audit log holds every output decision; only the chunk in flight is there twice
    entries = [json.loads(x) for x in audit.read_text().splitlines()]
    assert {e["index"] for e in entries} == set(range(24))
    assert len(entries) == 24 + 5 and verify(audit).ok


def test_a_partial_that_cannot_be_resumed_is_set_aside_and_reported(tmp_path: Path) -> None:
    from targeting.batch import filter_file, partial_path

    src = _input(tmp_path)
    out = tmp_path / "out.jsonl"
    audit = tmp_path / "audit.jsonl"
    with pytest.raises(_Killed):
        filter_file(_dying_engine(audit, 2), src, out, chunk_size=5)
    with src.open("a") as fh:  # the input changed since
        fh.write(json.dumps(make_record(conversation_id="late")) + "\n")
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    rep = filter_file(engine, src, out, chunk_size=5)
    assert rep.resumed_from == 0 and rep.interrupted is not None
    assert rep.interrupted["decisions"] == 5 and "changed" in rep.interrupted["why"]
    kept = Path(rep.interrupted["kept_at"])
    assert kept.exists() and len(kept.read_text().splitlines()) == 5
    assert not partial_path(out).exists() and rep.stats.records == 25


def test_two_runs_on_one_output_are_refused(tmp_path: Path) -> None:
    import fcntl

    from targeting.batch import OutputBusyError, filter_file

    src = _input(tmp_path)
    out = tmp_path / "out.jsonl"
    with out.with_name("out.jsonl.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        engine = FilterEngine(holder_with(reference_loaded()), POLICY, None)
        with pytest.raises(OutputBusyError):
            filter_file(engine, src, out)


def test_kill_9_mid_batch_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A real SIGKILL of a batch run between chunks; the rerun resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from targeting.batch import filter_file, state_path

    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps(make_record(conversation_id=f"k{i}")) + "\n" for i in range(400))
    )
    out, audit = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    script = f"""
import time, sys
sys.path.insert(0, {str(Path.cwd())!r})
from tests.unit.test_filter_service import POLICY, holder_with, reference_loaded
from targeting.audit import AuditLog
from targeting.batch import filter_file
from targeting.engine import FilterEngine
class Slow(FilterEngine):
    def decide(self, items, **kw):
        time.sleep(0.05)
        return super().decide(items, **kw)
engine = Slow(holder_with(reference_loaded()), POLICY, AuditLog({str(audit)!r}))
filter_file(engine, {str(src)!r}, {str(out)!r}, chunk_size=10)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path.cwd())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = state_path(out)
        if st.exists() and json.loads(st.read_text())["records"] >= 50:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and state_path(out).exists()
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    rep = filter_file(engine, src, out, chunk_size=10)
    assert rep.resumed_from >= 50
    ids = [json.loads(x)["conversation_id"] for x in out.read_text().splitlines()]
    assert ids == [f"k{i}" for i in range(400)]  # 0 lost, 0 duplicated, in order
    entries = [json.loads(x) for x in audit.read_text().splitlines()]
    assert {e["index"] for e in entries if e["request_id"] == rep.run_id} == set(range(400))
    assert len(entries) - 400 <= 10 and verify(audit).ok  # at most the chunk in flight twice


# ---------------------------------------------------------------- request bodies


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"records": [' + b"9" * 5000 + b"]}", "number too long"),
        (b'{"records": ["\xff\xfe"]}', "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_unparseable_body_is_400_fail_closed(
    settings_: Settings,  # noqa: F811
    body: bytes,
    needle: str,
) -> None:
    for c in _clients(settings_):
        r = c.post(
            "/v1/decisions", content=body, headers={**API, "Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["fail_closed"] is True and r.json()["eligible"] is False
        assert r.json()["decisions"] == [] and needle in r.json()["detail"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "image/png"])
def test_wrong_content_type_is_415_fail_closed(settings_: Settings, ctype: str) -> None:  # noqa: F811
    for c in _clients(settings_):
        r = c.post(
            "/v1/decisions", content=_body([make_record()]), headers={**API, "Content-Type": ctype}
        )
        assert r.status_code == 415
        assert r.json()["fail_closed"] is True and r.json()["decisions"] == []
        assert "application/json" in r.json()["detail"]


def test_json_content_types_are_accepted(settings_: Settings) -> None:  # noqa: F811
    for c in _clients(settings_):
        for ctype in ("application/json", "application/json; charset=utf-8", None):
            headers = {**API, **({"Content-Type": ctype} if ctype else {})}
            r = c.post("/v1/decisions", content=_body([make_record()]), headers=headers)
            assert r.status_code == 200 and r.json()["decisions"][0]["eligible"] is True


def test_body_of_the_wrong_shape_is_422_fail_closed(settings_: Settings) -> None:  # noqa: F811
    for c in _clients(settings_):
        for body in ({"recs": []}, {"records": "x"}, [1, 2], "records"):
            r = c.post("/v1/decisions", json=body, headers=API)
            assert r.status_code == 422 and r.json()["fail_closed"] is True
        assert c.post("/v1/decisions", json={"records": []}, headers=API).status_code == 200
        # the request body is documented in the OpenAPI schema
        spec = c.get("/openapi.json").json()
        body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert body["required"] is True and schema["required"] == ["records"]
        assert schema["properties"]["records"]["type"] == "array"


def _clients(settings_: Settings) -> Any:  # noqa: F811
    app = create_app(
        service_config(settings_), holder=holder_with(reference_loaded()), start_holder=False
    )
    with TestClient(app) as c:
        yield c
