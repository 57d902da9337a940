"""The loop's Prefect events: what they carry, when they go out, which deployments they trigger.
(tests/integration/test_flow_triggers.py proves the triggers on a real Prefect server.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.events import (
    GATE_PASSED,
    GOLD_ADDED,
    GOLD_READY,
    GoldProgress,
    announce_gate_passed,
    announce_gold,
    gate_passed_payload,
    gold_events,
    label_store_resource,
    model_resource,
    promote_trigger,
    retrain_trigger,
)
from labelloop.store import LabelStore
from targeting.model_ref import FilterModelRef
from tests.support.gold import add_human_gold

MODEL = FilterModelRef(name="labelloop-targeting-filter", alias="production")


def test_resources_name_the_store_and_model_without_credentials() -> None:
    a = label_store_resource("postgresql+psycopg://loop:secret-one@db:5432/labels")
    b = label_store_resource("postgresql+psycopg://loop:secret-two@db:5432/labels")
    other = label_store_resource("sqlite:////srv/other/labels.db")
    assert a["prefect.resource.id"].startswith("labelloop.label-store.")
    assert a == b  # the password is not part of the identity, and never in the event
    assert "secret" not in repr(a)
    assert a["prefect.resource.id"] != other["prefect.resource.id"]
    m = model_resource("http://user:pw@mlflow:5000", MODEL)
    assert m["prefect.resource.id"].endswith(".labelloop-targeting-filter")
    assert "pw" not in m["prefect.resource.id"]
    assert m != model_resource("http://elsewhere:5000", MODEL)


def test_gold_events_below_at_and_after_the_threshold() -> None:
    below = GoldProgress(total=49, at_last_retrain=0, announced_at=None, threshold=50, new=9)
    assert gold_events(below) == [
        (GOLD_ADDED, {"new": 9, "total": 49, "since_retrain": 49, "threshold": 50})
    ]
    crossing = GoldProgress(total=52, at_last_retrain=0, announced_at=None, threshold=50, new=3)
    assert [e for e, _ in gold_events(crossing)] == [GOLD_ADDED, GOLD_READY]
    assert gold_events(crossing)[1][1] == {
        "new": 3,
        "total": 52,
        "since_retrain": 52,
        "threshold": 50,
    }
    # the same crossing is announced once, however many collect runs see it
    again = GoldProgress(total=60, at_last_retrain=0, announced_at=52, threshold=50, new=8)
    assert [e for e, _ in gold_events(again)] == [GOLD_ADDED]
    # after a retrain at 60, the next crossing is at 110
    assert not GoldProgress(109, 60, 52, 50).announce
    assert GoldProgress(110, 60, 52, 50).announce
    # gold that arrived by another way (no new gold in this run) still crosses the threshold
    assert gold_events(GoldProgress(50, 0, None, 50, new=0)) == [
        (GOLD_READY, {"new": 0, "total": 50, "since_retrain": 50, "threshold": 50})
    ]
    assert gold_events(GoldProgress(10, 0, None, 50, new=0)) == []


def _store(tmp_path: Path) -> LabelStore:
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    store.migrate()
    return store


def test_announce_gold_reads_the_store_and_announces_each_crossing_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def fake_emit(event: str, resource: Any, payload: Any) -> bool:
        sent.append((event, dict(resource), dict(payload)))
        return True

    monkeypatch.setattr("flows.events.emit", fake_emit)
    store = _store(tmp_path)
    res = label_store_resource(f"sqlite:///{tmp_path / 'labels.db'}")
    add_human_gold(store, [f"g{i}" for i in range(3)])
    add_human_gold(store, ["silver-1"], origin="silver")  # not human: never counted
    out = announce_gold(store, new=3, threshold=4, resource=res, run_id="collect-1")
    assert out == {"new": 3, "total": 3, "since_retrain": 3, "threshold": 4,
                   "retrain_due": False, "events": [GOLD_ADDED]}  # fmt: skip
    add_human_gold(store, ["g3"], origin="adjudicated")
    out = announce_gold(store, new=1, threshold=4, resource=res, run_id="collect-2")
    assert out["events"] == [GOLD_ADDED, GOLD_READY] and out["retrain_due"]
    assert sent[-1] == (GOLD_READY, res, {"new": 1, "total": 4, "since_retrain": 4, "threshold": 4})
    assert store.last_run_stats("gold_ready") == {"gold": 4}
    add_human_gold(store, ["g4"])
    assert announce_gold(store, new=1, threshold=4, resource=res, run_id="collect-3")["events"] == [
        GOLD_ADDED
    ]
    # the retrain flow records the gold it trained on; four more cross the threshold again
    store.record_run("retrain-1", "retrain", {"gold": 5, "version": "1"})
    add_human_gold(store, [f"h{i}" for i in range(3)])
    assert announce_gold(store, new=3, threshold=4, resource=res, run_id="collect-4")["events"] == [
        GOLD_ADDED
    ]
    add_human_gold(store, ["h3"])
    out = announce_gold(store, new=1, threshold=4, resource=res, run_id="collect-5")
    assert out["events"] == [GOLD_ADDED, GOLD_READY] and out["since_retrain"] == 4


def test_a_ready_event_that_did_not_go_out_is_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flows.events.emit", lambda *a: False)
    store = _store(tmp_path)
    add_human_gold(store, ["g0", "g1"])
    out = announce_gold(store, new=2, threshold=2, resource={}, run_id="collect-1")
    assert out["retrain_due"] and out["events"] == []
    assert store.last_run_stats("gold_ready") is None  # the next run announces it


def test_emit_without_a_prefect_server_is_false_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.events import emit

    monkeypatch.setattr("prefect.events.utilities.should_emit_events", lambda: False)
    assert emit(GOLD_ADDED, {"prefect.resource.id": "labelloop.test"}, {"new": 1}) is False


def test_gate_passed_is_announced_only_for_a_passing_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    monkeypatch.setattr(
        "flows.events.emit", lambda e, r, p: sent.append((e, dict(r), dict(p))) or True
    )
    verdict = {"version": 7, "passed": True, "champion_version": "6", "summary": "PASS 4/4",
               "n_eval": 120}  # fmt: skip
    assert gate_passed_payload(verdict, MODEL) == {
        "version": "7",
        "model_uri": "models:/labelloop-targeting-filter/7",
        "champion_version": "6",
        "summary": "PASS 4/4",
        "n_eval": 120,
    }
    assert not announce_gate_passed(
        {**verdict, "passed": False}, tracking_uri="http://mlflow:5000", model=MODEL
    )
    assert sent == []
    assert announce_gate_passed(verdict, tracking_uri="http://mlflow:5000", model=MODEL)
    assert sent == [
        (
            GATE_PASSED,
            model_resource("http://mlflow:5000", MODEL),
            gate_passed_payload(verdict, MODEL),
        )
    ]


def test_triggers_match_the_resources_the_flows_emit_for() -> None:
    db = "sqlite:////srv/labelloop/labels.db"
    rt = retrain_trigger(db)
    assert rt.expect == {GOLD_READY}
    assert rt.match.model_dump() == {
        "prefect.resource.id": label_store_resource(db)["prefect.resource.id"]
    }
    assert rt.threshold == 1 and rt.parameters is None
    pt = promote_trigger("http://mlflow:5000", MODEL)
    assert pt.expect == {GATE_PASSED}
    assert pt.match.model_dump() == {
        "prefect.resource.id": model_resource("http://mlflow:5000", MODEL)["prefect.resource.id"]
    }
    assert pt.parameters == {"version": "{{ event.payload.version }}"}


def test_retrain_and_promote_deployments_carry_their_triggers(isolated_env: Path) -> None:
    from flows.serve import deployments
    from labelloop.runtime import filter_model_ref
    from labelloop.settings import Settings

    settings = Settings()
    deps = {d.flow_name: d for d in deployments(settings)}
    assert [t.expect for t in deps["retrain"].triggers] == [{GOLD_READY}]
    assert deps["retrain"].triggers[0].match.model_dump() == {
        "prefect.resource.id": label_store_resource(settings.db_url)["prefect.resource.id"]
    }
    assert [s.schedule.cron for s in deps["retrain"].schedules] == [settings.schedule_retrain]
    promote = deps["promote"]
    assert [t.expect for t in promote.triggers] == [{GATE_PASSED}]
    assert promote.triggers[0].match.model_dump() == {
        "prefect.resource.id": model_resource(settings.mlflow_uri, filter_model_ref(settings))[
            "prefect.resource.id"
        ]
    }
    assert promote.schedules == []
    for name in ("sample_and_propose", "collect_reviews", "score_batch"):
        assert deps[name].triggers == [], name
