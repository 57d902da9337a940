"""Spans of person names in free text, found without a model.

Four kinds of evidence, cheapest first; every rule is a precompiled regex plus set look-ups, so the
pass costs about as much as one more regex over the text (it runs in :func:`labeling.redaction.redact`
on every turn of the filter's hot path):

* **cue phrases** that introduce the speaker's or someone's name, in the platform's languages:
  "my name is", "I'm called", "me llamo", "mi nombre es", "meu nome é", "me chamo",
  "je m'appelle", "mon nom est", "nama saya", "mera naam", "मेरा नाम ... है". After such a cue the
  following capitalised words are a name; lower-case words only when the gazetteer knows them
  ("my name is maria gonzalez");
* **titles**: Mr/Mrs/Ms/Dr/Prof, Sr./Sra./Srta./Dr./Dra./Don/Doña, Senhor/Senhora, M./Mme/Mlle,
  Bapak/Pak/Ibu/Bu, Shri/Smt, श्री/श्रीमती/डॉ. followed by capitalised words (the title is kept);
* **address and verb cues** ("tell", "ask", "email", "text", "with", "dear", "hi", "cc"...) followed
  by a first name from the gazetteer that is not also an ordinary word;
* **gazetteer pairs**: two to four capitalised words whose first is a known first name and whose next
  is a known name or a capitalised word that is not an ordinary word ("Emily Chen", "Budi Santoso").
  A first name that is also a word ("Grace", "Will", "Rosa") counts only before a known last name.

The gazetteer (``labeling/data/person_names.tsv``, ~10k names from Faker's person providers for
en_US/GB/CA/IN/PH, es_MX/ES/AR/CO/CL, pt_BR/PT, fr_FR/CA, hi_IN, id_ID, de_DE, it_IT, plus common
words of English, Spanish and French to flag ambiguous names) is rebuilt by
``scripts/build_name_gazetteer.py``. It is read once, lazily, on first use.

Not found: a lone first name without a cue ("Maria said..."), names written all in capitals, names in
scripts other than Latin and Devanagari, and surnames alone ("Smith called"). Measured recall and
precision are in ``docs/redaction.md``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Final, NamedTuple

__all__ = ["CAPITALISED_WORD", "Gazetteer", "find_person_names", "load_gazetteer"]


def _word_list(text: str) -> list[str]:
    """The whitespace-separated words of a (long, wrapped) literal."""
    return text.split()


def _phrase_list(text: str) -> list[str]:
    """The ``|``-separated phrases of a (long, wrapped) literal; line breaks are not part of them."""
    return [p.strip() for p in text.replace("\n", " ").split("|")]


class Gazetteer(NamedTuple):
    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]  # names that are also ordinary words ("Grace", "Will", "Rosa")
    words: frozenset[str]  # ordinary words (capitalised) that are not names


@lru_cache(maxsize=1)
def load_gazetteer() -> Gazetteer:
    """The shipped gazetteer (read once)."""
    text = resources.files("labeling").joinpath("data/person_names.tsv").read_text("utf-8")
    first: set[str] = set()
    last: set[str] = set()
    common: set[str] = set()
    words: set[str] = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, kinds = line.partition("\t")
        ks = kinds.split(",")
        if "first" in ks:
            first.add(name)
        if "last" in ks:
            last.add(name)
        if "common" in ks:
            common.add(name)
        if "word" in ks:
            words.add(name)
    return Gazetteer(frozenset(first), frozenset(last), frozenset(common), frozenset(words))


# A capitalised word in Latin script: "Maria", "O'Brien", "McDonald", "José", "Jean-Luc".
_UP = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĖĘĚĜĞĠĢĤĪĮİĶĹĻĽŁŃŅŇŌŐŒŔŘŚŜŞŠŢŤŪŮŰŲŹŻŽ"
_LO = "a-zß-öø-ÿāăąćĉċčďđēėęěĝğġģĥīįıķĺļľłńņňōőœŕřśŝşšţťūůűųźżž"
_CAP_TAIL = rf"[{_LO}]+(?:(?:['’-][{_UP}]?|[{_UP}])[{_LO}]+)*"
_CAP = rf"[{_UP}]{_CAP_TAIL}"
CAPITALISED_WORD: Final = _CAP  # the pattern other modules share
_LOW = rf"[{_LO}][{_LO}'’-]+"
_PARTICLES: Final = frozenset(
    _word_list("de da do dos das del della di du la le van von der den bin binti al el y e")
)
_PARTICLE = "(?:" + "|".join(sorted(_PARTICLES)) + ")"
_DEVA = r"[\u0900-\u097F]+(?:['’][\u0900-\u097F]+)*"

# Cue phrases (lower case, single spaces) that may stand right before a name. They are looked up
# as sets on the last words before each capitalised sequence: no regex alternation of cues runs
# over the whole text.
# Strong: what follows is a name, even in lower case when the gazetteer knows it.
# fmt: off
_STRONG_CUES: Final = frozenset(
    _phrase_list("""my name is|my name's|his name is|her name is|their name is|your name is|my full name is
    |my first name is|my last name is|my real name is|i am called|i'm called|im called
    |people call me|name:|nombre:|nome:|nom:|nama:|me llamo|mi nombre es|se llama|su nombre es
    |me dicen|meu nome é|meu nome e|me chamo|se chama|o nome dele é|o nome dela é|je m'appelle
    |je m’appelle|mon nom est|il s'appelle|elle s'appelle|nama saya|nama saya adalah|nama aku
    |namaku|nama dia|panggil saya|mera naam|mera nam""")
)
# Ambiguous: also plain verbs ("I am happy", "saya mau"): a gazetteer first name must follow.
_AMBIGUOUS_CUES: Final = frozenset(
    _phrase_list("i am|i'm|im|this is|call me|soy|sou|je suis|saya|aku|main|it's|its")
)
# Weak: only a gazetteer first name that is not an ordinary word (or a gazetteer pair) follows.
_WEAK_CUES: Final = frozenset(
    _phrase_list("""tell|ask|call|text|email|e-mail|message|msg|remind|invite|meet|thank|thanks|ping|cc|dear
    |hi|hello|hey|with|from|to|for|and|by|named|called|contact|visit|married|dating|husband|wife
    |son|daughter|brother|sister|friend|boss|colleague|manager|doctor|dile a|llama a|con|para
    |hola|querido|querida|estimado|estimada|fala com|diga ao|diga à|com|olá|oi|caro|cara|avec
    |pour|dis à|bonjour|salut|cher|chère|dengan|untuk|kepada|halo|bilang ke|telepon
    |kasih tahu""")
)
# Person cues: words that take a person ("tell", "dear", "my neighbour"). After one of them two
# capitalised words that are not ordinary words are a name even when the gazetteer lacks them
# ("tell Thabisile Msuthu"); prepositions ("to", "for", "with") are weaker: places follow them too.
_PERSON_CUES: Final = frozenset(
    _phrase_list("""tell|ask|call|text|email|e-mail|message|msg|remind|invite|thank|thanks|ping|cc|dear|hi|hello
    |hey|contact|married|dating|husband|wife|son|daughter|brother|sister|friend|boss
    |colleague|manager|doctor|neighbour|neighbor|cousin|uncle|aunt|mom|mum|dad|teacher|coach
    |partner|girlfriend|boyfriend|roommate|landlord|dile a|llama a|hola|querido|querida|estimado
    |estimada|fala com|diga ao|diga à|olá|oi|caro|cara|dis à|bonjour|salut|cher|chère|kepada|halo
    |bilang ke|kasih tahu""")
)
_TITLES: Final = frozenset(
    _word_list("""Mr Mrs Ms Mx Miss Dr Prof Sr Sra Srta Dra Lic Ing Mme Mlle Pak Bu Don Doña Dona Dom Señor
    Señora Señorita Senhor Senhora Monsieur Madame Mademoiselle Bapak Ibu Saudara Saudari Shri
    Smt Kumari Sir Dame Herr Frau mr mrs ms dr prof""")
)
# fmt: on
_DEVA_TITLES: Final = ("श्रीमती", "श्री", "सुश्री", "डॉ", "कुमारी")

# lower-case names after a strong cue ("my name is maria gonzalez")
_STRONG_RE: Final = re.compile(
    r"(?<![\w'])(?i:"
    + "|".join(re.escape(c).replace(r"\ ", r"\s+") for c in sorted(_STRONG_CUES, key=len)[::-1])
    + rf")[ \t]*(?P<name>{_LOW}(?:[ \t]+{_LOW}){{0,2}})"
)
_LOWER_HINTS: Final = ("nam", "nombre", "nome", "llam", "cham", "appel", "call")
_TITLE_OR_CUE_HINT_RE: Final = re.compile(
    r"(?i:nam[ae]|nombre|nome|naam|nom\b|llam|cham|appel|call)|\.[ \t]*$|\b(?:"
    + "|".join(sorted(_TITLES, key=len)[::-1])
    + r")[ \t]+$|[\u0900-\u097F][ \t]*$"
)
_DEVA_NAME_RE: Final = re.compile(
    rf"(?:मेरा|मेरी|उसका|उसकी|इनका|उनका)\s+नाम\s+(?P<name>{_DEVA}(?:\s+{_DEVA}){{0,2}}?)\s+(?:है|हैं|था)"
    rf"|(?:श्री(?:मती)?|सुश्री|डॉ\.?|कुमारी)\s*(?P<titled>{_DEVA}(?:\s+{_DEVA})?)"
)
# A run of capitalised words, particles allowed between them ("João da Silva"). It starts with the
# capital and only then looks behind it, so sre skips fast to candidate characters.
_DEVA_CHAR_RE: Final = re.compile(r"[\u0900-\u097F]")
_DEVA_SEQ_RE: Final = re.compile(rf"{_DEVA}(?:[ \t]+{_DEVA}){{0,3}}")
_DEVA_TOKEN_RE: Final = re.compile(_DEVA)
_SEQ_RE: Final = re.compile(
    rf"[{_UP}](?<![\w'’-][{_UP}]){_CAP_TAIL}(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_CAP}){{0,3}}"
)
_TOKEN_RE: Final = re.compile(rf"{_CAP}|{_LOW}")
_CAP_TOKEN_RE: Final = re.compile(_CAP)
_NEXT_CAP_RE: Final = re.compile(rf"[ \t]+({_CAP})")

# Capitalised words that are never part of a name (sentence starts, pronouns, days, months...).
# fmt: off
_NOT_NAME: Final = frozenset(
    _word_list("""I Im I'm The A An And Or But If Is It Its This That These Those My Your Our Their His Her
    We You He She They Me Us Them What When Where Why How Who Which Yes No Not Ok Okay Hi Hello
    Hey Thanks Thank Please Dear Sorry Also Then So Just Can Could Would Should Will Do Does Did
    Have Has Had Be Been Am Are Was Were Let Lets Let's Here There Today Tomorrow Yesterday
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
    June July August September October November December Mr Mrs Ms Dr Prof Sir Madam Miss
    Street Avenue Road Lane Drive Boulevard Court Place Square Hotel Restaurant Cafe Bar
    Airport Station University College School Hospital Church Bank Inc Ltd Llc Corp Company
    Group Team Club Center Centre City County State North South East West New Old San Santa
    Saint St Mount Lake River Beach Island Bay Valley Hill Hills Springs Falls Harbor Port
    Google Apple Amazon Microsoft Meta Facebook Instagram Twitter Netflix Spotify Uber Lyft
    Whatsapp Youtube Tiktok Linkedin Gmail Iphone Android Windows Mac Linux Python Java
    Chrome Siri Alexa Assistant Ai Gpt Chatgpt Claude Gemini Llama Ok Hola Gracias Buenos
    Bonjour Merci Oui Non Olá Obrigado Obrigada Terima Kasih Selamat Pagi Namaste Por Para
    Con Sin Una Uno Los Las El La Le Les Des Du De Da Do Dos Das Em No Na Um Uma Et Ou Mais
    Est Sont Je Tu Il Elle Nous Vous Ils Elles Yo Él Nosotros Ellos Eu Ele Ela Nós Saya
    Aku Kamu Dia Kami Kita Mereka Dan Atau Yang Ini Itu Ada Tidak Bisa Mau Tell Ask Call Text
    Email Message Remind Invite Meet With From To For By Dear Hello Hi Hey Cc Sra Srta Dra Lic
    Ing Mme Mlle Pak Bu Doña Señor Señora Señorita Senhor Senhora Monsieur Madame Mademoiselle
    Bapak Ibu Saudara Saudari Shri Smt Kumari Dame Herr Frau Mx""")
)
# fmt: on


_ORDINARY_LOWER: Final = frozenset(w.lower() for w in _NOT_NAME)
# A capitalised run that goes on with one of these names a place or an organisation, not a person.
_PLACE_NOUNS: Final = frozenset(
    _word_list(
        """Airport Bridge Plaza Street Avenue Road Drive Boulevard Place Square Hotel Restaurant
        Cafe Café Bar Grill Kitchen Cuisine Bistro Pizzeria Bakery Museum Library Hospital Clinic
        University College School Academy Station Stadium Arena Theater Theatre Cathedral
        Foundation Institute Center Centre Tower Building Mall Market Store Company Inc Ltd Llc
        Corp Bank Award Prize Memorial Highway Tunnel Dam Lake River Beach Island Mountain Valley
        Gardens Zoo Aquarium Office Dental Medical Pharmacy Salon Spa Gym Studio Studios Records
        Bros Brothers Foods Motors Airlines Airways Apartments Apartment Residences Suites Towers
        Palace Castle Lodge Inn Resort Villa Speedway Mission Chapel Temple International"""
    )
)


def _is_namey(tok: str, gz: Gazetteer) -> bool:
    """A capitalised token that may be part of a name (not a function word / ordinary word)."""
    if tok in _NOT_NAME:
        return False
    if tok in gz.first or tok in gz.last:
        return True
    return tok not in gz.words


def _trim(
    seq: str, start: int, gz: Gazetteer, *, lenient: bool, min_tokens: int = 1
) -> tuple[int, int] | None:
    """Cut a capitalised sequence down to the name it starts with; None when it is not one.

    ``lenient`` (after a strong cue or a title): every leading token that may be a name counts.
    Otherwise the first token must be a gazetteer first name that is not an ordinary word, or an
    ambiguous first name followed by a gazetteer last name.
    """
    if any(t in _PLACE_NOUNS for t in _CAP_TOKEN_RE.findall(seq)[1:]):
        return None  # "John Wayne Airport", "Ben Franklin Bridge": a place named after someone
    keep: list[tuple[int, int, str]] = []
    for m in _TOKEN_RE.finditer(seq):
        t = m.group(0)
        if not t[0].isupper():
            if keep and t in _PARTICLES:
                continue
            break
        if not _is_namey(t, gz):
            break
        keep.append((m.start(), m.end(), t))
    if not keep or len(keep) < min_tokens:
        return None
    if not lenient:
        first = keep[0][2]
        if first not in gz.first:
            return None
        if first in gz.common and not (len(keep) > 1 and keep[1][2] in gz.last):
            return None
    return start + keep[0][0], start + keep[-1][1]


def _unknown_pair(seq: str, start: int, gz: Gazetteer) -> tuple[int, int] | None:
    """Two to four capitalised words, none an ordinary word or a known non-name: a name."""
    span = _trim(seq, start, gz, lenient=True, min_tokens=2)
    if span is None:
        return None
    toks = _CAP_TOKEN_RE.findall(seq[: span[1] - start])
    if any(t in gz.common or t.lower() in _ORDINARY_LOWER for t in toks):
        return None
    return span


_AND_I_RE: Final = re.compile(r"[ \t]+(?:and|&|y|e|et|dan)[ \t]+(?:I|me|yo|eu|moi|saya|aku)\b")


def _cue_before(before: str) -> str | None:
    """``title``, ``strong``, ``ambiguous``, ``person``, ``weak`` or None: the cue ending ``before``."""
    b = before.rstrip(" \t")
    if not b or len(b) == len(before):
        return None  # the capitalised word is glued to what precedes it
    colon = b.endswith(":")
    b = b.rstrip(" \t,:-")
    words = b.split()[-4:]
    if not words:
        return None
    last = words[-1]
    if last == "M." or last in _DEVA_TITLES or (last != "M" and last.rstrip(".") in _TITLES):
        return "title"
    low = [w.lower() for w in words]
    for n in range(len(low), 0, -1):
        phrase = " ".join(low[-n:])
        if phrase in _STRONG_CUES or (colon and phrase + ":" in _STRONG_CUES):
            return "strong"
        if phrase in _AMBIGUOUS_CUES:
            return "ambiguous"
        if phrase in _PERSON_CUES:
            return "person"
        if phrase in _WEAK_CUES:
            return "weak"
    return None


def _lower_name(seq: str, start: int, gz: Gazetteer) -> tuple[int, int] | None:
    """Lower-case words after a strong cue: the leading ones the gazetteer knows as names."""
    end = None
    for m in _TOKEN_RE.finditer(seq):
        t = m.group(0)
        cap = t[:1].upper() + t[1:]
        if cap in _NOT_NAME or cap in gz.common or (cap not in gz.first and cap not in gz.last):
            break
        end = m.end()
    return None if end is None else (start, start + end)


def find_person_names(text: str, gazetteer: Gazetteer | None = None) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``(start, end)`` spans of person names in ``text``."""
    gz = gazetteer or load_gazetteer()
    spans: list[tuple[int, int]] = []
    for m in _SEQ_RE.finditer(text):
        seq, base = m.group(0), m.start()
        if (
            " " not in seq
            and "\t" not in seq
            and (
                seq in _NOT_NAME or seq in gz.words or (seq not in gz.first and seq not in gz.last)
            )
            and (
                seq in _NOT_NAME or not _TITLE_OR_CUE_HINT_RE.search(text, max(0, base - 16), base)
            )
        ):
            continue  # the common case: one capitalised word that is not a known name, no cue
        toks = [(t.start(), t.group(0)) for t in _CAP_TOKEN_RE.finditer(seq)]
        k = 0  # skip leading words that cannot start a name ("Hi", "The", "Mr", "Tell")
        while k < len(toks) and (toks[k][1] in _NOT_NAME or toks[k][1] in gz.words):
            k += 1
        if k == len(toks):
            continue
        nxt = _NEXT_CAP_RE.match(text, m.end())
        if nxt is not None and nxt.group(1) in _PLACE_NOUNS:
            continue  # "Charles de Gaulle International Airport": the run goes on with a place
        start = base + toks[k][0]
        tok = toks[k][1]
        if len(toks) - k == 1 and tok not in gz.first and tok not in gz.last:
            # an unknown single word is a name only after a title or a strong cue: cheap test first
            near = text[max(0, start - 16) : start]
            if not (_TITLE_OR_CUE_HINT_RE.search(near) or near.rstrip().endswith(":")):
                continue
        sub = text[start : base + len(seq)]
        cue = _cue_before(text[max(0, start - 28) : start])
        span: tuple[int, int] | None
        if cue in ("title", "strong"):
            span = _trim(sub, start, gz, lenient=True)
        elif cue is not None:  # ambiguous ("I am Maria"), person ("tell Maria"), weak ("with")
            span = _trim(sub, start, gz, lenient=False)
            if span is None and (cue == "person" or _AND_I_RE.match(text, m.end())):
                span = _unknown_pair(sub, start, gz)
        elif _AND_I_RE.match(text, m.end()):  # "Nomcebo Mbekwa and I are..."
            span = _trim(sub, start, gz, lenient=False, min_tokens=2) or _unknown_pair(
                sub, start, gz
            )
        elif len(toks) - k > 1:
            span = _trim(sub, start, gz, lenient=False, min_tokens=2)
        else:
            continue  # a single capitalised word needs a cue
        if span:
            spans.append(span)
    low = text.lower()
    if any(h in low for h in _LOWER_HINTS):
        for m in _STRONG_RE.finditer(text):
            span = _lower_name(m.group("name"), m.start("name"), gz)
            if span:
                spans.append(span)
    if _DEVA_CHAR_RE.search(text):
        spans.extend(_devanagari_names(text, gz))
    return _merge(spans)


def _devanagari_names(text: str, gz: Gazetteer) -> list[tuple[int, int]]:
    """Names in Devanagari (no capitals): "मेरा नाम X है", श्री X, or gazetteer first + last name,
    or a gazetteer first name after a cue in any language ("call अमर छेत्री")."""
    spans: list[tuple[int, int]] = []
    if "नाम" in text or any(t in text for t in _DEVA_TITLES):
        for m in _DEVA_NAME_RE.finditer(text):
            g = "name" if m.group("name") else "titled"
            spans.append((m.start(g), m.end(g)))
    for m in _DEVA_SEQ_RE.finditer(text):
        toks = [(t.start(), t.end(), t.group(0)) for t in _DEVA_TOKEN_RE.finditer(m.group(0))]
        if toks[0][2] not in gz.first:
            continue
        end = 1
        while end < len(toks) and (toks[end][2] in gz.last or toks[end][2] in gz.first):
            end += 1
        if end == 1 and _cue_before(text[max(0, m.start() - 28) : m.start()]) is None:
            continue
        spans.append((m.start() + toks[0][0], m.start() + toks[end - 1][1]))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
