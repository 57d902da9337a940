"""Retrain and promote run on the loop's events, on a real Prefect server started by the project's
stack: the deployments are registered with their triggers (as ``labelloop serve`` does), the
events are emitted the way the flows emit them, and the server's automations create the runs.
Below the new-gold threshold, or for another label store, nothing is created. Flow runs link to
the MLflow run, the model version and the Label Studio project (link artifacts), and long steps
show their progress (progress artifacts)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

RUN_TIMEOUT_S = 120.0  # from the event to the flow run the automation creates
QUIET_S = 20.0  # how long nothing must happen after events that must not trigger anything


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from labelloop.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp_path_factory.mktemp("trigger-state"),
        prefect_port=_free_port(),
        retrain_min_new_gold=3,
    )


@pytest.fixture(scope="module")
def deployment_ids(settings: Any) -> Iterator[dict[str, UUID]]:
    """The stack's Prefect server (health waited for generously) with the loop's deployments
    and their triggers registered."""
    from flows.demo import reporting_to
    from flows.serve import deployments
    from infra.stack import Stack

    stack = Stack(settings)
    try:
        stack.up(services=["prefect"], timeout_s=900)
        with reporting_to(settings.prefect_api):
            yield {d.flow_name: d.apply() for d in deployments(settings)}
    finally:
        stack.down()


def _flush_events() -> None:
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=60)


def _triggered_runs(deployment_id: UUID) -> list[Any]:
    """Flow runs of the deployment that an automation created (not its cron schedule)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterCreatedBy,
        FlowRunFilterDeploymentId,
    )

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                    created_by=FlowRunFilterCreatedBy(type_=["AUTOMATION"]),
                )
            )
        )


def _wait_for_runs(deployment_id: UUID, n: int, timeout_s: float = RUN_TIMEOUT_S) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = _triggered_runs(deployment_id)
        if len(runs) >= n or time.monotonic() > deadline:
            return runs
        time.sleep(2)


def test_automations_exist_for_retrain_and_promote(deployment_ids: dict[str, UUID]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import EventTrigger

    from flows.events import GATE_PASSED, GOLD_READY

    expected: dict[str, set[str]] = {name: set() for name in deployment_ids}
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            assert isinstance(automation.trigger, EventTrigger), automation.name
            for action in automation.actions:
                for name, dep_id in deployment_ids.items():
                    if getattr(action, "deployment_id", None) == dep_id:
                        expected[name] |= set(automation.trigger.expect)
    assert expected["retrain"] == {GOLD_READY}
    assert expected["promote"] == {GATE_PASSED}
    for name in ("sample_and_propose", "collect_reviews", "score_batch"):
        assert expected[name] == set(), name


def test_enough_new_gold_runs_retrain_and_less_does_not(
    settings: Any, deployment_ids: dict[str, UUID]
) -> None:
    from flows.events import GOLD_ADDED, GOLD_READY, announce_gold, emit, label_store_resource
    from labelloop.runtime import Runtime
    from tests.support.gold import add_human_gold

    retrain_id = deployment_ids["retrain"]
    store = Runtime(settings).store
    resource = label_store_resource(settings.db_url)
    threshold = settings.retrain_min_new_gold

    # below the threshold: gold.added goes out, no retrain
    add_human_gold(store, ["g0", "g1"])
    below = announce_gold(store, new=2, threshold=threshold, resource=resource, run_id="c1")
    assert below["events"] == [GOLD_ADDED] and not below["retrain_due"]
    # another installation's label store reaching its threshold does not retrain this one
    assert emit(GOLD_READY, label_store_resource("sqlite:////elsewhere/labels.db"), {"new": 9})
    _flush_events()
    time.sleep(QUIET_S)
    assert _triggered_runs(retrain_id) == []

    # the threshold crossed: one gold.ready, one retrain run
    add_human_gold(store, ["g2"])
    crossed = announce_gold(store, new=1, threshold=threshold, resource=resource, run_id="c2")
    assert crossed["events"] == [GOLD_ADDED, GOLD_READY]
    _flush_events()
    runs = _wait_for_runs(retrain_id, 1)
    assert len(runs) == 1, f"no retrain run within {RUN_TIMEOUT_S:.0f}s of labelloop.gold.ready"
    assert runs[0].parameters.get("force", False) is False  # the flow checks the count itself

    # the same crossing seen again by the next collect run: announced once, still one run
    add_human_gold(store, ["g3"])
    again = announce_gold(store, new=1, threshold=threshold, resource=resource, run_id="c3")
    assert again["events"] == [GOLD_ADDED]
    _flush_events()
    time.sleep(QUIET_S)
    assert len(_triggered_runs(retrain_id)) == 1


def test_a_passed_gate_runs_promote_for_that_version(
    settings: Any, deployment_ids: dict[str, UUID]
) -> None:
    from flows.events import announce_gate_passed
    from labelloop.runtime import filter_model_ref

    promote_id = deployment_ids["promote"]
    model = filter_model_ref(settings)
    failed = {"version": "3", "passed": False, "summary": "FAIL"}
    assert not announce_gate_passed(failed, tracking_uri=settings.mlflow_uri, model=model)
    passed = {"version": "4", "passed": True, "champion_version": "2", "summary": "PASS"}
    assert announce_gate_passed(passed, tracking_uri=settings.mlflow_uri, model=model)
    _flush_events()
    runs = _wait_for_runs(promote_id, 1)
    assert len(runs) == 1, f"no promote run within {RUN_TIMEOUT_S:.0f}s of labelloop.gate.passed"
    assert runs[0].parameters["version"] == "4"
    time.sleep(QUIET_S)
    assert len(_triggered_runs(promote_id)) == 1


def test_flow_runs_link_to_mlflow_and_label_studio(settings: Any, deployment_ids: Any) -> None:
    """The link artifacts the retrain and sample_and_propose flows create, on the real server."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import get_run_context

    from flows.links import link_review_project, link_training
    from labeling.studio import StudioConfig
    from labelloop.runtime import filter_model_ref

    model = filter_model_ref(settings)
    trained = {"run_id": "abc123", "version": "5",
               "run_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc123"}  # fmt: skip

    @flow(name="labelloop-link-check")
    def linked() -> str:
        made = link_training(trained, tracking_uri="http://127.0.0.1:5000", model=model)
        assert made == {"mlflow-run": True, "mlflow-model-version": True}
        assert link_review_project(StudioConfig("http://127.0.0.1:8080", "token"), 9)
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]

    run_id = linked()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    # Prefect stores a link artifact as markdown: [text](url)
    by_key = {a.key: str(a.data) for a in artifacts}
    assert by_key == {
        "mlflow-run": "[MLflow run abc123](http://127.0.0.1:5000/#/experiments/1/runs/abc123)",
        "mlflow-model-version": f"[{model.name} version 5]"
        f"(http://127.0.0.1:5000/#/models/{model.name}/versions/5)",
        "label-studio-review": "[Label Studio project 9](http://127.0.0.1:8080/projects/9/data)",
    }


def test_long_steps_show_progress_on_the_run(deployment_ids: Any) -> None:
    """The progress artifacts of flows.progress (proposals, scoring, training stages) on the
    real server: created at 0 %, at 100 % when the step is done."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import get_run_context

    from flows.progress import StepProgress, stages_progress

    @flow(name="labelloop-progress-check")
    def stepped() -> str:
        p = StepProgress("progress-check", "score files", 3, artifact_key="score-progress").start()
        for _ in range(3):
            p.advance()
        p.finish()
        on = stages_progress("progress-check-train", "training")
        on("embed", 0, 10)
        on("embed", 10, 10)
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]

    run_id = stepped()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    progress = {a.key: (a.type, a.data) for a in artifacts}
    assert progress == {
        "score-progress": ("progress", 100.0),
        "training-embed": ("progress", 100.0),
    }
