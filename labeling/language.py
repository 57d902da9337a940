"""Which language each turn of a conversation is in (offline: py3langid, 97 languages).

* :func:`detect` returns an ISO 639-1 code, or :data:`UNDETERMINED` (``"und"``) when the text is
  too short to tell (fewer than ``min_letters`` letters: "ok", "thanks!", "7pm") or the
  identifier is not confident. An undetermined turn does not count as another language; it is
  still scored by the filter like every other turn.
* :func:`turn_languages` detects every turn; :func:`unsupported` names the turns in a language
  outside a given set (the policy's ``supported_languages``): one such turn makes the whole
  conversation one the filter cannot judge (it fails closed, see ``targeting.decide``).

Detection is deterministic, thread-safe and loads its model lazily (first call, ~0.3 s).
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

UNDETERMINED = "und"
DEFAULT_MIN_LETTERS = 12
DEFAULT_MIN_CONFIDENCE = 0.6
# English-lexified creoles the identifier confuses with short English ("Yes make it for March
# 10th." -> pcm): read as English
ALIASES = {"pcm": "en"}
# below this, the most likely language of a short text is noise ("Asian Fusion in Concord." ->
# vec 0.37): the foreign-mass rule of ``detect`` needs at least this much on its top language
FOREIGN_MIN_TOP = 0.4
# ... or when the supported languages together get less than FOREIGN_MAX_SUPPORTED while some
# unsupported language stands out (FOREIGN_MIN_PEAK; a flat distribution, as for "No problem ,
# sir .", says nothing): a short Spanish sentence ("Soy indígena americano.") often has no
# confident language at all, yet it is plainly not English. Measured: refuses <= 0.7 % of the
# English dev conversations of any source, finds 91-100 % of the translated ones
# (docs/filter-quality.md).
FOREIGN_MAX_SUPPORTED = 0.05
FOREIGN_MIN_PEAK = 0.05

_lock = threading.Lock()
_identifier: Any = None


@dataclass(frozen=True)
class LanguageGuess:
    code: str  # ISO 639-1, or "und"
    confidence: float  # the identifier's normalised probability (0 for "und" by length)


def _model() -> Any:
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def letter_count(text: str) -> int:
    """Letters and combining marks (a Devanagari syllable is a letter plus vowel signs)."""
    return sum(1 for ch in text if unicodedata.category(ch)[0] in "LM")


def _mostly_non_latin(text: str) -> bool:
    letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ord(ch) < 0x250)
    return latin < len(letters) / 2


def distribution(text: str) -> dict[str, float]:
    """Language -> probability (aliases merged)."""
    out: dict[str, float] = {}
    for code, prob in _model().rank(text):
        c = ALIASES.get(str(code), str(code))
        out[c] = out.get(c, 0.0) + float(prob)
    return out


def detect(
    text: str,
    *,
    min_letters: int = DEFAULT_MIN_LETTERS,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    supported: Iterable[str] | None = None,
) -> LanguageGuess:
    """The language of one text (see the module doc for ``und``).

    With ``supported``, the question is whether the text is in one of those languages: a text
    whose most likely language is not supported (at ``FOREIGN_MIN_TOP`` or more) counts as that
    language as soon as the unsupported languages together reach ``min_confidence`` (Spanish
    split between es, gl and an is still not English).
    """
    # a non-Latin script says a lot in few characters ("मैं गर्भवती हूँ")
    need = max(4, min_letters // 2) if _mostly_non_latin(text) else min_letters
    if letter_count(text) < need:
        return LanguageGuess(UNDETERMINED, 0.0)
    top, p_top = _model().classify(text)  # the common case: one confident language
    if float(p_top) >= min_confidence and str(top) not in ALIASES:
        return LanguageGuess(str(top), float(p_top))
    dist = distribution(text)
    code, prob = max(dist.items(), key=lambda kv: kv[1])
    if prob >= min_confidence:
        return LanguageGuess(code, prob)
    if supported is not None:
        ok = set(supported)
        foreign = 1.0 - sum(p for c, p in dist.items() if c in ok)
        if code not in ok and prob >= FOREIGN_MIN_TOP and foreign >= min_confidence:
            return LanguageGuess(code, prob)
        if 1.0 - foreign < FOREIGN_MAX_SUPPORTED:
            code, prob = max(((c, p) for c, p in dist.items() if c not in ok), key=lambda kv: kv[1])
            if prob >= FOREIGN_MIN_PEAK:
                return LanguageGuess(code, prob)
    return LanguageGuess(UNDETERMINED, prob)


def turn_languages(texts: Iterable[str], **kwargs: Any) -> tuple[str, ...]:
    """One code per text (``und`` where undetermined); ``kwargs`` as for :func:`detect`."""
    return tuple(detect(t, **kwargs).code for t in texts)


def unsupported(languages: Sequence[str], supported: Iterable[str]) -> list[tuple[int, str]]:
    """``(turn index, code)`` of every determined turn whose language is not in ``supported``."""
    ok = set(supported)
    return [(i, c) for i, c in enumerate(languages) if c != UNDETERMINED and c not in ok]


def primary_language(languages: Sequence[str]) -> str:
    """The most frequent determined language of a conversation (``und`` if none)."""
    counts = Counter(c for c in languages if c != UNDETERMINED)
    return counts.most_common(1)[0][0] if counts else UNDETERMINED
