"""Unit tests of LLM contrast pairs (experiments.contrast): plan, parsing, writing, checks, examples.

No LLM: ``ask`` is a function of the prompt; no classifier: the checks get fixed scores.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from experiments.contrast import (
    CONTRAST_PROMPT_NAME,
    DEFAULT_PAIRS_PATH,
    DIALOGUE_START,
    DIALOGUE_STYLES,
    FALSE_FRIEND_START,
    FALSE_FRIENDS,
    ORDINARY_DETAILS,
    STYLES,
    SUBTOPICS,
    CheckedPair,
    ContrastPair,
    PairRequest,
    add_pairs,
    balanced_clean_weight,
    check_pairs,
    contrast_plan,
    load_pairs,
    pair_examples,
    parse_message,
    user_turn,
    write_pairs,
)
from experiments.dataset import Example, Snapshot
from labeling.policy import load_policy
from labeling.prompts import load_prompt
from labeling.segments import turn_texts


def test_every_policy_category_has_subtopics_and_the_prompt_takes_the_plan_variables() -> None:
    policy = load_policy()
    assert set(SUBTOPICS) == set(policy.categories)
    assert set(FALSE_FRIENDS) == set(policy.categories)
    req = contrast_plan(policy.categories, 1)[0]
    prompt = load_prompt(CONTRAST_PROMPT_NAME)
    assert set(req.variables(sensitive=True)) == prompt.variables
    assert set(req.variables(sensitive=False)) == prompt.variables


def test_plan_is_deterministic_balanced_and_walks_each_category_s_subtopics() -> None:
    cats = ("health", "religion", "union_membership")
    a = contrast_plan(cats, 30, seed=3)
    assert a == contrast_plan(cats, 30, seed=3)
    assert a != contrast_plan(cats, 30, seed=4)
    assert Counter(r.category for r in a) == dict.fromkeys(cats, 10)
    health = [r.subtopic for r in a if r.category == "health"]
    assert health == list(SUBTOPICS["health"][:10])
    assert all(r.ordinary in ORDINARY_DETAILS for r in a)
    assert [r.index for r in a] == list(range(30))
    with pytest.raises(ValueError, match="no subtopics or false friends for categories"):
        contrast_plan(("astrology",), 3)


def test_false_friend_and_dialogue_plans_keep_their_details_writers_and_indices() -> None:
    cats = ("health", "religion", "union_membership")
    plain = contrast_plan(cats, 30, seed=3)
    ff = contrast_plan(cats, 30, seed=3, false_friends=True)
    assert ff == contrast_plan(cats, 30, seed=3, false_friends=True)
    assert [r.index for r in ff] == list(range(FALSE_FRIEND_START, FALSE_FRIEND_START + 30))
    assert all(r.ordinary in FALSE_FRIENDS[r.category] for r in ff)
    # the sensitive side's request is the plain plan's: only the clean detail and index differ
    assert [(r.category, r.subtopic) for r in ff] == [(r.category, r.subtopic) for r in plain]
    assert all(r.style in STYLES for r in ff)
    dia = contrast_plan(cats, 30, seed=3, dialogue=True)
    assert [r.index for r in dia] == list(range(DIALOGUE_START, DIALOGUE_START + 30))
    assert all(r.style in DIALOGUE_STYLES and r.ordinary in ORDINARY_DETAILS for r in dia)
    both = contrast_plan(cats, 30, seed=3, false_friends=True, dialogue=True)
    assert both[0].index == FALSE_FRIEND_START + DIALOGUE_START
    # three categories, ten draws each: more than one false friend per category is used
    assert all(len({r.ordinary for r in ff if r.category == c}) > 1 for c in cats)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"text": "hello there"}', "'message' is missing or empty"),
        ('{"message": "   "}', "'message' is missing or empty"),
        (json.dumps({"message": "x" * 401}), "longer than 400"),
    ],
)
def test_parse_message_names_what_is_wrong(answer: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_message(answer)


def test_parse_message_collapses_whitespace() -> None:
    assert parse_message('{"message": " I  fast\\nduring Ramadan "}') == "I fast during Ramadan"


def _fake_ask(system: str, user: str, seed: int) -> str:
    """Writes a message from the prompt's detail; seed 1 fails, seed 2 answers the same twice."""
    detail = user.split("Detail: ", 1)[1].split("\n", 1)[0]
    if seed == 1:
        raise TimeoutError("the server did not answer")
    if seed == 2:
        return json.dumps({"message": "the same message every time"})
    return json.dumps({"message": f"About {detail}, which shoes should I buy?"})


def test_write_pairs_asks_once_per_side_and_keeps_every_failure_with_its_reason() -> None:
    prompt = load_prompt(CONTRAST_PROMPT_NAME)
    plan = contrast_plan(("political_views",), 3)
    seen: list[int] = []
    pairs = write_pairs(
        plan,
        ask=_fake_ask,
        prompt=prompt,
        model_id="fake",
        on_pair=lambda p: seen.append(p.request.index),
    )
    assert seen == [0, 1, 2]
    ok, failed, same = pairs
    assert ok.error == ""
    assert ok.sensitive == f"About {plan[0].subtopic}, which shoes should I buy?"
    assert ok.clean == f"About {plan[0].ordinary}, which shoes should I buy?"
    assert ok.prompt_hash == prompt.sha256
    assert failed.error.startswith("sensitive side: TimeoutError")
    assert (failed.sensitive, failed.clean) == ("", "")
    assert same.error == "the two sides are the same message"
    # a row round-trips, and the id depends on what was written
    assert ContrastPair.from_row(json.loads(json.dumps(ok.to_row()))) == ok
    assert ok.pair_id != same.pair_id


def _pair(
    index: int, category: str, sensitive: str, clean: str, error: str = "", ordinary: str = "a cat"
) -> ContrastPair:
    req = PairRequest(index, category, "sub", ordinary, "situation", "writer")
    return ContrastPair(req, sensitive, clean, "h" * 64, "fake", error)


def _scores(table: Mapping[str, tuple[float, dict[str, float]]]):  # type: ignore[no-untyped-def]
    def scores(texts: Sequence[str]) -> tuple[list[float], list[dict[str, float]]]:
        return [table[t][0] for t in texts], [table[t][1] for t in texts]

    return scores


def _cues(text: str) -> set[str]:
    found = {"health"} if "diabetes" in text else set()
    return found | ({"union_membership"} if "union" in text.lower() else set())


def test_check_pairs_keeps_only_pairs_the_filter_s_evidence_agrees_with() -> None:
    table = {
        "health by classifier": (0.6, {"health": 0.5, "religion": 0.1}),
        "my diabetes": (0.2, {"health": 0.05, "religion": 0.15}),  # recognised by vocabulary
        "not health at all": (0.3, {"health": 0.1, "religion": 0.2}),
        "clean a": (0.1, {"health": 0.01, "religion": 0.01}),
        "clean but about diabetes": (0.05, {"health": 0.01, "religion": 0.01}),
        "clean but scary": (0.7, {"health": 0.3, "religion": 0.01}),
        "I watch Rugby Union, which TV?": (0.05, {"health": 0.01, "religion": 0.01}),
        "my union rep, which TV?": (0.05, {"health": 0.01, "religion": 0.01}),
    }
    pairs = [
        _pair(0, "health", "health by classifier", "clean a"),
        _pair(1, "health", "my diabetes", "clean a"),
        _pair(2, "health", "not health at all", "clean a"),
        _pair(3, "health", "health by classifier", "clean but about diabetes"),
        _pair(4, "health", "health by classifier", "clean but scary"),
        _pair(5, "health", "", "", error="sensitive side: TimeoutError: late"),
        # the false friend the plan asked for is allowed; another union term is not
        _pair(6, "health", "my diabetes", "I watch Rugby Union, which TV?", ordinary="Rugby Union"),
        _pair(7, "health", "my diabetes", "my union rep, which TV?", ordinary="a cat"),
    ]
    checked = check_pairs(pairs, scores=_scores(table), cue_categories=_cues)
    assert [c.kept for c in checked] == [True, True, False, False, False, False, True, False]
    assert checked[2].reasons == (
        "sensitive side not recognised as health (classifier's top: religion)",
    )
    assert checked[3].reasons == ("clean side has vocabulary terms of health",)
    assert checked[4].reasons == (
        "clean side not less sensitive than its partner (0.700 >= 0.600)",
    )
    assert checked[5].reasons[0].startswith("no usable answer (sensitive side: TimeoutError")
    assert checked[7].reasons == ("clean side has vocabulary terms of union_membership",)


def test_a_category_without_a_classifier_class_is_judged_by_the_vocabulary_alone() -> None:
    # no union class: both sides score near zero, which says nothing about the pair
    table = {
        "I'm a union member, which hotel?": (0.010, {"health": 0.004}),
        "I love hiking, which hotel?": (0.012, {"health": 0.003}),
        "I went to a meeting, which hotel?": (0.020, {"health": 0.004}),
    }
    pairs = [
        _pair(0, "union_membership", "I'm a union member, which hotel?", "I love hiking, which hotel?"),
        _pair(1, "union_membership", "I went to a meeting, which hotel?", "I love hiking, which hotel?"),
        _pair(2, "union_membership", "I'm a union member, which hotel?", "I'm a union member, which hotel?!"),
    ]  # fmt: skip
    checked = check_pairs(
        pairs, scores=_scores(table | {pairs[2].clean: (0.0, {})}), cue_categories=_cues
    )
    assert [c.kept for c in checked] == [True, False, False]
    assert checked[0].reasons == ()
    assert checked[1].reasons == (
        "sensitive side not recognised as union_membership (classifier's top: health)",
    )
    assert checked[2].reasons == ("clean side has vocabulary terms of union_membership",)


def test_balanced_clean_weight_makes_both_sides_of_a_pair_pull_equally() -> None:
    def ex(cid: str, n_turns: int, sensitive: tuple[str, ...] = (), weight: float = 1.0) -> Example:
        turns = tuple(f"user: turn {k}" for k in range(n_turns))
        return Example(cid, turns, sensitive, None, weight, "gold")

    train = [
        ex("c1", 10),
        ex("c2", 5, weight=2.0),
        ex("s1", 3, ("health",)),
        ex("s2", 1, ("religion",)),
    ]
    w = balanced_clean_weight(train, lambda e: len(e.turns))
    assert w == pytest.approx((10 + 2 * 5) / 2)
    assert balanced_clean_weight([ex("c", 4)], lambda e: len(e.turns)) == 1.0  # nothing sensitive
    s, c = pair_examples(
        check_pairs(
            [_pair(0, "health", "my diabetes", "my cat")],
            scores=_scores({"my diabetes": (0.9, {"health": 0.9}), "my cat": (0.1, {"health": 0.1})}),
            cue_categories=_cues,
        ),
        clean_weight=w,
    )  # fmt: skip
    assert (s.weight, c.weight) == (1.0, w)
    # the pairs leave the pooled factor (clean total / sensitive total) where it was: a sensitive
    # side weighs w clean units, exactly its clean twin's weight
    augmented = train + [s, c] * 7
    assert balanced_clean_weight(augmented, lambda e: len(e.turns)) == pytest.approx(w)
    with pytest.raises(ValueError, match="clean_weight must be > 0"):
        pair_examples([], clean_weight=0.0)


def test_pair_examples_are_augmented_one_turn_user_examples_rendered_as_served() -> None:
    pairs = [
        _pair(0, "health", "Call me at 555-123-4567 about my diabetes", "Call me about my bike")
    ]
    checked = check_pairs(
        pairs,
        scores=_scores({
            "Call me at 555-123-4567 about my diabetes": (0.9, {"health": 0.9}),
            "Call me about my bike": (0.1, {"health": 0.05}),
        }),
        cue_categories=_cues,
    )  # fmt: skip
    s, c = pair_examples(checked)
    assert s.sensitive == ("health",) and c.sensitive == ()
    assert s.origin == c.origin == "augmented"
    assert s.interests is None and c.interests is None
    served = turn_texts([{"role": "user", "text": "Call me at 555-123-4567 about my diabetes"}])
    assert s.turns == served == user_turn("Call me at 555-123-4567 about my diabetes")
    assert "555-123-4567" not in s.turns[0]  # redacted, as serving redacts
    assert s.conversation_id != c.conversation_id
    assert (
        pair_examples(
            check_pairs([_pair(1, "health", "", "", "x")], scores=_scores({}), cue_categories=_cues)
        )
        == []
    )


def test_load_pairs_reads_what_to_row_writes_and_names_a_bad_line(tmp_path: Path) -> None:
    pairs = [_pair(0, "health", "my diabetes", "my cat"), _pair(1, "religion", "", "", "no")]
    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps(p.to_row()) for p in pairs) + "\n\n", encoding="utf-8")
    assert load_pairs(good) == (pairs, hashlib.sha256(good.read_bytes()).hexdigest())
    row = pairs[0].to_row()
    del row["category"]
    for body, error in [
        (json.dumps(pairs[0].to_row()) + "\n{not json", r"pairs.jsonl:2: not JSON"),
        ("[1, 2]", r"pairs.jsonl:1: expected a JSON object, not list"),
        (json.dumps(row), r"pairs.jsonl:1: field 'category' is missing"),
        (json.dumps({**pairs[0].to_row(), "index": "first"}), r"pairs.jsonl:1: invalid literal"),
    ]:
        good.write_text(body, encoding="utf-8")
        with pytest.raises(ValueError, match=error):
            load_pairs(good)
    with pytest.raises(ValueError, match="cannot read contrast pairs"):
        load_pairs(tmp_path / "missing.jsonl")


def test_add_pairs_adds_both_sides_of_kept_pairs_of_the_snapshot_s_categories() -> None:
    def ex(cid: str, text: str, sensitive: tuple[str, ...] = ()) -> Example:
        return Example(cid, user_turn(text), sensitive, None, 1.0, "gold")

    train = (ex("c1", "hello there"), ex("c2", "book a table"), ex("s1", "my chemo", ("health",)))
    snap = Snapshot(train, (ex("e1", "hi"),), ("health", "religion"))
    checked = [
        CheckedPair(_pair(0, "health", "my diabetes", "my cat"), True),
        CheckedPair(_pair(1, "religion", "my church", "my club"), False, ("rejected",)),
        CheckedPair(_pair(2, "union_membership", "my union", "my team"), True),  # not a category
    ]
    out, weight = add_pairs(snap, checked, clean_share=1.0)
    assert weight == pytest.approx(2.0)  # two clean segments, one sensitive example
    added = out.train[len(train) :]
    assert [(e.sensitive, e.weight, e.origin) for e in added] == [
        (("health",), 1.0, "augmented"),
        ((), 2.0, "augmented"),
    ]
    assert out.eval == snap.eval and out.categories == snap.categories
    assert add_pairs(snap, checked, clean_share=0.0)[1] == 1.0
    assert add_pairs(snap, checked, clean_share=0.25)[1] == 1.0  # never under one clean segment


def test_the_shipped_pairs_are_usable_and_cover_every_policy_category() -> None:
    pairs = load_pairs(DEFAULT_PAIRS_PATH)[0]
    policy = load_policy()
    assert len(pairs) >= 200
    assert {p.request.category for p in pairs} == set(policy.categories)
    assert all(not p.error and p.sensitive.strip() and p.clean.strip() for p in pairs)
    assert len({p.pair_id for p in pairs}) == len(pairs)
    assert all(p.sensitive != p.clean for p in pairs)
