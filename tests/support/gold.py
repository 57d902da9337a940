"""Human gold labels written straight into a label store (tests of what counts gold)."""

from __future__ import annotations

from collections.abc import Sequence

from labelloop.store import LabelStore


def add_human_gold(store: LabelStore, ids: Sequence[str], *, origin: str = "human") -> None:
    """One eligible conversation and one gold label of ``origin`` per id."""
    from labelloop.store.models import ConversationRow, GoldLabelRow

    with store.session() as s:
        for cid in ids:
            s.add(ConversationRow(
                conversation_id=cid, account_hash="x", surface="assistant_chat", country="US",
                account_linked=True, eligible=True,
                redacted_turns=[{"role": "user", "text": f"hello {cid}", "modality": "text"}],
                content_hash="h", source="test", policy_version="p",
            ))  # fmt: skip
        s.flush()
        for cid in ids:
            s.add(GoldLabelRow(conversation_id=cid, interests=["653"], sensitive=[], origin=origin))
