"""Runtime scoring of conversations: segments, features, the classifiers, thresholds, lexicon.

This is the part of the targeting filter that is *learned* (trained by ``experiments.training``,
shipped inside the MLflow pyfunc model by ``targeting.model``). It is pure: no I/O, no services.

Sensitive topics are judged **per segment** (``labeling.segments``: every turn, long turns cut
into sentence windows; no text unseen) and aggregated with **max**: one sensitive segment blocks
the whole conversation, wherever it is.

* Segment features: sentence embeddings (any object with ``embed(texts) -> (n, d) float array``;
  unit tests inject a cheap deterministic fake), optionally TF-IDF word n-grams and character
  n-grams fitted on segments, and **cue features**: per policy category, how many of its cue terms
  (``labeling/data/sensitive_lexicon.yaml``, ``cues``; identity and topic terms in several
  languages) occur in the segment -- one feature per category, so that what the classifier learns
  from the cue terms seen in training carries over to the ones it never saw. A category's
  ``cue_not_before`` words cancel a cue right before them ("chinese food" is a cuisine).
* One multinomial classifier over segments with classes ``clean`` + one per policy category gives
  ``P(any sensitive) = 1 - P(clean)`` and a score per category. A category without training
  positives is scored by cosine similarity to *prototypes* (the policy's description and
  examples, embedded) instead.
* Decision: a conversation is blocked when, in any of its segments, ``P(any)`` reaches the
  any-sensitive threshold, or a category's score reaches that category's floor threshold, or a
  keyword of the lexicon (``keywords``: specific phrases) or an identity statement
  (``identities``: "I'm a South Asian person", "my gay friend"; ``IdentityRule``) occurs. The
  segment that decided is reported as the triggering turn (audit only).
* Interests are judged on the whole conversation: the mean of its segment embeddings plus TF-IDF
  of the conversation text; one logistic regression per interest id, per-label thresholds. A
  model trained with ``mask_interest_names`` (the default) reads the places a conversation names
  as one placeholder (``labeling.proper_names``): a segment that names a trail, a city or a
  restaurant is embedded a second time without the name, for the interests only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml
from scipy import sparse

from labeling.proper_names import mask_places, mask_segments, place_names
from labeling.records import split_role_tag
from labeling.segments import DEFAULT_SEGMENT_CHARS, Segment, segment_turns

DEFAULT_LEXICON_PATH = (
    Path(__file__).resolve().parents[1] / "labeling" / "data" / "sensitive_lexicon.yaml"
)
CLEAN = "clean"

FloatArray = npt.NDArray[np.float64]
Features = Any  # np.ndarray or scipy.sparse.csr_matrix


class TextEmbedder(Protocol):
    """What the scorer needs from an embedder (``labeling.embeddings.MiniLMEmbedder`` fits)."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class Classifier(Protocol):
    """A fitted classifier with ``predict_proba`` (sklearn's LogisticRegression fits)."""

    def predict_proba(self, x: Features) -> npt.NDArray[np.float64]: ...


# ------------------------------------------------------------------------------------ lexicon
@dataclass(frozen=True)
class Lexicon:
    """``keywords`` block on sight; ``cues`` are counted as features (see the module doc);
    ``cue_not_before``: words that, right after a category's cue, make it not count ("chinese
    food", "indian restaurant": a cuisine, not a person's ethnicity); ``identities``: identity
    statements, blocking (``IdentityRule``)."""

    keywords: dict[str, tuple[str, ...]]
    cues: dict[str, tuple[str, ...]]
    cue_not_before: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identities: IdentityRule | None = None


IDENTITY_FRAME_KEYS = (
    "self", "other", "fillers", "people", "clause_words", "having", "having_fillers", "people_having"
)  # fmt: skip


def _alternation(words: Sequence[str]) -> str:
    """A regex alternation of words / phrases (longest first; any whitespace or hyphen between
    the words of a phrase)."""
    alts = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    return "|".join(r"[\s-]+".join(re.escape(p) for p in re.split(r"[\s-]+", a)) for a in alts)


@dataclass
class IdentityRule:
    """Identity statements: a person or group described by a term of a category's identities
    ("I'm a South Asian person", "as a Muslim", "my friend who is deaf", "gay people"). Blocking,
    like the keywords, but written as frames x terms instead of every phrase:

    * a ``self`` frame ("i'm", "as a", "being") or an ``other`` frame ("who is", "she's", "are"),
      then any of the ``fillers`` ("a", "not", "currently"), then the term, then the end of the
      clause (punctuation, the end of the text, or one of the ``clause_words``: "and", "but") or
      one of the ``people`` nouns ("person", "people", "friend");
    * or the term right before one of the ``people`` nouns ("Latino people", "deaf person").

    ``ambiguous`` terms ("black", "white", "straight", "conservative") also name colours and
    everyday things ("the car is black", "a conservative estimate"): they count only before a
    ``people`` noun or at the end of a clause after a ``self`` frame, never after an ``other``
    frame.

    ``conditions`` ("depression", "panic attacks", "a drinking problem") are what a person has
    rather than is: they count after a ``having`` frame ("my", "i suffer from", "diagnosed
    with", "she has"; ``having_fillers`` such as "severe", "chronic" between) or after a
    ``people`` noun and a ``people_having`` frame ("people with autism", "a friend who has
    cancer", "my mom has dementia").
    English frames."""

    frames: dict[str, tuple[str, ...]]
    terms: dict[str, tuple[str, ...]]
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # per category: its pattern, and the first words of its terms (a text without any of them
    # cannot match, so the pattern is not tried)
    _patterns: dict[str, tuple[re.Pattern[str], frozenset[str]]] | None = field(
        default=None, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_patterns": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("conditions", {})  # models saved before conditions existed
        self.__dict__.update(state)

    def _compile(self) -> dict[str, tuple[re.Pattern[str], frozenset[str]]]:
        f = {k: _alternation(self.frames.get(k, ())) for k in IDENTITY_FRAME_KEYS}
        people = rf"(?:{f['people']})" if f["people"] else r"(?!)"
        fill = rf"(?:\s+(?:{f['fillers']}))*" if f["fillers"] else ""
        clause = rf"|\s+(?:{f['clause_words']})\b" if f["clause_words"] else ""
        end = rf"(?=\s*(?:[.,!?;:)\"]|${clause}))"
        hfill = rf"(?:\s+(?:{f['having_fillers']}))*" if f["having_fillers"] else ""
        out: dict[str, tuple[re.Pattern[str], frozenset[str]]] = {}
        for cat in sorted(set(self.terms) | set(self.ambiguous) | set(self.conditions)):
            terms = [*self.terms.get(cat, ()), *self.ambiguous.get(cat, ())]
            conds = _alternation(self.conditions.get(cat, ()))
            plain = _alternation(self.terms.get(cat, ()))
            every = _alternation(terms)
            firsts = frozenset(
                words_of(t)[0] for t in (*terms, *self.conditions.get(cat, ())) if words_of(t)
            )
            pats = []
            if every:
                pats.append(rf"\b(?:{every})[\s-]+{people}\b")
            if every and f["self"]:
                pats.append(rf"\b(?:{f['self']}){fill}\s+(?:{every})(?:{end}|\s+{people}\b)")
            if f["other"] and plain:
                pats.append(rf"\b(?:{f['other']}){fill}\s+(?:{plain}){end}")
            if conds:
                if f["having"]:
                    pats.append(rf"\b(?:{f['having']}){hfill}\s+(?:{conds})\b")
                if f["people_having"]:
                    pats.append(rf"\b{people}\s+(?:{f['people_having']}){hfill}\s+(?:{conds})\b")
            if not pats:
                continue
            out[cat] = (re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE), firsts)
        return out

    def hits(self, text: str) -> frozenset[str]:
        """The categories whose identity statements occur in ``text``."""
        if self._patterns is None:
            self._patterns = self._compile()
        text = text.replace("\u2019", "'")  # a typographic apostrophe: "I\u2019m"
        words = set(words_of(text))
        return frozenset(
            c for c, (p, firsts) in self._patterns.items() if words & firsts and p.search(text)
        )


def _terms(p: Path, cat: str, spec: Any, key: str) -> tuple[str, ...]:
    words = spec.get(key, []) if isinstance(spec, dict) else (spec if key == "keywords" else [])
    if words is None:
        words = []
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"{p}: category {cat!r}: {key} must be a list of non-empty strings")
    return tuple(w.strip().lower() for w in words)


def load_lexicon_file(path: Path | None = None, categories: Sequence[str] | None = None) -> Lexicon:
    """Read ``{categories: {name: {keywords: [...], cues: [...]}}}``; categories the policy does
    not know are dropped when ``categories`` is given, missing ones get no terms."""
    p = path or DEFAULT_LEXICON_PATH
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read sensitive lexicon {p}: {exc}") from exc
    cats = doc.get("categories", doc) if isinstance(doc, dict) else None
    if not isinstance(cats, dict):
        raise ValueError(f"{p}: expected a mapping 'categories: {{name: {{keywords: [...]}}}}'")
    keys = (
        "keywords",
        "cues",
        "cue_not_before",
        "identities",
        "identities_ambiguous",
        "conditions",
    )
    sec = {k: {str(c): _terms(p, str(c), spec, k) for c, spec in cats.items()} for k in keys}
    for c, words in sec["cue_not_before"].items():
        if any(len(words_of(w.replace("*", ""))) != 1 for w in words):
            raise ValueError(f"{p}: category {c!r}: cue_not_before takes single words")
    if categories is not None:
        sec = {k: {c: terms.get(c, ()) for c in categories} for k, terms in sec.items()}
    kw, cues, after, ident, ambig, conds = (sec[k] for k in keys)
    rule = None
    if any(ident.values()) or any(ambig.values()) or any(conds.values()):
        frames = doc.get("identity_frames")
        if not isinstance(frames, dict) or not frames.get("self") or not frames.get("people"):
            raise ValueError(
                f"{p}: identities and conditions need 'identity_frames' with at least 'self' and "
                "'people' lists"
            )
        unknown = sorted(set(frames) - set(IDENTITY_FRAME_KEYS))
        if unknown:
            raise ValueError(f"{p}: identity_frames: unknown keys {unknown}")
        rule = IdentityRule(
            {k: _terms(p, "identity_frames", frames, k) for k in IDENTITY_FRAME_KEYS},
            {c: t for c, t in ident.items() if t},
            {c: t for c, t in ambig.items() if t},
            {c: t for c, t in conds.items() if t},
        )
    return Lexicon(kw, cues, {c: w for c, w in after.items() if w}, rule)


def load_lexicon(
    path: Path | None = None, categories: Sequence[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """The blocking keywords only (``{category: (phrase, ...)}``)."""
    return load_lexicon_file(path, categories).keywords


_WORD = re.compile(r"(?:\w|[\u0300-\u036f\u0900-\u0dff])+")
_STEM = "_stem_"  # stands for a trailing "*" while a term is tokenised


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens (Indic vowel signs stay inside their word)."""
    return _WORD.findall(text.lower())


def _word_matches(tok: str, word: str, stem: bool) -> bool:
    """A word of a term matches a token: the same word, or (``stem``) a word it starts."""
    return tok.startswith(word) if stem else tok == word


class TermMatcher:
    """Counts matches of terms per category in a text, on word tokens (fast: set lookups, no
    regex alternation). A term is one or more words; a word ending in ``*`` matches every word it
    starts (``pray*``: pray, prayer, praying). ``not_before``: per category, words (``*`` allowed)
    that cancel a match of that category's terms when they come right after it."""

    def __init__(
        self,
        terms: Mapping[str, Sequence[str]],
        not_before: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.categories = tuple(terms)
        self.not_before: dict[int, tuple[tuple[str, bool], ...]] = {
            j: tuple((w.removesuffix("*"), w.endswith("*")) for w in not_before[c])
            for j, c in enumerate(self.categories)
            if not_before and not_before.get(c)
        }
        # first word -> [(category, (w1, w2, ...))]; a word is (text, is_stem)
        self.exact: dict[str, list[tuple[int, tuple[tuple[str, bool], ...]]]] = {}
        self.stems: list[tuple[str, int, tuple[tuple[str, bool], ...]]] = []
        for j, c in enumerate(self.categories):
            for term in terms[c]:
                ws = tuple(
                    (w.removesuffix(_STEM), w.endswith(_STEM))
                    for w in words_of(term.replace("*", _STEM))
                )
                if not ws or not ws[0][0]:
                    continue
                first, stem = ws[0]
                if stem:
                    self.stems.append((first, j, ws))
                else:
                    self.exact.setdefault(first, []).append((j, ws))
        self.stem_prefixes = tuple(sorted({p for p, _, _ in self.stems}))

    @staticmethod
    def _match_at(words: Sequence[str], i: int, ws: tuple[tuple[str, bool], ...]) -> bool:
        if i + len(ws) > len(words):
            return False
        return all(_word_matches(words[i + k], w, stem) for k, (w, stem) in enumerate(ws))

    def _cancelled(self, words: Sequence[str], end: int, j: int) -> bool:
        if j not in self.not_before or end >= len(words):
            return False
        return any(_word_matches(words[end], w, stem) for w, stem in self.not_before[j])

    def counts(self, text: str) -> list[int]:
        out = [0] * len(self.categories)
        words = words_of(text)
        for i, tok in enumerate(words):
            for j, ws in self.exact.get(tok, ()):
                if self._match_at(words, i, ws) and not self._cancelled(words, i + len(ws), j):
                    out[j] += 1
            if self.stem_prefixes and tok.startswith(self.stem_prefixes):
                for prefix, j, ws in self.stems:
                    if (
                        tok.startswith(prefix)
                        and self._match_at(words, i, ws)
                        and not self._cancelled(words, i + len(ws), j)
                    ):
                        out[j] += 1
        return out

    def hits(self, text: str) -> frozenset[str]:
        return frozenset(c for c, k in zip(self.categories, self.counts(text), strict=True) if k)


# ------------------------------------------------------------------------------------ features
def segment_words(text: str) -> str:
    """A segment's text as the word features of a model trained without role tags see it: the
    leading role tag dropped (who spoke, not what was said; as a word it stands for the data
    source's format), lower-cased, accents stripped (what the vectoriser does by default). A
    module function: the fitted vectoriser pickles it by name."""
    from sklearn.feature_extraction.text import strip_accents_unicode

    return strip_accents_unicode(split_role_tag(text)[1].lstrip(" \t").lower())


def embed_features(texts: Sequence[str], embedder: TextEmbedder) -> npt.NDArray[np.float32]:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    emb = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"embedder returned shape {emb.shape} for {len(texts)} texts")
    return emb


def stack_features(parts: Sequence[Any]) -> Features:
    """hstack dense and sparse blocks (CSR when any block is sparse)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("no features: give an embedder or a fitted TF-IDF")
    if len(parts) == 1:
        return parts[0]
    if any(sparse.issparse(p) for p in parts):
        return sparse.hstack(
            [
                p if sparse.issparse(p) else sparse.csr_matrix(np.asarray(p, np.float64))
                for p in parts
            ],
            format="csr",
        )
    return np.hstack(parts)


def predict_scores(
    models: Mapping[str, Classifier | None], labels: Sequence[str], x: Features, n: int
) -> FloatArray:
    """(n, len(labels)) positive-class probabilities; a label without a model scores 0."""
    out = np.zeros((n, len(labels)), dtype=np.float64)
    for j, lab in enumerate(labels):
        m = models.get(lab)
        if m is not None and n:
            out[:, j] = np.asarray(m.predict_proba(x))[:, 1]
    return out


def mean_pool(
    vectors: npt.NDArray[np.float32], owners: npt.NDArray[np.int_], n: int
) -> npt.NDArray[np.float32]:
    """Unit-length mean of the rows of ``vectors`` per owner (rows of an owner without vectors
    stay zero)."""
    out = np.zeros((n, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    if vectors.size:
        np.add.at(out, owners, vectors)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.clip(norms, 1e-12, None)).astype(np.float32)


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ContentVerdict:
    """What the content models say about one (redacted) conversation."""

    # categories above their threshold or hit by the lexicon, most confident first; when only the
    # any-sensitive rule fired, the category with the highest score
    sensitive: tuple[str, ...]
    sensitive_scores: dict[str, float]  # per category: max over segments
    # (iab id, score) above threshold, best first; from ``FilterBundle.judge`` empty for a
    # blocked conversation (its decision carries none), from ``score`` + ``verdicts`` computed
    # either way (evaluation measures the interests of every conversation)
    interests: tuple[tuple[str, float], ...]
    any_score: float = 0.0  # max over segments of P(any sensitive)
    trigger_turn: int | None = None  # the turn whose segment decided the block (audit only)
    turn_scores: tuple[float, ...] = ()  # per turn: max over its segments of P(any sensitive)

    @property
    def blocked(self) -> bool:
        return bool(self.sensitive)

    @property
    def sensitive_category(self) -> str | None:
        return self.sensitive[0] if self.sensitive else None


@dataclass(frozen=True)
class ScoreBatch:
    """Conversation-level scores (rows follow the conversations)."""

    sensitive: FloatArray  # (n, C): per category, max over segments
    any: FloatArray  # (n,): max over segments of P(any sensitive)
    lexicon_hits: list[frozenset[str]]
    interests: FloatArray  # (n, L)
    margin: FloatArray  # (n,): max over segments of the block margin (>= 0: blocked)
    trigger_turn: list[int | None]  # turn of the segment with the largest margin
    turn_scores: list[tuple[float, ...]]


@dataclass(frozen=True)
class SegmentScores:
    """Per-segment scores of a batch of conversations (``owner``: conversation row)."""

    segments: list[Segment]
    owner: npt.NDArray[np.int_]
    any: FloatArray  # (S,)
    categories: FloatArray  # (S, C)
    lexicon_hits: list[frozenset[str]]
    embeddings: npt.NDArray[np.float32] | None  # (S, d)


SHORT_SEGMENT_WORDS = 12


def short_cues(counts: FloatArray, texts: Sequence[str]) -> FloatArray:
    """(n, C): whether a category's cue occurs in a segment, times min(1, 12 / its words): a cue
    in a short segment is what the segment is about ("I'm Methodist"), one in a long post may be
    a passing mention."""
    words = np.array([max(len(t.split()), 1) for t in texts], dtype=np.float64)
    short = np.minimum(1.0, SHORT_SEGMENT_WORDS / words)
    return np.asarray((counts > 0) * short[:, None], dtype=np.float64)


class BlendedSegmentModel:
    """A linear model on every segment feature averaged with a small neural network on the dense
    columns (sentence embedding and cue counts): the network can draw the curved boundaries the
    linear model cannot, the linear model keeps the sparse lexical evidence. Both are fitted on
    the same rows and classes; ``predict_proba`` is ``(1 - w) * linear + w * network``."""

    def __init__(self, linear: Any, network: Any, dense_cols: npt.NDArray[np.int_], w: float):
        if [str(c) for c in linear.classes_] != [str(c) for c in network.classes_]:
            raise ValueError("the linear model and the network were fitted on different classes")
        self.linear, self.network, self.w = linear, network, float(w)
        self.dense_cols = np.asarray(dense_cols, dtype=np.int_)
        self.classes_ = linear.classes_

    def dense(self, x: Features) -> npt.NDArray[np.float64]:
        part = x[:, self.dense_cols]
        return np.asarray(part.toarray() if sparse.issparse(part) else part, dtype=np.float64)

    def predict_proba(self, x: Features) -> npt.NDArray[np.float64]:
        p_net = np.asarray(self.network.predict_proba(self.dense(x)), dtype=np.float64)
        if self.w >= 1.0:
            return p_net
        p_lin = np.asarray(self.linear.predict_proba(x), dtype=np.float64)
        return (1.0 - self.w) * p_lin + self.w * p_net


# ------------------------------------------------------------------------------------ bundle
def masked_segment_texts(
    conversations: Sequence[Sequence[str]], texts: Sequence[str], owners: npt.NDArray[np.int_]
) -> list[str]:
    """Segment ``texts`` (of ``conversations[owners[k]]``) with the places each conversation
    names masked: what a segment model trained with places masked reads (training and
    :meth:`FilterBundle.sensitive_texts`)."""
    return mask_segments(texts, owners, [place_names(c) for c in conversations])


@dataclass
class FilterBundle:
    """Everything learned: picklable, shipped as one artifact of the pyfunc model."""

    categories: tuple[str, ...]
    interest_ids: tuple[str, ...]
    interest_names: dict[str, str]
    # sensitive, per segment: multinomial over (CLEAN, *categories) -- see classes
    segment_model: Any | None
    segment_classes: tuple[str, ...]
    any_threshold: float
    sensitive_thresholds: dict[str, float]  # per-category floors on the category score
    sensitive_rules: dict[str, str]  # category -> how its floor was set
    prototypes: dict[str, npt.NDArray[np.float32]]  # category -> (k, d) unit vectors
    segment_tfidf: Any | None
    segment_char_tfidf: Any | None
    cue_weight: float  # scale of the cue-count features (0: not used)
    interest_models: dict[str, Any]
    interest_thresholds: dict[str, float]
    interest_tfidf: Any | None
    lexicon: dict[str, tuple[str, ...]]  # blocking keywords
    cues: dict[str, tuple[str, ...]]
    embedding_model_id: str
    cue_not_before: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identity_rule: IdentityRule | None = None  # blocking identity statements
    cue_short_weight: float = 0.0  # scale of the short-segment cue features (0: not used)
    embed_max_length: int = 128
    encoder: str = "minilm"  # labeling.encoders name of the sentence encoder (serving loads it)
    segment_chars: int = DEFAULT_SEGMENT_CHARS
    # "segment" (turns and sentence windows) or "conversation" (the whole text as one unit, the
    # embedding truncated to embed_max_length: kept as the baseline the benchmark compares with)
    unit: str = "segment"
    uses_embeddings: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    # scale of the word TF-IDF columns of the segment model (smaller: more regularised)
    tfidf_weight: float = 1.0
    # the interest model reads the places a conversation names as one placeholder
    # (labeling.proper_names): its sentence vectors and words do not move with a trail's, a
    # city's or a restaurant's name
    interest_names_masked: bool = False
    # the segment model reads them so too (its vectors, words and cues; the keywords still read
    # the text as written)
    sensitive_names_masked: bool = False
    _keyword_matcher: TermMatcher | None = field(default=None, repr=False, compare=False)
    _cue_matcher: TermMatcher | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_keyword_matcher"] = None
        state["_cue_matcher"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("cue_not_before", {})  # models pickled before the fields existed
        state.setdefault("cue_short_weight", 0.0)
        state.setdefault("identity_rule", None)
        state.setdefault("tfidf_weight", 1.0)
        state.setdefault("interest_names_masked", False)
        state.setdefault("sensitive_names_masked", False)
        self.__dict__.update(state)

    @classmethod
    def empty(cls, categories: Sequence[str], **fields: Any) -> FilterBundle:
        """A bundle that has learned nothing yet (no model blocks, nothing has interests);
        ``fields`` override any attribute."""
        base: dict[str, Any] = {
            "categories": tuple(categories), "interest_ids": (), "interest_names": {},
            "segment_model": None, "segment_classes": (), "any_threshold": 1.01,
            "sensitive_thresholds": {}, "sensitive_rules": {}, "prototypes": {}, "segment_tfidf": None,
            "segment_char_tfidf": None, "cue_weight": 0.0, "interest_models": {},
            "interest_thresholds": {}, "interest_tfidf": None, "lexicon": {}, "cues": {},
            "embedding_model_id": "none",
        }  # fmt: skip
        base.update(fields)
        return cls(**base)

    # ---- lexical
    def lexicon_hits(self, text: str) -> frozenset[str]:
        if self._keyword_matcher is None:
            self._keyword_matcher = TermMatcher(self.lexicon)
        hits = self._keyword_matcher.hits(text)
        if self.identity_rule is not None:
            hits |= self.identity_rule.hits(text) & frozenset(self.categories)
        return hits

    def cue_counts(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """(n, C) number of cue-term matches per category (capped at 3)."""
        if self._cue_matcher is None:
            self._cue_matcher = TermMatcher(
                {c: self.cues.get(c, ()) for c in self.categories}, self.cue_not_before
            )
        m = self._cue_matcher
        out = np.array([m.counts(t) for t in texts], dtype=np.float64).reshape(
            len(texts), len(self.categories)
        )
        return np.minimum(out, 3.0)

    # ---- features
    def segment_features(
        self, texts: Sequence[str], embeddings: npt.NDArray[np.float32] | None
    ) -> Features:
        parts: list[Any] = []
        if embeddings is not None:
            parts.append(embeddings.astype(np.float64))
        if self.segment_tfidf is not None:
            words = self.segment_tfidf.transform(list(texts))
            parts.append(words if self.tfidf_weight == 1.0 else self.tfidf_weight * words)
        if self.segment_char_tfidf is not None:
            parts.append(self.segment_char_tfidf.transform(list(texts)))
        if self.cue_weight > 0 or self.cue_short_weight > 0:
            counts = self.cue_counts(texts)
            if self.cue_weight > 0:
                parts.append(self.cue_weight * counts)
            if self.cue_short_weight > 0:
                parts.append(self.cue_short_weight * short_cues(counts, texts))
        return stack_features(parts)

    def segment_probabilities(self, x: Features, n: int) -> tuple[FloatArray, FloatArray]:
        """(P(any) (n,), category scores (n, C)) from the segment model."""
        cats = np.zeros((n, len(self.categories)), dtype=np.float64)
        if self.segment_model is None or n == 0:
            return np.zeros(n), cats
        proba = np.asarray(self.segment_model.predict_proba(x), dtype=np.float64)
        classes = [str(c) for c in getattr(self.segment_model, "classes_", self.segment_classes)]
        col = {c: i for i, c in enumerate(classes)}
        p_any = 1.0 - proba[:, col[CLEAN]] if CLEAN in col else proba.max(axis=1)
        for j, c in enumerate(self.categories):
            if c in col:
                cats[:, j] = proba[:, col[c]]
        return p_any, cats

    def _embed(
        self, texts: Sequence[str], embedder: TextEmbedder | None
    ) -> npt.NDArray[np.float32] | None:
        if not self.uses_embeddings or not texts:
            return None
        if embedder is None:
            raise RuntimeError("this filter model needs an embedder and none is loaded")
        uniq = list(dict.fromkeys(texts))
        vecs = embed_features(uniq, embedder)
        if len(uniq) == len(texts):
            return vecs
        index = {t: i for i, t in enumerate(uniq)}
        return vecs[[index[t] for t in texts]]

    def segments_of(self, turns: Sequence[str]) -> list[Segment]:
        if self.unit == "conversation":
            return [Segment(0, "\n".join(turns))] if turns else []
        return segment_turns(turns, self.segment_chars)

    def sensitive_texts(
        self,
        conversations: Sequence[Sequence[str]],
        texts: Sequence[str],
        owners: npt.NDArray[np.int_],
    ) -> list[str] | None:
        """Segment ``texts`` (of ``conversations[owners[k]]``) as the segment model reads them:
        with each conversation's places masked when the model masks them, else None (as
        written)."""
        if not self.sensitive_names_masked:
            return None
        return masked_segment_texts(conversations, texts, owners)

    def score_segments(
        self, conversations: Sequence[Sequence[str]], embedder: TextEmbedder | None
    ) -> SegmentScores:
        """Segment-level scores for conversations given as rendered, redacted turns."""
        segs: list[Segment] = []
        owner: list[int] = []
        for i, turns in enumerate(conversations):
            for s in self.segments_of(turns):
                segs.append(s)
                owner.append(i)
        texts = [s.text for s in segs]
        owners = np.asarray(owner, dtype=np.int_)
        read = self.sensitive_texts(conversations, texts, owners)
        model_texts = texts if read is None else read
        emb = self._embed(model_texts, embedder)
        n = len(texts)
        p_any: FloatArray = np.zeros(n)
        cats: FloatArray = np.zeros((n, len(self.categories)))
        if n:
            x = self.segment_features(model_texts, emb)
            p_any, cats = self.segment_probabilities(x, n)
            if emb is not None:
                for j, c in enumerate(self.categories):
                    protos = self.prototypes.get(c)
                    if protos is not None and c not in self.segment_classes:
                        cats[:, j] = (emb @ protos.T).max(axis=1)
        hits = [self.lexicon_hits(t) for t in texts]
        return SegmentScores(segs, owners, p_any, cats, hits, emb)

    def aggregate(
        self,
        seg: SegmentScores,
        n: int,
        *,
        any_threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray, list[int | None], list[tuple[float, ...]]]:
        """Max aggregation per conversation: (category scores (n, C), P(any) (n,), block margin
        (n,), trigger turn, per-turn P(any)). Thresholds default to the bundle's."""
        t_any = self.any_threshold if any_threshold is None else any_threshold
        thr = thresholds if thresholds is not None else self.sensitive_thresholds
        thr_c = np.array([thr.get(c, 1.01) for c in self.categories])
        s = len(seg.segments)
        margins = np.full(s, -np.inf)
        if s:
            margins = np.maximum(seg.any - t_any, (seg.categories - thr_c).max(axis=1))
            lex = np.array([1.0 if h else -np.inf for h in seg.lexicon_hits])
            margins = np.maximum(margins, lex)
        cat_out = np.zeros((n, len(self.categories)))
        any_out = np.zeros(n)
        margin_out = np.full(n, -np.inf)
        trigger: list[int | None] = [None] * n
        turn_max: list[dict[int, float]] = [{} for _ in range(n)]
        for k in range(s):
            i = int(seg.owner[k])
            cat_out[i] = np.maximum(cat_out[i], seg.categories[k])
            any_out[i] = max(any_out[i], float(seg.any[k]))
            t = seg.segments[k].turn
            turn_max[i][t] = max(turn_max[i].get(t, 0.0), float(seg.any[k]))
            if margins[k] > margin_out[i]:
                margin_out[i] = margins[k]
                trigger[i] = t
        turn_scores = [
            tuple(round(d.get(t, 0.0), 4) for t in range(max(d) + 1)) if d else () for d in turn_max
        ]
        trigger = [trigger[i] if margin_out[i] >= 0 else None for i in range(n)]
        return cat_out, any_out, margin_out, trigger, turn_scores

    def interest_places(
        self, conversations: Sequence[Sequence[str]]
    ) -> list[frozenset[str]] | None:
        """Per conversation, the names it uses as places, which the interest model reads as
        ``[NAME]``; None when the model reads names as written."""
        if not self.interest_names_masked:
            return None
        return [place_names(c) for c in conversations]

    def interest_segment_embeddings(
        self,
        texts: Sequence[str],
        owners: npt.NDArray[np.int_],
        places: Sequence[frozenset[str]] | None,
        embeddings: npt.NDArray[np.float32] | None,
        embed: Callable[[list[str]], npt.NDArray[np.float32]],
    ) -> npt.NDArray[np.float32] | None:
        """Segment embeddings as the interest model reads them: with places masked, each segment
        that names one (``places`` of its owner) is embedded again (``embed``) as masked; the
        others keep the embedding the sensitive side scored. Training and serving both call it."""
        if embeddings is None or places is None:
            return embeddings
        masked = mask_segments(texts, owners, places)
        changed = [k for k, (m, t) in enumerate(zip(masked, texts, strict=True)) if m != t]
        if not changed:
            return embeddings
        out = embeddings.copy()
        out[changed] = embed([masked[k] for k in changed])
        return out

    def interest_texts(
        self, conversations: Sequence[Sequence[str]], places: Sequence[frozenset[str]] | None
    ) -> list[str]:
        """The conversations' texts as the interest TF-IDF reads them (fitted and applied)."""
        texts = ["\n".join(c) for c in conversations]
        if places is None:
            return texts
        return [mask_places(t, p) for t, p in zip(texts, places, strict=True)]

    def interest_features(
        self,
        conversations: Sequence[Sequence[str]],
        conv_emb: npt.NDArray[np.float32] | None,
        places: Sequence[frozenset[str]] | None,
    ) -> Features:
        parts: list[Any] = []
        if conv_emb is not None:
            parts.append(conv_emb.astype(np.float64))
        if self.interest_tfidf is not None:
            parts.append(self.interest_tfidf.transform(self.interest_texts(conversations, places)))
        return stack_features(parts)

    def score(
        self,
        conversations: Sequence[Sequence[str]],
        embedder: TextEmbedder | None,
        *,
        interests_of_blocked: bool = True,
    ) -> ScoreBatch:
        """Scores for conversations given as rendered, redacted turns (``segments.turn_texts``).
        ``interests_of_blocked=False``: interests only for the conversations the sensitive side
        does not block (the others score 0): what a decision needs, without the work of reading
        a blocked conversation's places."""
        n = len(conversations)
        seg = self.score_segments(conversations, embedder)
        cats, p_any, margin, trigger, turn_scores = self.aggregate(seg, n)
        conv_lex: list[set[str]] = [set() for _ in range(n)]
        for k, h in enumerate(seg.lexicon_hits):
            conv_lex[int(seg.owner[k])] |= h
        ints: FloatArray = np.zeros((n, len(self.interest_ids)))
        rows = np.arange(n) if interests_of_blocked else np.flatnonzero(margin < 0)
        if rows.size and self.interest_models:

            def embed(texts: list[str]) -> npt.NDArray[np.float32]:
                vecs = self._embed(texts, embedder)
                if vecs is None:  # pragma: no cover - embeddings exist only with an embedder
                    raise RuntimeError("no embedder for the interest model's masked segments")
                return vecs

            # the conversations scored, renumbered 0..len(rows)-1, and their segments
            position = np.full(n, -1, dtype=np.int_)
            position[rows] = np.arange(rows.size)
            keep = np.flatnonzero(position[seg.owner] >= 0)
            owner = position[seg.owner[keep]]
            convs = [conversations[int(i)] for i in rows]
            places = self.interest_places(convs)
            emb = seg.embeddings[keep] if seg.embeddings is not None else None
            # a segment model that reads places masked has embedded the masked texts already
            emb_i = (
                emb
                if self.sensitive_names_masked
                else self.interest_segment_embeddings(
                    [seg.segments[int(k)].text for k in keep], owner, places, emb, embed
                )
            )
            conv_emb = mean_pool(emb_i, owner, rows.size) if emb_i is not None else None
            xi = self.interest_features(convs, conv_emb, places)
            ints[rows] = predict_scores(self.interest_models, self.interest_ids, xi, rows.size)
        return ScoreBatch(
            cats, p_any, [frozenset(h) for h in conv_lex], ints, margin, trigger, turn_scores
        )

    def verdicts(self, batch: ScoreBatch) -> list[ContentVerdict]:
        out: list[ContentVerdict] = []
        thr_s = np.array([self.sensitive_thresholds.get(c, 1.01) for c in self.categories])
        thr_i = np.array([self.interest_thresholds.get(i, 0.5) for i in self.interest_ids])
        for r in range(batch.sensitive.shape[0]):
            s = batch.sensitive[r]
            blocked = bool(batch.margin[r] >= 0)
            margin = {
                c: float(s[j] - thr_s[j]) for j, c in enumerate(self.categories) if s[j] >= thr_s[j]
            }
            for c in batch.lexicon_hits[r]:
                if c in self.categories:
                    margin[c] = max(margin.get(c, 0.0), 1.0)
            cats = tuple(sorted(margin, key=lambda c: (-margin[c], c)))
            if blocked and not cats:
                # the any-sensitive rule fired: name the most likely category (audit only)
                cats = (self.categories[int(np.argmax(s))],) if len(s) else ("unknown",)
            scores = {c: round(float(s[j]), 4) for j, c in enumerate(self.categories)}
            iv = batch.interests[r]
            ints = tuple(
                sorted(
                    (
                        (iid, round(float(iv[j]), 4))
                        for j, iid in enumerate(self.interest_ids)
                        if iv[j] >= thr_i[j]
                    ),
                    key=lambda t: (-t[1], t[0]),
                )
            )
            out.append(
                ContentVerdict(
                    cats if blocked else (),
                    scores,
                    ints,
                    round(float(batch.any[r]), 4),
                    batch.trigger_turn[r] if blocked else None,
                    batch.turn_scores[r],
                )
            )
        return out

    def judge(
        self, conversations: Sequence[Sequence[str]], embedder: TextEmbedder | None
    ) -> list[ContentVerdict]:
        """Verdicts for decisions: a blocked conversation gets no interests (a decision drops
        them), so its interests are not computed."""
        return self.verdicts(self.score(conversations, embedder, interests_of_blocked=False))


class HashingEmbedder:
    """A cheap deterministic stand-in for a sentence encoder (hashed bag of words, L2-normalised).

    For unit tests and smoke runs only: it carries no semantics beyond word identity.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)
