"""Model tests need the `models` dependency group: missing there is a failure under CI (``make
test`` installs it) and a skip elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def model_unavailable(what: str, exc: Exception) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what} not installed: {exc}")
    pytest.skip(f"{what} not installed: {exc}")
