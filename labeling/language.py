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
DEFAULT_MIN_CONFIDENCE = 0.8

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
    return sum(1 for ch in text if unicodedata.category(ch).startswith("L"))


def detect(
    text: str,
    *,
    min_letters: int = DEFAULT_MIN_LETTERS,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> LanguageGuess:
    """The language of one text (see the module doc for ``und``)."""
    if letter_count(text) < min_letters:
        return LanguageGuess(UNDETERMINED, 0.0)
    code, prob = _model().classify(text)
    if float(prob) < min_confidence:
        return LanguageGuess(UNDETERMINED, float(prob))
    return LanguageGuess(str(code), float(prob))


def turn_languages(texts: Iterable[str], **kwargs: Any) -> tuple[str, ...]:
    """One code per text (``und`` where undetermined)."""
    return tuple(detect(t, **kwargs).code for t in texts)


def unsupported(languages: Sequence[str], supported: Iterable[str]) -> list[tuple[int, str]]:
    """``(turn index, code)`` of every determined turn whose language is not in ``supported``."""
    ok = set(supported)
    return [(i, c) for i, c in enumerate(languages) if c != UNDETERMINED and c not in ok]


def primary_language(languages: Sequence[str]) -> str:
    """The most frequent determined language of a conversation (``und`` if none)."""
    counts = Counter(c for c in languages if c != UNDETERMINED)
    return counts.most_common(1)[0][0] if counts else UNDETERMINED
