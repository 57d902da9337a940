"""Shared Prefect plumbing: task runner by setting, retries, the LLM concurrency limit, artifacts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from labelloop.settings import Settings

log = logging.getLogger("labelloop.flows")

LLM_LIMIT = "labelloop-llm"
# Calls to Label Studio, MLflow, the LLM and the filter are retried with backoff.
SERVICE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


def task_runner(settings: Settings) -> Any:
    """Threads (default) or Dask (a local cluster, or a scheduler address)."""
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.flow_workers)


def ensure_llm_limit(settings: Settings) -> bool:
    """Create (or resize) the global concurrency limit on LLM batches; False if no API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )

    try:
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(LLM_LIMIT)
            except Exception:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=LLM_LIMIT, limit=settings.llm_concurrency)
                )
                return True
            if limit.limit != settings.llm_concurrency:
                client.update_global_concurrency_limit(
                    LLM_LIMIT, GlobalConcurrencyLimitUpdate(limit=settings.llm_concurrency)
                )
            return True
    except Exception as exc:  # no server reachable: run without the limit, say so
        log.warning("could not set the LLM concurrency limit: %s", exc)
        return False


@contextlib.contextmanager
def llm_slot(enabled: bool) -> Iterator[None]:
    """Hold one slot of the LLM concurrency limit while a proposal batch runs."""
    if not enabled:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(LLM_LIMIT, occupy=1, strict=False):
        yield


def md_table(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], headers: Sequence[str] = ("", "")
) -> str:
    """A markdown table from a mapping (two columns) or a list of dicts."""
    if isinstance(rows, Mapping):
        lines = [f"| {headers[0]} | {headers[1]} |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in rows.items()]
        return "\n".join(lines)
    if not rows:
        return "_none_"
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_cell(x)}" for k, x in v.items()) or "-"
    return "-" if v is None else str(v)


def publish(key: str, title: str, sections: Mapping[str, str]) -> str:
    """One markdown artifact per flow run (outside a run it is only returned)."""
    from labelloop.safe_text import without_credentials

    body = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{t}" for h, t in sections.items())
    body = without_credentials(body)
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return body  # a plain function call: nothing to attach to (and no server to start)
    with contextlib.suppress(Exception):
        create_markdown_artifact(markdown=body, key=key, description=title)
    return body


def drift(current: Mapping[str, float], previous: Mapping[str, float] | None) -> dict[str, str]:
    """Per-key change against the previous run, e.g. label shares or mean confidence."""
    if not previous:
        return {k: f"{v:.3f} (first run)" for k, v in current.items()}
    out = {}
    for k in sorted(set(current) | set(previous)):
        a, b = previous.get(k, 0.0), current.get(k, 0.0)
        out[k] = f"{b:.3f} ({b - a:+.3f})"
    return out
