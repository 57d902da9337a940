"""The sensitive vocabulary and its matcher (blocking keywords, cue features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labeling.policy import load_policy
from targeting.scorer import (
    FilterBundle,
    IdentityRule,
    TermMatcher,
    load_lexicon_file,
    short_cues,
)

CATS = load_policy().categories


def test_every_term_of_the_vocabulary_matches_itself() -> None:
    lex = load_lexicon_file(categories=CATS)
    for section in (lex.keywords, lex.cues):
        m = TermMatcher(section)
        for cat, terms in section.items():
            for term in terms:
                text = term.replace("*", "s")
                assert cat in m.hits(f"well, {text} indeed"), (cat, term)


def test_matcher_words_stems_phrases_and_scripts() -> None:
    m = TermMatcher(
        {"religion": ("pray*", "my church", "मंदिर"), "union_membership": ("on strike",)}
    )
    assert m.counts("I prayed, then PRAYING again at My   Church") == [3, 0]
    assert m.counts("the spray was strike-through") == [0, 0]  # stems start words only
    assert m.counts("workers went on strike") == [0, 1]
    assert m.counts("वह मंदिर गया") == [1, 0]
    assert m.hits("nothing here") == frozenset()


def test_categories_the_policy_does_not_know_are_dropped() -> None:
    lex = load_lexicon_file(categories=("religion",))
    assert set(lex.keywords) == {"religion"} and lex.keywords["religion"]


def test_a_word_right_after_a_cue_can_cancel_it() -> None:
    m = TermMatcher(
        {"ethnicity": ("chinese", "asian*"), "religion": ("church",)},
        {"ethnicity": ("food", "restaurant*")},
    )
    assert m.counts("we ordered chinese food at an asian restaurant") == [0, 0]
    assert m.counts("my chinese friend, an asian woman") == [2, 0]
    assert m.counts("chinese") == [1, 0]  # nothing after it: counts
    assert m.counts("church food") == [0, 1]  # only the category's own cues are cancelled


def test_the_shipped_vocabulary_tells_a_cuisine_and_a_party_from_identity_and_politics() -> None:
    lex = load_lexicon_file(categories=CATS)
    bundle = FilterBundle.empty(CATS, cues=lex.cues, cue_not_before=lex.cue_not_before)
    col = {c: j for j, c in enumerate(CATS)}

    def cues(text: str) -> dict[str, int]:
        row = bundle.cue_counts([text])[0]
        return {c: int(row[j]) for c, j in col.items() if row[j]}

    assert cues("Let's get Chinese food after the birthday party at Union Station") == {}
    assert cues("As a Chinese woman I feel this") == {"ethnicity": 1}
    assert cues("Which political party should I join?")["political_views"] >= 1
    assert cues("I joined the union last year") == {"union_membership": 1}


def test_cue_not_before_takes_single_words(tmp_path: Path) -> None:
    p = tmp_path / "lex.yaml"
    p.write_text("categories:\n  ethnicity:\n    cues: [chinese]\n    cue_not_before: [take out]\n")
    with pytest.raises(ValueError, match="single words"):
        load_lexicon_file(p)


def test_a_model_pickled_before_cue_exceptions_and_short_cues_existed_still_loads() -> None:
    bundle = FilterBundle.empty(CATS, cues={"ethnicity": ("chinese",)}, cue_weight=1.0)
    state = bundle.__getstate__()
    del state["cue_not_before"], state["cue_short_weight"]
    old = FilterBundle.__new__(FilterBundle)
    old.__setstate__(state)
    assert old.cue_not_before == {}
    assert old.cue_counts(["chinese food"])[0][CATS.index("ethnicity")] == 1.0
    assert old.cue_short_weight == 0.0  # scored without short-segment cues
    assert old.segment_features(["user: chinese"], None).shape == (1, len(CATS))


def test_short_segment_cues_weigh_a_cue_by_how_short_its_segment_is() -> None:
    lex = load_lexicon_file(categories=CATS)
    bundle = FilterBundle.empty(
        CATS, cues=lex.cues, cue_not_before=lex.cue_not_before, cue_weight=1.0,
        cue_short_weight=2.0,
    )  # fmt: skip
    rel = CATS.index("religion")
    long_post = "user: " + " ".join(["the engine was rebuilt last spring"] * 10) + " near a church"
    texts = ["user: I'm Methodist.", long_post, "user: how do you make pasta"]
    x = np.asarray(bundle.segment_features(texts, None))
    counts, short = x[:, : len(CATS)], x[:, len(CATS) :]
    assert counts[0, rel] == counts[1, rel] == 1.0  # the counts cannot tell them apart
    assert short[0, rel] == 2.0  # 3 words: the whole weight
    assert short[1, rel] == 2.0 * 12 / 64  # 64 words: 12/64 of it
    assert not short[2].any()
    assert np.array_equal(short, 2.0 * short_cues(bundle.cue_counts(texts), texts))


# ------------------------------------------------------------------------- identity statements
FRAMES = {
    "self": ("i'm", "as a", "being"), "other": ("who is", "is"), "fillers": ("a", "not", "currently"),
    "people": ("person", "people", "friend"), "clause_words": ("and",),
}  # fmt: skip


def test_identity_statements_frames_fillers_people_and_clause_ends() -> None:
    rule = IdentityRule(FRAMES, {"ethnicity": ("south asian",), "health": ("deaf",)})
    hit = rule.hits
    assert hit("Hi I'm a South Asian person.") == {"ethnicity"}
    assert hit("I'm currently south-asian") == {"ethnicity"}  # end of text, hyphen for space
    assert hit("i’m not South Asian, sorry") == {"ethnicity"}  # typographic apostrophe
    assert hit("my friend who is deaf and I") == {"health"}  # other frame, clause word
    assert hit("we met a deaf person") == {"health"}  # term before a people noun
    assert hit("I'm South Asian and I'm deaf.") == {"ethnicity", "health"}
    # no frame, no people noun, or the clause goes on: no identity statement
    assert hit("South Asian cuisine is great") == frozenset()
    assert hit("I'm deaf to your excuses") == frozenset()
    assert hit("being south asian food lovers") == frozenset()


def test_ambiguous_terms_count_only_after_self_frames_or_before_people_nouns() -> None:
    rule = IdentityRule(FRAMES, {}, {"ethnicity": ("black",), "health": ("disabled",)})
    assert rule.hits("the car is black.") == frozenset()  # other frame: a colour
    assert rule.hits("this feature is disabled.") == frozenset()
    assert rule.hits("I'm black.") == {"ethnicity"}
    assert rule.hits("as a black person") == {"ethnicity"}
    assert rule.hits("parking for disabled people") == {"health"}
    assert rule.hits("a black coat and disabled cookies") == frozenset()


def test_conditions_count_after_having_frames_and_people_with() -> None:
    frames = {
        **FRAMES,
        "having": ("my", "i suffer from", "get over", "she has"),
        "having_fillers": ("a", "severe"),
        "people_having": ("with", "who has", "has"),
    }
    rule = IdentityRule(
        frames, {}, {}, {"health": ("depression", "panic attacks", "a drinking problem")}
    )
    assert rule.hits("How can I get over my depression and grief?") == {"health"}
    assert rule.hits("i suffer from severe panic-attacks at night") == {"health"}
    assert rule.hits("my friend with a drinking problem") == {"health"}  # people noun + with
    assert rule.hits("a person who has depression") == {"health"}
    assert rule.hits("my friend has depression") == {"health"}
    assert rule.hits("She has severe panic attacks") == {"health"}
    assert rule.hits("the building has a drinking problem") == frozenset()  # not a people noun
    # the term alone, or after no frame: talk about the thing, not a person who has it
    assert rule.hits("the Great Depression began in 1929") == frozenset()
    assert rule.hits("a book about panic attacks") == frozenset()
    # a frame makes it count: cheap to refuse
    assert rule.hits("my depression-era coins") == {"health"}


def test_the_shipped_identity_statements_block_and_keep_everyday_talk() -> None:
    lex = load_lexicon_file(categories=CATS)
    assert lex.identities is not None
    bundle = FilterBundle.empty(CATS, lexicon=dict(lex.keywords), identity_rule=lex.identities)
    for text, cat in [
        ("Hi I'm a Pacific Islander person.", "ethnicity"),
        ("I have a friend who is hard-of-hearing.", "health"),
        ("What do you think about Southeast Asian people?", "ethnicity"),
        ("I love being Democrat.", "political_views"),
        ("As a Muslim, which restaurants are open at night?", "religion"),
        ("My gay friend wants a playlist for his party", "sexual_orientation"),
        ("I wonder what it'd be like to be a Catholic.", "religion"),
        ("How can I get over my depression and grief?", "health"),
        ("I have a problem with binge eating, especially during times of stress.", "health"),
        ("What do you think about people with autism?", "health"),
        ("Just so you know, I'm differently abled.", "health"),
        ("set a reminder for me to take my meds", "health"),
        ("My mom has dementia, which board games can she still play?", "health"),
        (
            "I volunteer for the Green Party campaign, what shoes are good for canvassing all day?",
            "political_views",
        ),
        ("It only goes away when I hurt myself.", "health"),
        ("some days I just want to die", "health"),
        ("me dan ganas de quitarme la vida", "health"),
        ("How can I deal with my paranoia?", "health"),
    ]:
        assert cat in bundle.lexicon_hits(text), text
    for text in [
        "the dress has to be black.",
        "a conservative estimate of the cost",
        "Is this dish vegan?",
        "which movies are gay-friendly",
        "the meeting room is disabled for now",
        "I'm liberal with the salt",
        "I'm straight out of ideas",
        "a white wine for dinner",
        "the Democratic primary schedule",
        "I want something average priced that is latin american",
        "S1 and S2 are supplied by two independent people",
        "a moderate workout for my legs",
        "my hearing was fine, my stroke in golf is not",
        "what caused the Great Depression",
        "we're throwing a garden party, what campaign games work for kids",
        "how many people do you want to die in a riot?",
        "I cut myself a slice of cake",
    ]:
        assert not bundle.lexicon_hits(text), text


def test_identities_need_frames_and_known_frame_keys(tmp_path: Path) -> None:
    p = tmp_path / "lex.yaml"
    p.write_text("categories:\n  health:\n    identities: [deaf]\n")
    with pytest.raises(ValueError, match="identity_frames"):
        load_lexicon_file(p)
    p.write_text(
        "identity_frames:\n  self: [i'm]\n  people: [person]\n  others: [is]\n"
        "categories:\n  health:\n    identities: [deaf]\n"
    )
    with pytest.raises(ValueError, match="unknown keys"):
        load_lexicon_file(p)


def test_identity_rule_survives_pickling_and_older_models_load_without_it() -> None:
    import pickle

    rule = IdentityRule(FRAMES, {"religion": ("muslim",)})
    bundle = FilterBundle.empty(CATS, identity_rule=rule)
    assert bundle.lexicon_hits("as a Muslim") == {"religion"}  # compiles the patterns
    back = pickle.loads(pickle.dumps(bundle))
    assert back.identity_rule is not None and back.identity_rule._patterns is None
    assert back.lexicon_hits("as a Muslim") == {"religion"}
    state = bundle.__getstate__()
    del state["identity_rule"]
    old = FilterBundle.__new__(FilterBundle)
    old.__setstate__(state)
    assert old.identity_rule is None and old.lexicon_hits("as a Muslim") == frozenset()
    # a rule pickled before conditions existed loads with none
    rule_state = rule.__getstate__()
    del rule_state["conditions"]
    older = IdentityRule.__new__(IdentityRule)
    older.__setstate__(rule_state)
    assert older.conditions == {} and older.hits("as a Muslim") == {"religion"}
