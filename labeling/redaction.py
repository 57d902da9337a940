"""PII redaction applied before any text reaches an LLM, the vector store or an annotator.

Why regexes and not Presidio: ``presidio-analyzer`` installs from PyPI, but its ``AnalyzerEngine``
needs a spaCy language model (``en_core_web_lg`` by default) that spaCy downloads from GitHub at run
time; that download is impossible on our offline machines, and the model is not an ordinary PyPI
package. This module is therefore a self-contained, precompiled, validated pattern redactor; it uses
``phonenumbers`` (libphonenumber's metadata, offline) to validate phone numbers, the names gazetteer
of :mod:`labeling.person_names`, and pydantic for the optional model input of :func:`redact_record`.

The same :func:`redact` serves the filter (every scored turn), training, and the text that leaves
the system (label store, LLM prompts, Label Studio, Chroma), so the filter scores the text it was
trained on. ``docs/redaction.md`` lists every kind with its measured recall and precision.

Besides the kinds below: ``[NAME]`` (cue phrases, titles, names gazetteer, in English, Spanish,
Portuguese, French, Indonesian and Hindi), ``[DOB]`` (a date after a birth keyword),
``[NATIONAL_ID]`` (UK NI, CURP, RFC, CPF, CNPJ, Aadhaar, PAN, NIK by shape and check digit; other
numbers after their document's name), ``[PASSPORT]``, ``[DRIVER_LICENSE]``, ``[MEDICAL_RECORD]``
and ``[PLATE]`` (after their keyword), ``[POSTCODE]`` (UK/Canadian shapes; ZIP/CEP/PIN after a
keyword or a US state), ``[HANDLE]``, ``[MAC]``, ``[GPS]``, ``[VIN]`` (check digit or keyword),
obfuscated e-mails (``user dot x at gmail dot com``) as ``[EMAIL]``, social profile URLs as
``[URL]``, and phone numbers libphonenumber accepts for :data:`PHONE_REGIONS` as ``[PHONE]``.

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

import phonenumbers
from pydantic import BaseModel

from labeling.person_names import find_person_names

__all__ = [
    "PHONE_REGIONS",
    "PLACEHOLDERS",
    "NameFinder",
    "RedactionResult",
    "cnpj_valid",
    "cpf_valid",
    "curp_valid",
    "iban_valid",
    "luhn_valid",
    "nik_valid",
    "redact",
    "redact_record",
    "redact_text",
    "ssn_valid",
    "verhoeff_valid",
    "vin_check_valid",
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
    "NAME": "[NAME]",
    "DOB": "[DOB]",
    "NATIONAL_ID": "[NATIONAL_ID]",
    "PASSPORT": "[PASSPORT]",
    "DRIVER_LICENSE": "[DRIVER_LICENSE]",
    "MEDICAL_RECORD": "[MEDICAL_RECORD]",
    "POSTCODE": "[POSTCODE]",
    "HANDLE": "[HANDLE]",
    "MAC": "[MAC]",
    "GPS": "[GPS]",
    "VIN": "[VIN]",
    "PLATE": "[PLATE]",
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
    if _is_social_profile(parts.hostname or "", segments):
        return True
    for i, seg in enumerate(segments):
        if _looks_random(seg):
            return True
        if seg.lower() in _PERSONAL_PATH_WORDS and i + 1 < len(segments):
            return True
    return False


def _is_social_profile(host: str, segments: list[str]) -> bool:
    """A profile page on a social network (``instagram.com/maria.g``, ``linkedin.com/in/x``)."""
    host = host.lower().removeprefix("www.").removeprefix("m.").removeprefix("mobile.")
    if host not in _SOCIAL_HOSTS or not segments:
        return False
    first = segments[0].lower()
    if first.startswith("@") or first in {"in", "u", "user", "users", "profile", "people", "c"}:
        return True
    if host in {"github.com", "gitlab.com"}:
        return len(segments) == 1 and first not in _SOCIAL_NON_PROFILE  # a repo is not a profile
    if host == "youtube.com":
        return first in {"channel", "user"}
    return first not in _SOCIAL_NON_PROFILE


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


def _word_list(text: str) -> list[str]:
    """The whitespace-separated words of a (long, wrapped) literal."""
    return text.split()


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


# Verhoeff tables (Aadhaar check digit).
_VH_D: Final = tuple(
    tuple(int(c) for c in row)
    for row in (
        "0123456789", "1234067895", "2340178956", "3401289567", "4012395678",
        "5987604321", "6598710432", "7659821043", "8765932104", "9876543210",
    )
)  # fmt: skip
_VH_P: Final = tuple(
    tuple(int(c) for c in row)
    for row in (
        "0123456789", "1576283094", "5803796142", "8916043527",
        "9453126870", "4286573901", "2793806415", "7046913258",
    )
)  # fmt: skip


def verhoeff_valid(number: str) -> bool:
    """Verhoeff checksum of the digits of ``number`` (Aadhaar's check digit)."""
    digits = _digits(number)
    if not digits:
        return False
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VH_D[c][_VH_P[i % 8][ord(ch) - 48]]
    return c == 0


def cpf_valid(candidate: str) -> bool:
    """Brazilian CPF: 11 digits, two mod-11 check digits, not all equal."""
    d = [int(c) for c in _digits(candidate)]
    if len(d) != 11 or len(set(d)) == 1:
        return False
    for n in (9, 10):
        s = sum(d[i] * (n + 1 - i) for i in range(n))
        if (s * 10 % 11) % 10 != d[n]:
            return False
    return True


def cnpj_valid(candidate: str) -> bool:
    """Brazilian CNPJ: 14 digits, two mod-11 check digits."""
    d = [int(c) for c in _digits(candidate)]
    if len(d) != 14 or len(set(d)) == 1:
        return False
    for n in (12, 13):
        weights = list(range(n - 7, 1, -1)) + list(range(9, 1, -1))
        s = sum(a * b for a, b in zip(d[:n], weights, strict=True))
        r = s % 11
        if (0 if r < 2 else 11 - r) != d[n]:
            return False
    return True


_CURP_CHARS: Final = "0123456789ABCDEFGHIJKLMNÑOPQRSTUVWXYZ"


def curp_valid(candidate: str) -> bool:
    """Mexican CURP check digit (position 18)."""
    s = candidate.upper()
    if len(s) != 18 or not s[17].isdigit():
        return False
    total = sum(_CURP_CHARS.index(c) * (18 - i) for i, c in enumerate(s[:17]) if c in _CURP_CHARS)
    return (10 - total % 10) % 10 == int(s[17])


_VIN_VALUES: Final = dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9],
        strict=True,
    )
)
_VIN_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_valid(candidate: str) -> bool:
    """North-American VIN check digit (position 9); European VINs may not carry one."""
    s = candidate.upper()
    if len(s) != 17:
        return False
    total = 0
    for ch, w in zip(s, _VIN_WEIGHTS, strict=True):
        total += (int(ch) if ch.isdigit() else _VIN_VALUES.get(ch, 0)) * w
    r = total % 11
    return s[8] == ("X" if r == 10 else str(r))


_NIK_PROVINCES: Final = frozenset(
    _word_list(
        "11 12 13 14 15 16 17 18 19 21 31 32 33 34 35 36 51 52 53 61 62 63 64 65 71 72 73 74 75 76 "
        "81 82 91 92 93 94"
    )
)


def nik_valid(candidate: str) -> bool:
    """Indonesian NIK structure: province code, birth date (day + 40 for women), serial."""
    d = _digits(candidate)
    if len(d) != 16 or d[:2] not in _NIK_PROVINCES:
        return False
    day, month = int(d[6:8]), int(d[8:10])
    if day > 40:
        day -= 40
    return 1 <= day <= 31 and 1 <= month <= 12 and d[12:] != "0000"


def _has_digit_and_len(s: str, lo: int) -> bool:
    core = re.sub(r"[\s./-]", "", s)
    return len(core) >= lo and any(c.isdigit() for c in core)


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
    r"\b(?:ssn|social(?:\s+security)?(?:\s+(?:number|no\.?|#))?|soc\.?\s*sec\.?(?:\s+(?:number|no\.?|#))?"
    r"|ss\s*(?:#|no\.?|number))(?:\s+(?:is|was))?\s*[:#]?\s*"
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
# Identity documents, dates of birth, locations, vehicles, handles (context or checksum anchored)
# --------------------------------------------------------------------------------------------

_MONTHS = (
    r"(?:jan(?:uary|uari|vier|eiro)?|feb(?:ruary|ruari)?|fev(?:ereiro)?|f[ée]v(?:rier)?|"
    r"mar(?:ch|zo|[çc]o|s|et)?|apr(?:il)?|abr(?:il)?|avr(?:il)?|may|mayo|mai(?:o)?|mei|"
    r"jun(?:e|io|ho|i)?|juin|jul(?:y|io|ho|i)?|juil(?:let)?|aug(?:ust)?|ago(?:sto)?|agu(?:stus)?|"
    r"ao[uû]t|sep(?:t(?:ember|iembre|embro|embre)?)?|set(?:embro|iembre)?|oct(?:ober|ubre|obre)?|"
    r"out(?:ubro)?|okt(?:ober)?|nov(?:ember|iembre|embro|embre)?|dec(?:ember)?|dic(?:iembre)?|"
    r"dez(?:embro)?|d[ée]c(?:embre)?|des(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{1,2}[./-]\d{1,2}[./-](?:19|20)?\d{2}(?!\d)"
    r"|(?:19|20)\d{2}[./-]\d{1,2}[./-]\d{1,2}(?!\d)"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|º|°)?\s+(?:of\s+|de\s+)?{_MONTHS}(?:,?\s+(?:de\s+|del\s+)?(?:19|20)\d{{2}})?"
    rf"|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+(?:19|20)\d{{2}})?)"
)
_DOB_RE: Final = re.compile(
    r"\b(?:date\s+of\s+birth|d\.?o\.?b\.?|birth\s*date|birthday|born(?:\s+on)?|b-day"
    r"|fecha\s+de\s+nacimiento|f\.\s*nac\.?|nac[ií]\s+el|nacid[oa]\s+el|cumpleaños"
    r"|data\s+de\s+nascimento|nasci(?:do|da)?\s+(?:em|no\s+dia)|anivers[áa]rio"
    r"|n[ée]e?\s+le|date\s+de\s+naissance|anniversaire"
    r"|tanggal\s+lahir|tgl\.?\s+lahir|lahir\s+(?:pada\s+)?(?:tanggal\s+)?)"
    r"(?:\s+(?:is|was|es|é|est|:))?\s*[:\-–]?\s*(?:on\s+|el\s+|em\s+|le\s+)?"
    rf"({_DATE})",
    re.IGNORECASE,
)
_DOB_HI_RE: Final = re.compile(
    r"जन्म\s*(?:तिथि|तारीख|दिनांक)\s*(?:है|:)?\s*[:\-]?\s*(\d{1,2}[./-]\d{1,2}[./-]\d{2,4})"
)

# Mexican CURP (18) and RFC (12/13): fixed shapes with a date inside.
_CURP_RE: Final = re.compile(
    r"[A-Z](?<![\w][A-Z])[AEIOUX][A-Z]{2}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[HMX]"
    r"(?:AS|BC|BS|CC|CL|CM|CS|CH|DF|DG|GT|GR|HG|JC|MC|MN|MS|NT|NL|OC|PL|QT|QR|SP|SL|SR|TC|TS|"
    r"TL|VZ|YN|ZS|NE)[B-DF-HJ-NP-TV-Z]{3}[A-Z\d]\d(?!\w)",
    re.IGNORECASE,
)
_RFC_RE: Final = re.compile(
    r"[A-ZÑ&](?<![\w&][A-ZÑ&])[A-ZÑ&]{2,3}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"[A-Z\d]{2}[A\d](?!\w)"
)
# Indian PAN: 5 letters (4th = holder type), 4 digits, 1 letter.
_PAN_RE: Final = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]{2}[ABCFGHLJPT][A-Z]\d{4}[A-Z](?!\w)")
# UK National Insurance number.
_NINO_RE: Final = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<!\w[A-CEGHJ-PR-TW-Z])[A-CEGHJ-NPR-TW-Z]"
    r"(?<!BG|GB|NK|KN|TN|NT|ZZ)\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D](?!\w)"
)
# Brazilian CPF / CNPJ in their printed forms (check digits verified); plain digits need context.
_CPF_RE: Final = re.compile(r"\d(?<![\w.]\d)\d{2}\.\d{3}\.\d{3}-\d{2}(?![\w-]|\.\d)")
_CNPJ_RE: Final = re.compile(r"\d(?<![\w.]\d)\d\.\d{3}\.\d{3}/\d{4}-\d{2}(?![\w-]|\.\d)")
# Aadhaar printed as 4-4-4 (Verhoeff checked); Indonesian NIK (16 digits, region + birth date).
_AADHAAR_RE: Final = re.compile(r"[2-9](?<![\w.,+-][2-9])\d{3}([ -]?)\d{4}\1\d{4}(?![\w-]|[.,]\d)")
_NIK_RE: Final = re.compile(r"\d(?<![\w.,+-]\d)\d{15}(?![\w-]|[.,]\d)")
# Numbers introduced by the name of the document.
_ID_CTX_RE: Final = re.compile(
    r"\b(?i:(?P<kw>"
    r"cpf|cnpj|rg|aadhaar|aadhar|uidai|uid|nik|ktp|no\.?\s*ktp|nomor\s+induk(?:\s+kependudukan)?"
    r"|dni|d\.n\.i\.|documento(?:\s+(?:nacional\s+)?de\s+identidad)?|c[ée]dula(?:\s+de\s+ciudadan[íi]a)?"
    r"|c\.c\.|curp|rfc|ine|clave\s+de\s+elector|sin|social\s+insurance(?:\s+number)?|nino"
    r"|national\s+(?:id|identity|insurance)(?:\s+(?:card|number))?|ni\s+number|id\s+card"
    r"|carte\s+d['’]identit[ée]|s[ée]curit[ée]\s+sociale|num[ée]ro\s+fiscal|tax\s+id|tin|pan(?:\s+card)?|nir|insee"
    r"|आधार|पैन)"
    r"(?:\s+(?:number|num|no\.?|nr\.?|n[º°o]\.?|#|n[úu]mero|nomor|card|is|es|é|est|:)){0,3})"
    r"\s*[:#]?\s*(?P<id>(?:[A-Z]{1,4}[ -]?)?\d(?:[ .\-/]?\d){4,17}(?:[ -]?[A-Z])?"
    r"|[A-Z0-9]{0,8}\d[A-Z0-9]{0,12})(?![\w-]|[.,]\d)"
)
_DOC_NO = (
    r"(?:\s+(?:number|num|no\.?|nr\.?|n[º°o]\.?|#|n[úu]mero|num[ée]ro|nomor|is|es|é|est|:)){0,3}"
)
_PASSPORT_RE: Final = re.compile(
    r"(?i:\b(?:passport|pasaporte|passaporte|passeport|paspor|पासपोर्ट)" + _DOC_NO + r")"
    r"\s*[:#]?\s*((?:[A-Z]{1,3}[ -]?)?\d[0-9A-Z]{4,9})(?![\w-])"
)
_DRIVER_RE: Final = re.compile(
    r"(?i:\b(?:driver['’]?s?\s+licen[cs]e|driving\s+licen[cs]e|DL|licencia\s+de\s+conduc(?:ir|tor)"
    r"|carteira\s+de\s+motorista|cnh|permis\s+de\s+conduire|sim\s+[abc])" + _DOC_NO + r")"
    r"\s*[:#]?\s*((?:[A-Z]{1,5}[ -]?)?\d[A-Z0-9]{3,15}(?:[ -]\d{2,8})?)(?![\w-])"
)
# UK driving licence: 5 surname chars, 6 digits (birth date), 2 initials, check digit, 2 letters.
_UK_DL_RE: Final = re.compile(
    r"[A-Z9](?<!\w[A-Z9])[A-Z9]{4}\d{6}[A-Z9]{2}\d[A-Z]{2}(?:\s?\d{2})?(?!\w)"
)
_MRN_RE: Final = re.compile(
    r"(?i:\b(?:mrn|medical\s+record(?:\s+(?:number|no\.?|#))?|patient\s+(?:id|number|no\.?)"
    r"|hospital\s+(?:number|no\.?)|nhs\s+(?:number|no\.?)|health\s+card(?:\s+number)?"
    r"|member\s+id|policy\s+(?:number|no\.?)|expediente(?:\s+m[ée]dico)?|prontu[áa]rio"
    r"|num[ée]ro\s+de\s+dossier|rekam\s+medis)"
    r"(?:\s+(?:number|no\.?|#|is|es|é|:)){0,2})\s*[:#]?\s*"
    r"((?:[A-Z]{1,4}[ -]?)?\d(?:[ -]?[A-Z0-9]){4,14})(?![\w-])"
)
# Vehicle identification number: 17 characters without I/O/Q; check digit or context.
_VIN_RE: Final = re.compile(r"[A-HJ-NPR-Z0-9](?<!\w[A-HJ-NPR-Z0-9])[A-HJ-NPR-Z0-9]{16}(?!\w)")
_VIN_CTX_RE: Final = re.compile(
    r"\b(?:vin|chassis|vehicle\s+identification|n[úu]mero\s+de\s+serie|chassi)\b", re.IGNORECASE
)
_PLATE_RE: Final = re.compile(
    r"(?i:\b(?:(?:licen[cs]e|number|registration|reg\.?|tag)\s+plate|plate(?:\s+number)?|number\s+plate"
    r"|registration(?:\s+(?:number|no\.?|mark))?|reg(?:\s+(?:number|no\.?))|placa(?:s)?"
    r"|matr[íi]cula|plaque(?:\s+d['’]immatriculation)?|immatriculation|plat\s+nomor|nomor\s+polisi"
    r"|nopol|नंबर\s+प्लेट)"
    r"(?:\s+(?:number|no\.?|#|is|es|é|est|:|reads|says|of|on|my|the|do|da|de|del|du|carro|car"
    r"|coche|auto|voiture|mobil|motor|kendaraan|moto)){0,3})\s*[:#]?\s*"
    r"([A-Z0-9]{1,4}(?:[ -]?[A-Z0-9]{1,4}){1,3})(?![\w-])"
)
_MAC_RE: Final = re.compile(
    r"[0-9A-Fa-f](?<![\w:.-][0-9A-Fa-f])[0-9A-Fa-f](?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}(?![\w:-])"
    r"|[0-9A-Fa-f](?<![\w.][0-9A-Fa-f])[0-9A-Fa-f]{3}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![\w.])"
)
# GPS: a decimal pair with >= 4 decimals each, a pair after a coordinate word, or degrees.
_GPS_RE: Final = re.compile(
    r"(?<![\w.-])-?\d{1,2}\.\d{4,}°?\s*[NS]?\s*[,;/ ]\s*-?\d{1,3}\.\d{4,}°?\s*[EWO]?(?![\w.])"
    r"|\d(?<![\w.]\d)\d?(?:°|º)\s*\d{1,2}['′]\s*(?:\d{1,2}(?:\.\d+)?(?:\"|″|''))?\s*[NS]"
    r"[\s,]*\d{1,3}(?:°|º)\s*\d{1,2}['′]\s*(?:\d{1,2}(?:\.\d+)?(?:\"|″|''))?\s*[EWO]\b"
)
_GPS_CTX_RE: Final = re.compile(
    r"\b(?:gps|coordinates?|coords?|lat(?:itude)?|location|pin|pinned|ubicaci[óo]n|localiza[çc][ãa]o"
    r"|lokasi|koordinat|coordenadas|coordonn[ée]es)\b[^0-9\n]{0,24}"
    r"(-?\d{1,2}\.\d{2,}°?\s*[NS]?\s*[,;/]?\s*(?:(?:long(?:itude)?|lng|lon)\s*[:=]?\s*)?"
    r"-?\d{1,3}\.\d{2,}°?\s*[EWO]?)(?![\w.])",
    re.IGNORECASE,
)
# Postcodes: distinctive UK/Canadian shapes alone; ZIP/CEP/PIN/CP only in an address-like context.
_UK_AREAS = (
    "AB|AL|B|BA|BB|BD|BH|BL|BN|BR|BS|BT|CA|CB|CF|CH|CM|CO|CR|CT|CV|CW|DA|DD|DE|DG|DH|DL|DN|DT|DY|E|"
    "EC|EH|EN|EX|FK|FY|G|GL|GU|GY|HA|HD|HG|HP|HR|HS|HU|HX|IG|IM|IP|IV|JE|KA|KT|KW|KY|L|LA|LD|LE|LL|"
    "LN|LS|LU|M|ME|MK|ML|N|NE|NG|NN|NP|NR|NW|OL|OX|PA|PE|PH|PL|PO|PR|RG|RH|RM|S|SA|SE|SG|SK|SL|SM|"
    "SN|SO|SP|SR|SS|ST|SW|SY|TA|TD|TF|TN|TQ|TR|TS|TW|UB|W|WA|WC|WD|WF|WN|WR|WS|WV|YO|ZE"
)
_UK_AREA_SET: Final = frozenset(_UK_AREAS.split("|"))
_UK_POSTCODE_RE: Final = re.compile(
    r"[A-Z](?<![\w-][A-Z])[A-Z]?\d[A-Z\d]?[ \t]\d[ABD-HJLNP-UW-Z]{2}(?![\w-])"
)


def _uk_postcode_ok(s: str) -> bool:
    """The outward code starts with a real postcode area ("SW", "M", "EC"; not "PS" or "XZ")."""
    area = s[:2] if s[1].isalpha() else s[:1]
    return area in _UK_AREA_SET


_CA_POSTCODE_RE: Final = re.compile(
    r"[ABCEGHJ-NPRSTVXY](?<![\w-][ABCEGHJ-NPRSTVXY])\d[ABCEGHJ-NPRSTV-Z][ \t-]?\d[ABCEGHJ-NPRSTV-Z]\d(?![\w-])"
)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|"
    "NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_POSTCODE_CTX_RE: Final = re.compile(
    r"(?:\b(?i:zip(?:\s*code)?|postal\s*code|post\s*code|postcode|cep|c\.p\.|cp|c[óo]digo\s+postal"
    r"|code\s+postal|pin\s*code|pincode|pin|kode\s+pos|पिन\s*कोड)"
    r"(?:\s+(?i:is|es|é|est|:))?\s*[:#]?\s*"
    rf"|,\s*(?:{_US_STATES})\s+|\b(?:{_US_STATES})\s+(?=\d{{5}}(?:-\d{{4}})?\b))"
    r"(\d{5}(?:-\d{4})?|\d{5}-?\d{3}|\d{3}\s?\d{3}|\d{4})(?![\w-]|[.,]\d)"
)
# Social profiles: their URLs are personal (see _url_is_personal); handles are "@name".
_SOCIAL_HOSTS: Final = frozenset(
    {
        "twitter.com", "x.com", "instagram.com", "facebook.com", "fb.com", "m.facebook.com",
        "linkedin.com", "tiktok.com", "youtube.com", "github.com", "gitlab.com", "t.me",
        "reddit.com", "threads.net", "pinterest.com", "snapchat.com", "medium.com", "vk.com",
        "twitch.tv", "soundcloud.com", "behance.net", "dribbble.com", "onlyfans.com",
        "mastodon.social", "bsky.app", "wa.me", "telegram.me", "tumblr.com", "flickr.com",
    }
)  # fmt: skip
_SOCIAL_NON_PROFILE: Final = frozenset(
    {
        "", "watch", "results", "search", "explore", "hashtag", "hashtags", "help", "about",
        "login", "signup", "settings", "home", "feed", "trending", "topics", "i", "intent",
        "share", "sharer", "sharer.php", "policies", "privacy", "terms", "legal", "jobs",
        "business", "ads", "developers", "docs", "features", "pricing", "marketplace",
        "r", "playlist", "shorts", "embed", "events", "groups", "pages", "gaming",
        "music", "reel", "reels", "p", "tv", "stories", "direct", "notifications", "messages",
    }
)  # fmt: skip
_HANDLE_RE: Final = re.compile(
    r"@(?<![\w.@]@)[A-Za-z0-9_](?:[A-Za-z0-9_]|\.(?=[A-Za-z0-9_])){1,29}(?![\w@(]|\.[A-Za-z_(])"
)
_NOT_HANDLES: Final = frozenset(
    _word_list("""property staticmethod classmethod dataclass abstractmethod override param params return
    returns throws throw since see author version deprecated link media import keyframes
    font-face charset supports page namespace interface implementation end protocol synthesize
    test before after beforeeach aftereach autowired component service entity bean inject
    everyone here channel all home work gmail yahoo hotmail outlook icloud ts-ignore ts-nocheck
    type types example pytest fixture mock patch app router get post put delete route input
    output click apply extend mixin include tailwind layer responsive import use""")
)
# Obfuscated e-mail: "user dot x at gmail dot com", "jane [at] example [dot] org", "juan arroba
# gmail punto com". Needs an "at" word *and* a dot word (or a real domain after the "at" word).
_OB_AT = r"(?:\s*[\[(]\s*(?:at|arroba|arobase)\s*[\])]\s*|\s+(?:at|arroba|arobase|di)\s+)"
_OB_DOT = r"(?:\s*[\[(]\s*(?:dot|punto|ponto|point|titik)\s*[\])]\s*|\s+(?:dot|punto|ponto|point|titik)\s+)"
_OB_WORD = r"[A-Za-z0-9][A-Za-z0-9_+-]{0,30}"
_OBF_EMAIL_RE: Final = re.compile(
    rf"(?<![\w.@-]){_OB_WORD}(?:(?:{_OB_DOT}|[._-]){_OB_WORD}){{0,3}}"
    rf"{_OB_AT}{_OB_WORD}(?:(?:{_OB_DOT}|\.){_OB_WORD}){{0,2}}(?:{_OB_DOT}|\.)(?i:{_TLDS})\b",
    re.IGNORECASE,
)
_OBF_HINT_RE: Final = re.compile(
    r"\b(?:dot|punto|ponto|point|titik)\b|[\[(]\s*(?:at|arroba|arobase)\s*[\])]|\barroba\b|\barobase\b",
    re.IGNORECASE,
)
_MAIL_DOMAINS: Final = (
    "gmail", "yahoo", "hotmail", "outlook", "icloud", "proton", "protonmail", "aol", "live",
    "msn", "mail", "gmx", "uol", "bol", "terra", "rediffmail", "ymail", "me", "orange", "free",
    "laposte", "wanadoo", "sfr", "example",
)  # fmt: skip

# Phone numbers the fixed patterns miss, validated with libphonenumber for the platform's regions.
PHONE_REGIONS: Final = ("US", "CA", "MX", "BR", "AR", "CO", "IN", "ID", "PH", "GB", "DE", "FR")
_PHONE_CAND_INTL_RE: Final = re.compile(
    r"(?:\+(?<![\w+(]\+)|0(?<![\w+(]0)0)[1-9][\d\s().\-]{5,22}\d(?![\w-]|[.,]\d)"
)
_PHONE_CAND_RE: Final = re.compile(
    r"\((?<![\w(]\()[\d\s().\-]{6,22}\d(?![\w-]|[.,]\d)"
    r"|\d(?<![\w.,+/-]\d)[\d\s().\-]{5,20}\d(?![\w-]|[.,]\d|/)"
)
_PHONE_CTX_WORDS_RE: Final = re.compile(
    r"(?i:\b(?:call|phone|tel|telephone|text|txt|sms|mobile|cell|whatsapp|wa|fax|ring|number|"
    r"contact|reach|dial|tel[ée]fono|celular|cel|m[óo]vil|n[úu]mero|telefone|fone|ligar|liga|zap|"
    r"t[ée]l[ée]phone|portable|t[ée]l|num[ée]ro|nomor|hp|telepon|hubungi|no\.?\s*hp)\b"
    r"|फ़ोन|फोन|मोबाइल|नंबर)[^\n\d]{0,20}$"
)
_DATEISH_RE: Final = re.compile(
    r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|(?:19|20)\d\d\s*[-–]\s*(?:19|20)\d\d"
)
_THOUSANDS_RE: Final = re.compile(r"\d{1,3}(?:[.,]\d{3})+")


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


def _doc_value_ok(min_len: int) -> Callable[[str], bool]:
    """A document number: at least ``min_len`` letters/digits, at least one digit."""

    def check(value: str) -> bool:
        core = re.sub(r"[\s./-]", "", value)
        return len(core) >= min_len and any(c.isdigit() for c in core)

    return check


def _id_ctx_repl(counts: Counter[str]) -> _Repl:
    ok = _doc_value_ok(6)

    def repl(m: re.Match[str]) -> str:
        value = m.group("id")
        if not ok(value):
            return m.group(0)
        counts["NATIONAL_ID"] += 1
        s, e = m.start("id") - m.start(), m.end("id") - m.start()
        return m.group(0)[:s] + PLACEHOLDERS["NATIONAL_ID"] + m.group(0)[e:]

    return repl


def _aadhaar_repl(counts: Counter[str]) -> _Repl:
    def repl(m: re.Match[str]) -> str:
        if not m.group(1) or not verhoeff_valid(m.group(0)):
            return m.group(0)  # plain 12 digits need the word "Aadhaar" (see _ID_CTX_RE)
        counts["NATIONAL_ID"] += 1
        return PLACEHOLDERS["NATIONAL_ID"]

    return repl


def _vin_repl(counts: Counter[str]) -> _Repl:
    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        if raw.isdigit() or raw.isalpha():
            return raw
        if not vin_check_valid(raw):
            around = m.string[max(0, m.start() - 40) : m.start()]
            if not _VIN_CTX_RE.search(around):
                return raw
        counts["VIN"] += 1
        return PLACEHOLDERS["VIN"]

    return repl


def _plate_ok(value: str) -> bool:
    core = re.sub(r"[\s-]", "", value)
    return 4 <= len(core) <= 10 and any(c.isdigit() for c in core)


_COORD_NUM_RE: Final = re.compile(r"-?\d+(?:\.\d+)?")


def _gps_ok(s: str) -> bool:
    if "°" in s or "º" in s:
        return True
    nums = _COORD_NUM_RE.findall(s)
    if len(nums) < 2:
        return False
    lat, lon = float(nums[0]), float(nums[1])
    return abs(lat) <= 90 and abs(lon) <= 180


def _handle_repl(counts: Counter[str]) -> _Repl:
    def repl(m: re.Match[str]) -> str:
        name = m.group(0)[1:]
        if name.lower() in _NOT_HANDLES or name.isdigit():
            return m.group(0)
        counts["HANDLE"] += 1
        return PLACEHOLDERS["HANDLE"]

    return repl


def _obf_email_repl(counts: Counter[str]) -> _Repl:
    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        if not _OBF_HINT_RE.search(raw):
            # plain " at " and real dots only: the domain must be a mail provider
            after_at = re.split(r"\s+(?:at|arroba|arobase|di)\s+", raw, maxsplit=1, flags=re.I)
            domain = after_at[-1].split(".")[0].lower() if len(after_at) == 2 else ""
            if domain not in _MAIL_DOMAINS:
                return raw
        counts["EMAIL"] += 1
        return PLACEHOLDERS["EMAIL"]

    return repl


def _phone_valid(raw: str) -> bool:
    s = raw.strip()
    if s.startswith("00"):
        s = "+" + s[2:]
    try:
        if s.startswith("+"):
            return bool(phonenumbers.is_valid_number(phonenumbers.parse(s, None)))
        for region in PHONE_REGIONS:
            if phonenumbers.is_valid_number(phonenumbers.parse(s, region)):
                return True
    except phonenumbers.NumberParseException:
        return False
    return False


_PHONE_SHAPED_RE: Final = re.compile(r"\d[\s().-]+\d|^\(")


def _phone_lib_repl(counts: Counter[str]) -> _Repl:
    """Numbers libphonenumber accepts for one of :data:`PHONE_REGIONS`.

    Without a phone word before it, a candidate needs an international prefix (``+``/``00``), or
    9+ digits written in groups (``98765 43210``, ``(11) 91234-5678``) or with a trunk ``0``.
    """

    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        digits = _digits(raw)
        if not 7 <= len(digits) <= 15:
            return raw
        stripped = raw.strip()
        if _DATEISH_RE.fullmatch(stripped) or _THOUSANDS_RE.fullmatch(stripped):
            return raw
        intl = stripped.startswith(("+", "00"))
        if not intl:
            before = m.string[max(0, m.start() - 40) : m.start()]
            if not _PHONE_CTX_WORDS_RE.search(before):
                if len(digits) < 9:
                    return raw
                if not _PHONE_SHAPED_RE.search(stripped) and not digits.startswith("0"):
                    return raw
        if not _phone_valid(stripped):
            return raw
        counts["PHONE"] += 1
        lead = raw[: len(raw) - len(raw.lstrip())]
        trail = raw[len(raw.rstrip()) :]
        return lead + PLACEHOLDERS["PHONE"] + trail

    return repl


NameFinder = Callable[[str], list[tuple[int, int]]]


def _names_pass(text: str, counts: Counter[str], finder: NameFinder) -> str:
    spans = finder(text)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for s, e in spans:
        out.append(text[pos:s])
        out.append(PLACEHOLDERS["NAME"])
        pos = e
    out.append(text[pos:])
    counts["NAME"] += len(spans)
    return "".join(out)


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
_SSN_WORDS: Final = ("ssn", "social", "soc", "ss")
_ACCOUNT_WORDS: Final = ("account", "acct", "a/c", "routing", "sort", "bsb", "aba")
_PHONE_WORDS: Final = (
    "call", "phone", "tel", "text", "txt", "sms", "mobile", "cell", "whatsapp", "fax",
    "reach", "contact", "ring", "number",
)  # fmt: skip
_UNIT_WORDS: Final = ("apt", "apartment", "flat", "ste", "suite")


_DOB_HINTS: Final = (
    "birth", "born", "dob", "d.o.b", "b-day", "nacimiento", "nací", "naci el", "nacid", "nascimento",
    "nasci", "naissance", "né le", "née le", "lahir", "cumple", "anivers",
)  # fmt: skip
_OBF_HINTS: Final = ("dot", "punto", "ponto", "point", "titik", "arroba", "arobase", "[at]", "(at)")
_MAIL_DOMAIN_HINTS: Final = tuple(d + "." for d in _MAIL_DOMAINS)
_ID_HINTS: Final = (
    "cpf", "cnpj", " rg ", " rg:", "aadha", " uid", " nik", "ktp", "nomor induk", "dni", "d.n.i",
    "documento", "dula", "c.c.", "curp", "rfc", " ine ", "clave de elector", " sin ", " sin:",
    " sin#", "insurance", "nino", "national", "ni number", "id card", "identit", "fiscal",
    "tax id", "curit", " tin ", " tin:", " tin#", " pan ", " pan:", " pan#", " nir", "insee", "आधार", "पैन",
)  # fmt: skip
_PASSPORT_HINTS: Final = ("passp", "passeport", "pasap", "paspor", "पासपोर्ट")
_DRIVER_HINTS: Final = ("driver", "driving", "licencia de conduc", "cnh", "carteira", "permis de",
                        " dl ", " dl:", " dl#", "dl no", "sim a", "sim b", "sim c")  # fmt: skip
_MRN_HINTS: Final = (
    "mrn", "medical record", "patient", "hospital", "nhs", "health card", "member id",
    "policy n", "expediente", "prontu", "dossier", "rekam",
)  # fmt: skip
_PLATE_HINTS: Final = (" plate", "plate:", "registration", " reg ", " reg.", "placa", "matrícula",
                       "matricula", "plaque", "immatric", "plat nomor", "polisi", "nopol", "प्लेट")  # fmt: skip
_GPS_HINTS: Final = ("gps", "coord", "lat ", "lat:", "lat=", "latitude", "location", "pinned",
                     " pin ", "pin:", "ubicaci", "localiza", "lokasi", "koordinat")  # fmt: skip
_POSTCODE_HINTS: Final = ("zip", "postal", "postcode", "post code", "cep", "c.p.", "cp ",
                          "código postal", "codigo postal", "code postal", "pin code", "pincode",
                          "pin:", "kode pos", "पिन")  # fmt: skip


_DECIMALS_RE: Final = re.compile(r"\d\.\d\d")
_GPS_HINT_RE: Final = re.compile(r"\d\.\d{4}|[°º]")
_UPPER_DIGIT_RE: Final = re.compile(r"[A-Z]\s?\d|\d[A-Z]")
_FIVE_DIGITS_RE: Final = re.compile(r"[A-Z]{2}\s+\d{5}")


class _Hints:
    """Which keyword families occur in a text; each looked up once, on first use."""

    __slots__ = ("_low", "_seen")

    def __init__(self, low: str) -> None:
        self._low = low
        self._seen: dict[str, bool] = {}

    def __contains__(self, family: str) -> bool:
        got = self._seen.get(family)
        if got is None:
            got = self._seen[family] = _HINT_RES[family].search(self._low) is not None
        return got


_HINT_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = {
    "obf": _OBF_HINTS,
    "dob": _DOB_HINTS,
    "gps": _GPS_HINTS,
    "passport": _PASSPORT_HINTS,
    "driver": _DRIVER_HINTS,
    "mrn": _MRN_HINTS,
    "plate": _PLATE_HINTS,
    "id": _ID_HINTS,
    "ssn": _SSN_WORDS,
    "account": _ACCOUNT_WORDS,
    "phone": _PHONE_WORDS,
    "unit": _UNIT_WORDS,
    "postcode": _POSTCODE_HINTS,
}
# one search per family instead of a substring test per keyword (same meaning: any keyword
# occurs anywhere in the lower-cased text)
_HINT_RES: Final[Mapping[str, re.Pattern[str]]] = {
    family: re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))
    for family, words in _HINT_FAMILIES.items()
}


def _redact_plain(text: str, counts: Counter[str], finder: NameFinder) -> str:
    """All passes except URLs, on a stretch of text that holds no kept URL.

    Cheap pre-checks skip the passes that cannot match (no "@", no digit, no keyword).
    """
    low = text.lower()
    hints = _Hints(low)
    if "@" in text:
        text = _EMAIL_RE.sub(_whole("EMAIL", counts), text)
    if "obf" in hints or (" at " in low and any(d in low for d in _MAIL_DOMAIN_HINTS)):
        text = _OBF_EMAIL_RE.sub(_obf_email_repl(counts), text)
    if "@" in text:
        text = _HANDLE_RE.sub(_handle_repl(counts), text)
    if _DIGIT_RE.search(text):
        text = _redact_numbers(text, hints, counts)
    return _names_pass(text, counts, finder)


def _redact_numbers(text: str, hints: _Hints, counts: Counter[str]) -> str:
    """The passes that need a digit, in an order where the more specific pattern goes first."""
    if "dob" in hints:
        text = _DOB_RE.sub(_group1("DOB", counts), text)
    if "जन्म" in text:
        text = _DOB_HI_RE.sub(_group1("DOB", counts), text)
    if ":" in text or "-" in text or "." in text:
        text = _MAC_RE.sub(_whole("MAC", counts), text)
    if _GPS_HINT_RE.search(text):
        text = _GPS_RE.sub(_whole("GPS", counts, _gps_ok), text)
        if "gps" in hints and _DECIMALS_RE.search(text):
            text = _GPS_CTX_RE.sub(_group1("GPS", counts, _gps_ok), text)
    text = _IBAN_RE.sub(_iban_repl(counts), text)
    if "." in text:
        text = _CPF_RE.sub(_whole("NATIONAL_ID", counts, cpf_valid), text)
        text = _CNPJ_RE.sub(_whole("NATIONAL_ID", counts, cnpj_valid), text)
    upper_digit = _UPPER_DIGIT_RE.search(text) is not None
    if upper_digit:
        text = _CURP_RE.sub(_whole("NATIONAL_ID", counts, curp_valid), text)
        text = _RFC_RE.sub(_whole("NATIONAL_ID", counts), text)
        text = _PAN_RE.sub(_whole("NATIONAL_ID", counts), text)
        text = _NINO_RE.sub(_whole("NATIONAL_ID", counts), text)
        text = _UK_DL_RE.sub(_whole("DRIVER_LICENSE", counts), text)
        text = _VIN_RE.sub(_vin_repl(counts), text)
    if "passport" in hints:
        text = _PASSPORT_RE.sub(_group1("PASSPORT", counts, _doc_value_ok(6)), text)
    if "driver" in hints:
        text = _DRIVER_RE.sub(_group1("DRIVER_LICENSE", counts, _doc_value_ok(5)), text)
    if "mrn" in hints:
        text = _MRN_RE.sub(_group1("MEDICAL_RECORD", counts, _doc_value_ok(5)), text)
    if "plate" in hints:
        text = _PLATE_RE.sub(_group1("PLATE", counts, _plate_ok), text)
    text = _CARD_RE.sub(_whole("CARD", counts, _card_ok), text)  # Luhn-checked: before "ID 4111..."
    if "id" in hints:
        text = _ID_CTX_RE.sub(_id_ctx_repl(counts), text)
    text = _NIK_RE.sub(_whole("NATIONAL_ID", counts, nik_valid), text)
    text = _AADHAAR_RE.sub(_aadhaar_repl(counts), text)
    if "ssn" in hints:
        text = _SSN_CTX_RE.sub(_group1("SSN", counts, ssn_valid), text)
    if "-" in text:
        text = _SSN_RE.sub(_whole("SSN", counts, ssn_valid), text)
    if "account" in hints:
        text = _ACCOUNT_RE.sub(_group1("ACCOUNT", counts), text)
    if "." in text:
        text = _IPV4_RE.sub(_whole("IP", counts, _ipv4_ok), text)
    if ":" in text:
        text = _IPV6_RE.sub(_whole("IP", counts, _ipv6_ok), text)
    if "+" in text or "00" in text:  # international numbers first: "0044 20 7946 0958"
        text = _PHONE_CAND_INTL_RE.sub(_phone_lib_repl(counts), text)
    if "+" in text:
        text = _PHONE_INTL_RE.sub(_whole("PHONE", counts, _intl_ok), text)
    text = _PHONE_NANP_RE.sub(_whole("PHONE", counts), text)
    if "0" in text:
        text = _PHONE_TRUNK_RE.sub(_whole("PHONE", counts, _trunk_ok), text)
    if "phone" in hints:
        text = _PHONE_CTX_RE.sub(_group1("PHONE", counts, _phone_digits_ok), text)
    if _DIGIT_RE.search(text):
        text = _PHONE_CAND_RE.sub(_phone_lib_repl(counts), text)
    text = _ADDRESS_US_RE.sub(_address_repl(counts), text)
    for pattern in _ADDRESS_EU_RES:
        text = pattern.sub(_whole("ADDRESS", counts), text)
    if "unit" in hints:
        text = _UNIT_ALONE_RE.sub(_whole("ADDRESS", counts), text)
    if upper_digit:
        text = _UK_POSTCODE_RE.sub(_whole("POSTCODE", counts, _uk_postcode_ok), text)
        text = _CA_POSTCODE_RE.sub(_whole("POSTCODE", counts), text)
    if "postcode" in hints or _FIVE_DIGITS_RE.search(text):
        text = _POSTCODE_CTX_RE.sub(_group1("POSTCODE", counts), text)
    return text


def _redact_once(text: str, counts: Counter[str], finder: NameFinder) -> str:
    """One round: personal URLs become [URL]; kept URLs are left verbatim and shielded."""
    out: list[str] = []
    pos = 0
    for m in _URL_RE.finditer(text):
        url, _trailing = _split_url(m.group(0))
        if not url:
            continue
        out.append(_redact_plain(text[pos : m.start()], counts, finder))
        if _url_is_personal(url):
            counts["URL"] += 1
            out.append(PLACEHOLDERS["URL"])
        else:
            out.append(url)
        pos = m.start() + len(url)
    out.append(_redact_plain(text[pos:], counts, finder))
    return "".join(out)


def redact(text: str, *, name_finder: NameFinder = find_person_names) -> RedactionResult:
    """Replace PII in ``text`` by typed placeholders; pure and idempotent.

    ``name_finder`` returns the ``(start, end)`` spans of person names in a stretch of text; the
    default is the pattern and gazetteer finder of :mod:`labeling.person_names`. Every caller that
    feeds the filter or stores text must use the default, so that serving and training render the
    same text (``benchmarks/redaction.py`` passes other finders to compare them).
    """
    counts: Counter[str] = Counter()
    if not text:
        return RedactionResult(text=text, counts={})
    current = text
    for _ in range(_MAX_ROUNDS):
        before = sum(counts.values())
        current = _redact_once(current, counts, name_finder)
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
