"""Place names masked out of what the interest model reads (no model files)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from experiments.dataset import Example, Snapshot
from experiments.training import TrainConfig, train_filter
from labeling.policy import load_policy
from labeling.proper_names import NAME_MASK, load_places, mask_places, place_names
from labeling.redaction import PLACEHOLDERS
from labeling.taxonomy import load_taxonomy
from targeting.scorer import FilterBundle, HashingEmbedder, Lexicon

CATS = ("religion", "health")


def _masked(*turns: str) -> list[str]:
    places = place_names(turns)
    return [mask_places(t, places) for t in turns]


@pytest.mark.parametrize(
    ("turns", "masked"),
    [
        # a place word after the name or ending it, a place word opening it, a cue before it
        (["user: boots for the Red Rocks trail near Denver this weekend?"],
         ["user: boots for the [NAME] trail near [NAME] this weekend?"]),
        (["user: is Bear Creek Trail open? We loved Lake Tahoe and Mount Falcon"],
         ["user: is [NAME] open? We loved [NAME] and [NAME]"]),
        (["user: a table at Trattoria Roma, or the Old Siam restaurant"],
         ["user: a table at [NAME], or the [NAME] restaurant"]),
        # a name found as a place once is masked everywhere in the conversation
        (["user: boots for the Chautauqua trail?", "assistant: For Chautauqua, light boots."],
         ["user: boots for the [NAME] trail?", "assistant: For [NAME], light boots."]),
        # known places: alone at a sentence's start, possessive, and in lower case unless an
        # ordinary word
        (["user: Phoenix please. Miami's beaches", "user: flights to new york from san jose, or seattle."],
         ["user: [NAME] please. [NAME] beaches", "user: flights to [NAME] from [NAME], or [NAME]."]),
        (["user: reading a nice book on mobile"], ["user: reading a nice book on mobile"]),
        (["user: see cs.toronto.edu and seattle.forsale"],
         ["user: see cs.toronto.edu and seattle.forsale"]),
        # not places: brands, products, teams; unknown names without a cue; capitals; lower case
        (["user: my Toyota and the Mac II in Windows; the Lakers won", "user: we loved Chautauqua"],
         ["user: my Toyota and the Mac II in Windows; the Lakers won", "user: we loved Chautauqua"]),
        (["user: NBA scores in SF, the bear creek trail"], ["user: NBA scores in SF, the bear creek trail"]),
        (["user: tell [NAME] at [EMAIL] about it"], ["user: tell [NAME] at [EMAIL] about it"]),
    ],
)  # fmt: skip
def test_the_places_a_conversation_names_become_one_placeholder(
    turns: list[str], masked: list[str]
) -> None:
    assert _masked(*turns) == masked


def test_renamed_places_read_alike_and_the_placeholder_is_the_redactions() -> None:
    assert PLACEHOLDERS["NAME"] == NAME_MASK
    texts = {
        tuple(
            _masked(f"user: boots for the {t} trail near {c}?", f"assistant: For {t}, light ones.")
        )
        for t, c in (("Red Rocks", "Denver"), ("Chautauqua", "Boulder"), ("Mount Falcon", "Golden"))
    }
    assert len(texts) == 1


def test_the_place_gazetteer_knows_which_names_count_in_lower_case() -> None:
    places = load_places()
    assert {"Seattle", "San Jose", "Bogotá", "Bogota", "Reading", "Kenya"} <= places.names
    assert {"seattle", "san jose", "new york", "kenya"} <= places.lower
    assert not {"reading", "mobile", "nice", "orange"} & places.lower  # ordinary words
    assert all(n == n.lower() for n in places.lower)
    assert places.lower <= {n.lower() for n in places.names}
    assert places.longest == max(len(n.split()) for n in places.lower)


def test_a_long_text_with_many_places_is_masked_in_linear_time() -> None:
    text = "user: " + " ".join("We hiked the Red Rocks trail near Denver." for _ in range(20_000))
    out = mask_places(text, place_names([text]))
    assert out.count(NAME_MASK) == 40_000
    assert out.startswith("user: We hiked the [NAME] trail near [NAME]. We")


class _Counting(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.seen: list[str] = []

    def embed(self, texts: Any) -> Any:
        self.seen.extend(texts)
        return super().embed(texts)


def test_only_segments_that_name_something_are_embedded_again() -> None:
    convs = [["user: a trail near Denver", "user: plain words"], ["user: For Red Rocks, yes"]]
    texts = [t for c in convs for t in c]
    owners = np.array([0, 0, 1])
    emb = HashingEmbedder(16).embed(texts)
    counting = _Counting()
    masked = FilterBundle.empty(CATS, interest_names_masked=True)
    places = masked.interest_places(convs)
    assert places == [frozenset({"Denver"}), frozenset()]  # "Red Rocks" has no cue there
    out = masked.interest_segment_embeddings(texts, owners, places, emb, counting.embed)
    assert counting.seen == ["user: a trail near [NAME]"]
    assert out is not None and np.array_equal(out[1:], emb[1:])
    assert np.array_equal(out[0], HashingEmbedder(16).embed(["user: a trail near [NAME]"])[0])
    plain = FilterBundle.empty(CATS)
    assert plain.interest_places(convs) is None
    assert plain.interest_segment_embeddings(texts, owners, None, emb, counting.embed) is emb


def _examples() -> list[Example]:
    places = ["Denver", "Boulder", "Golden", "Aspen", "Vail", "Estes Park"]
    out: list[Example] = []
    for i in range(240):
        p = places[i % len(places)]
        if i % 3 == 0:
            turns = (f"user: which hiking boots for the trail near {p}?", "assistant: light ones")
            out.append(Example(f"s{i}", turns, (), ("483",)))
        elif i % 3 == 1:
            turns = (f"user: book a cheap flight and a hotel in {p}", "assistant: here you go")
            out.append(Example(f"t{i}", turns, (), ("653",)))
        else:
            turns = (f"user: my doctor in {p} prescribed medication", "assistant: I see")
            out.append(Example(f"h{i}", turns, ("health",), None))
    return out


def _interest_scores(bundle: FilterBundle, place: str) -> Any:
    conv = (f"user: which hiking boots for the trail near {place}?", "assistant: light ones")
    return bundle.score([conv], HashingEmbedder(32)).interests[0]


@pytest.mark.parametrize("mask", [True, False])
def test_a_model_that_masks_names_scores_a_renamed_place_alike(mask: bool) -> None:
    tax = load_taxonomy(categories=load_policy().categories)
    res = train_filter(
        Snapshot(tuple(_examples()), (), CATS), tax, HashingEmbedder(32),
        config=TrainConfig(mask_interest_names=mask), lexicon=Lexicon({}, {}),
    )  # fmt: skip
    bundle = res.bundle
    assert bundle.interest_names_masked is mask
    a, b = _interest_scores(bundle, "Denver"), _interest_scores(bundle, "Chautauqua Meadows")
    if mask:  # training and serving read the same masked text: a new name changes nothing
        np.testing.assert_array_equal(a, b)
    else:  # as written, a name's words move the scores (the hashed words are features)
        assert np.abs(a - b).max() > 1e-5
    # the setting survives pickling; a model pickled before the field existed reads unmasked
    assert pickle.loads(pickle.dumps(bundle)).interest_names_masked is mask
    state = dict(bundle.__getstate__())
    del state["interest_names_masked"]
    old = FilterBundle.__new__(FilterBundle)
    old.__setstate__(state)
    assert old.interest_names_masked is False


def test_decisions_read_no_interests_of_a_blocked_conversation() -> None:
    tax = load_taxonomy(categories=load_policy().categories)
    exs = _examples()
    res = train_filter(Snapshot(tuple(exs), (), CATS), tax, HashingEmbedder(32),
                       config=TrainConfig(), lexicon=Lexicon({}, {}))  # fmt: skip
    bundle, emb = res.bundle, HashingEmbedder(32)
    convs = [e.turns for e in exs[:30]]
    full = bundle.score(convs, emb)
    lean = bundle.score(convs, emb, interests_of_blocked=False)
    blocked = full.margin >= 0
    assert blocked.any() and (~blocked).any()
    # the same interests where a decision carries them, none where it cannot
    np.testing.assert_allclose(lean.interests[~blocked], full.interests[~blocked], atol=1e-12)
    assert not lean.interests[blocked].any() and full.interests[blocked].any()
    verdicts = bundle.judge(convs, emb)
    assert all(not v.interests for v in verdicts if v.blocked)
    assert [v.interests for v in verdicts] == [
        v.interests if not v.blocked else () for v in bundle.verdicts(full)
    ]


@pytest.mark.parametrize("mask", [True, False])
def test_a_segment_model_that_masks_places_reads_a_renamed_place_alike(mask: bool) -> None:
    tax = load_taxonomy(categories=load_policy().categories)
    lex = Lexicon({"religion": ("pilgrimage to jerusalem",)}, {})
    res = train_filter(
        Snapshot(tuple(_examples()), (), CATS), tax, HashingEmbedder(32),
        config=TrainConfig(mask_sensitive_names=mask), lexicon=lex,
    )  # fmt: skip
    bundle, emb = res.bundle, HashingEmbedder(32)
    assert bundle.sensitive_names_masked is mask
    convs = [
        [f"user: my doctor in {p} prescribed medication"] for p in ("Denver", "Chautauqua Town")
    ]
    seg = bundle.score_segments(convs, emb)
    read = bundle.sensitive_texts(convs, [s.text for s in seg.segments], seg.owner)
    if mask:  # training and serving read the same masked text: a new name changes nothing
        assert read == ["user: my doctor in [NAME] prescribed medication"] * 2
        np.testing.assert_array_equal(seg.any[0], seg.any[1])
        np.testing.assert_array_equal(seg.categories[0], seg.categories[1])
    else:
        assert read is None
        assert abs(float(seg.any[0] - seg.any[1])) > 1e-6
    # the keywords read the text as written, masked or not
    hits = bundle.score_segments([["user: a pilgrimage to Jerusalem"]], emb).lexicon_hits
    assert hits == [frozenset({"religion"})]
    # the interest side reads the same vectors for a segment it would mask the same way
    a = bundle.score([convs[0]], emb).interests[0]
    b = bundle.score([convs[1]], emb).interests[0]
    np.testing.assert_array_equal(a, b)
    state = dict(bundle.__getstate__())
    del state["sensitive_names_masked"]
    old = FilterBundle.__new__(FilterBundle)
    old.__setstate__(state)
    assert old.sensitive_names_masked is False
