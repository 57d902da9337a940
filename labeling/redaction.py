"""PII redaction applied before any text reaches an LLM, the vector store or an annotator.

Why regexes and not Presidio: ``presidio-analyzer`` installs from PyPI, but its ``AnalyzerEngine``
needs a spaCy language model (``en_core_web_lg`` by default) that spaCy downloads from GitHub at run
time; that download is impossible on our offline machines, and the model is not an ordinary PyPI
package. This module is therefore a self-contained, precompiled, validated regex redactor with no
dependency beyond the standard library (plus pydantic for the optional model input of
:func:`redact_record`).

What is replaced, each with a typed placeholder:

====================  ================================================================  ============
kind                  recognised forms                                                  placeholder
====================  ================================================================  ============
personal URL          ``http(s)://``, ``www.`` or ``domain.tld/path`` whose query or    ``[URL]``
                      fragment carries a personal key (``token=``, ``email=``,
                      ``user=``, ``sid=``...), any ``@``, a long random / UUID / hex
                      path segment, a long digit id, or a reset/verify/unsubscribe path
email                 ``local@domain.tld``                                              ``[EMAIL]``
IBAN                  2 letters + 2 check digits + BBAN, spaced or not, mod-97 checked  ``[IBAN]``
payment card          13-19 digits, contiguous or in 4-4-4-4 / 4-6-5 groups with        ``[CARD]``
                      spaces or dashes, Luhn checked
US SSN                ``123-45-6789`` (valid area/group/serial) or 9 digits after       ``[SSN]``
                      "SSN" / "social security number"
bank account          6-20 digits after "account / acct / a/c / routing / sort code /  ``[ACCOUNT]``
                      BSB (number|no|#)"; the keyword itself is kept
IP address            IPv4 (octets <= 255) and IPv6 (validated by :mod:`ipaddress`)     ``[IP]``
phone                 ``+CC ...`` international (8-15 digits), US/NANP                  ``[PHONE]``
                      ``(415) 555-0100`` / ``415.555.0100`` / ``1-800-555-0199``,
                      national trunk-0 forms (``020 7946 0958``, ``06 12 34 56 78``),
                      any 7-15 digit run right after "call / phone / text me / tel...",
                      optional extension (``ext. 12``, ``x12``)
street address        ``1600 Amphitheatre Pkwy``, ``221B Baker Street``, ``42 oak st`` ``[ADDRESS]``
                      (+ unit, + ``, City, ST 94043``), ``12 rue de la Paix``,
                      ``Hauptstraße 5``, ``Rua Augusta 1500``, ``PO Box 750`` and
                      stand-alone units (``apt 4B``, ``Suite 200``)
====================  ================================================================  ============

Plain URLs (``https://example.com/hiking-boots``) are kept verbatim and nothing inside them is
redacted. Years, prices, times, dates, model numbers, scores and ordinary numbers survive: every
numeric pattern is anchored on separators or context words and validated (Luhn, mod-97, SSN
ranges, digit counts, octet ranges).

The result is a fixpoint: :func:`redact` reapplies the passes until nothing changes (at most a few
rounds), so ``redact(redact(x).text).text == redact(x).text``. Placeholders never match a pattern.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel

__all__ = [
    "PLACEHOLDERS",
    "RedactionResult",
    "redact",
    "redact_record",
    "redact_text",
]

PLACEHOLDERS: Final[Mapping[str, str]] = {
    "URL": "[URL]",
    "EMAIL": "[EMAIL]",
    "IBAN": "[IBAN]",
    "CARD": "[CARD]",
    "SSN": "[SSN]",
    "ACCOUNT": "[ACCOUNT]",
    "IP": "[IP]",
    "PHONE": "[PHONE]",
    "ADDRESS": "[ADDRESS]",
}

_MAX_ROUNDS: Final = 4


@dataclass(frozen=True, slots=True)
class RedactionResult:
    """The redacted text and how many spans of each kind were replaced."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of spans replaced, all kinds together."""
        return sum(self.counts.values())

    @property
    def changed(self) -> bool:
        """Whether anything was replaced."""
        return self.total > 0


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------

_TLDS = (
    "com|org|net|edu|gov|io|co|app|dev|me|ly|gl|us|uk|ca|de|fr|es|it|nl|br|in|jp|au|mx|info|biz"
    "|ai|tv|xyz|site|online|shop|store|link|to|be|gg"
)
_URL_RE: Final = re.compile(
    r"(?<![\w@/.-])(?:"
    r"(?:https?|ftp)://[^\s<>\"'`\[\]{}|\\^]+"
    r"|www\.[^\s<>\"'`\[\]{}|\\^]+"
    rf"|(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS})[/?#][^\s<>\"'`\[\]{{}}|\\^]*"
    r")",
    re.IGNORECASE,
)
_URL_TRAILING: Final = ".,;:!?'\")]}*"
# fmt: off
_PERSONAL_KEYS: Final = frozenset(
    {
        "token", "access_token", "refresh_token", "id_token", "auth", "auth_token", "authtoken",
        "key", "api_key", "apikey", "secret", "session", "sessionid", "session_id", "sid",
        "sess", "jsessionid", "phpsessid", "email", "e-mail", "mail", "user", "username",
        "user_id", "userid", "uid", "u", "login", "account", "acct", "account_id", "customer",
        "customer_id", "member", "member_id", "phone", "tel", "mobile", "password", "pass",
        "pwd", "code", "otp", "pin", "sig", "signature", "jwt", "invite", "invite_code",
        "reset", "reset_token", "name", "first_name", "last_name", "fullname", "address",
        "zip", "postcode", "dob", "ssn", "hash", "nonce", "state", "ticket", "oauth_token",
        "x-amz-signature", "x-amz-credential", "awsaccesskeyid",
    }
)
_PERSONAL_PATH_WORDS: Final = frozenset(
    {
        "reset", "reset-password", "password-reset", "verify", "verification", "confirm",
        "unsubscribe", "invite", "invitation", "magic", "magic-link", "activate", "activation",
        "token", "session", "sessions", "auth", "oauth", "callback", "share", "s",
    }
)
# fmt: on
_UUID_RE: Final = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE
)
_HEX_RE: Final = re.compile(r"[0-9a-f]{16,}", re.IGNORECASE)
_B64ISH_RE: Final = re.compile(r"[A-Za-z0-9_+=~-]{12,}")
_LONG_DIGITS_RE: Final = re.compile(r"\d{10,}")


def _looks_random(token: str) -> bool:
    """A session id, hash or secret rather than a human-readable slug."""
    if len(token) < 12:
        return False
    if _UUID_RE.fullmatch(token) or _HEX_RE.fullmatch(token) or _LONG_DIGITS_RE.fullmatch(token):
        return True
    if not _B64ISH_RE.fullmatch(token):
        return False
    parts = re.split(r"[-_]", token)
    if len(parts) > 1 and all(p.isalpha() or p.isdigit() for p in parts if p):
        return False  # a slug such as "hiking-boots-2024"
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    mixed_case = any(c.isupper() for c in token) and any(c.islower() for c in token)
    if has_digit and has_alpha:
        # letters and digits interleaved several times: a8f3k2j9... ; "B08N5WRWNW" (10) is too short
        switches = sum(1 for a, b in itertools.pairwise(token) if a.isdigit() != b.isdigit())
        return switches >= 4 or len(token) >= 20
    return mixed_case and len(token) >= 20


def _url_is_personal(url: str) -> bool:
    if "@" in url or "%40" in url.lower():
        return True
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return True  # unparsable: be safe
    if parts.username or parts.password:
        return True
    for chunk in (parts.query, parts.fragment):
        for key, value in parse_qsl(chunk, keep_blank_values=True):
            if key.lower() in _PERSONAL_KEYS or _looks_random(value) or _looks_random(key):
                return True
    if parts.fragment and _looks_random(parts.fragment):
        return True
    segments = [s for s in parts.path.split("/") if s]
    for i, seg in enumerate(segments):
        if _looks_random(seg):
            return True
        if seg.lower() in _PERSONAL_PATH_WORDS and i + 1 < len(segments):
            return True
    return False


def _split_url(raw: str) -> tuple[str, str]:
    """Split trailing sentence punctuation off a URL match: (url, trailing)."""
    end = len(raw)
    while end > 0 and raw[end - 1] in _URL_TRAILING:
        ch = raw[end - 1]
        if ch == ")" and raw[:end].count("(") >= raw[:end].count(")"):
            break
        end -= 1
    return raw[:end], raw[end:]


# --------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def luhn_valid(number: str) -> bool:
    """Luhn checksum of the digits of ``number`` (separators ignored)."""
    digits = _digits(number)
    if not digits:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Lengths of the IBAN of each country (ISO 13616 registry, common subset + the default range).
# fmt: off
_IBAN_LENGTHS: Final[Mapping[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}

# fmt: on


def iban_valid(candidate: str) -> bool:
    """ISO 13616 mod-97 check (and the country's length when known)."""
    s = re.sub(r"[\s-]", "", candidate).upper()
    if not (15 <= len(s) <= 34) or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    expected = _IBAN_LENGTHS.get(s[:2])
    if expected is not None and len(s) != expected:
        return False
    if not s.isalnum() or not s.isascii():
        return False
    rearranged = s[4:] + s[:4]
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    return int(numeric) % 97 == 1


def ssn_valid(candidate: str) -> bool:
    """US SSN structure: 9 digits, area not 000/666/9xx, group not 00, serial not 0000."""
    d = _digits(candidate)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


# --------------------------------------------------------------------------------------------
# Patterns (precompiled once at import)
# --------------------------------------------------------------------------------------------

# Speed note: each numeric pattern starts by consuming one character and only then looks behind
# it ("\d(?<![\w.]\d)"): sre can then skip quickly to candidate characters, where a leading
# look-behind would be evaluated at every position of the text.
_EMAIL_RE: Final = re.compile(
    r"[A-Za-z0-9](?<![\w.%+'-][A-Za-z0-9])[A-Za-z0-9._%+'-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

_IBAN_RE: Final = re.compile(
    r"[A-Za-z](?<![\w-][A-Za-z])[A-Za-z]\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,3})?"
    r"(?![\w-])"
)

_CARD_RE: Final = re.compile(
    r"\d(?<![\w.,+-]\d)(?:"
    r"\d{3}([ -]?)\d{4}\1\d{4}\1\d{1,7}"  # 4-4-4-4(+) or contiguous 13-19
    r"|\d{3}([ -])\d{6}\2\d{4,5}"  # Amex 4-6-5, Diners 4-6-4
    r")(?![\w-]|[.,]\d)"
)

_SSN_RE: Final = re.compile(r"\d(?<![\w.-]\d)\d{2}-\d{2}-\d{4}(?![\w-]|\.\d)")
_SSN_CTX_RE: Final = re.compile(
    r"\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)(?:\s+is)?\s*[:#]?\s*"
    r"(\d{3}[ -]?\d{2}[ -]?\d{4})(?![\w-])",
    re.IGNORECASE,
)

_ACCOUNT_RE: Final = re.compile(
    r"\b(?:(?:bank|checking|savings|current)\s+)?"
    r"(?:account|acct|a/c|routing|sort\s+code|bsb|aba)\.?"
    r"(?:\s+(?:number|num|no\.?|nr\.?|#))?(?:\s+(?:is|was))?\s*[:#]?\s*"
    r"(\d(?:[ -]?\d){5,19})(?![\w-])",
    re.IGNORECASE,
)

_IPV4_RE: Final = re.compile(
    r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d{1,5})?(?!\w|\.\d)"
)
_IPV6_RE: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|"
    r"(?:\d{1,3}\.){3}\d{1,3})(?![\w:.])"
)

_EXT = r"(?:\s*(?:ext\.?|extension|x)\s*\d{1,6}\b)?"
_PHONE_INTL_RE: Final = re.compile(
    r"\+(?<![\w+]\+)\s?\d(?:[\s.\-()]{0,2}\d){6,15}" + _EXT + r"(?!\d)",
    re.IGNORECASE,
)
_PHONE_NANP_RE: Final = re.compile(
    r"(?<![\w+.$€£-])(?:1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
    + _EXT
    + r"(?![\w-]|[.,]\d)",
    re.IGNORECASE,
)
_PHONE_TRUNK_RE: Final = re.compile(
    r"0(?<![\w+.$€£-]0)(?:"
    r"\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}"  # UK/DE/... 020 7946 0958, 07700 900123
    r"|\d(?:[\s.-]\d{2}){4}"  # FR 06 12 34 56 78
    r")" + _EXT + r"(?![\w-]|[.,]\d)",
    re.IGNORECASE,
)
_PHONE_CTX_RE: Final = re.compile(
    r"\b(?:call|phone|tel|telephone|text|txt|sms|mobile|cell|cellphone|whatsapp|fax|"
    r"reach|contact|ring|number)(?:\s+(?:me|us|him|her|them))?(?:\s+(?:at|on))?"
    r"(?:\s+(?:number|no\.?|#|is))?\s*[:#]?\s*"
    r"(\+?\d(?:[\s.\-()]{0,2}\d){6,14}" + _EXT + r")(?![\w-]|[.,]\d)",
    re.IGNORECASE,
)

_ST_ABBR = "|".join(
    f"{a}|{a.lower()}"
    for a in [
        "St",
        "Ave",
        "Av",
        "Rd",
        "Blvd",
        "Ln",
        "Dr",
        "Ct",
        "Pl",
        "Ter",
        "Pkwy",
        "Hwy",
        "Cir",
        "Sq",
        "Cres",
        "Gdns",
        "Trl",
    ]
)
# Full street words in any case; abbreviations Title-case or lower-case only ("CT" is a state).
_ST_SUFFIX = (
    r"(?:(?i:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Terrace|Way|Parkway|Highway|"
    r"Circle|Square|Crescent|Close|Gardens|Grove|Mews|Trail|Alley|Broadway)\b"
    r"|(?:" + _ST_ABBR + r")\b\.?)"
)
_UNIT = (
    r"(?:,?\s+(?:apt|apartment|suite|ste|unit|flat|fl|floor|room|rm|#)\.?\s*#?\s*"
    r"[A-Za-z]?\d+[A-Za-z]?(?:-\d+)?\b)?"
)
_CITY_ZIP = (
    r"(?:,\s*(?:[A-Z][a-zA-Z.'-]+\s?){1,3},?\s+"
    r"(?:[A-Z]{2}\s+\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2})\b)?"
)
_NAME_STOP = (
    r"(?!(?:the|a|an|my|your|our|their|his|her|this|that|these|those|to|of|in|on|at|by|for|"
    r"from|up|down|across|along|off|and|or|but|more|less|miles?|km|kms|minutes?|mins?|hours?|"
    r"hrs?|blocks?|steps?|feet|ft|meters?|yards?|times?|days?|weeks?|years?|people|cars?|"
    r"kids?|stops?|lanes?|ways?|roads?|streets?|other|new|old|best|big|small|main|wheels?|"
    r"hard|usb|flash|disk|thumb|test|long|short|scenic|quick|easy|am|pm|is|are|was|were|"
    r"with|via|near|last|next|first|second|third|am|pm|hour|mile|day|week|month|year)\b)"
)
# headline words that follow a count ("25 Best Street Foods", "10 Top Road Trips")
_TITLE_STOP = (
    r"(?!(?i:best|top|great|greatest|worst|most|easy|cheap|amazing|famous|hidden|iconic|"
    r"classic|fun|free|must|things|ways|reasons|tips|ideas|places|days|hours|years|minutes|"
    r"miles|times|people|more|other|january|february|march|april|may|june|july|august|"
    r"september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|"
    r"megabytes?|meg|mg|gb|mb|kb|tb|the|on|in|at|of|a|an|to|and|or|for|with|one|two)\b)"
)
_SP = r"[ \t]{1,2}"  # words of an address are separated by a space, not by a table's gutter
_ADDRESS_US_RE: Final = re.compile(
    # Capitalised street names: "1600 Amphitheatre Pkwy", "221B Baker Street", "350 Fifth Ave"
    r"\d(?<![\w.,/:-]\d)\d{0,5}[A-Za-z]?(?:-\d{1,4})?"
    + _SP
    + r"(?:(?:[NSEW]|North|South|East|West|NE|NW|SE|SW)\.?"
    + _SP
    + r")?"
    + _TITLE_STOP
    + r"(?:(?:[A-Z][a-zA-Z'.-]*|\d{1,3}(?:st|nd|rd|th))"
    + _SP
    + r"){1,4}"
    + _ST_SUFFIX
    + r"(?:"
    + _SP
    + r"(?:[NSEW]|NE|NW|SE|SW)\b\.?)?"
    + _UNIT
    + _CITY_ZIP
    # lower-case street names, at most 2 words, not ordinary words: "42 oak st", "12 elm street"
    + r"|\d(?<![\w.,/:-]\d)\d{0,5}[a-z]?"
    + _SP
    + r"(?:"
    + _NAME_STOP
    + r"[a-z][a-z'-]{2,}"
    + _SP
    + r"){1,2}"
    + r"(?:(?:street|avenue|road|boulevard|lane|drive|parkway|court)\b"
    + r"|(?:st|ave|rd|blvd|ln|dr|pkwy|ct)\b\.?)"
    + _UNIT
)
# "20 Megabyte Hard Drive", "a 250 tape drive": storage, not streets
_NOT_A_STREET_RE: Final = re.compile(
    r"(?i)\b(?:hard|floppy|tape|disk|disc|flash|thumb|usb|external|internal|optical|cd|dvd|"
    r"zip|ssd|scsi|ide|sata|network|netware|mapped|shared|test|c|d)\s+(?:drive|dr)\b"
)
_ADDRESS_EU_RES: Final = (
    # "12 rue de la Paix", "5 bis avenue Victor Hugo"
    re.compile(
        r"\d(?<![\w.,/:-]\d)\d{0,3}(?:\s*(?:bis|ter))?,?\s+"
        r"(?i:rue|avenue|av\.|boulevard|bd|place|chemin|allée|allee|impasse|quai|cours|route)\s+"
        r"(?:(?:de|du|des|la|le|les|l'|d')\s*)*[A-ZÀ-Ýa-zà-ÿ][\w'-]+(?:\s+[A-ZÀ-Ý][\w'-]+){0,3}"
    ),
    # "Hauptstraße 5", "Kastanienallee 12a"
    re.compile(
        r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer)"
        r"\s+\d{1,4}[a-z]?\b"
    ),
    # "Rua Augusta, 1500", "Calle Mayor 10", "Via Roma 1", "Avenida Paulista 1578"
    re.compile(
        r"\b(?:Rua|Calle|Carrer|Avenida|Av\.|Via|Viale|Piazza|Corso|Travessa|Alameda)\s+"
        r"(?:(?:de|da|do|dos|das|del|della|di|la)\s+)*[A-ZÀ-Ý][\w'-]+(?:\s+[A-ZÀ-Ý][\w'-]+){0,3}"
        r",?\s+(?:n[º°o]\.?\s*)?\d{1,5}\b"
    ),
    # "PO Box 750", "P.O. Box 12"
    re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b"),
)
_UNIT_ALONE_RE: Final = re.compile(
    r"\b(?:apt\.?|apartment|flat|ste\.?)\s*#?\s*\d{1,5}[A-Za-z]?\b"
    r"(?!\s*(?:blocks?|miles?|mins?|minutes?|km|bedrooms?|beds?|br|people|persons?|nights?|"
    r"days?|weeks?|months?|years?|floors?|stor(?:y|ies)|times?|of|x|%))"
    r"|\bsuite\s*#?\s*(?:\d{3,5}[A-Za-z]?|\d{1,2}[A-Za-z])\b",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------
# Replacement callbacks
# --------------------------------------------------------------------------------------------

_Repl = Callable[[re.Match[str]], str]


def _whole(kind: str, counts: Counter[str], check: Callable[[str], bool] | None = None) -> _Repl:
    placeholder = PLACEHOLDERS[kind]

    def repl(m: re.Match[str]) -> str:
        if check is not None and not check(m.group(0)):
            return m.group(0)
        counts[kind] += 1
        return placeholder

    return repl


def _group1(kind: str, counts: Counter[str], check: Callable[[str], bool] | None = None) -> _Repl:
    """Replace only group 1 (the number after a context keyword); keep the keyword."""
    placeholder = PLACEHOLDERS[kind]

    def repl(m: re.Match[str]) -> str:
        value = m.group(1)
        if check is not None and not check(value):
            return m.group(0)
        counts[kind] += 1
        start, end = m.start(1) - m.start(0), m.end(1) - m.start(0)
        whole = m.group(0)
        return whole[:start] + placeholder + whole[end:]

    return repl


def _phone_digits_ok(s: str) -> bool:
    core = re.split(r"(?i)\s*(?:ext\.?|extension|x)\s*\d", s, maxsplit=1)[0]
    return 7 <= len(_digits(core)) <= 15


def _intl_ok(s: str) -> bool:
    core = re.split(r"(?i)\s*(?:ext\.?|extension|x)\s*\d", s, maxsplit=1)[0]
    return 8 <= len(_digits(core)) <= 15 and core.count("(") == core.count(")")


def _trunk_ok(s: str) -> bool:
    core = re.split(r"(?i)\s*(?:ext\.?|extension|x)\s*\d", s, maxsplit=1)[0]
    return 10 <= len(_digits(core)) <= 11


def _card_ok(s: str) -> bool:
    d = _digits(s)
    return 13 <= len(d) <= 19 and luhn_valid(d) and len(set(d)) > 1


def _ipv4_ok(s: str) -> bool:
    octets = s.split(":", 1)[0].split(".")
    return all(int(o) <= 255 and (o == "0" or not o.startswith("0")) for o in octets)


def _ipv6_ok(s: str) -> bool:
    if not any(c.isdigit() for c in s) or s.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _iban_repl(counts: Counter[str]) -> _Repl:
    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        # the greedy match may have swallowed a trailing short word: try shorter prefixes too
        for end in range(len(raw), 14, -1):
            cand = raw[:end]
            if (end == len(raw) or not raw[end - 1].isspace()) and iban_valid(cand):
                if end < len(raw) and raw[end].isalnum() and raw[end - 1].isalnum():
                    continue  # would cut a token in half
                counts["IBAN"] += 1
                return PLACEHOLDERS["IBAN"] + raw[end:]
        return raw

    return repl


_YEARISH_RE: Final = re.compile(r"(?:19|20)\d\d\s")
_YEAR_CONTEXT_RE: Final = re.compile(
    r"(?:\b(?:in|since|by|of|from|until|till|before|after|during|year|circa|around)|[(,])$",
    re.IGNORECASE,
)


def _address_repl(counts: Counter[str]) -> _Repl:
    """Like ``_whole`` but "in 2024 Apple Orchard Trail..." (a year, not a house number) is kept."""

    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        if _NOT_A_STREET_RE.search(raw):
            return raw
        if _YEARISH_RE.match(raw):
            before = m.string[max(0, m.start() - 12) : m.start()]
            if _YEAR_CONTEXT_RE.search(before.rstrip()):
                return raw
        counts["ADDRESS"] += 1
        return PLACEHOLDERS["ADDRESS"]

    return repl


_DIGIT_RE: Final = re.compile(r"\d")
_SSN_WORDS: Final = ("ssn", "social")
_ACCOUNT_WORDS: Final = ("account", "acct", "a/c", "routing", "sort", "bsb", "aba")
_PHONE_WORDS: Final = (
    "call", "phone", "tel", "text", "txt", "sms", "mobile", "cell", "whatsapp", "fax",
    "reach", "contact", "ring", "number",
)  # fmt: skip
_UNIT_WORDS: Final = ("apt", "apartment", "flat", "ste", "suite")


def _redact_plain(text: str, counts: Counter[str]) -> str:
    """All passes except URLs, on a stretch of text that holds no kept URL.

    Cheap pre-checks skip the passes that cannot match (no "@", no digit, no keyword).
    """
    if "@" in text:
        text = _EMAIL_RE.sub(_whole("EMAIL", counts), text)
    if not _DIGIT_RE.search(text):
        return text
    low = text.lower()
    text = _IBAN_RE.sub(_iban_repl(counts), text)
    text = _CARD_RE.sub(_whole("CARD", counts, _card_ok), text)
    if any(w in low for w in _SSN_WORDS):
        text = _SSN_CTX_RE.sub(_group1("SSN", counts, ssn_valid), text)
    if "-" in text:
        text = _SSN_RE.sub(_whole("SSN", counts, ssn_valid), text)
    if any(w in low for w in _ACCOUNT_WORDS):
        text = _ACCOUNT_RE.sub(_group1("ACCOUNT", counts), text)
    if "." in text:
        text = _IPV4_RE.sub(_whole("IP", counts, _ipv4_ok), text)
    if ":" in text:
        text = _IPV6_RE.sub(_whole("IP", counts, _ipv6_ok), text)
    if "+" in text:
        text = _PHONE_INTL_RE.sub(_whole("PHONE", counts, _intl_ok), text)
    text = _PHONE_NANP_RE.sub(_whole("PHONE", counts), text)
    if "0" in text:
        text = _PHONE_TRUNK_RE.sub(_whole("PHONE", counts, _trunk_ok), text)
    if any(w in low for w in _PHONE_WORDS):
        text = _PHONE_CTX_RE.sub(_group1("PHONE", counts, _phone_digits_ok), text)
    text = _ADDRESS_US_RE.sub(_address_repl(counts), text)
    for pattern in _ADDRESS_EU_RES:
        text = pattern.sub(_whole("ADDRESS", counts), text)
    if any(w in low for w in _UNIT_WORDS):
        text = _UNIT_ALONE_RE.sub(_whole("ADDRESS", counts), text)
    return text


def _redact_once(text: str, counts: Counter[str]) -> str:
    """One round: personal URLs become [URL]; kept URLs are left verbatim and shielded."""
    out: list[str] = []
    pos = 0
    for m in _URL_RE.finditer(text):
        url, _trailing = _split_url(m.group(0))
        if not url:
            continue
        out.append(_redact_plain(text[pos : m.start()], counts))
        if _url_is_personal(url):
            counts["URL"] += 1
            out.append(PLACEHOLDERS["URL"])
        else:
            out.append(url)
        pos = m.start() + len(url)
    out.append(_redact_plain(text[pos:], counts))
    return "".join(out)


def redact(text: str) -> RedactionResult:
    """Replace PII in ``text`` by typed placeholders; pure and idempotent."""
    counts: Counter[str] = Counter()
    if not text:
        return RedactionResult(text=text, counts={})
    current = text
    for _ in range(_MAX_ROUNDS):
        before = sum(counts.values())
        current = _redact_once(current, counts)
        if sum(counts.values()) == before:
            break
    return RedactionResult(text=current, counts=dict(counts))


def redact_text(text: str) -> str:
    """Shorthand for ``redact(text).text``."""
    return redact(text).text


M = TypeVar("M", bound=BaseModel)


@overload
def redact_record(record: dict[str, Any]) -> dict[str, Any]: ...


@overload
def redact_record(record: M) -> M: ...


def redact_record(record: dict[str, Any] | BaseModel) -> dict[str, Any] | BaseModel:
    """A copy of a conversation record with every turn's ``text`` redacted.

    Accepts the record as a plain dict (the JSONL shape) or as a pydantic model whose ``turns``
    items have a ``text`` field; returns the same kind. The input is never mutated; other fields
    are copied unchanged. A turn without a string ``text`` is copied as is.
    """
    if isinstance(record, BaseModel):
        turns = getattr(record, "turns", None)
        if turns is None:
            return record.model_copy(deep=True)
        new_turns: list[Any] = []
        for turn in turns:
            if isinstance(turn, BaseModel):
                text = getattr(turn, "text", None)
                if isinstance(text, str):
                    new_turns.append(turn.model_copy(update={"text": redact(text).text}))
                else:
                    new_turns.append(turn.model_copy(deep=True))
            elif isinstance(turn, dict):
                new_turns.append(_redact_turn_dict(turn))
            else:
                new_turns.append(turn)
        return record.model_copy(update={"turns": new_turns})
    if not isinstance(record, dict):
        raise TypeError(f"redact_record expects a dict or a pydantic model, got {type(record)!r}")
    out = dict(record)
    turns_value = record.get("turns")
    if isinstance(turns_value, list):
        out["turns"] = [_redact_turn_dict(t) if isinstance(t, dict) else t for t in turns_value]
    return out


def _redact_turn_dict(turn: dict[str, Any]) -> dict[str, Any]:
    new = dict(turn)
    text = turn.get("text")
    if isinstance(text, str):
        new["text"] = redact(text).text
    return new
