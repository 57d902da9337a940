"""Segments: every character of every turn is scored, in pieces of bounded size."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labeling.segments import segment_turns, split_text, turn_texts


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def test_turn_texts_render_and_redact() -> None:
    turns = [
        {"role": "user", "text": "mail me at jane.doe@example.com"},
        {"role": "assistant", "text": "sure", "modality": "text"},
        {"role": "user", "text": "what is this?", "modality": "image"},
    ]
    out = turn_texts(turns)
    assert out[0].startswith("user: ") and "jane.doe@example.com" not in out[0]
    assert out[1] == "assistant: sure" and out[2] == "user/image: what is this?"
    assert turn_texts(turns, redacted=True)[0] == "user: mail me at jane.doe@example.com"


def test_short_turns_are_one_segment_each() -> None:
    segs = segment_turns(["user: hi", "assistant: hello", "user: bye"])
    assert [(s.turn, s.text) for s in segs] == [
        (0, "user: hi"),
        (1, "assistant: hello"),
        (2, "user: bye"),
    ]
    assert segment_turns([]) == []


def test_long_turn_is_cut_at_sentences_and_keeps_its_role() -> None:
    body = " ".join(f"This is sentence {i} about hiking boots." for i in range(60))
    segs = segment_turns([f"assistant: {body}"], max_chars=200)
    assert len(segs) > 5
    assert all(
        s.turn == 0 and s.text.startswith("assistant: ") and len(s.text) <= 200 for s in segs
    )
    assert all(s.text.endswith(".") for s in segs)  # cut at sentence ends
    joined = "".join(s.text.removeprefix("assistant: ") for s in segs)
    assert _squash(joined) == _squash(body)


def test_run_without_whitespace_is_cut_hard() -> None:
    pieces = split_text("x" * 1000, 100)
    assert all(len(p) <= 100 for p in pieces) and "".join(pieces) == "x" * 1000
    with pytest.raises(ValueError):
        split_text("abc", 5)


@given(st.text(max_size=3000), st.integers(min_value=20, max_value=600))
def test_no_character_is_lost(text: str, max_chars: int) -> None:
    pieces = split_text(text, max_chars)
    assert all(len(p) <= max_chars for p in pieces)
    assert _squash("".join(pieces)) == _squash(text)
