"""Per-turn sensitive scores for reviewers: which turns make a conversation a sensitive suspect.

Label Studio review tasks highlight the turns whose score reaches a threshold
(``labeling.studio.evidence_regions``), so a reviewer confirms or rejects them in seconds.

* :class:`FilterTurnScorer`: the production targeting filter's own per-segment scores (max per
  turn of P(any sensitive)); a lexicon keyword in a turn scores 1.
* :class:`LexiconTurnScorer`: before any filter is trained: 1 for a blocking keyword, otherwise
  0.3 per cue term of the sensitive vocabulary (at most 0.9).

Both take conversations as rendered, redacted turns (``labeling.segments.turn_texts``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from targeting.scorer import FilterBundle, Lexicon, TextEmbedder


class FilterTurnScorer:
    def __init__(self, bundle: FilterBundle, embedder: TextEmbedder | None, version: str) -> None:
        self.bundle = bundle
        self.embedder = embedder
        self.source = f"targeting filter v{version}"

    def __call__(self, conversations: Sequence[Sequence[str]]) -> list[tuple[float, ...]]:
        seg = self.bundle.score_segments(conversations, self.embedder)
        out = [np.zeros(len(c)) for c in conversations]
        for k, s in enumerate(seg.segments):
            i = int(seg.owner[k])
            score = 1.0 if seg.lexicon_hits[k] else float(seg.any[k])
            out[i][s.turn] = max(out[i][s.turn], score)
        return [tuple(round(float(x), 4) for x in o) for o in out]


class LexiconTurnScorer:
    def __init__(self, lexicon: Lexicon, categories: Sequence[str]) -> None:
        self.bundle = FilterBundle.empty(
            categories,
            lexicon=dict(lexicon.keywords),
            cues=dict(lexicon.cues),
            cue_weight=1.0,
            cue_not_before=dict(lexicon.cue_not_before),
            identity_rule=lexicon.identities,
        )
        self.source = "sensitive vocabulary (no filter model yet)"

    def __call__(self, conversations: Sequence[Sequence[str]]) -> list[tuple[float, ...]]:
        out: list[tuple[float, ...]] = []
        for turns in conversations:
            cues = self.bundle.cue_counts(list(turns)).sum(axis=1) if turns else np.zeros(0)
            out.append(
                tuple(
                    1.0 if self.bundle.lexicon_hits(t) else round(min(0.9, 0.3 * float(c)), 4)
                    for t, c in zip(turns, cues, strict=True)
                )
            )
        return out
