"""Clear errors for servers that cannot be reached: which service, where, and how to start it.

The clients retry on their own first (MLflow's HTTP client with backoff, ``MLFLOW_HTTP_REQUEST_*``;
the Label Studio SDK; Prefect's client; flow tasks with ``SERVICE_RETRIES``). When they give up, the
exception that reaches the command line is a connection error buried in a chain (an
``MlflowException`` quoting urllib3, an ``httpx.ConnectError``...). :func:`unreachable_service`
recognises it and names the service by the address in the error (or by the library that raised
it); the CLI prints :attr:`Unreachable.message` instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from labelloop.safe_text import without_credentials
from labelloop.settings import Settings

STACK_HINT = "start the local servers with `labelloop stack up`"

_MARKERS = (
    "connection refused",
    "max retries exceeded",
    "failed to establish a new connection",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "connection reset",
    "connection aborted",
    "remotedisconnected",
    "remote end closed connection",
    "timed out",
    "all connection attempts failed",
)


@dataclass(frozen=True)
class Unreachable:
    service: str
    url: str
    cause: str
    hint: str

    @property
    def message(self) -> str:
        return f"{self.service} is not reachable at {self.url} ({self.cause}); {self.hint}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)


def _is_connection_error(e: BaseException) -> bool:
    if isinstance(e, ConnectionError | TimeoutError):
        return True
    names = {t.__name__ for t in type(e).__mro__}
    if names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TransportError", "Timeout",
                "NewConnectionError", "MaxRetryError", "ProtocolError"}:  # fmt: skip
        return True
    text = str(e).lower()
    return any(m in text for m in _MARKERS)


def _services(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(name, url, the module prefix of its client library, hint)."""
    out = [
        ("MLflow", settings.mlflow_uri, "mlflow", STACK_HINT),
        ("Label Studio", settings.label_studio, "label_studio_sdk", STACK_HINT),
        ("Prefect", settings.prefect_api, "prefect", STACK_HINT),
        ("the filter service", settings.filter_url, "", STACK_HINT),  # by address only
    ]
    if settings.llm_base_url:
        out.append(
            ("the LLM server", settings.llm_base_url, "openai",
             "start it, or set LABELLOOP_LLM to the embedded model (llamacpp:...)")
        )  # fmt: skip
    if settings.chroma_url:
        out.append(
            ("Chroma", settings.chroma_url, "chromadb", "start it, or unset LABELLOOP_CHROMA_URL")
        )
    return out


def _request_url(e: BaseException) -> str:
    """The URL of the request an httpx/requests error was about ("" if none)."""
    try:
        request = getattr(e, "request", None)  # httpx raises RuntimeError when it was not set
    except RuntimeError:
        return ""
    url = getattr(request, "url", None)
    return str(url) if url is not None else ""


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.rsplit("@", 1)[-1]
    except ValueError:
        return ""


def unreachable_service(exc: BaseException, settings: Settings) -> Unreachable | None:
    """The service a connection failure is about, or None if ``exc`` is not one."""
    chain = list(_chain(exc))
    failures = [e for e in chain if _is_connection_error(e)]
    if not failures:
        return None
    text = " ".join([str(e) for e in chain] + [u for e in chain if (u := _request_url(e))])
    cause = without_credentials(f"{type(failures[-1]).__name__}: {failures[-1]}")
    cause = cause if len(cause) <= 200 else cause[:197] + "..."
    services = _services(settings)
    for name, url, _, hint in services:
        host = _netloc(url)
        if host and host in text:
            return Unreachable(name, without_credentials(url), cause, hint)
    modules = {type(e).__module__.split(".")[0] for e in chain}
    for name, url, module, hint in services:
        if module and module in modules:
            return Unreachable(name, without_credentials(url), cause, hint)
    return None
