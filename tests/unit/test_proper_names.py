"""Proper names masked out of what the interest model reads (no model files)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from experiments.dataset import Example, Snapshot
from experiments.training import TrainConfig, train_filter
from labeling.policy import load_policy
from labeling.proper_names import NAME_MASK, load_places, mask_proper_names
from labeling.redaction import PLACEHOLDERS
from labeling.taxonomy import load_taxonomy
from targeting.scorer import FilterBundle, HashingEmbedder, Lexicon

CATS = ("religion", "health")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # mid-sentence: every run of capitalised words, joined by "of", "the", "and"...
        ("user: boots for the Red Rocks trail near Denver this weekend?",
         "user: boots for the [NAME] trail near [NAME] this weekend?"),
        ("user: I bank with Bank of America", "user: I bank with [NAME]"),
        ("user: is The Lord of the Rings long", "user: is [NAME] long"),
        # a sentence's opener stays, the rest of its run is a name
        ("assistant: For Chautauqua, light boots.", "assistant: For [NAME], light boots."),
        ("user: Which boots? For the Red Rocks trail.", "user: Which boots? For the [NAME] trail."),
        ("It’s Mount Falcon again", "It’s [NAME] again"),
        # two or more capitalised words opening a sentence are a name; one alone stays
        ("user: Red Rocks is busy. Sunny, around 22 degrees.",
         "user: [NAME] is busy. Sunny, around 22 degrees."),
        ("Chautauqua is lovely", "Chautauqua is lovely"),
        ("user: hi\nBear Creek Trail is open", "user: hi\n[NAME] is open"),
        # known places: alone at a sentence's start, and in lower case unless an ordinary word
        ("user: Phoenix please. Miami's beaches", "user: [NAME] please. [NAME] beaches"),
        ("user: flights to new york from san jose, or seattle.",
         "user: flights to [NAME] from [NAME], or [NAME]."),
        ("user: reading a nice book on mobile", "user: reading a nice book on mobile"),
        ("user: see cs.toronto.edu and seattle.forsale", "user: see cs.toronto.edu and seattle.forsale"),
        ("user: the bear creek trail", "user: the bear creek trail"),  # unknown, lower case
        # not names: capitals, lower-case starts, placeholders, the pronoun I
        ("user: NBA scores on my iPhone and eBay, I think", "user: NBA scores on my iPhone and eBay, I think"),
        ("user: tell [NAME] at [EMAIL] about it", "user: tell [NAME] at [EMAIL] about it"),
        ("user: plain words only", "user: plain words only"),
    ],
)  # fmt: skip
def test_proper_name_runs_become_one_placeholder(text: str, masked: str) -> None:
    assert mask_proper_names(text) == masked


def test_renamed_places_read_alike_and_the_placeholder_is_the_redactions() -> None:
    assert PLACEHOLDERS["NAME"] == NAME_MASK
    texts = {
        mask_proper_names(f"user: boots for the {t} trail near {c}? For {t}, light ones.")
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


def test_a_long_text_with_many_names_is_masked_in_linear_time() -> None:
    text = "user: " + " ".join("We hiked Red Rocks near Denver." for _ in range(20_000))
    out = mask_proper_names(text)
    assert out.count(NAME_MASK) == 40_000 and out.startswith(
        "user: We hiked [NAME] near [NAME]. We"
    )


class _Counting(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.seen: list[str] = []

    def embed(self, texts: Any) -> Any:
        self.seen.extend(texts)
        return super().embed(texts)


def test_only_segments_that_name_something_are_embedded_again() -> None:
    texts = ["user: a trail near Denver", "user: plain words", "user: Red Rocks"]
    emb = HashingEmbedder(16).embed(texts)
    counting = _Counting()
    masked = FilterBundle.empty(CATS, interest_names_masked=True)
    out = masked.interest_segment_embeddings(texts, emb, counting.embed)
    assert counting.seen == ["user: a trail near [NAME]", "user: [NAME]"]
    assert out is not None and np.array_equal(out[1], emb[1])
    assert np.array_equal(out[0], HashingEmbedder(16).embed(["user: a trail near [NAME]"])[0])
    plain = FilterBundle.empty(CATS)
    assert plain.interest_segment_embeddings(texts, emb, counting.embed) is emb
    assert plain.interest_text("near Denver") == "near Denver"
    assert masked.interest_text("near Denver") == "near [NAME]"


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
