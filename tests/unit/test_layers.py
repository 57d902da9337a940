"""Layering: the inner packages take typed objects and never read the settings themselves, and
their store queries live in the store.

Reads the source of every module under ``labeling/``, ``experiments/`` and ``targeting/`` (no
import needed) and fails on any import, top-level or inside a function, of the settings or of the
``labelloop`` modules that read them (the runtime, the stage functions, the CLI, serving),
and on any import of SQLAlchemy or of the store's statement helpers (queries are ``LabelStore``
and ``ReviewTransaction`` methods).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INNER = ("labeling", "experiments", "targeting")
FORBIDDEN = (
    "labelloop.settings",
    "labelloop.runtime",
    "labelloop.stages",
    "labelloop.serving",
    "labelloop.config_report",
    "labelloop.cli",
)


# what writes SQL: an inner module that imports these runs its own queries
SQL = (
    "sqlalchemy",
    "labelloop.store.store.insert_ignore",
    "labelloop.store.store.upsert",
    "labelloop.store.store.set_sync_value",
    "labelloop.store.store.lock_audit_chain",
)


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") or name.startswith(f + "_") for f in FORBIDDEN)


def _sql(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in SQL)


def _offending(path: Path, bad: Callable[[str], bool]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [f"line {n}: {name}" for n, name in _imported(tree) if bad(name)]


def _modules() -> list[Path]:
    return sorted(p for pkg in INNER for p in (ROOT / pkg).rglob("*.py"))


def test_the_inner_packages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert {"labeling/llm.py", "experiments/gate.py", "targeting/service.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_inner_module_does_not_read_the_settings(path: Path) -> None:
    bad = _offending(path, _forbidden)
    assert not bad, f"{path.relative_to(ROOT)} imports what reads the settings: {bad}"


def test_the_check_catches_settings_imports() -> None:
    src = (
        "from labelloop.settings import Settings\n"
        "def f():\n    from labelloop import runtime\n    import labelloop.cli_review\n"
        "from labelloop.store import LabelStore\n"
    )
    found = [name for _, name in _imported(ast.parse(src)) if _forbidden(name)]
    assert found == ["labelloop.settings", "labelloop.settings.Settings", "labelloop.runtime",
                     "labelloop.cli_review"]  # fmt: skip


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_inner_module_runs_no_sql_of_its_own(path: Path) -> None:
    bad = _offending(path, _sql)
    assert not bad, f"{path.relative_to(ROOT)} runs SQL outside the store: {bad}"


def test_the_check_catches_sql_imports() -> None:
    src = (
        "from sqlalchemy import select\n"
        "def f():\n    from sqlalchemy.orm import Session\n    import sqlalchemy\n"
        "from labelloop.store.store import insert_ignore, LabelStore\n"
        "from labelloop.store import LabelStore, ReviewTransaction\n"
        "from labelloop.store.models import GoldLabelRow\n"
    )
    found = [name for _, name in _imported(ast.parse(src)) if _sql(name)]
    assert sorted(found) == ["labelloop.store.store.insert_ignore", "sqlalchemy", "sqlalchemy",
                             "sqlalchemy.orm", "sqlalchemy.orm.Session", "sqlalchemy.select"]  # fmt: skip
