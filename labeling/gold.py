"""Writing gold labels to the label store, with an origin precedence (shared by review push/pull).

``gold_labels`` holds one row per conversation. A write replaces the row only when its origin is at
least as strong as the stored one (adjudicated > human > provisional = seed > silver), and bumps
``revision`` only when something actually changed, so re-running any step is a no-op.

Origins: ``silver`` (auto-accepted proposal), ``seed`` (curated), ``provisional`` (sensitive
disagreement awaiting adjudication: union of the categories, no interests, weight 0 so it is never
trained on but keeps the conversation out of targeting), ``human`` (resolved review),
``adjudicated`` (an adjudicator's answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labelloop.store import LabelStore, ReviewTransaction

PRECEDENCE: dict[str, int] = {
    "silver": 1,
    "seed": 2,
    "provisional": 2,
    "human": 3,
    "adjudicated": 4,
}
HUMAN_ORIGINS = frozenset({"human", "adjudicated"})


@dataclass(frozen=True)
class GoldChange:
    conversation_id: str
    interests: tuple[str, ...]
    sensitive: tuple[str, ...]
    origin: str
    revision: int
    created: bool


def upsert_gold(
    tx: ReviewTransaction,
    conversation_id: str,
    interests: Sequence[str],
    sensitive: Sequence[str],
    origin: str,
    weight: float = 1.0,
    *,
    force: bool = False,
) -> GoldChange | None:
    """Insert or update the gold label in the review transaction ``tx``; returns the change, or
    None when nothing changed/allowed.

    ``force``: allow a weaker origin to replace a stronger one (an edit that supersedes, e.g. a
    human edit after the provisional union was written is never weaker; used for re-review).
    """
    if origin not in PRECEDENCE:
        raise ValueError(f"gold label for {conversation_id!r}: unknown origin {origin!r}")
    ints = sorted(set(interests))
    sens = sorted(set(sensitive))
    row = tx.gold_label(conversation_id)
    if row is None:
        tx.add_gold_label(conversation_id, ints, sens, origin, weight)
        return GoldChange(conversation_id, tuple(ints), tuple(sens), origin, 1, True)
    if not force and PRECEDENCE[origin] < PRECEDENCE.get(row.origin, 0):
        return None
    same = (
        sorted(row.interests or []) == ints
        and sorted(row.sensitive or []) == sens
        and row.origin == origin
        and abs(row.weight - weight) < 1e-12
    )
    if same:
        return None
    revision = tx.revise_gold_label(row, ints, sens, origin, weight)
    return GoldChange(conversation_id, tuple(ints), tuple(sens), origin, revision, False)


def human_gold_count(store: LabelStore) -> int:
    """Gold labels that came from people (human or adjudicated): the retrain trigger counts these."""
    return store.gold_count(HUMAN_ORIGINS)
