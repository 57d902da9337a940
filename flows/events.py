"""The loop's Prefect events, and the deployment triggers that run retrain and promote on them.

==========================  ================  ===============================================
event                       emitted by        effect
==========================  ================  ===============================================
``labelloop.gold.added``    collect_reviews   none (shown in the Prefect UI's event feed): a
                                              pull resolved new gold labels
``labelloop.gold.ready``    collect_reviews   runs the ``retrain`` deployment
``labelloop.gate.passed``   retrain           runs the ``promote`` deployment for the version
==========================  ================  ===============================================

``labelloop.gold.ready`` is announced once per threshold crossing: when the label store holds at
least ``retrain_min_new_gold`` more human gold labels than at the last retrain, and no crossing
was announced since that retrain (the announcement is recorded in the store). Why not a trigger
on ``labelloop.gold.added`` directly: a Prefect trigger counts events (``threshold`` events within
``within``); it cannot add up a payload field such as the number of new labels, and its window is
bounded and starts over after firing, whereas labels may trickle in over weeks. The store knows
the exact count since the last retrain, so the crossing is computed there.

Events name their resource: the label store (``labelloop.label-store.<digest of its URL>``) and
the registered model (``labelloop.model.<digest of the registry URI>.<name>``), so two
installations sharing one Prefect server trigger only their own deployments.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from labelloop.safe_text import without_credentials

if TYPE_CHECKING:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from labelloop.store import LabelStore
    from targeting.model_ref import FilterModelRef

log = logging.getLogger(__name__)

GOLD_ADDED = "labelloop.gold.added"
GOLD_READY = "labelloop.gold.ready"
GATE_PASSED = "labelloop.gate.passed"
# the run kind under which an announced crossing is recorded in the label store
GOLD_READY_RUN = "gold_ready"
# the run kind (and its ``gold`` stat) that the retrain flow records when it trained
RETRAIN_RUN = "retrain"


def _digest(text: str) -> str:
    return hashlib.sha256(without_credentials(text).encode()).hexdigest()[:12]


def label_store_resource(db_url: str) -> dict[str, str]:
    """The Prefect resource of a label store (its URL's credentials never leave the machine)."""
    return {
        "prefect.resource.id": f"labelloop.label-store.{_digest(db_url)}",
        "prefect.resource.name": "labelloop label store",
    }


def model_resource(tracking_uri: str, model: FilterModelRef) -> dict[str, str]:
    """The Prefect resource of the registered filter model in one MLflow registry."""
    return {
        "prefect.resource.id": f"labelloop.model.{_digest(tracking_uri)}.{model.name}",
        "prefect.resource.name": model.name,
    }


@dataclass(frozen=True)
class GoldProgress:
    """Human gold labels in the store, against the last retrain and the last announcement."""

    total: int
    at_last_retrain: int
    announced_at: int | None
    threshold: int
    new: int = 0

    @property
    def since_retrain(self) -> int:
        return max(0, self.total - self.at_last_retrain)

    @property
    def due(self) -> bool:
        return self.since_retrain >= self.threshold

    @property
    def announce(self) -> bool:
        """Due, and this crossing not announced yet (an announcement at or above
        ``at_last_retrain + threshold`` belongs to the current crossing)."""
        already = (
            self.announced_at is not None
            and self.announced_at >= self.at_last_retrain + self.threshold
        )
        return self.due and not already

    def payload(self) -> dict[str, int]:
        return {
            "new": self.new,
            "total": self.total,
            "since_retrain": self.since_retrain,
            "threshold": self.threshold,
        }


def gold_events(progress: GoldProgress) -> list[tuple[str, dict[str, Any]]]:
    """The events a collect run emits: ``gold.added`` when it resolved new gold, ``gold.ready``
    when it found the threshold crossed and not announced yet."""
    out: list[tuple[str, dict[str, Any]]] = []
    if progress.new > 0:
        out.append((GOLD_ADDED, progress.payload()))
    if progress.announce:
        out.append((GOLD_READY, progress.payload()))
    return out


def gold_progress(store: LabelStore, *, new: int, threshold: int) -> GoldProgress:
    """Counts from the store: human gold now, at the last retrain, at the last announcement."""
    from labeling.gold import human_gold_count

    retrain = store.last_run_stats(RETRAIN_RUN) or {}
    ready = store.last_run_stats(GOLD_READY_RUN)
    return GoldProgress(
        total=human_gold_count(store),
        at_last_retrain=int(retrain.get("gold", 0)),
        announced_at=int(ready["gold"]) if ready and "gold" in ready else None,
        threshold=threshold,
        new=new,
    )


def announce_gold(
    store: LabelStore, *, new: int, threshold: int, resource: Mapping[str, str], run_id: str
) -> dict[str, Any]:
    """Emit the gold events of a collect run; a ``gold.ready`` that went out is recorded in the
    store so that it goes out once per crossing. Returns the counts and the events emitted."""
    progress = gold_progress(store, new=new, threshold=threshold)
    emitted: list[str] = []
    for name, payload in gold_events(progress):
        if not emit(name, resource, payload):
            continue
        emitted.append(name)
        if name == GOLD_READY:
            store.record_run(f"{run_id}-gold-ready", GOLD_READY_RUN, {"gold": progress.total})
    return {**progress.payload(), "retrain_due": progress.due, "events": emitted}


def gate_passed_payload(verdict: Mapping[str, Any], model: FilterModelRef) -> dict[str, Any]:
    """What ``labelloop.gate.passed`` carries: the version (promote's parameter) and why."""
    version = str(verdict["version"])
    return {
        "version": version,
        "model_uri": model.version_uri(version),
        "champion_version": verdict.get("champion_version"),
        "summary": verdict.get("summary"),
        "n_eval": verdict.get("n_eval"),
    }


def announce_gate_passed(
    verdict: Mapping[str, Any], *, tracking_uri: str, model: FilterModelRef
) -> bool:
    """Emit ``labelloop.gate.passed`` for a version whose gate passed (nothing otherwise)."""
    if not verdict.get("passed"):
        return False
    return emit(
        GATE_PASSED, model_resource(tracking_uri, model), gate_passed_payload(verdict, model)
    )


def emit(event: str, resource: Mapping[str, str], payload: Mapping[str, Any]) -> bool:
    """Send one event to the Prefect server in force; False when events are off (no server
    configured) or sending failed -- a flow never fails for an event."""
    try:
        from prefect.events import emit_event

        sent = emit_event(event=event, resource=dict(resource), payload=dict(payload))
    except Exception as exc:
        log.warning("event %s not emitted: %s", event, exc)
        return False
    if sent is None:
        log.info("event %s not emitted: no Prefect server configured", event)
        return False
    return True


def retrain_trigger(db_url: str) -> DeploymentEventTrigger:
    """Run ``retrain`` when this label store announces enough new gold."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="labelloop: retrain on new gold",
        description="collect_reviews found enough new human gold labels since the last retrain",
        expect={GOLD_READY},
        match={"prefect.resource.id": label_store_resource(db_url)["prefect.resource.id"]},
        threshold=1,
        within=timedelta(0),
    )


def promote_trigger(tracking_uri: str, model: FilterModelRef) -> DeploymentEventTrigger:
    """Run ``promote`` for the version whose gate passed (approval follows its own setting)."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="labelloop: promote a version that passed its gate",
        description="retrain registered a version and its gate passed",
        expect={GATE_PASSED},
        match={"prefect.resource.id": model_resource(tracking_uri, model)["prefect.resource.id"]},
        parameters={"version": "{{ event.payload.version }}"},
        threshold=1,
        within=timedelta(0),
    )
