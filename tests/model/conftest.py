"""Shared fixtures of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh models directory per test module (its files are installed from the wheels)."""
    return tmp_path_factory.mktemp("models")
