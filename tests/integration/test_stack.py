"""The local stack for real: Prefect, MLflow, Label Studio (and the filter when enabled).

Uses a temporary state dir and free ports. Label Studio's venv is shared between runs:
``$LABELLOOP_LS_VENV`` if set, else ``<repo>/.labelloop/venvs/label-studio`` (the Makefile creates
it; if missing, the first run creates it there, which takes a minute or more).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.stack import (
    PortInUseError,
    Stack,
    UpReport,
    group_members,
    pid_alive,
    port_free,
)
from labelloop.cli_stack import stack_app
from labelloop.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ls_venv() -> Path:
    env = os.environ.get("LABELLOOP_LS_VENV")
    return Path(env) if env else REPO / ".labelloop" / "venvs" / "label-studio"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("stack-state")
    prefect, mlflow, ls, flt = _free_ports(4)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=state,
        host="127.0.0.1",
        prefect_port=prefect,
        mlflow_port=mlflow,
        label_studio_port=ls,
        filter_port=flt,
        ls_venv=_ls_venv(),
        label_studio_token=SecretStr("labelloop-test-token-5f2c9a17e0b34d6a"),
        label_studio_password=SecretStr("labelloop-test-password-81c3"),
        llm_runtime="inprocess",  # no llm service here (tests/model/test_llm_service.py covers it)
    )


@pytest.fixture(scope="module")
def env_for_cli(settings: Settings) -> dict[str, str]:
    return {
        "LABELLOOP_STATE_DIR": str(settings.state),
        "LABELLOOP_ENV": "test",
        "LABELLOOP_HOST": settings.host,
        "LABELLOOP_PREFECT_PORT": str(settings.prefect_port),
        "LABELLOOP_MLFLOW_PORT": str(settings.mlflow_port),
        "LABELLOOP_LABEL_STUDIO_PORT": str(settings.label_studio_port),
        "LABELLOOP_FILTER_PORT": str(settings.filter_port),
        "LABELLOOP_LLM_RUNTIME": "inprocess",
        "LABELLOOP_LABEL_STUDIO_TOKEN": settings.label_studio_token.get_secret_value(),
        "LABELLOOP_LABEL_STUDIO_PASSWORD": settings.label_studio_password.get_secret_value(),
    }


@pytest.fixture(scope="module")
def stack(settings: Settings) -> Iterator[Stack]:
    st = Stack(settings)
    # a stale pid file (dead pid) must be cleaned, not trusted
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    st.pid_file("mlflow").write_text(f"{dead.pid}\n")
    try:
        yield st
    finally:
        st.down()


@pytest.fixture(scope="module")
def up_reports(stack: Stack) -> list[UpReport]:
    t0 = time.monotonic()
    reports = stack.up()
    took = time.monotonic() - t0
    print(f"\nstack up: {took:.1f}s total")
    for r in reports:
        print(f"  {r.name:13s} {r.action:16s} setup {r.prepare_s:5.1f}s  up {r.start_s:5.1f}s")
    return reports


def _expected(settings: Settings) -> set[str]:
    names = {"prefect", "mlflow", "label-studio"}
    return names | {"filter"} if settings.stack_filter_enabled else names


def test_up_starts_everything_healthy(
    settings: Settings, stack: Stack, up_reports: list[UpReport]
) -> None:
    assert {r.name for r in up_reports} == _expected(settings)
    assert all(r.action == "started" for r in up_reports)
    for r in up_reports:
        spec = stack.spec(r.name)
        resp = httpx.get(spec.health_url(settings), timeout=10, trust_env=False)
        assert resp.status_code == 200, (r.name, resp.status_code)
        assert stack.read_pid(r.name) == r.pid
    assert "filter" in stack.names  # the slot exists even when disabled


def test_label_studio_token_works_with_sdk(settings: Settings, up_reports: list[UpReport]) -> None:
    from label_studio_sdk import LabelStudio

    ls = next(r for r in up_reports if r.name == "label-studio")
    client = LabelStudio(base_url=ls.url, api_key=settings.label_studio_token.get_secret_value())
    me = client.users.whoami()
    assert me.email == settings.label_studio_username
    assert list(client.projects.list()) == []


def test_up_is_idempotent(settings: Settings, stack: Stack, up_reports: list[UpReport]) -> None:
    before = {r.name: r.pid for r in up_reports}
    again = stack.up()
    assert {r.name: r.pid for r in again} == before
    assert all(r.action == "already-running" for r in again)
    # a fresh Stack object (a second CLI invocation) finds them through the pid files
    fresh = Stack(settings).up()
    assert {r.name: r.pid for r in fresh} == before


def test_status_and_cli(
    stack: Stack, up_reports: list[UpReport], env_for_cli: dict[str, str], settings: Settings
) -> None:
    by_name = {s.name: s for s in stack.status()}
    for r in up_reports:
        st = by_name[r.name]
        assert (st.pid, st.running, st.healthy) == (r.pid, True, True)
    if not settings.stack_filter_enabled:
        assert not by_name["filter"].running
        assert not by_name["filter"].enabled

    runner = CliRunner()
    with mock.patch.dict(os.environ, env_for_cli):
        res = runner.invoke(stack_app, ["status"])
        assert res.exit_code == 0, res.output
        assert res.output.count("healthy") >= len(up_reports)
        res = runner.invoke(stack_app, ["up", "--only", "mlflow"])
        assert res.exit_code == 0, res.output
        assert "already-running" in res.output
        res = runner.invoke(stack_app, ["logs", "label-studio", "--lines", "20"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(stack_app, ["up", "--only", "nope"])
        assert res.exit_code == 1
        assert "unknown service" in res.output


def test_logs_contain_no_secrets(settings: Settings, up_reports: list[UpReport]) -> None:
    secrets = [
        settings.label_studio_token.get_secret_value(),
        settings.label_studio_password.get_secret_value(),
    ]
    for path in settings.logs_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, path.name
    for path in settings.run_dir.glob("*.pid"):
        assert path.read_text().strip().isdigit()


def test_taken_port_gives_clear_error(
    settings: Settings, up_reports: list[UpReport], tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        other = Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="test",
            state_dir=tmp_path / "other",
            host="127.0.0.1",
            mlflow_port=port,
            prefect_port=_free_ports(1)[0],
        )
        other_stack = Stack(other)
        with pytest.raises(PortInUseError) as err:
            other_stack.up(services=["prefect", "mlflow"])
        assert err.value.service == "mlflow"
        assert err.value.port == port
        assert "mlflow" in str(err.value)
        assert str(port) in str(err.value)
        # nothing was started
        assert not other_stack.pid_file("prefect").exists()
        assert not other_stack.pid_file("mlflow").exists()
        # a port held by *another* stack's service is foreign too
        third = Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="test",
            state_dir=tmp_path / "third",
            host="127.0.0.1",
            prefect_port=settings.prefect_port,
        )
        with pytest.raises(PortInUseError, match=f"prefect: port {settings.prefect_port}"):
            Stack(third).up(services=["prefect"])


def test_down_leaves_nothing_running(
    settings: Settings, stack: Stack, up_reports: list[UpReport]
) -> None:
    pids = {r.name: r.pid for r in up_reports}
    t0 = time.monotonic()
    stopped = stack.down()
    print(f"\nstack down: {time.monotonic() - t0:.1f}s")
    assert set(stopped) == set(pids)
    for name, pid in pids.items():
        assert not pid_alive(pid), name
        assert group_members(pid) == [], name
        assert not stack.pid_file(name).exists()
        assert port_free(settings.host, stack.spec(name).port(settings)), name
    assert not any(s.running or s.healthy for s in stack.status())
    assert stack.down() == []  # idempotent
