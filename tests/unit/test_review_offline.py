"""Review push and pull against an in-memory stand-in for Label Studio (no server): routing
results, silver labels, the task import, annotation sync and gold resolution land in the store
through its review transaction. The same steps against a real Label Studio are in
``tests/integration/test_review.py``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labeling.collection import pull, queue_label_errors
from labeling.routing import RoutingConfig
from labeling.studio import Projects, PushReport, import_pending, result_for, route_pending
from labelloop.store import LabelStore

TURNS = [{"role": "user", "text": "which trail near [LOCATION] for a sunset hike?"}]
LABEL_SETS = {"interests": ["653", "1"], "sensitive": ["health"]}


class FakeStudio:
    """The Label Studio calls push and pull make, on tasks kept in memory."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.overlaps: list[tuple[int, int]] = []

    def iter_tasks(
        self, project_id: int, *, updated_after: datetime | None = None, full: bool = False
    ) -> Iterator[dict[str, Any]]:
        return iter([t for _, t in sorted(self.tasks.items()) if t["project"] == project_id])

    def import_tasks(self, project_id: int, items: Sequence[Mapping[str, Any]]) -> list[int]:
        ids = []
        for item in items:
            tid = 1000 + len(self.tasks)
            self.tasks[tid] = {"id": tid, "project": project_id, "data": dict(item["data"]),
                               "overlap": 1, "annotations": [], "updated_at": None}  # fmt: skip
            ids.append(tid)
        return ids

    def set_overlap(self, task_id: int, overlap: int) -> None:
        self.overlaps.append((task_id, overlap))

    def delete_task(self, task_id: int) -> None:
        del self.tasks[task_id]

    def users(self) -> dict[int, str]:
        return {1: "ann1@example.org"}

    def annotate(self, task_id: int, ann_id: int, interests: list[str], at: str) -> None:
        task = self.tasks[task_id]
        task["annotations"] = [{"id": ann_id, "completed_by": 1, "lead_time": 4.0,
                                "result": result_for(interests, []), "updated_at": at}]  # fmt: skip
        task["updated_at"] = at


def _store(tmp_path: Path) -> LabelStore:
    store = LabelStore(f"sqlite:///{tmp_path / 'ls.db'}")
    store.migrate()
    convs = [
        {"conversation_id": cid, "account_hash": "h", "surface": "assistant_chat",
         "country": "US", "account_linked": True, "started_at": None, "eligible": cid != "x",
         "exclusion_reason": None if cid != "x" else "minor", "content_hash": cid, "source": "t",
         "policy_version": "p", "redacted_turns": TURNS if cid != "x" else None}
        for cid in ("a", "b", "x")
    ]  # fmt: skip
    store.add_conversations(convs)
    props = [
        {"conversation_id": cid, "proposer_id": "llm", "prompt_hash": "p1", "model_id": "m",
         "embedding_model_id": None, "interests": {"653": conf}, "sensitive": {},
         "uncertainty": unc, "flags": [], "detail": None, "run_id": "r0"}
        for cid, conf, unc in (("a", 0.6, 0.9), ("b", 0.99, 0.01), ("x", 0.6, 0.9))
    ]  # fmt: skip
    store.upsert_proposals(props)
    return store


def test_push_then_pull_resolves_the_review_to_gold(tmp_path: Path) -> None:
    store = _store(tmp_path)
    client = FakeStudio()
    projects = Projects(review=1, adjudication=2, schema_version="v", config="<View/>")
    cfg = RoutingConfig(budget=10, qa_sample_rate=0.0, overlap_share=0.0, selection="uncertainty")
    push_report = PushReport("push-1")
    result = route_pending(store, projects.review, cfg, run_id="push-1", report=push_report)
    assert {d.conversation_id: d.route.value for d in result.decisions} == {
        "a": "needs_review", "b": "auto_accepted",
    }  # fmt: skip
    assert push_report.silver_written == 1 and len(push_report.invalid) == 1  # "x": ineligible
    assert store.gold_by_origin() == {"silver": 1}
    assert store.review_task_statuses(projects.review) == {"importing": 1}

    import_pending(store, client, projects.review, label_threshold=0.5, report=push_report)
    assert push_report.imported == 1
    ((task_id, task),) = client.tasks.items()
    assert task["data"]["conversation_id"] == "a" and task["data"]["proposal"]["proposer"] == "llm"
    assert store.review_task_statuses(projects.review) == {"open": 1}
    # routing again finds nothing new: every proposal has its route
    again = route_pending(store, projects.review, cfg, run_id="push-2")
    assert again.decisions == []

    client.annotate(task_id, 501, ["1"], "2026-03-01T10:00:00Z")
    report = pull(store, client, projects, run_id="pull-1", label_sets=LABEL_SETS)
    assert (report.tasks_seen, report.annotations_new, report.gold_created) == (1, 1, 1)
    assert store.gold_by_origin() == {"human": 1, "silver": 1}
    assert store.gold_conversation_ids({"human"}) == {"a"}
    assert store.review_task_statuses(projects.review) == {"done": 1}
    assert store.sync_value("ls:1:updated_at") == "2026-03-01T10:00:00+00:00"
    assert store.last_run_stats("review_pull") is not None

    # nothing new in Label Studio: no label row changes
    again_report = pull(store, client, projects, run_id="pull-2", label_sets=LABEL_SETS)
    assert (again_report.annotations_unchanged, again_report.annotations_new) == (1, 0)
    assert (again_report.gold_created, again_report.gold_updated) == (0, 0)

    # an edit of the annotation updates its row and the gold label
    client.annotate(task_id, 501, ["653", "1"], "2026-03-01T11:00:00Z")
    edited = pull(store, client, projects, run_id="pull-3", label_sets=LABEL_SETS)
    assert (edited.annotations_updated, edited.gold_updated) == (1, 1)
    gold = {g.conversation_id: g for g, _ in store.training_data(include_silver=False).gold}
    assert (gold["a"].interests, gold["a"].origin, gold["a"].revision) == (["1", "653"], "human", 2)
    assert (gold["b"].interests, gold["b"].origin, gold["b"].weight) == (["653"], "silver", 0.5)

    # the model confidently contradicts a human label: the gold goes to adjudication
    probs = {"a": {"1": 0.01}, "b": {"1": 0.02}}
    queued = queue_label_errors(store, client, projects, probs, ["1"], run_id="le-1")
    assert queued == {"issues": 1, "conversations": 1, "queued": 1}
    (adj_id,) = [tid for tid, t in client.tasks.items() if t["project"] == projects.adjudication]
    assert client.tasks[adj_id]["data"]["conversation_id"] == "a"
    assert store.review_task_statuses(projects.adjudication) == {"open": 1}
    # the adjudicator's answer becomes gold; asking again for a done task reopens it
    client.annotate(adj_id, 601, ["1"], "2026-03-01T12:00:00Z")
    adjudicated = pull(store, client, projects, run_id="pull-4", label_sets=LABEL_SETS)
    assert adjudicated.gold_updated == 1
    assert store.gold_by_origin() == {"adjudicated": 1, "silver": 1}
    assert store.review_task_statuses(projects.adjudication) == {"done": 1}
    probs = {"a": {"653": 0.99}, "b": {"653": 0.99}}  # "a" lacks 653 now, "b" has it
    reopened = queue_label_errors(store, client, projects, probs, ["653"], run_id="le-2")
    assert reopened == {"issues": 1, "conversations": 1, "queued": 1}
    assert store.review_task_statuses(projects.adjudication) == {"adjudication": 1}
    store.dispose()
