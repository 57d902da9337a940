"""The production targeting filter: a FastAPI service over the approved MLflow model.

Run it with ``uvicorn labelloop.serving:app`` (built from the settings on first access; importing
this module connects to nothing, and the model loads in the background after startup) or build one
with :func:`create_app` from a :class:`ServiceConfig`.

Endpoints (``X-API-Key`` header; a missing key is 401, a wrong one 403, compared in constant
time):

* ``POST /v1/decisions`` -- ``{"records": [...]}`` (at most ``filter_max_batch``; more is 413) ->
  ``{"decisions": [...], "request_id", "model_version"}``, one decision per record in order.
  Always 200 for a well-formed request, and **fail closed**: no model, a scoring error or a
  malformed record make that record ``eligible=false`` with ``model_unavailable`` /
  ``invalid_record``. The sensitive category never leaves the process (it goes to the audit log).
  A body that is not JSON (syntax, nesting too deep, a number too long, not UTF-8) is 400, a
  ``Content-Type`` other than JSON is 415 (none at all is read as JSON), JSON of the wrong shape
  is 422: all with the fail-closed body below. A decision is answered only once it is in the
  audit log; if the log cannot be written the answer is 503 fail-closed.
  When ``filter_max_queue`` records already wait for the engine the answer is 429 fail-closed
  with ``Retry-After`` (seconds for the queue to drain at the measured rate): latency is bounded,
  never a queue that grows without end.
* ``GET /metrics`` -- Prometheus text format (no key: aggregate counts only; see
  :mod:`targeting.metrics`).
* ``GET /v1/model`` -- the serving model (name, version, alias, policy version, loaded_at).
* ``POST /admin/reload`` -- admin key only: resolve the alias now and hot-swap.
* ``GET /healthz`` -- readiness: 200 with a model, 503 ``degraded`` without one (no key).
* ``GET /livez`` -- liveness: 200 while the process serves HTTP (no key).
* ``/docs``, ``/openapi.json``.

Any unexpected error becomes a 503 whose body says ``fail_closed: true`` and ``eligible: false``
-- never a bare 500 that a caller could read as "no restriction".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, SecretStr, ValidationError

from labeling.policy import load_policy
from labeling.records import InvalidJSONError, Limits, loads_json
from labelloop.safe_text import install_log_redaction, opt_without_credentials
from targeting.audit import AuditLog
from targeting.engine import FilterDecision, FilterEngine
from targeting.holder import ModelHolder
from targeting.holder import serving_configurer as holder_configurer
from targeting.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from targeting.metrics import FilterMetrics, embed_cache_stats, model_labels
from targeting.model_ref import FilterModelRef

log = logging.getLogger("labelloop.targeting")

API_KEY_HEADER = "X-API-Key"
_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="filter API key")

FAIL_CLOSED_BODY: dict[str, Any] = {
    "fail_closed": True,
    "eligible": False,
    "excluded_reason": "model_unavailable",
    "decisions": [],
}


# ---- schemas (documentation of the wire format) ----
class DecisionsRequest(BaseModel):
    records: list[Any] = Field(
        description="conversation records (each validated on its own: a malformed record gets "
        "an invalid_record decision, the others are scored)"
    )


class Interest(BaseModel):
    id: str = Field(description="IAB Content Taxonomy 3.1 id")
    name: str
    score: float


class PublicDecision(BaseModel):
    conversation_id: str | None
    eligible: bool
    interests: list[Interest]
    excluded_reason: str | None = Field(
        description="region | unlinked_account | before_policy_date | surface_disabled | "
        "sensitive_topic | invalid_record | model_unavailable | null"
    )
    model_version: str | None
    policy_version: str | None


class DecisionsResponse(BaseModel):
    request_id: str
    model_version: str | None
    decisions: list[PublicDecision]


class ModelInfo(BaseModel):
    loaded: bool
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    uri: str | None = None
    run_id: str | None = None
    policy_version: str | None = None
    loaded_at: str | None = None
    source: str
    poll_s: float
    last_check: str | None = None
    last_error: str | None = None
    numerics_mismatch: str | None = None
    """Why the encoder computes other vectors here than in training, when the model is served
    all the same (``filter_require_training_numerics`` off)."""


class ReloadResponse(BaseModel):
    changed: bool
    previous_version: str | None
    version: str | None
    error: str | None = None


class FailClosed(BaseModel):
    detail: Any
    fail_closed: bool = True
    eligible: bool = False
    excluded_reason: str = "model_unavailable"
    decisions: list[PublicDecision] = []


class QueueFullError(Exception):
    """The micro-batcher's queue is full: answer 429 with ``Retry-After``."""

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"{queued} records are waiting (limit {limit})")
        self.queued = queued
        self.limit = limit
        self.retry_after = retry_after


class MicroBatcher:
    """Coalesces concurrent ``POST /v1/decisions`` requests into one engine call.

    One engine call runs at a time, in a worker thread; requests that arrive meanwhile queue up
    and go together in the next call (up to ``max_records`` records), with one model ``predict``
    and one audit append for all of them. Nothing waits for a timer: a lone request is scored at
    once; under load, batches grow by themselves. Each call takes ``holder.current`` once, so all
    records of one request are decided by the same model version.

    **Back-pressure**: at most ``max_queue`` records wait; a request that would pass that is
    refused at once with :class:`QueueFullError` (the service answers 429 with ``Retry-After``, the
    time the queue takes to drain at the measured rate) instead of waiting without bound.
    """

    def __init__(
        self,
        engine: FilterEngine,
        max_records: int,
        *,
        max_queue: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_records = max_records
        self.max_queue = max(max_queue if max_queue is not None else 8 * max_records, max_records)
        self.on_batch = on_batch
        self._pending: deque[tuple[list[Any], str, asyncio.Future[list[FilterDecision]]]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.calls = 0
        self.queued_records = 0
        self.rate = 0.0  # records/s of the engine, moving average (0: not measured yet)

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    def retry_after(self, extra: int = 0) -> int:
        """Seconds until the queue (plus ``extra`` records) has drained at the measured rate."""
        if self.rate <= 0:
            return 1
        return max(1, min(60, math.ceil((self.queued_records + extra) / self.rate)))

    async def submit(self, records: list[Any], request_id: str) -> list[FilterDecision]:
        n = len(records)
        if self.queued_records + n > self.max_queue:
            raise QueueFullError(self.queued_records, self.max_queue, self.retry_after(n))
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="filter-micro-batcher")
        assert self._wakeup is not None
        fut: asyncio.Future[list[FilterDecision]] = asyncio.get_running_loop().create_future()
        self._pending.append((records, request_id, fut))
        self.queued_records += n
        self._wakeup.set()
        return await fut

    def _take(self) -> list[tuple[list[Any], str, asyncio.Future[list[FilterDecision]]]]:
        batch: list[tuple[list[Any], str, asyncio.Future[list[FilterDecision]]]] = []
        n = 0
        while self._pending and (not batch or n + len(self._pending[0][0]) <= self.max_records):
            item = self._pending.popleft()
            self.queued_records -= len(item[0])
            if item[2].done():  # the client went away before we started
                continue
            batch.append(item)
            n += len(item[0])
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take()
                if not batch:
                    continue
                groups = [(recs, rid) for recs, rid, _ in batch]
                n_records = sum(len(recs) for recs, _ in groups)
                self.calls += 1
                if self.on_batch is not None:
                    self.on_batch(n_records, len(groups))
                t0 = time.perf_counter()
                try:
                    results = await anyio.to_thread.run_sync(
                        lambda g=groups: self.engine.decide_groups(g, source="api")  # type: ignore[misc]
                    )
                except asyncio.CancelledError:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.cancel()
                    raise
                except Exception as exc:  # surfaces as a fail-closed 503 in each request
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                took = time.perf_counter() - t0
                if took > 0 and n_records:
                    r = n_records / took
                    self.rate = r if self.rate <= 0 else 0.8 * self.rate + 0.2 * r
                for (_, _, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class BodyLimit:
    """Pure ASGI middleware: 413 for a declared ``Content-Length`` above the limit, and for a
    streamed (chunked) body once it passes the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                await self._reject(scope, receive, send, f"request body of {int(v)} bytes")
                return
        seen = 0
        exceeded = False

        async def counting_receive() -> Any:
            nonlocal seen, exceeded
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _BodyTooLargeError(seen)
            return msg

        async def guarded_send(msg: Any) -> None:
            if not exceeded:  # once over the limit, the app's own answer (e.g. 400) is dropped
                await send(msg)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded:
            await self._reject(scope, receive, send, f"request body of more than {seen} bytes")

    async def _reject(self, scope: Any, receive: Any, send: Any, what: str) -> None:
        resp = JSONResponse(
            {
                "detail": f"{what} exceeds the limit of {self.limit} (filter_max_body_bytes)",
                **FAIL_CLOSED_BODY,
            },
            status_code=413,
        )
        await resp(scope, receive, send)


class _BodyTooLargeError(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the filter service needs (built from the ``filter_*`` settings by the runtime)."""

    api_key: SecretStr
    admin_key: SecretStr
    model: FilterModelRef
    """The registered model and the alias the service follows."""
    model_uri: str | None
    """A fixed model to serve instead of ``model`` (no alias polling)."""
    tracking_uri: str
    poll_s: float
    model_cache_dir: Path
    onnx_threads: int | None
    embed_cache: int
    require_training_numerics: bool
    audit_path: Path
    audit_fsync: bool
    policy_path: Path | None
    max_text_chars: int
    max_turns: int
    max_batch: int
    max_queue: int
    max_body_bytes: int


def serving_configurer(config: ServiceConfig) -> Callable[[Any], None]:
    """What is done to every model the service loads (``targeting.holder.serving_configurer``)."""
    return holder_configurer(
        onnx_threads=config.onnx_threads,
        embed_cache=config.embed_cache,
        require_training_numerics=config.require_training_numerics,
    )


def make_holder(config: ServiceConfig) -> ModelHolder:
    configure = serving_configurer(config)
    if config.model_uri:
        return ModelHolder.for_uri(
            config.model_uri,
            config.tracking_uri,
            poll_s=config.poll_s,
            cache_dir=config.model_cache_dir,
            configure=configure,
        )
    return ModelHolder.for_registry(
        config.tracking_uri,
        config.model.name,
        config.model.alias,
        poll_s=config.poll_s,
        cache_dir=config.model_cache_dir,
        configure=configure,
    )


def _key_checker(secret: SecretStr, what: str) -> Any:
    expected = secret.get_secret_value().encode("utf-8")

    async def check(key: str | None = Depends(_key_header)) -> None:
        if not key:
            raise _AuthError(401, f"missing {what} key: send it in the {API_KEY_HEADER} header")
        if not hmac.compare_digest(key.encode("utf-8"), expected):
            raise _AuthError(403, f"invalid {what} key")

    return check


class _AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(
    config: ServiceConfig,
    *,
    holder: ModelHolder | None = None,
    audit: AuditLog | None = None,
    start_holder: bool = True,
) -> FastAPI:
    """Build the service. ``holder``/``audit`` default to the configured registry model and
    ``config.audit_path``; nothing connects until startup."""
    install_log_redaction()
    s = config
    if s.api_key.get_secret_value() == s.admin_key.get_secret_value():
        raise ValueError("LABELLOOP_FILTER_API_KEY and LABELLOOP_FILTER_ADMIN_KEY must differ")
    the_holder = holder if holder is not None else make_holder(s)
    the_audit = audit if audit is not None else AuditLog(s.audit_path, fsync=s.audit_fsync)
    policy = load_policy(s.policy_path)
    engine = FilterEngine(
        the_holder,
        policy,
        the_audit,
        limits=Limits(max_text_chars=s.max_text_chars, max_turns=s.max_turns),
    )
    metrics_box: list[FilterMetrics] = []
    batcher = MicroBatcher(
        engine,
        s.max_batch,
        max_queue=s.max_queue,
        on_batch=lambda n, r: metrics_box[0].observe_batch(n, r),
    )
    metrics = FilterMetrics(
        queue=lambda: (batcher.queued_records, batcher.queued_requests),
        model=lambda: model_labels(the_holder.current),
        cache=lambda: embed_cache_stats(the_holder.current),
    )
    metrics_box.append(metrics)
    require_key = _key_checker(s.api_key, "API")
    require_admin = _key_checker(s.admin_key, "admin")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_holder:
            the_holder.start()
        try:
            yield
        finally:
            await batcher.stop()
            the_holder.stop()
            the_audit.close()

    app = FastAPI(
        title="labelloop targeting filter",
        version="1",
        description=(
            "Decides, per conversation, whether it may feed ad targeting and with which IAB "
            "interests. Fails closed. Authenticate with the X-API-Key header."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=s.max_body_bytes)
    app.state.config = s
    app.state.holder = the_holder
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.audit = the_audit

    @app.exception_handler(_AuthError)
    async def _auth_error(_: Request, exc: _AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail, **FAIL_CLOSED_BODY}, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"detail": jsonable_errors(exc), **FAIL_CLOSED_BODY}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the filter service; answering fail-closed")
        body = {
            "detail": f"internal error ({type(exc).__name__}); treat as not eligible",
            **FAIL_CLOSED_BODY,
        }
        return JSONResponse(body, status_code=503)

    @app.post(
        "/v1/decisions",
        response_model=DecisionsResponse,
        responses={
            400: {"model": FailClosed},
            401: {"model": FailClosed},
            403: {"model": FailClosed},
            413: {"model": FailClosed},
            415: {"model": FailClosed},
            422: {"model": FailClosed},
            429: {"model": FailClosed, "description": "queue full: retry after Retry-After s"},
            503: {"model": FailClosed},
        },
        dependencies=[Depends(require_key)],
        summary="Decide a batch of conversation records (fail closed)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": DecisionsRequest.model_json_schema()}},
            }
        },
    )
    async def decisions(request: Request) -> Any:
        t0 = time.perf_counter()
        status = 503  # anything that escapes below becomes the fail-closed 503
        try:
            resp = await _decide(request)
            status = resp.status_code
            return resp
        finally:
            metrics.request_seconds.labels(status=str(status)).observe(time.perf_counter() - t0)

    async def _decide(request: Request) -> Response:
        body = await _decisions_request(request)
        if isinstance(body, JSONResponse):
            return body
        n = len(body.records)
        if n > s.max_batch:
            return JSONResponse(
                {
                    "detail": f"batch of {n} records exceeds the limit of {s.max_batch} "
                    "(filter_max_batch); split it into smaller requests",
                    **FAIL_CLOSED_BODY,
                },
                status_code=413,
            )
        rid = uuid.uuid4().hex
        try:
            result = await batcher.submit(body.records, rid)
        except QueueFullError as exc:
            metrics.rejected.labels(reason="queue_full").inc()
            return JSONResponse(
                {
                    "detail": f"the filter is overloaded ({exc}); retry after "
                    f"{exc.retry_after} s (filter_max_queue)",
                    **FAIL_CLOSED_BODY,
                },
                status_code=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        metrics.count_decisions(d.excluded_reason for d in result)
        versions = {d.model_version for d in result}
        out = {
            "request_id": rid,
            "model_version": versions.pop() if len(versions) == 1 else None,
            "decisions": [d.public() for d in result],
        }
        return Response(orjson.dumps(out), media_type="application/json")

    @app.get(
        "/metrics",
        summary="Prometheus metrics (text format; no key: aggregate counts only)",
        response_class=Response,
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=[Depends(require_key)])
    async def model_info() -> ModelInfo:
        return _model_info(the_holder)

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(require_admin)],
        summary="Resolve the alias now and hot-swap the model (admin key)",
    )
    async def reload(force: bool = False) -> Any:
        res = await anyio.to_thread.run_sync(lambda: the_holder.refresh(force=force))
        body = ReloadResponse(
            changed=res.changed,
            previous_version=res.previous_version,
            version=res.version,
            error=opt_without_credentials(res.error),
        )
        return JSONResponse(body.model_dump(), status_code=503 if res.error else 200)

    @app.get("/healthz", summary="Readiness: 200 with a model loaded, 503 degraded without")
    async def healthz() -> JSONResponse:
        cur = the_holder.current
        if cur is None:
            return JSONResponse(
                {
                    "status": "degraded",
                    "reason": "no model loaded; every decision fails closed",
                    "last_error": opt_without_credentials(the_holder.last_error),
                },
                status_code=503,
            )
        return JSONResponse(
            {"status": "ok", "model_version": cur.version, "policy_version": cur.policy_version}
        )

    @app.get("/livez", summary="Liveness: 200 while the process serves HTTP")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    return app


async def _decisions_request(request: Request) -> DecisionsRequest | JSONResponse:
    """The parsed body, or the fail-closed answer: 415 (not JSON content), 400 (unparseable),
    422 (wrong shape). Parsed here rather than by FastAPI, whose answers to these lack the
    fail-closed shape (and are 400/422 in the wrong places)."""
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return _fail_closed(
                415, f"Content-Type {media or '(empty)'!r} is not supported; send application/json"
            )
    raw = await request.body()
    if not raw.strip():
        return _fail_closed(400, 'request body is empty; send {"records": [...]}')
    try:
        obj = loads_json(raw)
    except InvalidJSONError as exc:
        return _fail_closed(400, f"request body is not valid JSON: {exc}")
    try:
        return DecisionsRequest.model_validate(obj)
    except ValidationError as exc:
        return _fail_closed(422, [
            {"loc": ["body", *e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ])  # fmt: skip


def _fail_closed(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **FAIL_CLOSED_BODY}, status_code=status)


def _model_info(holder: ModelHolder) -> ModelInfo:
    cur = holder.current
    base: dict[str, Any] = {
        "source": holder.describe,
        "poll_s": holder.poll_s,
        "last_check": holder.last_check.isoformat() if holder.last_check else None,
        "last_error": opt_without_credentials(holder.last_error),
    }
    if cur is None:
        return ModelInfo(loaded=False, **base)
    inner = getattr(cur.model, "python_model", cur.model)
    mismatch = getattr(inner, "numerics_mismatch", None)
    return ModelInfo(
        loaded=True, **cur.info(), **base,
        numerics_mismatch=mismatch if isinstance(mismatch, str) else None,
    )  # fmt: skip


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be conversation text)."""
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
