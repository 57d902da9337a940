"""Synthetic data generator: determinism, coverage, hard cases, format, bad lines."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from labeling.redaction import redact_record
from labeling.synth import (
    BAD_LINE_PROBLEMS,
    EXCLUDED_COUNTRIES,
    HARD_CASE_KINDS,
    INTEREST_NAMES,
    POLICY_DATE,
    SENSITIVE_CATEGORIES,
    SURFACES,
    bad_lines,
    generate,
    generate_annotated,
    write_jsonl,
)

# The IAB Content Taxonomy 3.1 tier-1 names (copied from the taxonomy file, not read from it).
IAB_31_TIER1 = frozenset(
    {
        "Attractions", "Automotive", "Books and Literature", "Business and Finance", "Careers",
        "Communication", "Crime", "Disasters", "Education", "Entertainment", "Events",
        "Family and Relationships", "Fine Art", "Food & Drink", "Genres", "Healthy Living",
        "Hobbies & Interests", "Holidays", "Home & Garden", "Law", "Medical Health",
        "Personal Celebrations & Life Events", "Personal Finance", "Pets", "Politics",
        "Pop Culture", "Real Estate", "Religion & Spirituality", "Science", "Sensitive Topics",
        "Shopping", "Sports", "Style & Fashion", "Technology & Computing", "Travel",
        "Video Gaming", "War and Conflicts",
    }
)  # fmt: skip
SENSITIVE_TIER1 = {"Medical Health", "Religion & Spirituality", "Politics", "Sensitive Topics"}
REQUIRED = {
    "conversation_id", "account_id", "surface", "country", "account_linked", "started_at",
    "turns", "gold",
}  # fmt: skip

N = 400


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate(N, seed=7)


def _texts(rec: dict[str, Any]) -> str:
    return " ".join(t["text"] for t in rec["turns"]).lower()


def test_same_seed_same_output() -> None:
    a = generate(120, seed=42)
    b = generate(120, seed=42)
    assert a == b
    assert json.dumps(a) == json.dumps(b)


def test_different_seed_different_output() -> None:
    assert generate(50, seed=1) != generate(50, seed=2)


def test_prefix_stable_and_ids(records: list[dict[str, Any]]) -> None:
    assert generate(10, seed=7) == records[:10]
    ids = [r["conversation_id"] for r in records]
    assert ids[0] == "synth-7-000000"
    assert ids[-1] == f"synth-7-{N - 1:06d}"
    assert len(set(ids)) == N


def test_zero_and_negative() -> None:
    assert generate(0, seed=1) == []
    with pytest.raises(ValueError, match="n must be"):
        generate(-1, seed=1)


def test_records_have_the_exact_format(records: list[dict[str, Any]]) -> None:
    for rec in records:
        line = json.dumps(rec, ensure_ascii=False)
        back = json.loads(line)
        assert set(back) == REQUIRED
        assert isinstance(back["conversation_id"], str)
        assert back["account_id"].startswith("acct-")
        assert back["surface"] in SURFACES
        assert len(back["country"]) == 2 and back["country"].isupper()
        assert isinstance(back["account_linked"], bool)
        ts = datetime.fromisoformat(back["started_at"])
        assert ts.tzinfo is not None and ts.utcoffset() is not None
        assert back["turns"]
        for turn in back["turns"]:
            assert set(turn) == {"role", "text", "modality"}
            assert turn["role"] in {"user", "assistant"}
            assert turn["modality"] in {"text", "voice", "image", "video"}
            assert isinstance(turn["text"], str) and turn["text"].strip()
        assert set(back["gold"]) == {"sensitive", "interests"}
        assert set(back["gold"]["sensitive"]) <= set(SENSITIVE_CATEGORIES)
        assert set(back["gold"]["interests"]) <= INTEREST_NAMES


def test_interest_names_are_iab_31_tier1_and_not_sensitive_ones() -> None:
    assert INTEREST_NAMES <= IAB_31_TIER1
    assert not INTEREST_NAMES & SENSITIVE_TIER1
    assert len(INTEREST_NAMES) >= 15


def test_surfaces_and_modalities(records: list[dict[str, Any]]) -> None:
    by_surface = Counter(r["surface"] for r in records)
    assert set(by_surface) == set(SURFACES)
    assert min(by_surface.values()) > N // 10
    for rec in records:
        roles = [t["role"] for t in rec["turns"]]
        mods = [t["modality"] for t in rec["turns"]]
        if rec["surface"] == "smart_glasses":
            assert rec["turns"][0]["modality"] == "voice" and roles[0] == "user"
            assert any(m in {"image", "video"} for m in mods)
            assert rec["turns"][1]["text"].startswith(("Photo: ", "Video: "))
        elif rec["surface"] in {"vibes", "imagine"}:
            assert roles == ["user", "assistant"]
            assert mods == ["text", "text"]
        else:
            assert roles[0] == "user" and "assistant" in roles
            assert set(mods) == {"text"}
    glasses_mods = {t["modality"] for r in records if r["surface"] == "smart_glasses"
                    for t in r["turns"]}  # fmt: skip
    assert {"voice", "image", "video"} <= glasses_mods


def test_country_linkage_and_date_mix(records: list[dict[str, Any]]) -> None:
    excluded = sum(r["country"] in EXCLUDED_COUNTRIES for r in records) / N
    unlinked = sum(not r["account_linked"] for r in records) / N
    before = sum(datetime.fromisoformat(r["started_at"]) < POLICY_DATE for r in records) / N
    assert 0.07 <= excluded <= 0.25
    assert 0.04 <= unlinked <= 0.18
    assert 0.04 <= before <= 0.18
    countries = {r["country"] for r in records}
    assert {"US", "GB", "KR"} <= countries or {"US"} <= countries
    assert len(countries - EXCLUDED_COUNTRIES) >= 8
    assert len(countries & EXCLUDED_COUNTRIES) >= 5


def test_sensitive_coverage(records: list[dict[str, Any]]) -> None:
    cats = Counter(c for r in records for c in r["gold"]["sensitive"])
    assert set(cats) == set(SENSITIVE_CATEGORIES)
    share = sum(bool(r["gold"]["sensitive"]) for r in records) / N
    assert 0.17 <= share <= 0.33


def test_interest_coverage(records: list[dict[str, Any]]) -> None:
    interests = Counter(i for r in records for i in r["gold"]["interests"])
    assert len(interests) >= 15
    assert any(len(r["gold"]["interests"]) >= 2 for r in records)
    assert any(not r["gold"]["interests"] and not r["gold"]["sensitive"] for r in records)


def test_texts_vary(records: list[dict[str, Any]]) -> None:
    first_turns = [r["turns"][0]["text"] for r in records]
    assert len(set(first_turns)) > N * 0.7


def test_hard_cases_present() -> None:
    annotated = generate_annotated(N, seed=7)
    kinds = Counter(a.kind for a in annotated)
    assert set(HARD_CASE_KINDS) <= set(kinds)
    for a in annotated:
        gold = a.record["gold"]
        if a.kind in {"sensitive_in_interest", "negation", "third_party", "sarcasm"}:
            assert gold["sensitive"] and gold["interests"], a.record
        if a.kind == "multi_sensitive":
            assert len(gold["sensitive"]) >= 2
        if a.kind == "caption_only":
            assert a.record["surface"] == "smart_glasses"
            assert gold["sensitive"]
        if a.kind == "false_friend":
            assert gold["sensitive"] == [] and gold["interests"]


@pytest.mark.parametrize(
    ("phrase", "category"),
    [
        ("surgery", "health"),
        ("not religious", "religion"),
        ("came out", "sexual_orientation"),
        ("union rep said the strike", "union_membership"),
        ("vegan for ethical reasons", "philosophical_beliefs"),
    ],
)
def test_named_hard_cases_are_labelled_by_topic_presence(phrase: str, category: str) -> None:
    recs = generate(3000, seed=11)
    hits = [r for r in recs if phrase in _texts(r)]
    assert hits, phrase
    assert all(category in r["gold"]["sensitive"] for r in hits)


def test_false_friends_are_not_sensitive() -> None:
    recs = generate(3000, seed=11)
    for phrase in ("rugby union", "credit union", "european union"):
        hits = [r for r in recs if phrase in _texts(r)]
        assert hits, phrase
        assert all(r["gold"]["sensitive"] == [] for r in hits)


def test_pii_is_present_and_redactable(records: list[dict[str, Any]]) -> None:
    with_pii = [r for r in records if "@example." in _texts(r) or "555-01" in _texts(r)]
    assert with_pii
    for rec in with_pii:
        red = redact_record(rec)
        joined = _texts(red)
        assert "@example." not in joined
        assert "555-01" not in joined
        assert red["gold"] == rec["gold"]


def test_write_jsonl_roundtrip(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = tmp_path / "sub" / "synth.jsonl"
    assert write_jsonl(records[:25], path) == 25
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == records[:25]


# ------------------------------------------------------------------------------- bad lines


def test_bad_lines_deterministic_and_labelled() -> None:
    pairs = bad_lines(3)
    assert pairs == bad_lines(3)
    problems = [p for _, p in pairs]
    assert problems == list(BAD_LINE_PROBLEMS)
    assert problems[0] == "valid"
    assert problems[-1] == "duplicate_conversation_id"


def test_bad_lines_are_bad_as_labelled() -> None:
    pairs = {p: line for line, p in bad_lines(5)}
    with pytest.raises(json.JSONDecodeError):
        json.loads(pairs["invalid_json"])
    assert not isinstance(json.loads(pairs["not_an_object"]), dict)
    for problem, line in pairs.items():
        if problem.startswith("missing_field:"):
            assert problem.split(":", 1)[1] not in json.loads(line)
    assert json.loads(pairs["wrong_type:account_linked"])["account_linked"] == "yes"
    assert isinstance(json.loads(pairs["wrong_type:turns"])["turns"], str)
    assert isinstance(json.loads(pairs["wrong_type:country"])["country"], int)
    assert not isinstance(json.loads(pairs["wrong_type:text"])["turns"][0]["text"], str)
    assert json.loads(pairs["empty_turns"])["turns"] == []
    assert not json.loads(pairs["empty_text"])["turns"][0]["text"].strip()
    assert json.loads(pairs["unknown_surface"])["surface"] not in SURFACES
    assert json.loads(pairs["unknown_role"])["turns"][0]["role"] not in {"user", "assistant"}
    assert json.loads(pairs["invalid_country"])["country"] == "USA"
    naive = datetime.fromisoformat(json.loads(pairs["naive_datetime"])["started_at"])
    assert naive.tzinfo is None
    with pytest.raises(ValueError, match="Invalid isoformat"):
        datetime.fromisoformat(json.loads(pairs["invalid_datetime"])["started_at"])
    assert len(json.loads(pairs["oversized_text"])["turns"][0]["text"]) == 100_000
    assert len(json.loads(pairs["too_many_turns"])["turns"]) == 201
    valid = json.loads(pairs["valid"])
    dup = json.loads(pairs["duplicate_conversation_id"])
    assert dup["conversation_id"] == valid["conversation_id"]
    assert dup["turns"] != valid["turns"]


def test_bad_lines_other_than_valid_have_unique_ids() -> None:
    ids = []
    for line, problem in bad_lines(9):
        if problem in {"invalid_json", "not_an_object", "missing_field:conversation_id"}:
            continue
        ids.append(json.loads(line)["conversation_id"])
    assert len(ids) - len(set(ids)) == 1  # only the deliberate duplicate
