"""The one-command demo: one full cycle of the loop on synthetic data, against the real local stack.

sample -> propose -> review tasks in Label Studio -> SIMULATED annotators -> collect -> retrain ->
gate -> approve -> the filter serves the new version -> score a batch; then a summary and the URLs.
The stack is left running (``labelloop stack down`` stops it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from labelloop.settings import Settings

# LLM answers in the demo's one proposal run. One answer takes ~6.5 s on a quiet 2-core CPU and
# 13-21 s (up to 47 s) when the cores are shared with other jobs: 24 answers took 12.5 min of demo
# there, 12 keep it under ten. The conversations past it get kNN-only proposals, all reviewed.
DEMO_LLM_BUDGET = 12

_SOURCE_WORDS = {
    "llm": "by the LLM",
    "knn": "by kNN alone (sure)",
    "knn_over_budget": "by kNN alone (over the LLM budget: to review)",
    "knn_no_llm": "by kNN alone (no LLM)",
}


def proposal_sources(propose: Mapping[str, Any]) -> str:
    """Where a run's proposals came from, in words (``propose``: the flow's proposal stats)."""
    by_source = dict(propose.get("by_source") or {})
    parts = [f"{by_source.pop(k)} {w}" for k, w in _SOURCE_WORDS.items() if by_source.get(k)]
    parts += [f"{v} {k}" for k, v in sorted(by_source.items()) if v]
    budget = propose.get("llm_budget")
    tail = f" (LLM budget {budget})" if budget is not None else ""
    return (", ".join(parts) or "none") + tail


def point_prefect_at(settings: Settings) -> None:
    """Flows report to the stack's Prefect server, and Prefect keeps its files (profiles, local
    results of the flows) in ``<state>/prefect`` like the server does, not in ``~/.prefect``;
    a ``PREFECT_*`` variable already set wins. Call it before prefect is imported: it reads its
    settings once, at import."""
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
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

    # Prefect's queue services (concurrency slots, logs, events) are process-wide singletons
    # holding a client bound to the server in force when they started: stop them on the way in
    # and out, or e.g. a slot request goes to a server of an earlier context (gone by now) and
    # fails to connect. They restart on demand under the settings in force.
    _stop_prefect_services()
    try:
        with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
            yield
    finally:
        _stop_prefect_services()


def _stop_prefect_services() -> None:
    from prefect.concurrency.services import ConcurrencySlotAcquisitionWithLeaseService

    # drain_all works on the registry that every queue service shares, not one class's instances
    ConcurrencySlotAcquisitionWithLeaseService.drain_all(timeout=30, at_exit=False)


@dataclass(frozen=True)
class HumanReview:
    """``labelloop demo --human``: pause after the review tasks are pushed until a person has
    labelled ``labels`` of them in Label Studio (or ``timeout_s`` passed); the simulated
    annotators then answer only what is still open."""

    labels: int = 10
    timeout_s: float = 1800.0
    poll_s: float = 10.0


def wait_for_human_labels(
    count: Callable[[], int],
    *,
    want: int,
    timeout_s: float,
    poll_s: float = 10.0,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll ``count()`` (annotations in the review project) until ``want`` new ones arrived or
    ``timeout_s`` passed; returns how many came and whether it timed out."""
    start = count()
    t0 = clock()
    last = 0
    while True:
        got = count() - start
        if got != last:
            say(f"   {got} of {want} labels received")
            last = got
        if got >= want:
            return {"labels": got, "timed_out": False, "waited_s": round(clock() - t0, 1)}
        if clock() - t0 >= timeout_s:
            return {"labels": got, "timed_out": True, "waited_s": round(clock() - t0, 1)}
        sleep(poll_s)


def run_cycle(
    settings: Settings,
    *,
    n: int = 120,
    seed: int = 7,
    accuracy: float = 0.95,
    annotators: int = 3,
    say: Callable[[str], None] = print,
    human: HumanReview | None = None,
    llm_budget: int | None = None,
) -> dict[str, Any]:
    """One full cycle; returns per-step results and timings (the e2e test asserts on them).

    ``llm_budget``: at most this many conversations get an LLM answer (None: the
    ``llm_budget_per_run`` setting); the others that need one get kNN-only proposals and go to
    review.

    The first model is promoted only when it passes its gate; otherwise the result says why
    (``promote.reason``, the failed checks) and production stays as it was."""
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
        lambda: sample_and_propose.with_options(task_runner=runner)(
            files=[str(data)], llm_budget=llm_budget
        ),
    )
    rt = Runtime(settings)
    if human is not None:
        projects = bootstrap(rt.studio, rt.taxonomy, rt.policy)
        say(
            f"   label some of the {out['sample_and_propose']['push'].get('imported', 0)} review "
            f"tasks yourself: {review_url(settings, projects.review)}\n"
            f"   log in as {settings.label_studio_username} / {demo_password(settings)}; the demo "
            f"goes on after {human.labels} labels or {human.timeout_s / 60:.0f} min"
        )
        step("human_review", lambda: wait_for_human_labels(
            lambda: rt.studio.annotation_count(projects.review), want=human.labels,
            timeout_s=human.timeout_s, poll_s=human.poll_s, say=say,
        ))  # fmt: skip

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
    step("promote", lambda: _promote(trained))
    step("score_batch", lambda: score_batch.with_options(task_runner=runner)(files=[str(data)]))
    return out


def _promote(trained: Mapping[str, Any]) -> dict[str, Any]:
    """Promote the new version only if its gate passed; never force it."""
    from flows.loop import promote

    version = str(trained["version"])
    gate = trained["gate"]
    if not gate["passed"]:
        return {
            "approved": None,
            "version": version,
            "reason": f"version {version} failed its gate ({gate['summary']}); not promoted",
            "failed_checks": list(gate.get("failed_checks") or []),
        }
    return {**promote(version=version, approve=True), "version": version}


def review_url(settings: Settings, project_id: int) -> str:
    from flows.links import studio_project_url
    from labelloop.runtime import studio_config

    return studio_project_url(studio_config(settings), project_id)


def demo_password(settings: Settings) -> str:
    """The Label Studio password to show: the dev default in full (it is documented), anything
    else only by the variable that holds it."""
    from labelloop.settings import DEV_LS_PASSWORD

    raw = settings.label_studio_password.get_secret_value()
    if raw == DEV_LS_PASSWORD:
        return raw
    return "the password in LABELLOOP_LABEL_STUDIO_PASSWORD"
