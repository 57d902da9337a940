"""Place names masked out of the text that interests are learned from.

An interest ("Travel", "Sports", "Style & Fashion") is about what a conversation asks for, not about
which trail, city or restaurant it names: "boots for the Red Rocks trail near Denver" and "boots for
the Chautauqua trail near Boulder" ask the same. A place name still moves a sentence vector, and its
words weigh in a bag of words, so the interest model reads every place a conversation names as one
placeholder, ``[NAME]`` (the redaction's person-name placeholder: people and places look alike to
it). Other names stay: a brand, a product, a team or a band says what the conversation is about
("my Toyota", "the Mac II", "the Lakers"). The sensitive side of the filter never sees this view.

What counts as a place, without a model, per conversation (:func:`place_names`, then
:func:`mask_places` on each of its texts):

* a run of capitalised Latin words (``labeling.person_names.CAPITALISED_WORD``, joined by single
  spaces and at most two of "of", "the", "de", "del", "la", "le", "van", "von", "da", "du", "di":
  "Red Rocks", "Bank of the West", "Rio de Janeiro") is a place when
  - it is a known place (``labeling/data/place_names.tsv``: GeoNames cities of 100,000 people or
    more, countries, US states; rebuilt by ``scripts/build_place_gazetteer.py``), or
  - a place word ends it or follows it ("Bear Creek Trail", "the Chautauqua trail", "Lake Tahoe
    State Park", "Trattoria Roma restaurant") or opens it ("Mount Falcon", "Lake Tahoe",
    "Fort Collins"), or
  - it follows "near", "at", "around", "outside", "toward(s)", "visit" or "visiting" ("near
    Golden", "at Trattoria Roma");
  a sentence opener before the run ("For Red Rocks, ...", "Which Denver ...") is not part of it;
* a name found so anywhere in the conversation is masked everywhere in it ("For Red Rocks, light
  boots" after "the Red Rocks trail");
* a known place written in lower case ("restaurants in seattle", "flights to new york": voice
  transcripts and typed requests often have no capitals), unless the name is also an ordinary
  English word ("reading", "mobile", "nice").

Not masked: places in capitals ("SF", "NYC"), unknown places in lower case ("the bear creek
trail"), an unknown place with no place word or cue ("we loved Chautauqua"), names in other
scripts. The filter's policy is English-only (other languages are refused before interests count),
so the cues are English.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from typing import Final, NamedTuple

from labeling.person_names import CAPITALISED_WORD
from labeling.redaction import PLACEHOLDERS

__all__ = ["NAME_MASK", "Places", "load_places", "mask_places", "mask_segments", "place_names"]

NAME_MASK: Final = PLACEHOLDERS["NAME"]

_JOINERS: Final = "of|the|de|del|la|le|van|von|da|du|di"
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

# fmt: off
# a place word after a name, or ending it: "the Red Rocks trail", "Bear Creek Trail"
_PLACE_NOUN_WORDS: Final = """
trail trails trailhead park parks lake lakes river creek canyon mountain mountains peak peaks hill
hills valley forest woods falls beach beaches bay island islands coast desert reservoir glacier
gorge springs pass ridge street st avenue ave road rd boulevard blvd lane square plaza bridge
airport station terminal hotel inn resort motel hostel lodge museum gallery stadium arena field
theater theatre center centre mall market restaurant cafe café bistro bar pub grill diner
brewery winery campground zoo aquarium neighborhood neighbourhood district county city town
village
"""
# a place word opening a name: "Mount Falcon", "Lake Tahoe", "Fort Collins"
_PLACE_HEAD_WORDS: Final = "mount mt lake fort port saint st san santa cape glacier isle"
# a word that announces a place: "near Golden", "at Trattoria Roma"
_PLACE_CUE_WORDS: Final = "near at around outside toward towards visit visiting"
# fmt: on
_PLACE_NOUNS: Final = frozenset(_PLACE_NOUN_WORDS.split())
_PLACE_HEADS: Final = frozenset(_PLACE_HEAD_WORDS.split())
_PLACE_CUES: Final = frozenset(_PLACE_CUE_WORDS.split())
# how far before and after a name its cue or place word is looked for
_CUE_WINDOW: Final = 24
_WORD_BEFORE: Final = re.compile(r"(\w+)[ ]+(?:the[ ]+)?$")
_WORD_AFTER: Final = re.compile(r"^[ ]+(\w+)")


class Places(NamedTuple):
    names: frozenset[str]  # as written ("San Jose", "Bogotá", "Bogota")
    lower: frozenset[str]  # lower-case forms that count as places too ("san jose", "seattle")
    longest: int  # most words in a lower-case form
    firsts: frozenset[str]  # the first words of the lower-case forms ("san", "seattle")


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
    firsts = frozenset(n.split()[0] for n in lower)
    return Places(frozenset(names), frozenset(lower), longest, firsts)


# a lower-case word, not inside a host name, an address or a placeholder ("cs.toronto.edu")
_LOWER_WORD: Final = re.compile(r"(?<![\w'’\-\[.@/])[a-zß-öø-ÿ]+(?![\w'’\]@/]|\.\w)")


def _mask_lower_places(text: str, places: Places) -> str:
    """Known places written in lower case, the longest first ("new york" before "york")."""
    if places.firsts.isdisjoint(_LOWER_WORD.findall(text)):  # most texts: no word to look at
        return text
    words = list(_LOWER_WORD.finditer(text))
    out: list[str] = []
    pos = i = 0
    while i < len(words):
        n_found = 0
        if words[i].group(0) in places.firsts:
            for n in range(min(places.longest, len(words) - i), 0, -1):
                run = words[i : i + n]
                # the words of a name follow each other with single spaces
                if n > 1 and any(text[a.end() : b.start()] != " " for a, b in pairwise(run)):
                    continue
                if text[run[0].start() : run[-1].end()] in places.lower:
                    out.append(text[pos : run[0].start()] + NAME_MASK)
                    pos, n_found = run[-1].end(), n
                    break
        i += max(n_found, 1)
    return "".join(out) + text[pos:]


def _at_sentence_start(text: str, start: int) -> bool:
    # a bounded look back: a long text costs linear time however many names it has
    before = text[max(0, start - _LOOK_BACK) : start]
    lead = _LEAD.search(before)
    head = before[: lead.start()] if lead else before
    if not head or "\n" in before[len(head) :] or head[-1] in ".!?:;":
        return True
    return bool(_ROLE_TAG.match(head.split()[-1])) if head.split() else True


def _candidate(text: str, m: re.Match[str]) -> tuple[str, int]:
    """The name a capitalised run may be and where it starts: a sentence opener before it and
    the joiners after that opener are not part of it ("For the Red Rocks" -> "Red Rocks")."""
    run, start = m.group(0), m.start()
    first, _, rest = run.partition(" ")
    if first.lower().replace("’", "'") in _OPENERS and _at_sentence_start(text, start):
        rest = rest.lstrip()
        lead = re.match(rf"(?:(?:{_JOINERS})[ ]+)*", rest)
        keep = lead.group(0) if lead else ""
        name = rest[len(keep) :]
        return name, m.end() - len(name)
    return run, start


def _bare(name: str) -> str:
    return name[:-2] if name[-2:] in ("'s", "’s") else name


def _is_place(name: str, before: str, after: str) -> bool:
    words = name.split()
    if not words:
        return False
    if _bare(name) in load_places().names:
        return True
    if words[-1].lower() in _PLACE_NOUNS or words[0].lower() in _PLACE_HEADS:
        return True
    nxt = _WORD_AFTER.match(after)
    if nxt and nxt.group(1).islower() and nxt.group(1) in _PLACE_NOUNS:
        return True
    prev = _WORD_BEFORE.search(before)
    return bool(prev and prev.group(1).lower() in _PLACE_CUES)


def place_names(texts: Sequence[str]) -> frozenset[str]:
    """The capitalised names that one conversation (its turns or segments) uses as places."""
    found: set[str] = set()
    for text in texts:
        for m in _RUN.finditer(text):
            name, start = _candidate(text, m)
            before = text[max(0, start - _CUE_WINDOW) : start]
            if _is_place(name, before, text[m.end() : m.end() + _CUE_WINDOW]):
                found.add(_bare(name))
    return frozenset(found)


@lru_cache(maxsize=4096)
def _names_re(names: frozenset[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w'’\-\[])(?:{alts})(?:['’]s)?(?![\w'’])")


def mask_places(text: str, names: frozenset[str]) -> str:
    """``text`` with the conversation's place ``names`` (:func:`place_names`) and the known places
    written in lower case replaced by ``[NAME]``."""
    pattern = _names_re(names)
    if pattern is not None:
        text = pattern.sub(NAME_MASK, text)
    return _mask_lower_places(text, load_places())


def mask_segments(
    texts: Sequence[str], owners: Iterable[int], places: Sequence[frozenset[str]]
) -> list[str]:
    """Each segment ``texts[k]`` masked with the places of its conversation,
    ``places[owners[k]]`` (:func:`place_names` per conversation)."""
    return [mask_places(t, places[int(o)]) for t, o in zip(texts, owners, strict=True)]
