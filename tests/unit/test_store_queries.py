"""The queries the other packages run through ``LabelStore`` methods (SQLite here; the same tests
run on PostgreSQL with the integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.store import LabelStore
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
