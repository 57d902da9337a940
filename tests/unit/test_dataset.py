"""Snapshots and the frozen eval split (records and label store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.dataset import (
    Example,
    StoreSnapshotConfig,
    assign_eval,
    snapshot_from_records,
    snapshot_from_store,
    snapshot_hash,
    unit_hash,
)
from labeling.policy import load_policy
from labeling.records import Conversation
from labeling.taxonomy import load_taxonomy


def _gold(n: int, start: int = 0) -> list[Example]:
    cats = ["health", "religion", "union_membership"]
    return [
        Example(f"c{i:05d}", f"text {i}", (cats[i % 7],) if i % 7 < 3 else (), ("653",))
        for i in range(start, start + n)
    ]


def test_unit_hash_deterministic_and_uniform() -> None:
    assert unit_hash("a") == unit_hash("a") != unit_hash("b")
    vals = [unit_hash(f"id{i}") for i in range(5000)]
    assert all(0 <= v < 1 for v in vals)
    assert 0.18 < sum(v < 0.2 for v in vals) / 5000 < 0.22


def test_eval_split_only_grows_and_old_items_stay() -> None:
    first = _gold(400)
    ev1 = set(assign_eval(first))
    assert 0.1 < len(ev1) / 400 < 0.3
    # adding gold never moves old items: old members stay, old non-members never join by hash
    more = first + _gold(600, start=400)
    new = assign_eval(more, ev1)
    assert not (set(new) & ev1)
    assert {cid for cid, rule in new.items() if rule == "hash"}.isdisjoint(
        {e.conversation_id for e in first}
    )
    # deterministic: the same call gives the same answer
    assert new == assign_eval(more, ev1)
    # and a fresh computation over everything agrees with the incremental one (hash rule)
    full = {c for c, r in assign_eval(more).items() if r == "hash"}
    assert full == {c for c in ev1 | set(new) if unit_hash(c) < 0.2}


def test_eval_split_stratum_minimum() -> None:
    rare = [Example(f"u{i}", "t", ("union_membership",), None) for i in range(3)]
    common = [Example(f"n{i}", "t", (), None) for i in range(50)]
    ev = assign_eval(rare + common, fraction=0.2, min_stratum_size=3)
    assert sum(1 for c in ev if c.startswith("u")) >= 1
    ev2 = assign_eval(rare[:2] + common, fraction=0.2, min_stratum_size=3)
    assert all(ev2[c] == "hash" for c in ev2 if c.startswith("u"))


def test_snapshot_hash_is_order_independent() -> None:
    g = _gold(20)
    assert snapshot_hash(g[:15], g[15:]) == snapshot_hash(list(reversed(g[:15])), g[15:])
    assert snapshot_hash(g[:15], g[15:]) != snapshot_hash(g[:14], g[14:])


def test_snapshot_from_records_maps_interests(record_factory: Any) -> None:
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    make = record_factory
    recs = [
        Conversation.model_validate(
            make(
                conversation_id="a",
                gold={"sensitive": [], "interests": ["Travel", "Music and Audio"]},
            )
        ),
        Conversation.model_validate(
            make(conversation_id="b", gold={"sensitive": ["health"], "interests": None})
        ),
        Conversation.model_validate(make(conversation_id="c", gold=None)),
        Conversation.model_validate(
            make(conversation_id="d", gold={"sensitive": [], "interests": ["Nope"]})
        ),
        Conversation.model_validate(
            make(
                conversation_id="e", turns=[{"role": "user", "text": "mail me at bob@example.com"}]
            )
        ),
    ]
    errors: list[str] = []
    snap = snapshot_from_records(recs, tax, policy.categories, eval_fraction=0.0, errors=errors)
    by = {e.conversation_id: e for e in snap.train}
    assert set(by) == {"a", "b", "e"}
    assert by["a"].interests == tuple(sorted({tax.name_to_id("Travel"), "338"}))
    assert by["b"].interests is None and by["b"].sensitive == ("health",)
    assert "bob@example.com" not in by["e"].text and "[EMAIL]" in by["e"].text
    assert len(errors) == 1 and "'d'" in errors[0] and "gold.interests" in errors[0]
    with pytest.raises(ValueError, match=r"gold\.interests"):
        snapshot_from_records(recs, tax, policy.categories)
    assert snap.lineage["taxonomy_version"] == tax.version


def _store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from labelloop.store import LabelStore
    from labelloop.store.models import Base

    store = LabelStore(f"sqlite:///{tmp_path / 'ls.db'}")
    Base.metadata.create_all(store.engine)
    return store


def _add(store, ids: list[str], sensitive: str | None = None, silver: bool = False) -> None:  # type: ignore[no-untyped-def]
    from labelloop.store.models import ConversationRow, GoldLabelRow, ProposalRow

    with store.session() as s:
        for cid in ids:
            s.add(ConversationRow(
                conversation_id=cid, account_hash="x", surface="assistant_chat", country="US", account_linked=True,
                eligible=True, redacted_turns=[{"role": "user", "text": f"hello {cid}", "modality": "text"}],
                content_hash="h", source="test", policy_version="p",
            ))  # fmt: skip
        s.flush()
        for cid in ids:
            if silver:
                s.add(ProposalRow(
                    conversation_id=cid, proposer_id="llm", prompt_hash="ph", model_id="m",
                    interests={"653": 0.9, "596": 0.2}, sensitive={"health": 0.7}, uncertainty=0.1, flags=[],
                    route="auto_accepted",
                ))  # fmt: skip
            else:
                s.add(GoldLabelRow(conversation_id=cid, interests=["653"], sensitive=[sensitive] if sensitive else [],
                                   origin="human"))  # fmt: skip


def test_snapshot_from_store_persists_eval_and_weights_silver(tmp_path: Path) -> None:
    from sqlalchemy import select

    from labelloop.store.models import EvalSplitRow

    store = _store(tmp_path)
    cats = load_policy().categories
    _add(store, [f"g{i:04d}" for i in range(200)])
    _add(store, [f"h{i:04d}" for i in range(20)], sensitive="health")
    _add(store, [f"s{i:04d}" for i in range(30)], silver=True)
    cfg = StoreSnapshotConfig(silver_precision=0.7)
    snap1 = snapshot_from_store(store, cats, config=cfg)
    ev1 = {e.conversation_id for e in snap1.eval}
    assert ev1 and all(not c.startswith("s") for c in ev1)  # silver never in eval
    silver = [e for e in snap1.train if e.origin == "silver"]
    assert len(silver) == 30 and all(e.weight == 0.7 for e in silver)
    assert silver[0].interests == ("653",) and silver[0].sensitive == ("health",)
    assert not ev1 & {e.conversation_id for e in snap1.train}
    assert any(e.sensitive == ("health",) for e in snap1.eval)
    assert snap1.lineage["label_store_revision"].startswith("gold:220/")
    with store.session() as s:
        persisted = {r for (r,) in s.execute(select(EvalSplitRow.conversation_id))}
    assert persisted == ev1
    # more gold arrives, rule parameters even change: old eval items stay
    _add(store, [f"k{i:04d}" for i in range(300)])
    snap2 = snapshot_from_store(store, cats, config=StoreSnapshotConfig(eval_fraction=0.05))
    ev2 = {e.conversation_id for e in snap2.eval}
    assert ev1 <= ev2
    assert snap2.content_hash != snap1.content_hash
    snap3 = snapshot_from_store(store, cats, config=StoreSnapshotConfig(eval_fraction=0.05))
    assert snap3.content_hash == snap2.content_hash


def test_snapshot_from_records_in_worker_processes_is_the_same(
    record_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import experiments.dataset as dataset

    monkeypatch.setattr(dataset, "PARALLEL_MIN_RECORDS", 10)
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    recs = []
    for i in range(60):
        gold = {"sensitive": ["health"] if i % 5 == 0 else [], "interests": ["Travel"]}
        if i == 7:
            gold = {"sensitive": ["astrology"], "interests": None}  # not a policy category
        text = f"call me on 415-555-01{i:02d} about trip {i}"
        recs.append(Conversation.model_validate(record_factory(
            conversation_id=f"r{i:03d}", gold=gold, turns=[{"role": "user", "text": text}],
        )))  # fmt: skip
    one_err: list[str] = []
    two_err: list[str] = []
    one = snapshot_from_records(recs, tax, policy.categories, errors=one_err, workers=1)
    two = snapshot_from_records(recs, tax, policy.categories, errors=two_err, workers=2)
    assert one.train == two.train and one.eval == two.eval and len(one.train) + len(one.eval) == 59
    assert one_err == two_err and len(one_err) == 1 and "'r007'" in one_err[0]
    assert all("555" not in t for e in two.train for t in e.turns)  # redacted in the workers
    with pytest.raises(ValueError, match="r007"):
        snapshot_from_records(recs, tax, policy.categories, workers=2)
