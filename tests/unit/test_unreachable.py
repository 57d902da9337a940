"""A server that cannot be reached is named, with how to start it; clients retry first."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelloop.settings import Settings
from labelloop.unreachable import unreachable_service


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path, **kw)  # type: ignore[call-arg]


def _connect_error(url: str) -> httpx.ConnectError:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError as exc:
        return exc
    raise AssertionError(f"{url} answered")


def test_connection_errors_are_named_by_address(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        mlflow_port=_closed_port(),
        label_studio_port=_closed_port(),
        prefect_port=_closed_port(),
        filter_port=_closed_port(),
    )
    for name, url in (
        ("Label Studio", f"{s.label_studio}/api/projects/"),
        ("Prefect", f"{s.prefect_api}/health"),
        ("the filter service", f"{s.filter_url}/admin/reload"),
    ):
        try:
            raise RuntimeError("push failed") from _connect_error(url)
        except RuntimeError as exc:
            found = unreachable_service(exc, s)
        assert found is not None and found.service == name, (name, found)
        assert "labelloop stack up" in found.message and found.url in found.message
    # MLflow wraps urllib3's error in a message that quotes the address
    from mlflow.exceptions import MlflowException

    mlflow_err = MlflowException(
        f"API request to {s.mlflow_uri}/api/2.0/mlflow/registered-models/get failed with "
        "exception HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded with url"
    )
    found = unreachable_service(mlflow_err, s)
    assert found is not None and found.service == "MLflow"


def test_other_errors_are_left_alone(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert unreachable_service(ValueError("bad value"), s) is None
    assert unreachable_service(KeyError("x"), s) is None


def test_cli_names_an_unreachable_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """`models list` used to print an empty table (no versions) when MLflow was down."""
    from typer.testing import CliRunner

    from labelloop.cli import UNREACHABLE_EXIT, app

    port = _closed_port()
    monkeypatch.setenv("LABELLOOP_MLFLOW_PORT", str(port))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    res = CliRunner().invoke(app, ["models", "list"])
    assert res.exit_code == UNREACHABLE_EXIT, res.output
    assert "MLflow is not reachable" in res.output and f"127.0.0.1:{port}" in res.output
    assert "labelloop stack up" in res.output and "Traceback" not in res.output


def test_label_studio_client_retries_until_the_server_is_up(tmp_path: Path) -> None:
    """A Label Studio that comes up ~1 s late (a restart) is reached, not an error (the SDK
    retries connection errors with exponential backoff)."""
    from labeling.studio import StudioClient

    port = _closed_port()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"count": 0, "next": None, "previous": None, "results": []})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *_: Any) -> None:
            pass

    server: list[http.server.HTTPServer] = []

    def start_late() -> None:
        time.sleep(1.0)
        server.append(http.server.HTTPServer(("127.0.0.1", port), Handler))
        server[0].serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        client = StudioClient(f"http://127.0.0.1:{port}", "token", timeout_s=10)
        assert client.find_project("nope") is None
    finally:
        while not server:
            time.sleep(0.05)
        server[0].shutdown()
