"""Proper names masked out of the text that interests are learned from.

An interest ("Travel", "Sports", "Style & Fashion") is about what a conversation asks for, not about
which trail, city, band or restaurant it names; a place name still moves a sentence vector, and a
name's words still weigh in a bag of words. The interest model therefore reads every run of
capitalised words as one placeholder (``[NAME]``, the redaction's person-name placeholder, so every
name looks alike to it): "boots for the Red Rocks trail near Denver" and "boots for the Chautauqua
trail near Boulder" are the same text to it. The sensitive side of the filter never sees this view:
"Jewish", "Ramadan" or "Democrats" are evidence there.

What counts as a proper name, without a model:

* a run of capitalised Latin words (``labeling.person_names.CAPITALISED_WORD``), joined by single
  spaces and by "of", "the", "de", "del", "la", "le", "van", "von", "da", "du", "di", "y", "and" or "&"
  between two capitalised words ("Bank of America", "Lord of the Rings", "Trattoria Roma"; at most two joiners in a row);
* in mid-sentence: every such run;
* at a sentence's start (the text's start, after a role tag "user: ", a line break or ``. ! ? : ;``):
  an ordinary sentence opener ("Which", "For", "Can", "The"...) stays, the rest of its run is a
  name ("For [NAME], light boots..."); a run of two or more words that does not start with an opener
  is a name ("Red Rocks is busy"); a single capitalised word there stays ("Sunny, around 22
  degrees"), since without a dictionary it may be any word.

Places are also known by name (``labeling/data/place_names.tsv``, GeoNames cities of 100,000 people
or more, countries and US states, rebuilt by ``scripts/build_place_gazetteer.py``): a known place
that opens a sentence alone is masked ("Phoenix please."), and so is one written in lower case
("restaurants in seattle", "flights to new york": voice transcripts and typed requests often have
no capitals) unless its name is also an ordinary English word ("reading", "mobile", "nice").

Not masked: words in capitals ("NBA", "USA", "SF"), words that start in lower case ("iPhone",
"eBay") and unknown names in lower case ("the bear creek trail"), a single unknown word that opens
a sentence ("Chautauqua is lovely"), names in other scripts. The filter's policy is English-only
(other languages are refused before interests count), so the rule is written for English
capitalisation; German nouns would all be masked.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from typing import Final, NamedTuple

from labeling.person_names import CAPITALISED_WORD
from labeling.redaction import PLACEHOLDERS

__all__ = ["NAME_MASK", "Places", "load_places", "mask_proper_names"]

NAME_MASK: Final = PLACEHOLDERS["NAME"]

_JOINERS: Final = "of|the|de|del|la|le|van|von|da|du|di|y|and|&"
_RUN: Final = re.compile(
    rf"(?<![\w'’\-\[]){CAPITALISED_WORD}"
    rf"(?:[ ]+(?:(?:{_JOINERS})[ ]+){{0,2}}{CAPITALISED_WORD})*(?![\w'’])"
)
# what may stand before a sentence's first word: quotes, brackets, dashes, spaces
_LEAD: Final = re.compile(r"[\s\"'“‘(\[«*\-–—]*$")
# a role tag as the segments render it: "user: ", "assistant/voice: "
_ROLE_TAG: Final = re.compile(r"^[a-z_]+(?:/[a-z_]+)?:$")

_LOOK_BACK: Final = 80

# fmt: off
_OPENER_WORDS: Final = """
a an the this that these those my your our their his her its some any every each all no
i we you he she they it me us them there here what which who whom whose when where why how
is are was were be been am do does did can could will would shall should may might must have has
had don't doesn't didn't can't couldn't won't wouldn't isn't aren't wasn't weren't i'm i'd i'll
i've it's that's there's what's where's who's how's let's you're we're they're
for in on at to from with by of about after before during since until into onto over under
between through without within near and but or so if then also just yes no not please thanks
thank hi hello hey dear ok okay sure great good fine well oh ah wow yeah yep nope sorry welcome
re fwd subject
find book get give show tell play set add make buy order send call check search look help
"""
# fmt: on
_OPENERS: Final = frozenset(_OPENER_WORDS.split())


class Places(NamedTuple):
    names: frozenset[str]  # as written ("San Jose", "Bogotá", "Bogota")
    lower: frozenset[str]  # lower-case forms that count as places too ("san jose", "seattle")
    longest: int  # most words in a lower-case form


@lru_cache(maxsize=1)
def load_places() -> Places:
    """The shipped place names (read once, on first use)."""
    text = resources.files("labeling").joinpath("data/place_names.tsv").read_text("utf-8")
    names: set[str] = set()
    lower: set[str] = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, flag = line.partition("\t")
        names.add(name)
        if flag.strip() == "1":
            lower.add(name.lower())
    longest = max((len(n.split()) for n in lower), default=0)
    return Places(frozenset(names), frozenset(lower), longest)


# a lower-case word, not inside a host name, an address or a placeholder ("cs.toronto.edu")
_LOWER_WORD: Final = re.compile(r"(?<![\w'’\-\[.@/])[a-zß-öø-ÿ]+(?![\w'’\]@/]|\.\w)")


def _mask_lower_places(text: str, places: Places) -> str:
    """Known places written in lower case, the longest first ("new york" before "york")."""
    words = list(_LOWER_WORD.finditer(text))
    out: list[str] = []
    pos = i = 0
    while i < len(words):
        for n in range(min(places.longest, len(words) - i), 0, -1):
            run = words[i : i + n]
            # the words of a name follow each other with single spaces
            if any(text[a.end() : b.start()] != " " for a, b in pairwise(run)):
                continue
            if text[run[0].start() : run[-1].end()] in places.lower:
                out.append(text[pos : run[0].start()] + NAME_MASK)
                pos, i = run[-1].end(), i + n
                break
        else:
            i += 1
    return "".join(out) + text[pos:]


def _at_sentence_start(text: str, start: int) -> bool:
    # a bounded look back: a long text costs linear time however many names it has
    before = text[max(0, start - _LOOK_BACK) : start]
    lead = _LEAD.search(before)
    head = before[: lead.start()] if lead else before
    if not head or "\n" in before[len(head) :] or head[-1] in ".!?:;":
        return True
    return bool(_ROLE_TAG.match(head.split()[-1])) if head.split() else True


def _mask_run(text: str, m: re.Match[str]) -> str:
    run = m.group(0)
    if not _at_sentence_start(text, m.start()):
        return NAME_MASK
    first, _, rest = run.partition(" ")
    if first.lower().replace("’", "'") in _OPENERS:
        rest = rest.lstrip()
        # what follows the opener: its leading joiner words stay ("For the Red Rocks trail")
        lead = re.match(rf"(?:(?:{_JOINERS})[ ]+)*", rest)
        keep = lead.group(0) if lead else ""
        tail = rest[len(keep) :]
        return f"{first} {keep}{NAME_MASK}" if tail else first
    return run if not rest and not _is_place(run) else NAME_MASK


def _is_place(word: str) -> bool:
    names = load_places().names
    return word in names or (word[-2:] in ("'s", "’s") and word[:-2] in names)


def mask_proper_names(text: str) -> str:
    """``text`` with every proper name replaced by ``[NAME]`` (module docs: what counts)."""
    return _mask_lower_places(_RUN.sub(lambda m: _mask_run(text, m), text), load_places())
