"""The one-command demo: one full cycle of the loop on synthetic data, against the real local stack.

sample -> propose -> review tasks in Label Studio -> SIMULATED annotators -> collect -> retrain ->
gate -> approve -> the filter serves the new version -> score a batch; then a summary and the URLs.
The stack is left running (``labelloop stack down`` stops it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from labelloop.settings import Settings


def point_prefect_at(settings: Settings) -> None:
    """Flows report to the stack's Prefect server (set before prefect reads its settings)."""
    os.environ.setdefault("PREFECT_API_URL", settings.prefect_api)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@contextlib.contextmanager
def reporting_to(api_url: str) -> Iterator[None]:
    """Flows run inside report to the Prefect server at ``api_url``, and never to an ephemeral one.

    Prefect reads its settings once, when it is imported: setting ``PREFECT_API_URL`` afterwards
    (e.g. in a test session that imported prefect while collecting other tests) is ignored and
    flows silently start a temporary server instead, with a short start-up fuse. This overrides
    the settings in force and turns ephemeral servers off, so a wrong URL fails loudly."""
    from prefect.settings import temporary_settings

    # Prefect's concurrency-slot services are process-wide singletons holding a client bound to
    # the server in force when they started: stop them on the way in and out, or a slot request
    # goes to a server of an earlier context (gone by now) and fails to connect.
    _stop_slot_services()
    try:
        with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
            yield
    finally:
        _stop_slot_services()


def _stop_slot_services() -> None:
    from prefect.concurrency.services import ConcurrencySlotAcquisitionWithLeaseService

    ConcurrencySlotAcquisitionWithLeaseService.drain_all(timeout=30, at_exit=False)


def run_cycle(
    settings: Settings,
    *,
    n: int = 120,
    seed: int = 7,
    accuracy: float = 0.95,
    annotators: int = 3,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One full cycle; returns per-step results and timings (the e2e test asserts on them)."""
    from flows.common import task_runner
    from flows.loop import collect_reviews, retrain, sample_and_propose, score_batch
    from labeling.annotator_sim import simulate
    from labeling.studio import bootstrap
    from labeling.synth import generate, write_jsonl
    from labelloop.runtime import Runtime

    runner = task_runner(settings)
    out: dict[str, Any] = {"timings": {}}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        say(f"-> {name}")
        t0 = time.perf_counter()
        res = fn()
        out["timings"][name] = round(time.perf_counter() - t0, 1)
        out[name] = res
        return res

    settings.source_dir.mkdir(parents=True, exist_ok=True)
    data = settings.source_dir / f"synth-{seed}-{n}.jsonl"
    step("synth", lambda: {"path": str(data), "records": write_jsonl(generate(n, seed), data)})
    step(
        "sample_and_propose",
        lambda: sample_and_propose.with_options(task_runner=runner)(files=[str(data)]),
    )
    rt = Runtime(settings)

    def annotate() -> dict[str, Any]:
        projects = bootstrap(rt.studio, rt.taxonomy, rt.policy)
        rep = simulate(rt.store, rt.studio, projects, rt.taxonomy, rt.policy.categories,
                       accuracy=accuracy, annotators=annotators, seed=seed)  # fmt: skip
        return rep.as_dict()

    step("annotate_sim", annotate)
    step("collect_reviews", lambda: collect_reviews.with_options(task_runner=runner)())
    # the adjudication tasks opened by the first pull are answered, then collected
    step("annotate_sim_adjudication", annotate)
    step("collect_reviews_2", lambda: collect_reviews.with_options(task_runner=runner)())
    trained = step("retrain", lambda: retrain.with_options(task_runner=runner)(force=True))
    version = trained["version"]
    gate_passed = bool(trained["gate"]["passed"])
    # the demo approves the first model even if the gate fails on tiny synthetic data (recorded)
    step("promote", lambda: _promote(settings, version, gate_passed))
    step("score_batch", lambda: score_batch.with_options(task_runner=runner)(files=[str(data)]))
    return out


def _promote(settings: Settings, version: str, gate_passed: bool) -> dict[str, Any]:
    from experiments.gate import approve
    from flows.loop import promote

    if gate_passed:
        return dict(promote(version=version, approve=True))
    approve(version, tracking_uri=settings.mlflow_uri, force=True,
            reason="demo: first model on synthetic data; gate verdict recorded in MLflow")  # fmt: skip
    res = dict(promote(version=version, approve=False))
    from flows.loop import reload_filter_task

    res["forced"] = True
    res["reload"] = reload_filter_task.fn(settings)
    return res
