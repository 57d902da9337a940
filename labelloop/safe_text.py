"""Text that is safe to show or log: URIs without their credentials.

:func:`without_credentials` is the one helper for every URI that is shown or logged (``/healthz``,
``/v1/model``, CLI output, flow artifacts, MLflow tags, error messages): it replaces the userinfo
of every ``scheme://user:password@host`` in a text with ``***`` and the value of every query
parameter whose name says it is a secret (``token``, ``access_token``, ``password``, ``api_key``,
``sig``, ``X-Amz-Signature``, ...) with ``***``. It works on whole messages, so an exception text
that quotes a URI is cleaned too.

:func:`install_log_redaction` makes every log record of the process pass through it (a log-record
factory: also the records of libraries with their own handlers, such as MLflow's "View run ... at"
line, and the text of logged tracebacks). The CLI, the filter service and the flows call it at
start; it changes nothing at import time.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"

# scheme://authority — the authority ends at the first / ? # or whitespace; its userinfo is
# everything up to its last "@" (a password may contain an unencoded "@").
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<auth>[^\s/?#]*)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[^=&;\s#]*?)"
    r"(?:token|secret|passw(?:or)?d|pwd|api[-_]?key|apikey|access[-_]?key|private[-_]?key|"
    r"signature|sig|credential|auth|session)[^=&;\s#]*=)"
    r"(?P<value>[^&;\s#]+)",
    re.IGNORECASE,
)


def _authority(m: re.Match[str]) -> str:
    auth = m["auth"]
    if "@" not in auth:
        return m[0]
    return m["scheme"] + MASK + "@" + auth.rsplit("@", 1)[1]


def without_credentials(text: str) -> str:
    """``text`` with the userinfo of every URI and every secret query value replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _AUTHORITY.sub(_authority, text)
    return _SECRET_PARAM.sub(lambda m: m["name"] + MASK, text)


def opt_without_credentials(text: str | None) -> str | None:
    return without_credentials(text) if text is not None else None


_installed = False
_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Pass every log record of this process through :func:`without_credentials` (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a broken format string: leave it to the handler to report
                return record
            clean = without_credentials(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[0] is not None:
                # formatted (and cleaned) now; handlers then print exc_text, never the exception
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = without_credentials(text)
                record.exc_info = None
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
