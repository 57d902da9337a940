"""Deployments with cron schedules (schedules are settings) and event triggers, served against
the Prefect server."""

from __future__ import annotations

from typing import Any

from prefect import Flow

from flows.common import task_runner
from flows.events import promote_trigger, retrain_trigger
from flows.loop import collect_reviews, promote, retrain, sample_and_propose, score_batch
from labelloop.runtime import filter_model_ref
from labelloop.settings import Settings


def deployments(settings: Settings) -> list[Any]:
    """One deployment per flow.

    ``retrain`` runs when ``collect_reviews`` announces enough new gold (``labelloop.gold.ready``)
    and on its cron as a backstop (a run that finds too little new gold skips itself); ``promote``
    has no schedule: it runs for each version whose gate passed (``labelloop.gate.passed``) and
    approves it only with ``gate_auto_approve`` (see :mod:`flows.events`).

    Each deployment runs at most once at a time: a scheduled run that finds the previous one still
    going is cancelled (Prefect's deployment concurrency limit, strategy CANCEL_NEW), so an hourly
    sample never overlaps the last and two retrains never race for the registry.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    runner = task_runner(settings)
    scheduled: list[tuple[Flow[..., Any], str]] = [
        (sample_and_propose, settings.schedule_sample_and_propose),
        (collect_reviews, settings.schedule_collect_reviews),
        (retrain, settings.schedule_retrain),
        (score_batch, settings.schedule_score_batch),
    ]
    triggers: dict[str, list[Any]] = {retrain.name: [retrain_trigger(settings.db_url)]}
    out = [
        f.with_options(task_runner=runner).to_deployment(
            name="labelloop",
            cron=cron,
            tags=["labelloop"],
            concurrency_limit=one_at_a_time,
            triggers=triggers.get(f.name),
        )
        for f, cron in scheduled
    ]
    out.append(
        promote.with_options(task_runner=runner).to_deployment(
            name="labelloop",
            tags=["labelloop"],
            concurrency_limit=one_at_a_time,
            triggers=[promote_trigger(settings.mlflow_uri, filter_model_ref(settings))],
        )
    )
    return out


def serve_all(settings: Settings) -> None:  # pragma: no cover - blocks until interrupted
    from prefect import serve

    serve(*deployments(settings))
