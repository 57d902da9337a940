"""The sensitive vocabulary and its matcher (blocking keywords, cue features)."""

from __future__ import annotations

from labeling.policy import load_policy
from targeting.scorer import TermMatcher, load_lexicon_file

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
