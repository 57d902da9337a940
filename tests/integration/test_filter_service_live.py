"""The filter service against a real MLflow server and a real uvicorn process.

A session-scoped MLflow server (sqlite + served artifacts in a tmp dir) holds the keyword
reference model (tests.support.reference_model) registered as ``labelloop-targeting-filter``; versions
differ by the interest score they give (v1: 0.61, v2: 0.72), so a response shows which model
object made it, not only the version label stamped on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from labelloop.runtime import service_config
from labelloop.settings import Settings
from targeting.audit import verify
from targeting.holder import ModelHolder
from targeting.service import create_app
from tests.conftest import make_record
from tests.support.reference_model import log_reference_model

pytestmark = pytest.mark.integration

NAME = "labelloop-targeting-filter"
API_KEY = "it-api-key-0123456789"
ADMIN_KEY = "it-admin-key-9876543210"
SCORES = {"1": 0.61, "2": 0.72}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float, ok: tuple[int, ...]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not up after {timeout}s")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELLOOP_", "MLFLOW_"))}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    env["MLFLOW_ENABLE_TELEMETRY"] = "false"
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started (mlflow server forks workers), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server (sqlite registry) started by the local stack's own service code."""
    from infra.stack import Stack
    from labelloop.settings import Settings

    state = tmp_path_factory.mktemp("mlflow-state")
    settings = Settings(
        _env_file=None, env="test", state_dir=state, host="127.0.0.1", mlflow_port=_free_port()
    )  # type: ignore[call-arg]
    stack = Stack(settings)
    try:
        stack.up(services=["mlflow"])
        yield settings.mlflow_uri
    finally:
        stack.down(services=["mlflow"])


@pytest.fixture(scope="session")
def versions(mlflow_uri: str) -> dict[str, str]:
    """v1 (score 0.61) at @production, v2 (score 0.72) registered without an alias."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    v1 = log_reference_model(mlflow_uri, score=SCORES["1"], tag="v1", alias="production")
    v2 = log_reference_model(mlflow_uri, score=SCORES["2"], tag="v2")
    assert (v1, v2) == ("1", "2")
    return {"v1": v1, "v2": v2}


def _settings(tmp: Path, mlflow_uri: str, **kw: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp,
        mlflow_tracking_uri=mlflow_uri,
        filter_api_key=SecretStr(API_KEY),
        filter_admin_key=SecretStr(ADMIN_KEY),
        **kw,
    )


def _set_alias(mlflow_uri: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(mlflow_uri, mlflow_uri).set_registered_model_alias(NAME, "production", version)


@dataclass
class Served:
    url: str
    state: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(
    mlflow_uri: str, versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The real service: ``uvicorn labelloop.serving:app`` in its own process."""
    state = tmp_path_factory.mktemp("filter-state")
    port = _free_port()
    env = _clean_env(
        LABELLOOP_ENV="test",
        LABELLOOP_STATE_DIR=str(state),
        LABELLOOP_MLFLOW_TRACKING_URI=mlflow_uri,
        LABELLOOP_FILTER_API_KEY=API_KEY,
        LABELLOOP_FILTER_ADMIN_KEY=ADMIN_KEY,
        LABELLOOP_FILTER_POLL_S="3600",  # reloads in this module come from /admin/reload only
    )
    log = (state / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "labelloop.serving:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=state,  # not the repo: the installed package must be importable from anywhere
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/livez", proc, 60, (200,))
        _wait_http(f"{url}/healthz", proc, 60, (200,))
        yield Served(url, state, proc)
    finally:
        _stop(proc)
        log.close()


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [make_record(conversation_id=f"c-{start + i}") for i in range(n)]


def test_service_serves_production_version(served: Served, mlflow_uri: str) -> None:
    _set_alias(mlflow_uri, "1")
    r = httpx.post(f"{served.url}/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    assert r.status_code == 200, r.text
    info = httpx.get(f"{served.url}/v1/model", headers={"X-API-Key": API_KEY}).json()
    assert info["name"] == NAME and info["version"] == "1" and info["alias"] == "production"
    assert info["policy_version"] and info["loaded_at"]
    sens = make_record(
        conversation_id="c-s", turns=[{"role": "user", "text": "boots after my knee surgery?"}]
    )
    r = httpx.post(
        f"{served.url}/v1/decisions",
        json={"records": [*_records(2), sens]},
        headers={"X-API-Key": API_KEY},
    )
    assert r.status_code == 200
    ds = r.json()["decisions"]
    assert [d["eligible"] for d in ds] == [True, True, False]
    assert ds[0]["interests"][0]["score"] == SCORES["1"] and ds[0]["model_version"] == "1"
    assert ds[2]["excluded_reason"] == "sensitive_topic"
    assert "sensitive_category" not in r.text and "health" not in r.text
    assert httpx.post(f"{served.url}/v1/decisions", json={"records": []}).status_code == 401
    assert (
        httpx.post(
            f"{served.url}/v1/decisions", json={"records": []}, headers={"X-API-Key": "wrong"}
        ).status_code
        == 403
    )


def test_reload_under_load_drops_nothing(served: Served, mlflow_uri: str) -> None:
    _set_alias(mlflow_uri, "1")
    httpx.post(f"{served.url}/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    stop = threading.Event()
    results: list[tuple[float, int, set[str], set[float], str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": API_KEY}, timeout=30) as c:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.post(
                        "/v1/decisions", json={"records": _records(1 + i % 3, worker * 10_000 + i)}
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                i += 1
                ds = r.json().get("decisions", []) if r.status_code == 200 else []
                with lock:
                    results.append(
                        (
                            sent,
                            r.status_code,
                            {d["model_version"] for d in ds},
                            {it["score"] for d in ds for it in d["interests"]},
                            r.text[:200] if r.status_code != 200 else "",
                        )
                    )

    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(hammer, w) for w in range(8)]
        time.sleep(1.0)
        _set_alias(mlflow_uri, "2")  # move the alias while requests are in flight
        time.sleep(0.3)
        r = httpx.post(f"{served.url}/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=120)
        reloaded_at = time.monotonic()
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["version"] == "2"
        time.sleep(1.0)
        stop.set()
        for f in futs:
            f.result()

    assert not errors, errors[:5]
    assert len(results) > 50
    bad = [x for x in results if x[1] != 200]
    assert not bad, bad[:5]
    seen_versions: set[str] = set()
    for _, _, vs, scores, _ in results:
        assert len(vs) == 1, vs  # one request never mixes versions
        v = next(iter(vs))
        assert v in ("1", "2")
        assert scores == {SCORES[v]}  # the label matches the model object that decided
        seen_versions.add(v)
    assert seen_versions == {"1", "2"}
    after = [x for x in results if x[0] > reloaded_at]
    assert after and all(x[2] == {"2"} for x in after)
    # every decision was audited, in one valid chain
    res = verify(served.state / "audit" / "decisions.jsonl")
    assert res.ok, res
    assert res.n >= sum(1 for _ in results)


def test_poller_follows_the_alias(
    mlflow_uri: str, versions: dict[str, str], tmp_path: Path
) -> None:
    _set_alias(mlflow_uri, "1")
    s = _settings(tmp_path, mlflow_uri, filter_poll_s=0.5)
    app = create_app(service_config(s))
    with TestClient(app) as c:
        holder: ModelHolder = app.state.holder
        assert holder.wait_loaded(60)
        assert c.get("/healthz").json()["model_version"] == "1"
        _set_alias(mlflow_uri, "2")
        deadline = time.monotonic() + 60
        while holder.current is not None and holder.current.version != "2":
            assert time.monotonic() < deadline, holder.last_error
            time.sleep(0.1)
        r = c.post("/v1/decisions", json={"records": _records(1)}, headers={"X-API-Key": API_KEY})
        assert r.json()["decisions"][0]["interests"][0]["score"] == SCORES["2"]
    _set_alias(mlflow_uri, "1")


def test_unregistered_model_fails_closed(mlflow_uri: str, tmp_path: Path) -> None:
    s = _settings(tmp_path, mlflow_uri, filter_model_name="no-such-model", filter_poll_s=0)
    app = create_app(service_config(s))
    with TestClient(app) as c:
        holder: ModelHolder = app.state.holder
        deadline = time.monotonic() + 30
        while holder.last_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder.current is None and holder.last_error
        assert c.get("/healthz").status_code == 503
        r = c.post("/v1/decisions", json={"records": _records(3)}, headers={"X-API-Key": API_KEY})
        assert r.status_code == 200
        assert {d["excluded_reason"] for d in r.json()["decisions"]} == {"model_unavailable"}
        assert not any(d["eligible"] for d in r.json()["decisions"])


def test_batch_filter_cli(
    mlflow_uri: str, versions: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from labelloop.cli_filter import register

    for k in list(os.environ):
        if k.startswith("LABELLOOP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LABELLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABELLOOP_MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.jsonl"
    with src.open("w") as fh:
        for i in range(600):
            rec = make_record(conversation_id=f"b-{i}")
            if i % 100 == 7:
                rec["country"] = "FR"
            fh.write(json.dumps(rec) + "\n")
        fh.write("{oops\n")
    app = typer.Typer()
    audit_app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    register(app, audit_app)
    out = tmp_path / "decisions.jsonl"
    res = CliRunner().invoke(
        app,
        [
            "filter",
            "--input",
            str(src),
            "--output",
            str(out),
            "--chunk-size",
            "64",
            "--model-uri",
            f"models:/{NAME}/2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 601
    assert sum(r["eligible"] for r in rows) == 594
    assert {r["model_version"] for r in rows} == {"2"}
    assert rows[-1]["excluded_reason"] == "invalid_record"
    assert all("sensitive_category" not in r for r in rows)
    res = CliRunner().invoke(app, ["audit", "verify-decisions"])
    assert res.exit_code == 0 and "601 entries" in " ".join(res.output.split())
    # a model that cannot be loaded: clear error, no output
    res = CliRunner().invoke(
        app,
        [
            "filter",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "x.jsonl"),
            "--model-uri",
            "models:/no-such-model/1",
        ],
    )
    assert res.exit_code == 2 and not (tmp_path / "x.jsonl").exists()
