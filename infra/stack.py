"""The local stack of real servers: Prefect, MLflow, Label Studio, the local LLM and (optionally)
the filter.

Each service is a :class:`ServiceSpec` (data, no behaviour of its own) in :data:`SERVICES`;
:class:`Stack` starts each one as its own process group (``start_new_session=True``), with
stdout/stderr appended to ``<logs_dir>/<name>.log`` and its pid in ``<run_dir>/<name>.pid``,
and health-checks it over HTTP.

Rules (see ``infra/README.md``):

* ``up`` is idempotent: a service whose pid file names a live process of ours is left alone
  (if it is still booting, ``up`` waits for it); a stale pid file is removed (and any orphaned
  member of its process group is stopped). Before anything starts, every port that we would
  bind is checked with a socket bind test; a port held by something that is not ours raises
  :class:`PortInUseError` naming the service and the port, and nothing is started.
* Services start in parallel; ``up`` waits for every health endpoint up to a timeout.
* ``down`` stops only what ``up`` started, found through the pid files: SIGTERM to the process
  group, a grace period (``stack_stop_timeout_s``), then SIGKILL; the pid file is removed.
* "Ours" is checked through a marker in the process environment
  (``LABELLOOP_STACK_SERVICE=<name>@<state dir>``, read from ``/proc/<pid>/environ`` on Linux),
  so a pid recycled by an unrelated process is never signalled.
* The filter service is started only when ``LABELLOOP_STACK_FILTER_ENABLED=true`` or when it
  is named explicitly (``up(services=["filter"])`` / ``stack up --only filter``).
* Label Studio runs from its own venv (``ls_venv``, default ``<state>/venvs/label-studio``),
  created with ``uv`` on first use because ``label-studio`` pins conflict with the app's.
* Secrets travel only through child environments, never through command lines, and
  :meth:`Stack.tail_log` redacts them.

Nothing here does I/O at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from pydantic import SecretStr

from labelloop.safe_text import without_credentials
from labelloop.settings import Settings

MARKER_ENV = "LABELLOOP_STACK_SERVICE"
MIN_LS_TOKEN_CHARS = 6  # label-studio ignores (and prints!) tokens of 5 characters or fewer
_POLL_S = 0.5
_KILL_WAIT_S = 5.0
_VENV_INSTALL_TIMEOUT_S = 1800.0

# Inherited variables that would leak into / confuse a child process.
_DROP_ALWAYS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "CONDA_PREFIX")
# label-studio's get_env() falls back to these unprefixed names.
_DROP_FOR_LS = ("HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DJANGO_DB", "DATABASE_NAME")


class StackError(RuntimeError):
    """Any failure of the local stack; its message is safe to print (no secrets)."""


class UnknownServiceError(StackError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown service {name!r}; known: {', '.join(known)}")
        self.name = name


class PortInUseError(StackError):
    """The port a service must bind is held by a process that this stack did not start."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__(
            f"cannot start {service}: port {port} on {host} is already in use by another process "
            f"(not started by `labelloop stack`). Stop that process or choose another port "
            f"(LABELLOOP_{service.upper().replace('-', '_')}_PORT)."
        )
        self.service = service
        self.host = host
        self.port = port


class ServiceStartError(StackError):
    """A service did not become healthy (exited early or timed out)."""

    def __init__(self, service: str, reason: str, log_path: Path, log_tail: str) -> None:
        tail = f"\n--- last lines of {log_path} ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{service}: {reason} (log: {log_path}){tail}")
        self.service = service


# --------------------------------------------------------------------------------------------
# Service specs (data)
# --------------------------------------------------------------------------------------------


def _always(_: Settings) -> bool:
    return True


@dataclass(frozen=True)
class ServiceSpec:
    """How to run and health-check one service. All callables are pure functions of Settings."""

    name: str
    description: str
    port: Callable[[Settings], int]
    health_path: str
    """Liveness: ``up`` waits for 200 here, ``status`` reports it as ``healthy``."""
    command: Callable[[Settings], list[str]]
    env: Callable[[Settings], dict[str, str]]
    """Variables added to the (filtered) inherited environment."""
    cwd: Callable[[Settings], Path] | None = None
    enabled: Callable[[Settings], bool] = _always
    """Part of the default ``up`` set? (an explicitly named service always starts)."""
    drop_env: tuple[str, ...] = ()
    drop_env_prefixes: tuple[str, ...] = ()
    prepare: Callable[[Settings], None] | None = None
    """One-time setup before the first start (dirs, venv); may be slow."""
    verify: Callable[[Settings, str], None] | None = None
    """Extra check once healthy, given the base URL; raises StackError."""
    ready_path: str | None = None
    """Optional readiness endpoint, reported by ``status`` (``up`` does not wait for it)."""

    def url(self, settings: Settings) -> str:
        return f"http://{client_host(settings.host)}:{self.port(settings)}"

    def health_url(self, settings: Settings) -> str:
        return self.url(settings) + self.health_path


def client_host(host: str) -> str:
    """The address a client uses to reach a server bound to ``host`` (URL-formatted)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard bind to loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


def app_bin(name: str) -> Path:
    """An executable of the app venv (the one running this code)."""
    return Path(sys.executable).parent / name


def label_studio_venv(settings: Settings) -> Path:
    return (settings.ls_venv or settings.venvs_dir / "label-studio").expanduser().absolute()


def _secret(value: SecretStr) -> str:
    return value.get_secret_value()


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``LABELLOOP_*`` variables, so an app child sees the same configuration."""
    out: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Path):
            text = str(value.expanduser().absolute())
        else:
            text = str(value)
        out[f"LABELLOOP_{name.upper()}"] = text
    return out


# ---- prefect ----
def _prefect_command(s: Settings) -> list[str]:
    return [
        str(app_bin("prefect")), "server", "start",
        "--host", s.host, "--port", str(s.prefect_port), "--analytics-off",
    ]  # fmt: skip


def _prefect_env(s: Settings) -> dict[str, str]:
    home = s.prefect_home
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_API_URL": f"http://{client_host(s.host)}:{s.prefect_port}/api",
    }


def _prepare_prefect(s: Settings) -> None:
    s.prefect_home.mkdir(parents=True, exist_ok=True)


# ---- mlflow ----
def _is_local_host(host: str) -> bool:
    if host in ("", "localhost", "0.0.0.0", "::"):  # noqa: S104
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private


def _mlflow_command(s: Settings) -> list[str]:
    cmd = [
        str(app_bin("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{s.mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination", str(s.mlflow_dir / "artifacts"),
        "--serve-artifacts",
        "--host", s.host, "--port", str(s.mlflow_port), "--workers", "1",
    ]  # fmt: skip
    if not _is_local_host(s.host):
        # mlflow >= 3.5 rejects Host headers outside localhost/private ranges by default.
        h, p = s.host, s.mlflow_port
        cmd += ["--allowed-hosts", f"{h},{h}:{p},localhost,localhost:{p},127.0.0.1,127.0.0.1:{p}"]
    return cmd


def _mlflow_env(_: Settings) -> dict[str, str]:
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # mlflow >= 3.x starts a job runner with ~7 huey consumer processes (GenAI jobs that
        # labelloop does not use); they cost a CPU-minute at startup. Opt back in via the env.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        ),
    }


def _prepare_mlflow(s: Settings) -> None:
    (s.mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)


# ---- label studio ----
def _label_studio_command(s: Settings) -> list[str]:
    return [
        str(label_studio_venv(s) / "bin" / "label-studio"), "start",
        "--no-browser",
        "--internal-host", s.host,
        "--port", str(s.label_studio_port),
        "--data-dir", str(s.label_studio_dir),
        "--enable-legacy-api-token",
        "--log-level", "WARNING",
    ]  # fmt: skip


def _label_studio_env(s: Settings) -> dict[str, str]:
    venv = label_studio_venv(s)
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "LABEL_STUDIO_USERNAME": s.label_studio_username,
        "LABEL_STUDIO_PASSWORD": _secret(s.label_studio_password),
        "LABEL_STUDIO_USER_TOKEN": _secret(s.label_studio_token),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(s.label_studio_dir),
        "DJANGO_DB": "sqlite",  # label_studio.sqlite3 in the data dir ("default" is postgres)
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # no call to pypi.org at startup
        "SENTRY_DSN": "",  # no error reports to heartex from a local dev server
        "FRONTEND_SENTRY_DSN": "",
    }


def uv_command() -> list[str]:
    """How to run uv: the ``uv`` on PATH, else ``python -m uv``."""
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise StackError("uv is needed to create the Label Studio venv; install it (pip install uv)")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


LS_REQUIREMENTS = Path(__file__).with_name("label-studio.requirements.txt")


def _ls_install_args(settings: Settings) -> list[str]:
    """``pip sync`` the pinned requirements when they pin the wanted version, else install it."""
    pin = f"label-studio=={settings.label_studio_version}"
    if LS_REQUIREMENTS.exists() and pin in LS_REQUIREMENTS.read_text().splitlines():
        return ["sync", str(LS_REQUIREMENTS)]
    return ["install", pin]


def ensure_label_studio_venv(settings: Settings) -> Path:
    """Create ``<ls_venv>`` with ``label-studio==<version>`` if it has no label-studio yet.

    Uses ``infra/label-studio.requirements.txt`` (fully pinned, as ``make label-studio-venv``
    does) when it pins that version.
    """
    venv = label_studio_venv(settings)
    exe = venv / "bin" / "label-studio"
    if exe.exists():
        return venv
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "label-studio-venv.log"
    with _file_lock(venv.parent / f".{venv.name}.lock"):
        if exe.exists():  # another `up` made it while we waited
            return venv
        uv = uv_command()
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ALWAYS}
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        verb, target = _ls_install_args(settings)
        steps = [
            ("uv venv", [*uv, "venv", "--clear", "--python", py, str(venv)]),
            (f"uv pip {verb}",
             [*uv, "pip", verb, "--python", str(venv / "bin" / "python"), target]),
        ]  # fmt: skip
        with log_path.open("ab") as log:
            for label, step in steps:
                log.write(f"$ {' '.join(step)}\n".encode())
                log.flush()
                rc = subprocess.run(
                    step, stdout=log, stderr=subprocess.STDOUT, env=env,
                    timeout=_VENV_INSTALL_TIMEOUT_S, check=False,
                ).returncode  # fmt: skip
                if rc != 0:
                    raise ServiceStartError(
                        "label-studio", f"creating its venv failed ({label} exited {rc})",
                        log_path, tail_file(log_path, 20),
                    )  # fmt: skip
    return venv


def _prepare_label_studio(s: Settings) -> None:
    if len(_secret(s.label_studio_token)) < MIN_LS_TOKEN_CHARS:
        raise StackError(
            f"LABELLOOP_LABEL_STUDIO_TOKEN must have at least {MIN_LS_TOKEN_CHARS} characters"
        )
    s.label_studio_dir.mkdir(parents=True, exist_ok=True)
    ensure_label_studio_venv(s)


def verify_label_studio_token(settings: Settings, base_url: str) -> None:
    """Check that the configured token authenticates (legacy ``Token`` auth, as the SDK uses)."""
    url = f"{base_url}/api/current-user/whoami"
    headers = {"Authorization": f"Token {_secret(settings.label_studio_token)}"}
    try:
        resp = httpx.get(url, headers=headers, timeout=10.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise StackError(f"label-studio: token check failed: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise StackError(
            f"label-studio: the configured LABELLOOP_LABEL_STUDIO_TOKEN is rejected "
            f"(HTTP {resp.status_code}). The user/org in {settings.label_studio_dir} was created "
            "with another token or without legacy tokens; use that token or remove the data dir."
        )


# ---- filter ----
def _filter_command(s: Settings) -> list[str]:
    return [
        str(app_bin("uvicorn")), "labelloop.serving:app",
        "--host", s.host, "--port", str(s.filter_port),
    ]  # fmt: skip


def _filter_enabled(s: Settings) -> bool:
    return s.stack_filter_enabled


# ---- llm ----
def _llm_command(s: Settings) -> list[str]:
    cmd = [
        sys.executable, "-m", "labeling.llm_server",
        "--model", s.llm.removeprefix("llamacpp:"), "--models-dir", str(s.models_dir),
        "--host", s.host, "--port", str(s.llm_port), "--n-ctx", str(s.llm_n_ctx),
    ]  # fmt: skip
    if s.llm_threads:
        cmd += ["--threads", str(s.llm_threads)]
    return cmd


def llm_service_enabled(s: Settings) -> bool:
    """The stack serves the LLM when it is a local GGUF run by llama.cpp's server."""
    return s.llm.startswith(("llamacpp:", "hf:")) and s.llm_runtime == "server"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="prefect",
        description="Prefect server (orchestration API + UI), sqlite in prefect_home",
        port=lambda s: s.prefect_port,
        health_path="/api/health",
        command=_prefect_command,
        env=_prefect_env,
        cwd=lambda s: s.prefect_home,
        drop_env=("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"),
        drop_env_prefixes=("PREFECT_SERVER_", "PREFECT_API_DATABASE_"),
        prepare=_prepare_prefect,
    ),
    ServiceSpec(
        name="mlflow",
        description="MLflow tracking server, sqlite backend + served artifacts in mlflow_dir",
        port=lambda s: s.mlflow_port,
        health_path="/health",
        command=_mlflow_command,
        env=_mlflow_env,
        cwd=lambda s: s.mlflow_dir,
        drop_env=("MLFLOW_TRACKING_URI",),
        prepare=_prepare_mlflow,
    ),
    ServiceSpec(
        name="label-studio",
        description="Label Studio (own venv), sqlite in label_studio_dir",
        port=lambda s: s.label_studio_port,
        health_path="/health",
        command=_label_studio_command,
        env=_label_studio_env,
        cwd=lambda s: s.label_studio_dir,
        drop_env=_DROP_FOR_LS,
        drop_env_prefixes=("LABEL_STUDIO_", "HEARTEX_"),
        prepare=_prepare_label_studio,
        verify=verify_label_studio_token,
    ),
    ServiceSpec(
        name="filter",
        description="targeting filter service (uvicorn labelloop.serving:app)",
        port=lambda s: s.filter_port,
        # /livez: the process serves HTTP. /healthz is readiness (503 until a model is
        # loaded from MLflow), so `up` must not wait for it; `status` reports it as `ready`.
        health_path="/livez",
        ready_path="/healthz",
        command=_filter_command,
        env=settings_env,
        enabled=_filter_enabled,
    ),
    ServiceSpec(
        name="llm",
        description="the local LLM behind an OpenAI-compatible API (llama.cpp server, xllamacpp)",
        port=lambda s: s.llm_port,
        health_path="/health",
        command=_llm_command,
        env=lambda _s: {},
        enabled=llm_service_enabled,
    ),
)


# --------------------------------------------------------------------------------------------
# Process helpers (Linux /proc where available, POSIX signals otherwise)
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of a process from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is a dead child of this process (avoids zombies)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    _reap(pgid)
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _marker(spec: ServiceSpec, settings: Settings) -> str:
    return f"{spec.name}@{settings.state}"


def _is_ours(pid: int, marker: str) -> bool:
    """Was ``pid`` started by this stack for this service? (environment marker on Linux)."""
    environ = Path(f"/proc/{pid}/environ")
    if not Path("/proc").is_dir():
        return True  # no way to tell: trust the pid file
    try:
        data = environ.read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return False  # another user's process is never ours
    return f"{MARKER_ENV}={marker}".encode() in data.split(b"\0")


def port_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` right now? (SO_REUSEADDR, like the servers themselves)."""
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    family, socktype, proto, _, sockaddr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError:
            return False
    return True


def tail_file(path: Path, lines: int) -> str:
    if not path.exists() or lines <= 0:
        return ""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    enabled: bool
    pid: int | None
    running: bool
    healthy: bool
    ready: bool | None = None
    """Readiness (only services with a ``ready_path``; None otherwise)."""


@dataclass(frozen=True)
class UpReport:
    name: str
    url: str
    pid: int
    action: Literal["started", "already-running"]
    prepare_s: float
    """Seconds spent in one-time setup (e.g. creating the Label Studio venv)."""
    start_s: float
    """Seconds from process start (or from `up` for a running one) to healthy."""


class Stack:
    """Start, stop and inspect the local services. Thread-safe for one ``Stack`` object."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceSpec] = SERVICES,
        http_timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.services = tuple(services)
        self.http_timeout_s = http_timeout_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # ---- lookup ----
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def spec(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise UnknownServiceError(name, self.names)

    def select(self, services: Iterable[str] | None = None) -> list[ServiceSpec]:
        """Named services (validated), or the enabled ones when ``services`` is None."""
        if services is None:
            return [s for s in self.services if s.enabled(self.settings)]
        wanted = list(dict.fromkeys(services))
        for name in wanted:
            self.spec(name)
        return [s for s in self.services if s.name in wanted]

    def pid_file(self, name: str) -> Path:
        return self.settings.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def read_pid(self, name: str) -> int | None:
        try:
            return int(self.pid_file(name).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    # ---- inspection ----
    def running_pid(self, spec: ServiceSpec) -> int | None:
        """The pid of our live process for ``spec``, if any (no side effects)."""
        pid = self.read_pid(spec.name)
        if pid is None or not pid_alive(pid):
            return None
        return pid if _is_ours(pid, _marker(spec, self.settings)) else None

    def _get_ok(self, url: str) -> bool:
        try:
            resp = httpx.get(url, timeout=self.http_timeout_s, trust_env=False)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def is_healthy(self, spec: ServiceSpec) -> bool:
        return self._get_ok(spec.health_url(self.settings))

    def is_ready(self, spec: ServiceSpec) -> bool | None:
        """The readiness endpoint's verdict, or None for a service without one."""
        if spec.ready_path is None:
            return None
        return self._get_ok(spec.url(self.settings) + spec.ready_path)

    def status(self, services: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Every service (or the named ones), enabled or not."""
        specs = self.services if services is None else self.select(services)

        def one(spec: ServiceSpec) -> ServiceStatus:
            pid = self.running_pid(spec)
            healthy = self.is_healthy(spec)
            return ServiceStatus(
                name=spec.name,
                url=spec.url(self.settings),
                enabled=spec.enabled(self.settings),
                pid=pid,
                running=pid is not None,
                healthy=healthy,
                ready=self.is_ready(spec) if healthy else None,
            )

        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            return list(pool.map(one, specs))

    def tail_log(self, name: str, lines: int = 50) -> str:
        self.spec(name)
        return self.redact(tail_file(self.log_file(name), lines))

    def redact(self, text: str) -> str:
        s = self.settings
        for secret in (s.label_studio_password, s.label_studio_token, s.filter_api_key,
                       s.filter_admin_key):  # fmt: skip
            raw = secret.get_secret_value()
            if len(raw) >= 4:
                text = text.replace(raw, "***")
        return without_credentials(text)

    # ---- up ----
    def up(
        self, services: Iterable[str] | None = None, timeout_s: float | None = None
    ) -> list[UpReport]:
        """Start the selected services (default: the enabled ones) and wait until healthy.

        Raises PortInUseError before starting anything if a port is taken by a foreign
        process; raises StackError listing every service that failed otherwise.
        """
        specs = self.select(services)
        timeout = self.settings.stack_start_timeout_s if timeout_s is None else timeout_s
        self.settings.ensure_dirs()

        running: dict[str, int] = {}
        for spec in specs:  # preflight: nothing starts if a port is taken
            pid = self._cleanup_stale(spec)
            if pid is not None:
                running[spec.name] = pid
                continue
            port = spec.port(self.settings)
            if not port_free(self.settings.host, port):
                raise PortInUseError(spec.name, self.settings.host, port)

        def one(spec: ServiceSpec) -> UpReport:
            return self._ensure(spec, running.get(spec.name), timeout)

        errors: list[str] = []
        reports: list[UpReport] = []
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            futures = [(spec, pool.submit(one, spec)) for spec in specs]
            for spec, fut in futures:
                exc = fut.exception()
                if exc is None:
                    reports.append(fut.result())
                elif isinstance(exc, StackError):
                    errors.append(str(exc))
                else:
                    errors.append(f"{spec.name}: {type(exc).__name__}: {exc}")
        if errors:
            raise StackError(self.redact("\n".join(errors)))
        return reports

    def _cleanup_stale(self, spec: ServiceSpec) -> int | None:
        """Return our live pid for ``spec``; otherwise remove a stale pid file and orphans."""
        pid = self.read_pid(spec.name)
        if pid is None:
            return None
        if pid_alive(pid):
            if _is_ours(pid, _marker(spec, self.settings)):
                return pid
            # pid recycled by an unrelated process: forget it, never signal it
            self.pid_file(spec.name).unlink(missing_ok=True)
            return None
        # leader gone; members left in its group are our orphans (a pgid is never reused
        # while the group exists)
        if group_members(pid):
            self._kill_group(pid)
        self.pid_file(spec.name).unlink(missing_ok=True)
        return None

    def _ensure(self, spec: ServiceSpec, pid: int | None, timeout: float) -> UpReport:
        s = self.settings
        if pid is not None:
            t0 = time.monotonic()
            self._wait_healthy(spec, pid, t0 + timeout)
            if spec.verify is not None:
                spec.verify(s, spec.url(s))
            return UpReport(spec.name, spec.url(s), pid, "already-running", 0.0,
                            time.monotonic() - t0)  # fmt: skip
        t0 = time.monotonic()
        if spec.prepare is not None:
            spec.prepare(s)
        prepare_s = time.monotonic() - t0
        t1 = time.monotonic()
        pid = self._spawn(spec)
        self._wait_healthy(spec, pid, t1 + timeout)
        start_s = time.monotonic() - t1
        if spec.verify is not None:
            spec.verify(s, spec.url(s))
        return UpReport(spec.name, spec.url(s), pid, "started", prepare_s, start_s)

    def child_env(self, spec: ServiceSpec) -> dict[str, str]:
        drop = set(_DROP_ALWAYS) | set(spec.drop_env)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in drop and not k.startswith(spec.drop_env_prefixes)
        }
        env.update(spec.env(self.settings))
        env[MARKER_ENV] = _marker(spec, self.settings)
        env.setdefault("PYTHONUNBUFFERED", "1")
        no_proxy = "127.0.0.1,localhost,::1"
        env["NO_PROXY"] = env["no_proxy"] = ",".join(
            x for x in (env.get("NO_PROXY"), no_proxy) if x
        )
        return env

    def _spawn(self, spec: ServiceSpec) -> int:
        s = self.settings
        cmd = spec.command(s)
        if not Path(cmd[0]).exists():
            raise StackError(f"{spec.name}: executable not found: {cmd[0]}")
        log_path = self.log_file(spec.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = spec.cwd(s) if spec.cwd is not None else None
        if cwd is not None:
            cwd.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with log_path.open("ab") as log:
            log.write(f"\n=== {stamp} labelloop stack: starting {spec.name}: "
                      f"{' '.join(cmd)}\n".encode())  # fmt: skip
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.child_env(spec),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        with self._lock:
            self._procs[spec.name] = proc
        self.pid_file(spec.name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_healthy(self, spec: ServiceSpec, pid: int, deadline: float) -> None:
        while True:
            if self.is_healthy(spec):
                return
            if not pid_alive(pid):
                self.pid_file(spec.name).unlink(missing_ok=True)
                if group_members(pid):
                    self._kill_group(pid)
                raise self._start_error(spec, "process exited before it became healthy")
            if time.monotonic() >= deadline:
                raise self._start_error(
                    spec, f"not healthy at {spec.health_url(self.settings)} before the timeout "
                    "(still running; `labelloop stack down` stops it)",
                )  # fmt: skip
            time.sleep(_POLL_S)

    def _start_error(self, spec: ServiceSpec, reason: str) -> ServiceStartError:
        path = self.log_file(spec.name)
        return ServiceStartError(spec.name, reason, path, self.redact(tail_file(path, 20)))

    # ---- down ----
    def down(self, services: Iterable[str] | None = None) -> list[str]:
        """Stop our processes (all services, or the named ones); return the names stopped."""
        specs = self.services if services is None else self.select(services)
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            stopped = list(pool.map(self._stop, specs))
        return [spec.name for spec, did in zip(specs, stopped, strict=True) if did]

    def _stop(self, spec: ServiceSpec) -> bool:
        pid = self.read_pid(spec.name)
        if pid is None:
            return False
        did = False
        if pid_alive(pid):
            if _is_ours(pid, _marker(spec, self.settings)):
                did = self._kill_group(pid)
        elif group_members(pid):
            did = self._kill_group(pid)
        with self._lock:
            proc = self._procs.pop(spec.name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_KILL_WAIT_S)
        self.pid_file(spec.name).unlink(missing_ok=True)
        return did

    def _kill_group(self, pgid: int) -> bool:
        """SIGTERM the group, wait the grace period, SIGKILL what is left. True if it was alive."""
        if not group_members(pgid):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        if self._wait_group_gone(pgid, self.settings.stack_stop_timeout_s):
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._wait_group_gone(pgid, _KILL_WAIT_S)
        return True

    @staticmethod
    def _wait_group_gone(pgid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while group_members(pgid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True
