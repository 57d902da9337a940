"""Credentials in configured URIs never appear in responses, logs, CLI output or artifacts."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labelloop.settings import Settings

SECRET = "s3cr3t-pw"
TOKEN = "tok-9f8e7d"
# a tracking server that refuses connections at once (port 9: discard)
LEAKY_URI = f"http://alice:{SECRET}@127.0.0.1:9/?token={TOKEN}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"http://alice:{SECRET}@host:5000/x", "http://***@host:5000/x"),
        (f"https://{TOKEN}@github.com/o/r.git", "https://***@github.com/o/r.git"),
        (f"postgresql+psycopg://u:{SECRET}@db:5432/ls", "postgresql+psycopg://***@db:5432/ls"),
        (f"http://u:p@ss{SECRET}@h/p", "http://***@h/p"),
        (f"s3://b/k?X-Amz-Signature={TOKEN}&x=1", "s3://b/k?X-Amz-Signature=***&x=1"),
        (f"http://h/?access_token={TOKEN}#f", "http://h/?access_token=***#f"),
        (f"https://h/p?sv=1&sig={TOKEN}", "https://h/p?sv=1&sig=***"),
        (f"error talking to http://a:{SECRET}@h:1/api: refused", "error talking to http://***@h:1/api: refused"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("models:/labelloop-targeting-filter@production", "models:/labelloop-targeting-filter@production"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("mail me at jo@example.com", "mail me at jo@example.com"),
    ],
)  # fmt: skip
def test_without_credentials(text: str, expected: str) -> None:
    from labelloop.safe_text import without_credentials

    assert without_credentials(text) == expected


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp_path / "state",
        filter_api_key=SecretStr("test-api-key-123"),
        filter_admin_key=SecretStr("test-admin-key-456"),
        filter_poll_s=0,
        mlflow_tracking_uri=LEAKY_URI,
    )


@pytest.fixture
def captured_logs() -> Any:
    """Everything logged anywhere (root and mlflow's own non-propagating logger)."""
    from labelloop.safe_text import install_log_redaction

    install_log_redaction()  # what the CLI, the service and the flows do at start
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("mlflow"), logging.getLogger("uvicorn")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield buf
    for lg, lvl in zip(loggers, old, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(lvl)


def test_service_never_shows_or_logs_the_tracking_credentials(
    tmp_path: Path, captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    from labelloop.runtime import service_config
    from targeting.service import create_app

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    s = _settings(tmp_path)
    app = create_app(service_config(s), start_holder=False)
    app.state.holder.refresh()  # the load fails: last_error and the logs mention the server
    assert app.state.holder.last_error
    with TestClient(app) as c:
        bodies = [
            c.get("/healthz").text,
            c.get("/v1/model", headers={"X-API-Key": "test-api-key-123"}).text,
            c.post("/admin/reload", headers={"X-API-Key": "test-admin-key-456"}).text,
        ]
    assert "127.0.0.1:9" in bodies[1]  # the source is still shown, without its credentials
    logging.getLogger("mlflow.tracking").info("View run x at: %s/#/experiments/1", LEAKY_URI)
    try:
        raise ConnectionError(f"cannot reach {LEAKY_URI}")
    except ConnectionError:
        logging.getLogger("labelloop.test").exception("failed")
    out, errs = capfd.readouterr()
    everything = "\n".join([*bodies, captured_logs.getvalue(), out, errs])
    assert "127.0.0.1:9" in captured_logs.getvalue()
    assert SECRET not in everything and TOKEN not in everything


def test_cli_output_and_flow_artifacts_hide_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    from typer.testing import CliRunner

    from experiments.registry import run_url
    from flows.common import publish
    from labelloop.cli import app

    monkeypatch.setenv("LABELLOOP_MLFLOW_TRACKING_URI", LEAKY_URI)
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", f"sqlite:///{tmp_path}/x.db?password={SECRET}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["filter", "-i", str(src), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "cannot load the filter model" in res.output
    res2 = runner.invoke(app, ["store", "init"])
    assert res2.exit_code == 0, res2.output
    for text in (res.output, res2.output):
        assert SECRET not in text and TOKEN not in text
    assert SECRET not in run_url(LEAKY_URI, "1", "abc")
    body = publish("k", "t", {"Model": f"loaded from {LEAKY_URI}"})
    assert SECRET not in body and TOKEN not in body and "127.0.0.1:9" in body


def test_stack_messages_hide_uri_credentials(tmp_path: Path) -> None:
    from infra.stack import Stack

    s = _settings(tmp_path)
    text = Stack(s).redact(f"mlflow: backend {LEAKY_URI} failed; key test-api-key-123")
    assert SECRET not in text and TOKEN not in text and "test-api-key-123" not in text
