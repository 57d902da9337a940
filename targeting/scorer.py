"""Runtime scoring of conversation texts: features, the two classifiers, thresholds, lexicon.

This is the part of the targeting filter that is *learned* (trained by ``experiments.training``,
shipped inside the MLflow pyfunc model by ``targeting.model``). It is pure: no I/O, no services.

* Features: MiniLM sentence embeddings (any object with ``embed(texts) -> (n, d) float array``;
  unit tests inject a cheap deterministic fake) plus, optionally, TF-IDF word/bigram features.
* Sensitive classifier: one logistic regression per policy category (multi-label). A category
  with no training positives has no regression; it is scored by cosine similarity to
  *prototypes* (the policy's description and examples, embedded) instead.
* A keyword lexicon (``labeling/data/sensitive_lexicon.yaml``) is a safety net: a hit blocks.
* Interest classifier: one logistic regression per interest id; per-label thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml
from scipy import sparse

DEFAULT_LEXICON_PATH = (
    Path(__file__).resolve().parents[1] / "labeling" / "data" / "sensitive_lexicon.yaml"
)

FloatArray = npt.NDArray[np.float64]
Features = Any  # np.ndarray or scipy.sparse.csr_matrix


class TextEmbedder(Protocol):
    """What the scorer needs from an embedder (``labeling.embeddings.MiniLMEmbedder`` fits)."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class Classifier(Protocol):
    """A fitted binary classifier (sklearn's LogisticRegression fits)."""

    def predict_proba(self, x: Features) -> npt.NDArray[np.float64]: ...


# ------------------------------------------------------------------------------------ lexicon
def load_lexicon(
    path: Path | None = None, categories: Sequence[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Read ``{category: {keywords: [...]}}``; unknown categories are dropped when ``categories``
    is given (the policy decides which categories exist), missing ones get no keywords."""
    p = path or DEFAULT_LEXICON_PATH
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read sensitive lexicon {p}: {exc}") from exc
    cats = doc.get("categories", doc) if isinstance(doc, dict) else None
    if not isinstance(cats, dict):
        raise ValueError(f"{p}: expected a mapping 'categories: {{name: {{keywords: [...]}}}}'")
    out: dict[str, tuple[str, ...]] = {}
    for cat, spec in cats.items():
        words = spec.get("keywords", []) if isinstance(spec, dict) else spec
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValueError(f"{p}: category {cat!r}: keywords must be a list of non-empty strings")
        out[str(cat)] = tuple(w.strip().lower() for w in words)
    if categories is not None:
        out = {c: out.get(c, ()) for c in categories}
    return out


def compile_lexicon(lexicon: Mapping[str, Sequence[str]]) -> dict[str, re.Pattern[str] | None]:
    """One case-insensitive, word-bounded alternation per category (None: no keywords)."""
    out: dict[str, re.Pattern[str] | None] = {}
    for cat, words in lexicon.items():
        if not words:
            out[cat] = None
            continue
        alts = sorted({re.escape(w).replace(r"\ ", r"\s+") for w in words}, key=len, reverse=True)
        out[cat] = re.compile(r"(?<![\w])(?:" + "|".join(alts) + r")(?![\w])", re.IGNORECASE)
    return out


# ------------------------------------------------------------------------------------ features
def embed_features(texts: Sequence[str], embedder: TextEmbedder) -> npt.NDArray[np.float32]:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    emb = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"embedder returned shape {emb.shape} for {len(texts)} texts")
    return emb


def build_features(
    texts: Sequence[str],
    embedder: TextEmbedder | None,
    tfidf: Any | None = None,
    *,
    embeddings: npt.NDArray[np.float32] | None = None,
) -> Features:
    """The feature matrix: embeddings (dense) hstacked with TF-IDF (sparse) when ``tfidf`` is given.

    ``embeddings`` may be passed precomputed (rows follow ``texts``); otherwise ``embedder`` is used.
    """
    parts: list[Any] = []
    if embeddings is None and embedder is not None:
        embeddings = embed_features(texts, embedder)
    if embeddings is not None:
        parts.append(
            sparse.csr_matrix(embeddings.astype(np.float64)) if tfidf is not None else embeddings
        )
    if tfidf is not None:
        parts.append(tfidf.transform(list(texts)))
    if not parts:
        raise ValueError("no features: give an embedder, embeddings or a fitted tfidf")
    if len(parts) == 1:
        return parts[0]
    return sparse.hstack(parts, format="csr")


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


# ------------------------------------------------------------------------------------ bundle
@dataclass(frozen=True)
class ContentVerdict:
    """What the content models say about one (redacted) text."""

    sensitive: tuple[
        str, ...
    ]  # categories above threshold or hit by the lexicon (most confident first)
    sensitive_scores: dict[str, float]
    interests: tuple[
        tuple[str, float], ...
    ]  # (iab id, score) above the per-label threshold, best first

    @property
    def blocked(self) -> bool:
        return bool(self.sensitive)

    @property
    def sensitive_category(self) -> str | None:
        return self.sensitive[0] if self.sensitive else None


@dataclass(frozen=True)
class ScoreBatch:
    sensitive: FloatArray  # (n, C)
    lexicon_hits: list[frozenset[str]]
    interests: FloatArray  # (n, L)


@dataclass
class FilterBundle:
    """Everything learned: picklable, shipped as one artifact of the pyfunc model."""

    categories: tuple[str, ...]
    interest_ids: tuple[str, ...]
    interest_names: dict[str, str]
    sensitive_models: dict[str, Any]
    sensitive_thresholds: dict[str, float]
    sensitive_rules: dict[str, str]  # category -> how its threshold was set
    prototypes: dict[str, npt.NDArray[np.float32]]  # category -> (k, d) unit vectors
    interest_models: dict[str, Any]
    interest_thresholds: dict[str, float]
    tfidf: Any | None
    lexicon: dict[str, tuple[str, ...]]
    embedding_model_id: str
    embed_max_length: int = 256
    uses_embeddings: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    _compiled: dict[str, re.Pattern[str] | None] | None = field(
        default=None, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    def lexicon_hits(self, text: str) -> frozenset[str]:
        if self._compiled is None:
            self._compiled = compile_lexicon(self.lexicon)
        return frozenset(
            c for c, rx in self._compiled.items() if rx is not None and rx.search(text)
        )

    def score(
        self,
        texts: Sequence[str],
        embedder: TextEmbedder | None,
        *,
        embeddings: npt.NDArray[np.float32] | None = None,
    ) -> ScoreBatch:
        n = len(texts)
        if not self.uses_embeddings:
            embeddings = None
        elif embeddings is None and n:
            if embedder is None:
                raise RuntimeError("this filter model needs an embedder and none is loaded")
            embeddings = embed_features(texts, embedder)
        x = build_features(texts, None, self.tfidf, embeddings=embeddings) if n else None
        sens = predict_scores(self.sensitive_models, self.categories, x, n)
        for j, cat in enumerate(self.categories):
            protos = self.prototypes.get(cat)
            if (
                self.sensitive_models.get(cat) is None
                and protos is not None
                and embeddings is not None
                and n
            ):
                sens[:, j] = (embeddings @ protos.T).max(axis=1)
        ints = predict_scores(self.interest_models, self.interest_ids, x, n)
        return ScoreBatch(sens, [self.lexicon_hits(t) for t in texts], ints)

    def verdicts(self, batch: ScoreBatch) -> list[ContentVerdict]:
        out: list[ContentVerdict] = []
        thr_s = np.array([self.sensitive_thresholds.get(c, 0.5) for c in self.categories])
        thr_i = np.array([self.interest_thresholds.get(i, 0.5) for i in self.interest_ids])
        for r in range(batch.sensitive.shape[0]):
            s = batch.sensitive[r]
            margin = {
                c: float(s[j] - thr_s[j]) for j, c in enumerate(self.categories) if s[j] >= thr_s[j]
            }
            for c in batch.lexicon_hits[r]:
                if c in self.categories:
                    margin[c] = max(margin.get(c, 0.0), 1.0)
            cats = tuple(sorted(margin, key=lambda c: (-margin[c], c)))
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
            scores = {c: round(float(s[j]), 4) for j, c in enumerate(self.categories)}
            out.append(ContentVerdict(cats, scores, ints))
        return out

    def judge(self, texts: Sequence[str], embedder: TextEmbedder | None) -> list[ContentVerdict]:
        return self.verdicts(self.score(texts, embedder))


class HashingEmbedder:
    """A cheap deterministic stand-in for MiniLM (hashed bag of words, L2-normalised).

    For unit tests and smoke runs only: it carries no semantics beyond word identity.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import hashlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)
