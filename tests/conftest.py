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
