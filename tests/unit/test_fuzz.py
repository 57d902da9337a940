"""Property-based fuzzing of everything that reads untrusted input: the record reader, the batch
filter and ``POST /v1/decisions``. Whatever arrives: no crash, one outcome per input, and nothing
is eligible unless it is a valid record that the policy admits."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from labeling.records import (
    Conversation,
    QuarantinedRecord,
    QuarantineWriter,
    ReadStats,
    parse_record,
    read_records,
)
from labelloop.runtime import service_config
from labelloop.settings import Settings
from targeting.audit import AuditLog, verify
from targeting.batch import filter_file
from targeting.engine import FilterEngine
from targeting.service import create_app
from tests.conftest import make_record
from tests.unit.test_filter_service import POLICY, holder_with, reference_loaded

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- strategies ----
texts = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: a + "\ud800" + b, st.text(max_size=10), st.text(max_size=10)),
    st.sampled_from(["", " ", "ß", "US", "us", "2026-02-03T10:15:00Z", "9999-12-31T23:59:59Z"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["conversation_id", "account_id", "surface", "country", "account_linked", "started_at",
          "turns", "gold"]  # fmt: skip


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with some fields replaced, dropped or added."""
    cid = draw(st.one_of(st.text(min_size=1, max_size=12), texts))
    rec: dict[str, Any] = make_record(conversation_id=cid)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "turn"]))
        name = draw(st.sampled_from(FIELDS))
        if action == "replace":
            rec[name] = draw(json_values)
        elif action == "drop":
            rec.pop(name, None)
        elif action == "add":
            rec[draw(texts)] = draw(json_values)
        elif isinstance(rec.get("turns"), list) and rec["turns"]:
            turn = dict(rec["turns"][0]) if isinstance(rec["turns"][0], dict) else {}
            turn[draw(st.sampled_from(["role", "text", "modality", "extra"]))] = draw(json_values)
            rec["turns"] = [turn, *rec["turns"][1:]]
    return rec


def _dump(v: Any) -> bytes:
    return json.dumps(v).encode("ascii")  # ensure_ascii: lone surrogates travel escaped


hostile_lines = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dump),
    mutated_records().map(_dump),
    st.integers(1, 6000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(4301, 6000).map(lambda n: b'{"conversation_id": "n", "x": ' + b"7" * n + b"}"),
)


def _admissible(obj: Any) -> bool:
    """An eligible decision is allowed only for a valid record that passes the policy gate."""
    rec = parse_record(obj, source="t", line=1, raw="")
    return isinstance(rec, Conversation) and POLICY.check(rec).eligible


def _decoded(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


# ---- the record reader ----
@FUZZ
@given(lines=st.lists(hostile_lines, max_size=8))
def test_reader_never_crashes(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        stats = ReadStats()
        with QuarantineWriter(Path(d) / "q.jsonl") as qw:
            items = list(read_records([path], stats=stats))
            for it in items:
                if isinstance(it, QuarantinedRecord):
                    qw.write(it)
                    it.describe()
                else:
                    assert isinstance(it, Conversation)
                    it.content_hash()  # hashing the text works: it is valid Unicode
        assert stats.read == len(items) == stats.valid + stats.quarantined
        if qw.count:
            (Path(d) / "q.jsonl").read_bytes().decode("utf-8")


@FUZZ
@given(obj=st.one_of(json_values, mutated_records()))
def test_parse_record_never_raises(obj: Any) -> None:
    res = parse_record(obj, source="t", line=1, raw="")
    assert isinstance(res, Conversation | QuarantinedRecord)
    json.loads(res.to_json()) if isinstance(res, QuarantinedRecord) else res.content_hash()


# ---- the batch filter ----
@FUZZ
@given(lines=st.lists(hostile_lines, min_size=1, max_size=8))
def test_batch_filter_never_crashes_and_never_admits_what_it_should_not(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        src, out, audit = Path(d) / "in.jsonl", Path(d) / "out.jsonl", Path(d) / "a.jsonl"
        src.write_bytes(b"\n".join(lines) + b"\n")
        engine = FilterEngine(holder_with(_loaded()), POLICY, AuditLog(audit))
        rep = filter_file(engine, src, out, chunk_size=3, quarantine_path=Path(d) / "q.jsonl")
        engine.audit.close()  # type: ignore[union-attr]
        # JSONL is split on "\n" only (str.splitlines would also split on U+0085, U+2028...)
        raw = out.read_bytes().decode("utf-8")
        decisions = [json.loads(x) for x in raw.split("\n") if x]
        nonblank = [ln for ln in b"\n".join(lines).split(b"\n") if ln.strip()]
        assert len(decisions) == len(nonblank) == rep.stats.records
        for line, d in zip(nonblank, decisions, strict=True):
            if d["eligible"]:
                assert _admissible(_decoded(line)), line[:200]
            else:
                assert d["interests"] == []
        assert verify(audit).ok and verify(audit).n == len(decisions)


# ---- POST /v1/decisions ----
@functools.cache
def _loaded() -> Any:
    return reference_loaded()


@functools.cache
def _client() -> TestClient:
    state = Path(tempfile.mkdtemp(prefix="fuzz-filter-"))
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=state,
        filter_api_key=SecretStr("fuzz-api-key-1"),
        filter_admin_key=SecretStr("fuzz-admin-key-2"),
        filter_max_batch=16,
        filter_poll_s=0,
    )
    app = create_app(service_config(s), holder=holder_with(_loaded()), start_holder=False)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()  # lifespan started once for all examples (closed with the process)
    return client


def _check_response(r: Any, records: list[Any] | None) -> None:
    assert r.status_code in (200, 400, 413, 415, 422), (r.status_code, r.text[:300])
    body = r.json()
    if r.status_code != 200:
        assert body["fail_closed"] is True and body["eligible"] is False
        assert body["decisions"] == []
        return
    assert records is not None and len(body["decisions"]) == len(records)
    for rec, d in zip(records, body["decisions"], strict=True):
        if d["eligible"]:
            assert _admissible(rec)
        else:
            assert d["interests"] == []


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), hostile_lines))
def test_decisions_endpoint_survives_arbitrary_bodies(body: bytes) -> None:
    r = _client().post(
        "/v1/decisions",
        content=body,
        headers={"X-API-Key": "fuzz-api-key-1", "Content-Type": "application/json"},
    )
    obj = _decoded(body)
    records = obj.get("records") if isinstance(obj, dict) else None
    _check_response(r, records if isinstance(records, list) else None)


@FUZZ
@given(records=st.lists(st.one_of(json_values, mutated_records()), max_size=6))
def test_decisions_endpoint_survives_arbitrary_records(records: list[Any]) -> None:
    r = _client().post(
        "/v1/decisions",
        content=_dump({"records": records}),
        headers={"X-API-Key": "fuzz-api-key-1", "Content-Type": "application/json"},
    )
    _check_response(r, records)
