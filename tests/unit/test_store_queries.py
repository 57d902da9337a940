"""The queries the other packages run through ``LabelStore`` methods (SQLite here; the same tests
run on PostgreSQL with the integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.store import LabelStore, ReviewTransaction, TaskIntent
from labelloop.store.models import GoldLabelRow, ReviewTaskRow

TURNS = [{"role": "user", "text": "[NAME] asks about trails"}]


def _conv(cid: str, *, eligible: bool = True, **kw: Any) -> dict[str, Any]:
    row = {
        "conversation_id": cid,
        "account_hash": "h",
        "surface": "assistant_chat",
        "country": "US",
        "account_linked": True,
        "started_at": None,
        "eligible": eligible,
        "exclusion_reason": None if eligible else "minor",
        "content_hash": "x",
        "source": "t",
        "policy_version": "p",
        "redacted_turns": TURNS if eligible else None,
    }
    row.update(kw)
    return row


def _proposal(cid: str, *, model: str = "m1", **kw: Any) -> dict[str, Any]:
    row = {
        "conversation_id": cid,
        "proposer_id": "llm+knn",
        "prompt_hash": "p1",
        "model_id": model,
        "embedding_model_id": None,
        "interests": {"653": 0.9},
        "sensitive": {},
        "uncertainty": 0.2,
        "flags": [],
        "detail": None,
        "run_id": "r1",
    }
    row.update(kw)
    return row


def test_pending_proposals_and_redacted_turns(store: LabelStore) -> None:
    store.add_conversations([_conv("a"), _conv("b"), _conv("x", eligible=False), _conv("c")])
    assert store.conversations_without_proposal("p1", "m1") == ["a", "b", "c"]
    assert store.conversations_without_proposal("p1", "m1", limit=2) == ["a", "b"]
    assert store.upsert_proposals([_proposal("a"), _proposal("b", model="m2")]) == (2, 0)
    # a proposal of another model does not count for this one
    assert store.conversations_without_proposal("p1", "m1") == ["b", "c"]
    assert store.conversations_without_proposal("p1", "m2") == ["a", "c"]
    # ineligible conversations have no text; unknown ids are left out
    assert store.redacted_turns(["a", "x", "nope"]) == {"a": TURNS}


def test_upsert_proposals_updates_the_row_of_the_same_key(store: LabelStore) -> None:
    store.add_conversations([_conv("a")])
    assert store.upsert_proposals([_proposal("a")]) == (1, 0)
    assert store.upsert_proposals([_proposal("a", uncertainty=0.7, run_id="r2")]) == (0, 1)
    data = store.training_data()
    assert data.gold == [] and data.silver == []  # not routed: not silver
    from sqlalchemy import select

    from labelloop.store.models import ProposalRow

    with store.session() as s:
        rows = list(s.scalars(select(ProposalRow)))
    assert [(r.uncertainty, r.run_id) for r in rows] == [(0.7, "r2")]


def test_llm_cache_first_writer_wins_and_latency(store: LabelStore) -> None:
    assert store.llm_cache_get("k1") is None
    row = {"cache_key": "k1", "prompt_hash": "p", "model_id": "m", "response": {"a": 1},
           "input_tokens": 10, "output_tokens": 2, "latency_s": 1.0}  # fmt: skip
    store.llm_cache_put(row)
    store.llm_cache_put({**row, "response": {"a": 2}})
    assert store.llm_cache_get("k1") == {"a": 1}
    assert store.llm_seconds_per_call() is None  # fewer than 3 calls
    store.llm_cache_put({**row, "cache_key": "k2", "latency_s": 2.0})
    store.llm_cache_put({**row, "cache_key": "k3", "latency_s": 3.0})
    assert store.llm_seconds_per_call() == pytest.approx(2.0)


def test_runs_record_and_newest_stats(store: LabelStore) -> None:
    assert store.last_run_stats("retrain") is None
    store.record_run("r1", "retrain", {"gold": 3})
    store.record_run("r2", "retrain", {"gold": 7})
    store.record_run("s1", "sample_and_propose", {"confidence": {"x": 0.5}})
    assert store.last_run_stats("retrain") == {"gold": 7}
    store.record_run("r2", "retrain", {"gold": 8})  # the same run again: new stats, no new row
    assert store.last_run_stats("retrain") == {"gold": 8}
    assert store.last_run_stats("sample_and_propose") == {"confidence": {"x": 0.5}}


def test_sync_values_by_prefix(store: LabelStore) -> None:
    store.set_sync_values(
        {"source:folder:/a": "1", "source:folder:/b": "2", "ls:projects:v1": "{}"}
    )
    store.set_sync_values({"source:folder:/a": "3"})
    assert store.sync_values("source:folder:") == {"source:folder:/a": "3", "source:folder:/b": "2"}
    assert store.sync_value("ls:projects:v1") == "{}"
    assert store.sync_value("ls:projects:v2") is None


def test_gold_and_review_task_counts(store: LabelStore) -> None:
    store.add_conversations([_conv(c) for c in "abcd"])
    with store.session() as s:
        for cid, origin in zip("abcd", ["human", "adjudicated", "silver", "human"], strict=True):
            s.add(GoldLabelRow(conversation_id=cid, interests=["653"], sensitive=[], origin=origin))
        for cid, project, status in [("a", 1, "open"), ("b", 1, "open"), ("c", 1, "done"),
                                     ("a", 2, "adjudication")]:  # fmt: skip
            s.add(ReviewTaskRow(conversation_id=cid, ls_project_id=project, status=status))
    assert store.gold_count({"human", "adjudicated"}) == 3
    assert store.gold_count(["seed"]) == 0
    assert store.gold_conversation_ids({"human", "adjudicated"}) == {"a", "b", "d"}
    assert store.gold_by_origin() == {"human": 2, "adjudicated": 1, "silver": 1}
    assert store.review_task_statuses(1) == {"open": 2, "done": 1}
    assert store.review_task_statuses(2) == {"adjudication": 1}
    assert store.review_task_statuses(3) == {}


def test_source_gold(store: LabelStore) -> None:
    gold = {"sensitive": [], "interests": ["Travel"]}
    store.add_conversations([_conv("a", source_gold=gold), _conv("b", source_gold=None)])
    assert store.source_gold(["a", "b", "nope"]) == {"a": gold, "b": None}


def test_training_data_and_eval_split(store: LabelStore) -> None:
    store.add_conversations([_conv("a"), _conv("b"), _conv("c"), _conv("x", eligible=False)])
    with store.session() as s:
        s.add(GoldLabelRow(conversation_id="a", interests=["653"], sensitive=[], origin="human"))
        s.add(GoldLabelRow(conversation_id="x", interests=[], sensitive=["health"], origin="human"))
    store.upsert_proposals([_proposal("b", route="auto_accepted"), _proposal("c")])
    store.upsert_proposals([_proposal("b", model="m2", route="auto_accepted")])
    data = store.training_data()
    assert [(g.conversation_id, turns) for g, turns in data.gold] == [("a", TURNS), ("x", None)]
    # the latest auto-accepted proposal per conversation; unrouted ones are not silver
    assert [(p.conversation_id, p.model_id) for p, _ in data.silver] == [("b", "m2")]
    assert data.gold_max_id is not None and data.gold_revisions == 2
    assert data.eval_ids == set()
    assert store.training_data(include_silver=False).silver == []

    assert store.add_eval_split([{"conversation_id": "a", "stratum": "s1", "rule": "hash"}]) == 1
    # an item already in the split keeps its row
    assert store.add_eval_split([{"conversation_id": "a", "stratum": "s2", "rule": "min"},
                                 {"conversation_id": "b", "stratum": "s2", "rule": "min"}]) == 1  # fmt: skip
    assert store.training_data().eval_ids == {"a", "b"}


# ---- the review transaction (routing, task import, annotation sync, gold resolution) ----
def test_review_sync_values(store: LabelStore) -> None:
    with store.review() as tx:
        assert tx.sync_value("ls:1:updated_at") is None
        tx.set_sync_value("ls:1:updated_at", "2026-01-01T00:00:00+00:00")
    with store.review() as tx:
        assert tx.sync_value("ls:1:updated_at") == "2026-01-01T00:00:00+00:00"
        tx.set_sync_value("ls:1:updated_at", "2026-01-02T00:00:00+00:00")
    assert store.sync_values("ls:") == {"ls:1:updated_at": "2026-01-02T00:00:00+00:00"}


def test_review_rolls_back_when_the_block_raises(store: LabelStore) -> None:
    store.add_conversations([_conv("a")])

    def fail_midway() -> None:
        with store.review() as tx:
            tx.set_sync_value("k", "v")
            tx.add_gold_label("a", ["653"], [], "human", 1.0)
            raise RuntimeError("a Label Studio call failed")

    with pytest.raises(RuntimeError, match="Label Studio"):
        fail_midway()
    assert store.sync_value("k") is None
    assert store.gold_by_origin() == {}


def test_review_conversations_and_proposals(store: LabelStore) -> None:
    store.add_conversations([_conv("a"), _conv("b"), _conv("c")])
    store.upsert_proposals([_proposal("a"), _proposal("b"), _proposal("a", model="m2")])
    store.upsert_proposals([_proposal("c", route="needs_review")])
    with store.review() as tx:
        assert tx.conversation_ids() == {"a", "b", "c"}
        convs = tx.conversations(["a", "c", "nope"])
        assert sorted(convs) == ["a", "c"] and convs["a"].redacted_turns == TURNS
        assert tx.conversations([]) == {}
        assert tx.unrouted_conversation_ids() == {"a", "b"}
        latest = tx.latest_proposals({"a", "b", "nope"})
        # the newest proposal of each conversation (highest id): model m2 for "a"
        assert {cid: p.model_id for cid, p in latest.items()} == {"a": "m2", "b": "m1"}
        assert tx.latest_proposals(set()) == {}
        by_id = tx.proposals([latest["a"].id, latest["b"].id, 10_000])
        assert {p.conversation_id for p in by_id.values()} == {"a", "b"}
        assert tx.proposals([]) == {}
        tx.set_proposal_route(latest["b"], "rejected")
        keep = latest["a"].id
        # the other unrouted proposal of "a" is superseded, the kept one stays unrouted
        assert tx.route_unrouted_proposals("a", "superseded", except_id=keep) == 1
        assert tx.unrouted_conversation_ids() == {"a"}
        assert tx.route_unrouted_proposals("a", "needs_review") == 1
        assert tx.route_unrouted_proposals("a", "needs_review") == 0
    with store.review() as tx:
        assert tx.unrouted_conversation_ids() == set()
        routes = {p.model_id: p.route for p in tx.latest_proposals({"a"}).values()}
        assert routes == {"m2": "needs_review"}
        assert tx.proposals([keep])[keep].route == "needs_review"
        assert tx.latest_proposals({"b"})["b"].route == "rejected"


def _intent(cid: str, project: int = 1, **kw: Any) -> TaskIntent:
    args: dict[str, Any] = {"conversation_id": cid, "project_id": project, "status": "importing",
                            "reason": "uncertain", "priority": 0.5, "overlap": 1, "run_id": "r1",
                            "detail": {"proposal_id": 1}}  # fmt: skip
    args.update(kw)
    return TaskIntent(**args)


def _task(tx: ReviewTransaction, cid: str, **kw: Any) -> bool:
    return tx.insert_task_if_absent(_intent(cid, **kw))


def test_review_tasks_queries(store: LabelStore) -> None:
    store.add_conversations([_conv(c) for c in "abcde"])
    with store.review() as tx:
        assert _task(tx, "a", priority=0.2)
        assert _task(tx, "b", priority=0.9)
        assert _task(tx, "c", status="queued")
        assert _task(tx, "d", status="open", overlap=2, reason="qa_sample")
        assert not _task(tx, "a", status="queued")  # the first task of (a, 1) is kept
        tx.add_task(_intent("a", 2, reason="disagreement", priority=2.0, detail={"why": "x"}))
    with store.review() as tx:
        assert tx.task_conversation_ids(1, "queued") == {"c"}
        assert tx.task_conversation_ids_not_in(1, "queued") == {"a", "b", "d"}
        assert tx.task_conversation_ids(2, "importing") == {"a"}
        assert [t.conversation_id for t in tx.tasks_with_status_by_priority(1, "importing")] == [
            "b",
            "a",
        ]
        assert sorted(t.conversation_id for t in tx.tasks_with_status(1, "importing")) == ["a", "b"]
        assert [t.conversation_id for t in tx.tasks_with_reason(1, "qa_sample")] == ["d"]
        a1, a2 = tx.task_of("a", 1), tx.task_of("a", 2)
        assert a1 is not None and a1.status == "importing" and a1.ls_project_id == 1
        assert a2 is not None and a2.reason == "disagreement" and a2.priority == 2.0
        assert tx.task_of("e", 1) is None
        assert tx.task(a1.id) is a1 and tx.task(10_000) is None
        assert sorted(tx.tasks_of(1, ["a", "c", "e"])) == ["a", "c"]
        assert tx.tasks_of(1, []) == {}
        # only imported tasks (with a Label Studio id) that need more than one annotation
        assert tx.multi_annotation_tasks(1) == []
        d = tx.task_of("d", 1)
        assert d is not None
        tx.link_task(d, 71, "open")
        assert [t.conversation_id for t in tx.multi_annotation_tasks(1)] == ["d"]
        tx.merge_task_detail(d, {"overlap_set": True})
        c = tx.task_of("c", 1)
        assert c is not None
        tx.reroute_task(c, _intent("c", reason="sensitive_suspect", priority=3.0, overlap=2,
                                   run_id="r2", detail={"reasons": ["x"]}))  # fmt: skip
        tx.set_task_status(a2, "done")
        tx.reopen_task(a2, status="adjudication", reason="label_error", detail={"why": "y"})
    with store.review() as tx:
        d, c, a2 = tx.task_of("d", 1), tx.task_of("c", 1), tx.task_of("a", 2)
        assert d is not None and (d.ls_task_id, d.status) == (71, "open")
        assert d.detail == {"proposal_id": 1, "overlap_set": True}
        assert c is not None
        assert (c.status, c.reason, c.priority, c.overlap, c.run_id) == (
            "importing", "sensitive_suspect", 3.0, 2, "r2",
        )  # fmt: skip
        assert c.detail == {"proposal_id": 1, "reasons": ["x"]}
        assert a2 is not None and (a2.status, a2.reason) == ("adjudication", "label_error")
        assert a2.detail == {"why": "y"}
    assert store.review_task_statuses(1) == {"importing": 3, "open": 1}


def _values(**kw: Any) -> Any:
    from datetime import UTC, datetime

    from labelloop.store import AnnotationValues

    args: dict[str, Any] = {
        "conversation_id": "a", "ls_task_id": 7, "ls_project_id": 1, "annotator": "ann@x",
        "status": "completed", "interests": ["653"], "sensitive": [], "comment": None,
        "lead_time_s": 3.5, "ls_updated_at": datetime(2026, 1, 1, 12, tzinfo=UTC),
    }  # fmt: skip
    args.update(kw)
    return AnnotationValues(**args)


def test_review_annotations(store: LabelStore) -> None:
    store.add_conversations([_conv("a"), _conv("b")])
    with store.review() as tx:
        assert tx.upsert_annotation(101, _values()) == "inserted"
        assert tx.upsert_annotation(102, _values(annotator="other@x", sensitive=["health"])) == (
            "inserted"
        )
        assert tx.upsert_annotation(201, _values(conversation_id="b", ls_task_id=8)) == "inserted"
        assert tx.upsert_annotation(301, _values(ls_project_id=2, ls_task_id=9)) == "inserted"
    with store.review() as tx:
        # read back (naive on SQLite), the same values are unchanged; an edit is an update
        assert tx.upsert_annotation(101, _values()) == "unchanged"
        assert tx.upsert_annotation(102, _values(annotator="other@x", interests=["1"])) == (
            "updated"
        )
        assert sorted(a.ls_annotation_id for a in tx.annotations_of("a", 1)) == [101, 102]
        assert [a.ls_annotation_id for a in tx.annotations_of("a", 2)] == [301]
        assert sorted(a.ls_annotation_id for a in tx.project_annotations(1)) == [101, 102, 201]
        live = tx.task_annotations_not_in(7, "cancelled")
        assert sorted(a.ls_annotation_id for a in live) == [101, 102]
        tx.set_annotation_status(live[0], "cancelled")
    with store.review() as tx:
        assert len(tx.task_annotations_not_in(7, "cancelled")) == 1
        (edited,) = [a for a in tx.annotations_of("a", 1) if a.ls_annotation_id == 102]
        assert (edited.interests, edited.sensitive) == (["1"], [])


def test_review_gold_labels(store: LabelStore) -> None:
    store.add_conversations([_conv("a"), _conv("b"), _conv("c")])
    with store.review() as tx:
        assert tx.gold_label("a") is None
        tx.add_gold_label("a", ["653"], [], "silver", 0.5)
        tx.add_gold_label("b", [], ["health"], "human", 1.0)
    with store.review() as tx:
        a = tx.gold_label("a")
        assert a is not None and (a.interests, a.origin, a.weight, a.revision) == (
            ["653"], "silver", 0.5, 1,
        )  # fmt: skip
        first = a.resolved_at
        assert tx.revise_gold_label(a, ["653", "1"], [], "human", 1.0) == 2
        assert sorted(g.conversation_id for g in tx.gold_labels()) == ["a", "b"]
        pairs = tx.gold_with_conversations(["a", "c", "nope"])
        assert [(g.conversation_id, c.redacted_turns) for g, c in pairs] == [("a", TURNS)]
    with store.review() as tx:
        a = tx.gold_label("a")
        assert a is not None and (a.interests, a.origin, a.weight, a.revision) == (
            ["653", "1"], "human", 1.0, 2,
        )  # fmt: skip
        assert a.resolved_at >= first
    assert store.gold_by_origin() == {"human": 2}


def test_upsert_gold_in_a_review_transaction(store: LabelStore) -> None:
    """Origin precedence and revisions, through the review transaction."""
    from labeling.gold import upsert_gold

    store.add_conversations([_conv("a")])
    with store.review() as tx:
        made = upsert_gold(tx, "a", ["653", "653"], [], "silver", 0.5)
        assert made is not None and (made.created, made.revision, made.interests) == (
            True, 1, ("653",),
        )  # fmt: skip
    with store.review() as tx:
        assert upsert_gold(tx, "a", ["653"], [], "silver", 0.5) is None  # nothing changed
        human = upsert_gold(tx, "a", ["1"], ["health"], "human")
        assert human is not None and (human.created, human.revision) == (False, 2)
        assert upsert_gold(tx, "a", ["653"], [], "silver", 0.5) is None  # weaker: refused
        forced = upsert_gold(tx, "a", [], ["health"], "provisional", 0.0, force=True)
        assert forced is not None and forced.revision == 3
        with pytest.raises(ValueError, match="unknown origin"):
            upsert_gold(tx, "a", [], [], "made-up")
    with store.review() as tx:
        g = tx.gold_label("a")
        assert g is not None and (g.origin, g.sensitive, g.weight, g.revision) == (
            "provisional", ["health"], 0.0, 3,
        )  # fmt: skip
