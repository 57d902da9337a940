"""Conversation text as the filter sees it: one rendered line per turn, cut into segments.

The targeting filter judges a conversation by its **segments**, so that one sensitive sentence
anywhere in a long dialogue is seen on its own instead of being averaged away (or truncated) in a
whole-conversation embedding:

* :func:`redact_turns` is the one redaction of a conversation's turns: what the label store keeps
  (``ConversationRow.redacted_turns``) and what every rendering below starts from.
* :func:`turn_texts` renders each turn (already redacted by the caller, or redacted here with
  :func:`redact_turns`) as ``"role: text"`` (``"role/modality: text"`` for voice, image and video
  turns). These strings are what training and serving score; ``"\\n".join(turn_texts(...))`` is
  the conversation text (:func:`labeling.records.render_turns`, one
  :func:`~labeling.records.render_turn` per line).
* :func:`scored_texts` is redact-then-render for one record: the serving filter
  (``targeting.decide``), ``train --from-records`` (``experiments.dataset``) and, through the
  stored :func:`redact_turns` output, training from the label store all score its text.
* :func:`segment_turns` cuts every turn into segments of at most ``max_chars`` characters along
  sentence boundaries (a sentence longer than that is cut at whitespace, a run without whitespace
  at ``max_chars``). Every character of every turn lands in exactly one segment: nothing is
  unseen. Each segment keeps its turn's role tag and the index of its turn, so a decision can
  name the turn that triggered it.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labeling.records import Conversation, render_turn, split_role_tag
from labeling.redaction import redact

DEFAULT_SEGMENT_CHARS = 400

# sentence ends: latin/cyrillic punctuation, CJK full stop, Devanagari danda, Arabic question mark,
# followed by whitespace; and line breaks
_SENTENCE_END = re.compile(r"(?<=[.!?。！？।॥؟])\s+|\n+")


@dataclass(frozen=True)
class Segment:
    turn: int  # index of the turn in the conversation
    text: str  # "role: ..." as scored


def redact_turns(turns: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Every turn's text redacted, as ``{"role", "modality", "text"}`` dicts (the shape the label
    store keeps), and the redaction counts by kind over all turns."""
    out: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for t in turns:
        r = redact(str(t.get("text", "")))
        counts.update(r.counts)
        out.append({"role": t["role"], "modality": t.get("modality"), "text": r.text})
    return out, counts


def turn_texts(turns: Iterable[Mapping[str, Any]], *, redacted: bool = False) -> tuple[str, ...]:
    """The rendered turns the filter scores. ``redacted=True``: the turns' text is already redacted
    (e.g. ``ConversationRow.redacted_turns``); otherwise every turn is redacted here."""
    if not redacted:
        turns, _ = redact_turns(turns)
    return tuple(render_turn(t) for t in turns)


def scored_texts(conv: Conversation) -> tuple[str, ...]:
    """The rendered, redacted turns the filter scores for ``conv`` (serving and training alike)."""
    return turn_texts(t.model_dump() for t in conv.turns)


def _split_long(sentence: str, max_chars: int) -> list[str]:
    out: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        cut = rest.rfind(" ", max_chars // 2, max_chars)
        if cut <= 0:
            cut = max_chars
        out.append(rest[:cut])
        rest = rest[cut:].lstrip()
    if rest:
        out.append(rest)
    return out


def split_text(text: str, max_chars: int = DEFAULT_SEGMENT_CHARS) -> list[str]:
    """``text`` as consecutive pieces of at most ``max_chars`` characters, cut at sentence ends
    where possible (whitespace between pieces is dropped; no other character is)."""
    if max_chars < 20:
        raise ValueError("max_chars must be >= 20")
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        if not sentence:
            continue
        for part in _split_long(sentence, max_chars):
            if current and len(current) + 1 + len(part) > max_chars:
                pieces.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return pieces or [text]


def segment_turns(rendered: Sequence[str], max_chars: int = DEFAULT_SEGMENT_CHARS) -> list[Segment]:
    """Segments of rendered turns (``turn_texts``); long turns are split, each piece keeping the
    turn's ``role:`` tag. An empty conversation has no segments."""
    out: list[Segment] = []
    for i, line in enumerate(rendered):
        tag, body = split_role_tag(line)
        prefix = f"{tag}: " if tag else ""
        budget = max(20, max_chars - len(prefix))
        for piece in split_text(body, budget):
            out.append(Segment(i, prefix + piece))
    return out
