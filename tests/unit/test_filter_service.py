"""The filter service and engine without servers: auth, fail-closed paths, contract enforcement,
no sensitive category in responses, batch streaming. The model is the keyword reference model
(the same class that is registered in MLflow by the integration tests), loaded in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from labeling.policy import DEFAULT_POLICY_PATH, load_policy
from labelloop.runtime import service_config
from labelloop.settings import Settings
from targeting.audit import AuditLog, verify
from targeting.batch import filter_file
from targeting.engine import BadInput, FilterEngine
from targeting.holder import LoadedModel, ModelHolder
from targeting.service import create_app
from tests.conftest import make_record
from tests.support.reference_model import KeywordFilterModel

API = {"X-API-Key": "test-api-key-123"}
ADMIN = {"X-API-Key": "test-admin-key-456"}
POLICY = load_policy()


class _Wrapped:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, data: Any) -> Any:
        return self.inner.predict(None, data)


def reference_loaded(version: str = "7", **cfg: Any) -> LoadedModel:
    m = KeywordFilterModel()
    m.load_context(
        SimpleNamespace(artifacts={"policy": str(DEFAULT_POLICY_PATH)}, model_config=cfg)
    )
    return loaded_of(_Wrapped(m), version)


def loaded_of(model: Any, version: str = "7") -> LoadedModel:
    return LoadedModel(
        model=model,
        uri=f"models:/labelloop-targeting-filter/{version}",
        version=version,
        name="labelloop-targeting-filter",
        alias="production",
        run_id="r",
        policy_version=POLICY.version,
        loaded_at=datetime.now(UTC),
    )


def holder_with(loaded: LoadedModel | None) -> ModelHolder:
    h = ModelHolder.empty()
    if loaded is not None:
        h.set_model(loaded)
    return h


def service_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a test filter service: its state under ``tmp_path``, the test keys."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp_path / "state",
        filter_api_key=SecretStr(API["X-API-Key"]),
        filter_admin_key=SecretStr(ADMIN["X-API-Key"]),
        filter_max_batch=8,
        filter_poll_s=0,
        **overrides,
    )


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return service_settings(tmp_path)


def client_for(settings_: Settings, loaded: LoadedModel | None) -> Iterator[TestClient]:
    app = create_app(service_config(settings_), holder=holder_with(loaded), start_holder=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def client(settings_: Settings) -> Iterator[TestClient]:
    yield from client_for(settings_, reference_loaded())


@pytest.fixture
def client_no_model(settings_: Settings) -> Iterator[TestClient]:
    yield from client_for(settings_, None)


def _post(c: TestClient, records: list[Any], headers: dict[str, str] = API) -> Any:
    return c.post("/v1/decisions", json={"records": records}, headers=headers)


SENSITIVE = make_record(
    conversation_id="c-sens",
    turns=[{"role": "user", "text": "Which hiking boots are good after my knee surgery?"}],
    gold={"sensitive": ["health"], "interests": None},
)


# ---------------------------------------------------------------- auth


def test_missing_key_is_401(client: TestClient) -> None:
    r = _post(client, [make_record()], headers={})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "ApiKey"
    assert r.json()["eligible"] is False and r.json()["fail_closed"] is True


def test_wrong_key_is_403(client: TestClient) -> None:
    assert _post(client, [make_record()], headers={"X-API-Key": "nope"}).status_code == 403
    assert client.get("/v1/model", headers={"X-API-Key": "nope"}).status_code == 403
    assert client.get("/v1/model").status_code == 401


def test_admin_and_api_keys_are_separate(client: TestClient) -> None:
    assert _post(client, [make_record()], headers=ADMIN).status_code == 403
    assert client.post("/admin/reload", headers=API).status_code == 403
    assert client.post("/admin/reload").status_code == 401
    # the admin key works on the admin endpoint (no source configured -> 503 with an error)
    r = client.post("/admin/reload", headers=ADMIN)
    assert r.status_code == 503 and r.json()["error"]


def test_equal_keys_are_refused(tmp_path: Path) -> None:
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path,
        filter_api_key=SecretStr("same-key-1"),
        filter_admin_key=SecretStr("same-key-1"),
    )
    with pytest.raises(ValueError, match="must differ"):
        create_app(service_config(s), holder=ModelHolder.empty())


def test_health_docs_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/livez").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/decisions" in spec["paths"] and "/admin/reload" in spec["paths"]


# ---------------------------------------------------------------- decisions


def test_decisions_and_model_info(client: TestClient, settings_: Settings) -> None:
    recs = [
        make_record(conversation_id="c-ok"),
        make_record(conversation_id="c-de", country="DE"),
        make_record(conversation_id="c-unl", account_linked=False),
        make_record(conversation_id="c-old", started_at="2025-01-01T00:00:00Z"),
        SENSITIVE,
    ]
    r = _post(client, recs)
    assert r.status_code == 200
    body = r.json()
    got = {d["conversation_id"]: d for d in body["decisions"]}
    assert [d["conversation_id"] for d in body["decisions"]] == [x["conversation_id"] for x in recs]
    ok = got["c-ok"]
    assert ok["eligible"] is True and ok["excluded_reason"] is None
    assert ok["interests"] == [{"id": "653", "name": "Travel", "score": 0.9}]
    assert ok["model_version"] == "7" and ok["policy_version"] == POLICY.version
    assert got["c-de"]["excluded_reason"] == "region"
    assert got["c-unl"]["excluded_reason"] == "unlinked_account"
    assert got["c-old"]["excluded_reason"] == "before_policy_date"
    assert got["c-sens"]["excluded_reason"] == "sensitive_topic"
    for d in body["decisions"]:
        assert set(d) == {
            "conversation_id",
            "eligible",
            "interests",
            "excluded_reason",
            "model_version",
            "policy_version",
        }
        if not d["eligible"]:
            assert d["interests"] == []
    # the sensitive category never leaves the process ...
    assert "sensitive_category" not in r.text and "health" not in r.text
    # ... but is in the audit log
    entries = [json.loads(x) for x in settings_.decisions_audit_path.read_text().splitlines()]
    assert {e["conversation_id"]: e["sensitive_category"] for e in entries}["c-sens"] == "health"
    assert verify(settings_.decisions_audit_path).ok
    info = client.get("/v1/model", headers=API).json()
    assert info["loaded"] is True and info["version"] == "7" and info["alias"] == "production"
    assert info["policy_version"] == POLICY.version and info["loaded_at"]


def test_no_model_fails_closed(client_no_model: TestClient) -> None:
    r = _post(client_no_model, [make_record(conversation_id=f"c{i}") for i in range(3)])
    assert r.status_code == 200
    for d in r.json()["decisions"]:
        assert d["eligible"] is False and d["interests"] == []
        assert d["excluded_reason"] == "model_unavailable"
    h = client_no_model.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "degraded"
    assert client_no_model.get("/v1/model", headers=API).json()["loaded"] is False


def test_malformed_records_do_not_fail_the_batch(client: TestClient) -> None:
    recs: list[Any] = [
        make_record(conversation_id="good-1"),
        {"conversation_id": "bad-1", "turns": "nope"},
        "not an object",
        make_record(conversation_id="bad-2", started_at="yesterday"),
        make_record(conversation_id="bad-3", turns=[]),
        None,
        make_record(conversation_id="good-2"),
    ]
    r = _post(client, recs)
    assert r.status_code == 200
    ds = r.json()["decisions"]
    assert len(ds) == len(recs)
    assert [d["excluded_reason"] for d in ds] == [
        None,
        "invalid_record",
        "invalid_record",
        "invalid_record",
        "invalid_record",
        "invalid_record",
        None,
    ]
    assert ds[0]["eligible"] and ds[6]["eligible"]
    assert ds[1]["conversation_id"] == "bad-1" and ds[2]["conversation_id"] is None


def test_batch_limit_is_413(client: TestClient) -> None:
    r = _post(client, [make_record(conversation_id=f"c{i}") for i in range(9)])
    assert r.status_code == 413
    assert "exceeds the limit of 8" in r.json()["detail"]
    assert r.json()["decisions"] == [] and r.json()["eligible"] is False


def test_bad_body_is_400_or_422_fail_closed(client: TestClient) -> None:
    r = client.post("/v1/decisions", content=b"{not json", headers=API)
    assert r.status_code == 400 and r.json()["fail_closed"] is True
    r = client.post("/v1/decisions", json={"recs": []}, headers=API)
    assert r.status_code == 422
    r = client.post("/v1/decisions", json={"records": []}, headers=API)
    assert r.status_code == 200 and r.json()["decisions"] == []


def test_body_limit_is_413(tmp_path: Path) -> None:
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path,
        filter_api_key=SecretStr(API["X-API-Key"]),
        filter_admin_key=SecretStr(ADMIN["X-API-Key"]),
        filter_max_body_bytes=2048,
    )
    app = create_app(service_config(s), holder=holder_with(reference_loaded()), start_holder=False)
    with TestClient(app) as c:
        big = make_record(turns=[{"role": "user", "text": "x" * 4000}])
        r = _post(c, [big])
        assert r.status_code == 413 and "filter_max_body_bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:
            yield b'{"records": ['
            for _ in range(10):
                yield json.dumps(make_record()).encode() + b","
            yield b"null]}"

        r = c.post("/v1/decisions", content=chunks(), headers=API)
        assert r.status_code == 413
        assert _post(c, [make_record()]).status_code == 200


def test_concurrent_requests_are_coalesced(settings_: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(
        service_config(settings_), holder=holder_with(reference_loaded()), start_holder=False
    )
    with TestClient(app) as c, ThreadPoolExecutor(16) as pool:

        def one(i: int) -> Any:
            recs = [make_record(conversation_id=f"r{i}-{k}") for k in range(1 + i % 3)]
            return recs, _post(c, recs)

        results = list(pool.map(one, range(64)))
    for recs, r in results:
        assert r.status_code == 200
        ds = r.json()["decisions"]
        assert [d["conversation_id"] for d in ds] == [x["conversation_id"] for x in recs]
        assert len({d["model_version"] for d in ds}) == 1
    assert app.state.batcher.calls <= 64
    audit = [json.loads(x) for x in settings_.decisions_audit_path.read_text().splitlines()]
    assert len(audit) == sum(len(recs) for recs, _ in results)
    by_req: dict[str, list[str]] = {}
    for e in audit:
        by_req.setdefault(e["request_id"], []).append(e["conversation_id"])
    assert sorted(map(tuple, by_req.values())) == sorted(
        tuple(d["conversation_id"] for d in r.json()["decisions"]) for _, r in results
    )


def test_scoring_error_fails_closed_for_that_record_only(settings_: Settings) -> None:
    for c in client_for(settings_, reference_loaded(fail_on="c-boom")):
        recs = [make_record(conversation_id=x) for x in ("c-1", "c-boom", "c-3")]
        ds = _post(c, recs).json()["decisions"]
        assert [d["excluded_reason"] for d in ds] == [None, "model_unavailable", None]


def test_unexpected_error_is_never_a_bare_500(settings_: Settings) -> None:
    app = create_app(
        service_config(settings_), holder=holder_with(reference_loaded()), start_holder=False
    )

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    app.state.engine.decide_groups = broken
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post(c, [make_record()])
    assert r.status_code == 503
    assert r.json()["fail_closed"] is True and r.json()["eligible"] is False


class _Adversarial:
    """A broken model: says eligible to everything, with interests, in many bad ways."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def predict(self, data: list[dict[str, Any]]) -> Any:
        out = []
        for r in data:
            d: dict[str, Any] = {
                "conversation_id": r["conversation_id"],
                "eligible": True,
                "interests": [{"id": "653", "name": "Travel", "score": 0.8}],
                "excluded_reason": None,
                "sensitive_category": None,
            }
            if self.mode == "category":
                d["sensitive_category"] = "health"
            elif self.mode == "string-bool":
                d["eligible"] = "yes"
            elif self.mode == "reason":
                d["excluded_reason"] = "region"
            elif self.mode == "bad-reason":
                d["excluded_reason"] = "nope"
            elif self.mode == "bad-score":
                d["interests"] = [{"id": "653", "score": 7}]
            elif self.mode == "other-id":
                d["conversation_id"] = "someone-else"
            out.append(d)
        if self.mode == "short":
            return out[:-1]
        if self.mode == "not-a-list":
            return {"x": 1}
        return out


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("category", "sensitive_topic"),
        ("string-bool", "model_unavailable"),
        ("reason", "region"),
        ("bad-reason", "model_unavailable"),
        ("bad-score", "model_unavailable"),
        ("other-id", "model_unavailable"),
        ("short", "model_unavailable"),
        ("not-a-list", "model_unavailable"),
    ],
)
def test_model_contract_is_enforced(mode: str, reason: str) -> None:
    engine = FilterEngine(holder_with(loaded_of(_Adversarial(mode))), POLICY, None)
    ds = engine.decide([make_record(conversation_id="a"), make_record(conversation_id="b")])
    for d in ds:
        assert d.eligible is False and d.interests == [] and d.excluded_reason == reason
        assert "sensitive_category" not in d.public()


EXCLUDED = sorted(POLICY.excluded_countries)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    country=st.sampled_from(EXCLUDED),
    category=st.sampled_from(list(POLICY.categories)),
    linked=st.booleans(),
    mode=st.sampled_from(["ok", "category"]),
)
def test_property_excluded_never_eligible(
    country: str, category: str, linked: bool, mode: str
) -> None:
    """Even a model that says 'eligible' to everything cannot target an excluded country, and a
    record the model calls sensitive never gets eligible=true or an interest."""
    engine = FilterEngine(holder_with(loaded_of(_Adversarial(mode))), POLICY, None)
    recs = [
        make_record(conversation_id="x", country=country.lower(), account_linked=linked),
        make_record(conversation_id="s", gold={"sensitive": [category], "interests": None}),
    ]
    d_country, d_sens = engine.decide(recs)
    assert d_country.eligible is False and d_country.interests == []
    assert d_country.excluded_reason == "region"
    if mode == "category":
        assert d_sens.eligible is False and d_sens.interests == []
        assert "sensitive_category" not in json.dumps(d_sens.public())
        assert "health" not in json.dumps(d_sens.public())


# ---------------------------------------------------------------- batch


def test_filter_file_streams_and_quarantines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    with src.open("w") as fh:
        for i in range(25):
            fh.write(json.dumps(make_record(conversation_id=f"c{i}")) + "\n")
        fh.write("{broken json\n\n")
        fh.write(json.dumps({"conversation_id": "half"}) + "\n")
        fh.write(json.dumps(SENSITIVE) + "\n")
    sizes: list[int] = []

    class Spy(FilterEngine):
        def decide(self, items: Any, **kw: Any) -> Any:
            sizes.append(len(items))
            return super().decide(items, **kw)

    audit = tmp_path / "audit.jsonl"
    engine = Spy(holder_with(reference_loaded()), POLICY, AuditLog(audit))
    out = tmp_path / "out" / "decisions.jsonl"
    q = tmp_path / "q.jsonl"
    progress: list[tuple[int, int]] = []
    rep = filter_file(
        engine,
        src,
        out,
        chunk_size=10,
        quarantine_path=q,
        on_progress=lambda b, n: progress.append((b, n)),
    )
    assert max(sizes) <= 10 and sum(sizes) == 28
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 28 and rep.stats.records == 28
    assert sum(d["eligible"] for d in lines) == 25
    assert lines[25]["excluded_reason"] == "invalid_record" and lines[25]["conversation_id"] is None
    assert lines[26]["conversation_id"] == "half"
    assert lines[27]["excluded_reason"] == "sensitive_topic"
    assert "sensitive_category" not in out.read_text() and "health" not in out.read_text()
    quarantined = [json.loads(x) for x in q.read_text().splitlines()]
    assert [x["line"] for x in quarantined] == [26, 28] and rep.quarantined == 2
    assert "not valid JSON" in quarantined[0]["reason"]
    assert progress[-1] == (src.stat().st_size, 28)
    assert not out.with_name("decisions.jsonl.partial").exists()
    assert verify(audit).n == 28


def test_bad_input_item(tmp_path: Path) -> None:
    engine = FilterEngine(holder_with(reference_loaded()), POLICY, None)
    (d,) = engine.decide([BadInput("line 3: not valid JSON")])
    assert d.excluded_reason == "invalid_record" and not d.eligible


# ---------------------------------------------------------------- model holder


class _FakeRegistry:
    def __init__(self) -> None:
        self.version = "1"
        self.fail_load = False
        self.loads = 0

    def resolve(self) -> Any:
        from targeting.holder import ResolvedVersion

        return ResolvedVersion(uri=f"models:/m/{self.version}", version=self.version, name="m")

    def load(self, rv: Any) -> LoadedModel:
        self.loads += 1
        if self.fail_load:
            raise RuntimeError("artifact store down")
        import dataclasses

        loaded = reference_loaded(rv.version, score=0.5 + int(rv.version) / 10)
        return dataclasses.replace(loaded, uri=rv.uri)


def test_holder_swaps_only_on_change_and_keeps_old_on_failure() -> None:
    reg = _FakeRegistry()
    h = ModelHolder(resolver=reg.resolve, loader=reg.load, poll_s=0)
    assert h.current is None
    r = h.refresh()
    assert r.changed and r.version == "1" and h.current is not None
    first = h.current
    assert not h.refresh().changed and reg.loads == 1  # same version: no reload
    assert h.refresh(force=True).changed and reg.loads == 2
    reg.version, reg.fail_load = "2", True
    r = h.refresh()
    assert not r.changed and r.error and "artifact store down" in r.error
    assert h.current is not None and h.current.version == "1"  # still serving
    reg.fail_load = False
    assert h.refresh().version == "2" and h.current.version == "2"
    # a request that took the old reference still decides with the old model
    engine = FilterEngine(holder_with(first), POLICY, None)
    assert engine.decide([make_record()])[0].model_version == "1"


def test_holder_poller_follows_changes() -> None:
    import time

    reg = _FakeRegistry()
    h = ModelHolder(resolver=reg.resolve, loader=reg.load, poll_s=0.05)
    h.start()
    try:
        assert h.wait_loaded(5)
        reg.version = "3"
        deadline = time.monotonic() + 5
        while h.current is not None and h.current.version != "3":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        h.stop()


def test_parse_model_uri() -> None:
    from targeting.holder import parse_model_uri

    assert parse_model_uri("models:/labelloop-targeting-filter@production") == (
        "labelloop-targeting-filter",
        "production",
    )
    assert parse_model_uri("models:/labelloop-targeting-filter/3") is None
    assert parse_model_uri("runs:/abc/model") is None
