"""The filter service as an ASGI app for ``uvicorn labelloop.serving:app``.

``app`` is built from the settings on first access (importing this module reads nothing and
connects to nothing; the model loads in the background after startup).
"""

from __future__ import annotations

import logging
from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    """``labelloop.serving.app`` is built on first access."""
    global _app
    if name == "app":
        if _app is None:
            from labelloop.runtime import service_config
            from labelloop.settings import get_settings
            from targeting.service import create_app

            logging.basicConfig(level=logging.INFO)
            _app = create_app(service_config(get_settings()))
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
