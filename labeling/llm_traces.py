"""MLflow traces of the label-proposal LLM calls (prompt, answer, latency, token counts).

Each proposal that calls the LLM becomes one trace in the experiment of :class:`LLMTraceConfig`:
a ``label_proposal`` span (tags ``prompt_hash`` and ``llm_model_id``; the validated labels, the
error if any, the calls, tokens and seconds as attributes) around one chat-model span per call,
recorded by MLflow's LangChain callback (``MlflowLangchainTracer``; ``langchain_core`` only, no
``langchain`` package): the messages sent, the answer, the latency and the token usage. Answers
served from the label store's cache make no call and no trace.

The conversation text in a trace is the redacted text the LLM was sent, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROPOSAL_SPAN = "label_proposal"


@dataclass(frozen=True)
class LLMTraceConfig:
    """Where the traces go: an MLflow tracking URI and the experiment (created if missing)."""

    tracking_uri: str
    experiment: str


def unreachable_reason(tracking_uri: str, timeout_s: float) -> str | None:
    """None when the tracking server answers ``/health`` (or the URI is not a server), else why."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import httpx

    try:
        r = httpx.get(tracking_uri.rstrip("/") + "/health", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if r.status_code == 200 else f"/health answered {r.status_code}"


def experiment_id(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing. Without a server (a ``sqlite:///``
    store) its artifacts and trace data go next to the database file, never into ``./mlruns``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location: str | None = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        location = (db.parent / f"{db.stem}-artifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def enable_llm_traces(config: LLMTraceConfig, *, timeout_s: float = 3.0) -> bool:
    """Send traces to ``config``'s experiment from now on (this process). False, with a warning
    and nothing changed, when the tracking server cannot be reached: proposals go on untraced."""
    from labelloop.safe_text import without_credentials

    why = unreachable_reason(config.tracking_uri, timeout_s)
    if why is not None:
        log.warning(
            "LLM calls are not traced: MLflow at %s is unreachable (%s); `labelloop stack up` "
            "starts it",
            without_credentials(config.tracking_uri),
            why,
        )
        return False
    import mlflow
    from mlflow.entities.trace_location import MlflowExperimentLocation

    try:
        mlflow.set_tracking_uri(config.tracking_uri)
        exp_id = experiment_id(config.tracking_uri, config.experiment)
        # the destination, not the active experiment: training runs in the same process set
        # their own experiment and the traces stay where they belong
        mlflow.tracing.set_destination(MlflowExperimentLocation(experiment_id=str(exp_id)))
    except Exception as exc:  # a server that answers /health but refuses the experiment
        log.warning("LLM calls are not traced: %s: %s", type(exc).__name__, exc)
        return False
    return True


def langchain_callbacks() -> list[Any]:
    """The LangChain callback that records one chat-model span per call (under the active span)."""
    from mlflow.langchain.langchain_tracer import MlflowLangchainTracer

    return [MlflowLangchainTracer()]


def flush() -> None:
    """Wait until traces logged in the background have been written (tests, end of a command)."""
    import mlflow

    mlflow.flush_trace_async_logging(terminate=False)


@contextmanager
def proposal_span(*, prompt_hash: str, model_id: str, system: str, user: str) -> Iterator[Any]:
    """One ``label_proposal`` span (a trace of its own, or a child of an active span), tagged
    with the prompt hash and the model; the chat-model spans of its calls nest under it."""
    import mlflow

    with mlflow.start_span(name=PROPOSAL_SPAN, span_type="CHAIN") as span:
        span.set_inputs({"prompt_hash": prompt_hash, "model_id": model_id, "system": system,
                         "user": user})  # fmt: skip
        span.set_attributes({"labelloop.prompt_hash": prompt_hash, "labelloop.model_id": model_id})
        mlflow.update_current_trace(tags={"prompt_hash": prompt_hash, "llm_model_id": model_id})
        yield span
