"""Train the targeting filter's two classifiers and calibrate their thresholds.

* Features: MiniLM embeddings (``embedder``, injectable) + optional TF-IDF (``use_tfidf``).
* Sensitive categories (multi-label): one logistic regression per policy category. Thresholds are
  calibrated on *out-of-fold* scores of the training data (``folds`` folds keyed by a hash of the
  conversation id: every training item is validation data for a model that did not see it; the
  frozen eval split is never touched) to reach ``recall_target`` per category; the false-block
  rate this costs on the validation items is reported.

  Positives that score like a typical negative out of fold (at or below the
  ``label_noise_quantile`` of the negatives' scores) are left out of that calibration as suspected
  label errors (counted as ``suspect_positives``; at most half of a category's positives).

  Categories with fewer than ``min_positives`` gold positives fall back to
  ``min(fallback_threshold, lowest positive OOF score)`` (rule ``fallback_low``), raised when needed
  so that at most ``fallback_false_block_budget`` of the training negatives are blocked out of fold
  (one spurious human label among a handful of positives would otherwise block most traffic; the
  keyword lexicon still blocks its cues); categories with
  no positive at all have no regression and are scored by similarity to prototypes (the policy's
  description and examples), thresholded so that at most ``prototype_false_block_budget`` of the
  training negatives would be blocked (rule ``prototype``). The keyword lexicon blocks in any case.
* Interests (multi-label, only on examples whose interests are known): one logistic regression per
  interest id with at least ``interest_min_positives`` positives; per-label threshold maximising
  the out-of-fold F1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from experiments.dataset import Example, Snapshot, unit_hash
from labeling.taxonomy import Taxonomy
from targeting.scorer import (
    FilterBundle,
    TextEmbedder,
    build_features,
    embed_features,
    load_lexicon,
)

__all__ = [
    "CachedEmbedder",
    "TrainConfig",
    "TrainResult",
    "calibrate_recall_threshold",
    "features",
    "recalibrate",
    "train_filter",
    "tune_f1_threshold",
]


@dataclass(frozen=True)
class TrainConfig:
    recall_target: float = 0.99
    use_embeddings: bool = True
    use_tfidf: bool = True
    use_lexicon: bool = True
    tfidf_max_features: int = 50_000
    tfidf_ngram_max: int = 2
    c_sensitive: float = 4.0
    c_interest: float = 4.0
    folds: int = 3
    min_positives: int = 20
    fallback_threshold: float = 0.1
    fallback_false_block_budget: float = 0.02  # fallback_low never blocks more negatives (OOF)
    prototype_false_block_budget: float = 0.005
    # positives scoring at/below this quantile of the negatives' OOF scores are treated as label
    # errors for calibration (None: calibrate on every positive); see _plausible_positives
    label_noise_quantile: float | None = 0.5
    label_noise_max_share: float = 0.1
    interest_min_positives: int = 5
    embed_max_length: int = 128  # MiniLM tokens per text (benchmark: 128 ~ half the cost of 256)
    max_iter: int = 2000
    fold_salt: str = "labelloop-folds-v1"

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    bundle: FilterBundle
    calibration: dict[
        str, dict[str, Any]
    ]  # category -> threshold, rule, n_pos, val recall/false-block
    interest_calibration: dict[str, dict[str, Any]]
    val_false_block_rate: float
    val_leak_rate: float
    seconds: dict[str, float] = field(default_factory=dict)
    # out-of-fold validation scores (rows follow the training examples; NaN where not computed)
    oof_sensitive: npt.NDArray[np.float64] | None = None
    oof_lexicon: npt.NDArray[np.bool_] | None = None
    val_labels: npt.NDArray[np.bool_] | None = None  # (n, C) gold category membership
    val_is_gold: npt.NDArray[np.bool_] | None = None
    # conversation id -> interest id -> out-of-fold P(interest), for training items whose
    # interests are known and interests with a model (the label-error check reads it)
    oof_interests: dict[str, dict[str, float]] = field(default_factory=dict)


def recalibrate(
    result: TrainResult, recall_target: float, *, min_positives: int = 20
) -> TrainResult:
    """The same models with sensitive thresholds re-calibrated (from the stored out-of-fold scores)
    for another recall target; categories on a fallback rule keep their threshold."""
    from dataclasses import replace

    if result.oof_sensitive is None or result.val_labels is None or result.val_is_gold is None:
        raise ValueError("this result has no out-of-fold scores")
    b = result.bundle
    thr = dict(b.sensitive_thresholds)
    for j, c in enumerate(b.categories):
        if b.sensitive_rules.get(c) != "recall_target":
            continue
        pos = result.oof_sensitive[result.val_labels[:, j] & result.val_is_gold, j]
        if pos.size >= min_positives:
            neg = result.oof_sensitive[~result.val_labels.any(axis=1) & result.val_is_gold, j]
            tc = b.meta.get("train_config") or {}
            pos, _ = _plausible_positives(
                pos, neg, tc.get("label_noise_quantile"), tc.get("label_noise_max_share", 0.1)
            )
            thr[c] = calibrate_recall_threshold(pos, recall_target)
    return replace(result, bundle=replace(b, sensitive_thresholds=thr))


class CachedEmbedder:
    """Wraps an embedder with an in-memory text -> vector cache (training embeds each text once)."""

    def __init__(self, inner: TextEmbedder) -> None:
        self.inner = inner
        self.cache: dict[str, npt.NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vecs = np.asarray(self.inner.embed(missing), dtype=np.float32)
            for t, v in zip(missing, vecs, strict=True):
                self.cache[t] = v
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def features(texts: Sequence[str], embedder: TextEmbedder | None, tfidf: Any | None = None) -> Any:
    """The feature matrix for ``texts`` (embeddings and/or fitted TF-IDF); see ``build_features``."""
    return build_features(texts, embedder, tfidf)


# ------------------------------------------------------------------------------------ thresholds
def calibrate_recall_threshold(
    pos_scores: Sequence[float] | npt.NDArray[Any], target: float
) -> float:
    """The highest threshold t with recall(score >= t) >= target on the given positive scores."""
    s = np.sort(np.asarray(pos_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("no positive scores to calibrate on")
    if not 0.0 < target <= 1.0:
        raise ValueError("recall target must be in (0, 1]")
    k = max(1, math.ceil(target * s.size - 1e-9))
    return float(s[k - 1])


def tune_f1_threshold(
    scores: Sequence[float] | npt.NDArray[Any],
    labels: Sequence[int] | npt.NDArray[Any],
    grid: Sequence[float] | None = None,
) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score >= t`` over ``grid``."""
    sc = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    g = np.asarray(grid if grid is not None else np.arange(0.05, 0.951, 0.025))
    best = (0.5, -1.0)
    for t in g:
        pred = sc >= t
        tp = float(np.sum(pred & y))
        fp = float(np.sum(pred & ~y))
        fn = float(np.sum(~pred & y))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        if f1 > best[1] + 1e-12:
            best = (float(t), f1)
    return best


def _plausible_positives(
    pos: npt.NDArray[np.float64],
    neg: npt.NDArray[np.float64],
    quantile: float | None,
    max_share: float = 0.1,
) -> tuple[npt.NDArray[np.float64], int]:
    """(positives to calibrate on, how many were set aside as suspected label errors).

    A positive whose out-of-fold score is at or below the ``quantile`` of the non-sensitive items'
    scores looks like a typical negative to a model that did not see it: with human labels that is
    most often a wrong label (a spurious category from one of two annotators, kept by the union
    rule). Calibrating recall on it would lower the threshold to the bulk of the negatives and block
    nearly everything. Such positives are left out of the calibration (they still count in the
    reported validation recall, and the label-error check sends them back to review). Needs >= 20
    negatives; at most ``max_share`` of the positives (the lowest-scoring) are set aside -- a
    label-noise budget: the rest of the low scorers are real hard cases and stay;
    ``quantile=None`` disables it.
    """
    if quantile is None or neg.size < 20 or pos.size == 0:
        return pos, 0
    floor = float(np.quantile(neg, quantile))
    order = np.sort(pos)
    n_out = min(int(np.sum(order <= floor)), math.floor(max_share * pos.size))
    return order[n_out:], n_out


# ------------------------------------------------------------------------------------ training
def _lr(c: float, max_iter: int, balanced: bool) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=c, solver="liblinear", max_iter=max_iter, class_weight="balanced" if balanced else None
    )


def _fit(
    x: Any,
    y: npt.NDArray[np.int_],
    w: npt.NDArray[np.float64],
    c: float,
    cfg: TrainConfig,
    balanced: bool,
) -> Any:
    m = _lr(c, cfg.max_iter, balanced)
    m.fit(x, y, sample_weight=w)
    return m


def _oof_scores(
    x: Any,
    y: npt.NDArray[np.int_],
    w: npt.NDArray[np.float64],
    folds: npt.NDArray[np.int_],
    c: float,
    cfg: TrainConfig,
    balanced: bool,
) -> npt.NDArray[np.float64]:
    out = np.zeros(y.shape[0], dtype=np.float64)
    for f in range(cfg.folds):
        tr, va = folds != f, folds == f
        if not va.any():
            continue
        if len(set(y[tr].tolist())) < 2:
            out[va] = float(y[tr].mean()) if tr.any() else 0.0
            continue
        m = _fit(x[tr], y[tr], w[tr], c, cfg, balanced)
        out[va] = m.predict_proba(x[va])[:, 1]
    return out


def _fold_ids(examples: Sequence[Example], cfg: TrainConfig) -> npt.NDArray[np.int_]:
    return np.array(
        [
            min(cfg.folds - 1, int(unit_hash(e.conversation_id, cfg.fold_salt) * cfg.folds))
            for e in examples
        ],
        dtype=np.int_,
    )


def _rows(x: Any, idx: npt.NDArray[np.int_]) -> Any:
    return x[idx]


def train_filter(
    snapshot: Snapshot,
    taxonomy: Taxonomy,
    embedder: TextEmbedder | None,
    *,
    config: TrainConfig = TrainConfig(),
    prototype_texts: Mapping[str, Sequence[str]] | None = None,
    lexicon: Mapping[str, Sequence[str]] | None = None,
    embedding_model_id: str = "none",
) -> TrainResult:
    """Train both classifiers on ``snapshot.train`` and calibrate thresholds (see module doc)."""
    if not snapshot.train:
        raise ValueError("the snapshot has no training examples")
    if config.folds < 2:
        raise ValueError("folds must be >= 2 (thresholds are calibrated out of fold)")
    timings: dict[str, float] = {}
    cats = snapshot.categories
    train = list(snapshot.train)
    texts = [e.text for e in train]
    emb_obj = embedder if config.use_embeddings else None

    t0 = time.perf_counter()
    embeddings = embed_features(texts, emb_obj) if emb_obj is not None else None
    timings["embed_s"] = time.perf_counter() - t0
    tfidf = None
    if config.use_tfidf:
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(
            max_features=config.tfidf_max_features,
            ngram_range=(1, config.tfidf_ngram_max),
            sublinear_tf=True,
            min_df=2,
            strip_accents="unicode",
        )
        tfidf.fit(texts)
    x = build_features(texts, None, tfidf, embeddings=embeddings)
    weights = np.array([e.weight for e in train], dtype=np.float64)
    folds = _fold_ids(train, config)
    is_gold = np.array([e.origin != "silver" for e in train], dtype=bool)

    # ---------------- sensitive
    t0 = time.perf_counter()
    lex = {
        c: tuple(v)
        for c, v in (lexicon if lexicon is not None else load_lexicon(categories=cats)).items()
        if c in cats
    }
    if not config.use_lexicon:
        lex = {}
    probe = FilterBundle(
        categories=cats, interest_ids=(), interest_names={}, sensitive_models={}, sensitive_thresholds={},
        sensitive_rules={}, prototypes={}, interest_models={}, interest_thresholds={}, tfidf=None,
        lexicon={c: lex.get(c, ()) for c in cats}, embedding_model_id=embedding_model_id,
    )  # fmt: skip
    lex_hits = [probe.lexicon_hits(t) for t in texts]
    y_any = np.array([bool(e.sensitive) for e in train])
    sens_models: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    rules: dict[str, str] = {}
    prototypes: dict[str, npt.NDArray[np.float32]] = {}
    oof_blocks = np.zeros((len(train), len(cats)), dtype=bool)
    oof_all = np.full((len(train), len(cats)), np.nan)
    labels_all = np.array([[c in e.sensitive for c in cats] for e in train], dtype=bool).reshape(
        len(train), len(cats)
    )
    lex_all = np.array([[c in h for c in cats] for h in lex_hits], dtype=bool).reshape(
        len(train), len(cats)
    )
    calib: dict[str, dict[str, Any]] = {}
    for j, cat in enumerate(cats):
        y = np.array([int(cat in e.sensitive) for e in train], dtype=np.int_)
        n_pos_gold = int(y[is_gold].sum())
        info: dict[str, Any] = {"n_pos": int(y.sum()), "n_pos_gold": n_pos_gold}
        if y.sum() == 0:
            protos_src = list((prototype_texts or {}).get(cat, ()))
            if emb_obj is not None and embeddings is not None and protos_src:
                protos = embed_features(protos_src, emb_obj)
                prototypes[cat] = protos
                sims = (embeddings @ protos.T).max(axis=1)
                neg = sims[~y_any] if (~y_any).any() else sims
                thr = (
                    float(np.quantile(neg, 1.0 - config.prototype_false_block_budget))
                    if neg.size
                    else 0.5
                )
                thresholds[cat], rules[cat] = thr, "prototype"
                oof_blocks[:, j] = sims >= thr
            else:
                thresholds[cat], rules[cat] = 1.01, "lexicon_only"
            sens_models[cat] = None
        else:
            oof = _oof_scores(x, y, weights, folds, config.c_sensitive, config, balanced=True)
            oof_all[:, j] = oof
            pos = oof[(y == 1) & is_gold]
            if pos.size == 0:
                pos = oof[y == 1]
            pos, info["suspect_positives"] = _plausible_positives(
                pos,
                oof[~y_any & is_gold],
                config.label_noise_quantile,
                config.label_noise_max_share,
            )
            if n_pos_gold >= config.min_positives:
                thr, rule = calibrate_recall_threshold(pos, config.recall_target), "recall_target"
            else:
                thr, rule = min(config.fallback_threshold, float(pos.min())), "fallback_low"
                neg_scores = oof[~y_any & is_gold]
                if neg_scores.size >= 20:
                    # a false-block budget: one spurious positive must not set the threshold
                    # inside the bulk of the negatives (few positives, no statistics to tell)
                    cap = float(np.quantile(neg_scores, 1.0 - config.fallback_false_block_budget))
                    if cap > thr:
                        thr, info["capped_by_false_block_budget"] = cap, True
            thresholds[cat], rules[cat] = thr, rule
            oof_blocks[:, j] = oof >= thr
            sens_models[cat] = (
                _fit(x, y, weights, config.c_sensitive, config, balanced=True)
                if len(set(y.tolist())) > 1
                else None
            )
        hits = np.array([cat in h for h in lex_hits], dtype=bool)
        oof_blocks[:, j] |= hits
        pos_mask = (y == 1) & is_gold
        neg_mask = ~y_any & is_gold
        info.update(
            threshold=thresholds[cat],
            rule=rules[cat],
            val_recall=float(oof_blocks[pos_mask, j].mean()) if pos_mask.any() else float("nan"),
            val_false_block=float(oof_blocks[neg_mask, j].mean())
            if neg_mask.any()
            else float("nan"),
            val_lexicon_hits_on_negatives=int(hits[neg_mask].sum()),
        )
        calib[cat] = info
    blocked: npt.NDArray[np.bool_] = np.asarray(oof_blocks.any(axis=1), dtype=bool)
    neg_all = ~y_any & is_gold
    pos_all = y_any & is_gold
    val_fb = float(blocked[neg_all].mean()) if neg_all.any() else float("nan")
    val_leak = float((~blocked[pos_all]).mean()) if pos_all.any() else float("nan")
    timings["sensitive_s"] = time.perf_counter() - t0

    # ---------------- interests
    t0 = time.perf_counter()
    known = np.array([e.interests is not None for e in train], dtype=bool)
    idx = np.flatnonzero(known)
    label_ids = tuple(i for i in snapshot.interest_ids if i in taxonomy)
    int_models: dict[str, Any] = {}
    int_thr: dict[str, float] = {}
    int_cal: dict[str, dict[str, Any]] = {}
    oof_int: dict[str, dict[str, float]] = {}
    if idx.size:
        xk = _rows(x, idx)
        wk = weights[idx]
        fk = folds[idx]
        for iid in label_ids:
            y = np.array([int(iid in (train[i].interests or ())) for i in idx], dtype=np.int_)
            npos = int(y.sum())
            if npos < config.interest_min_positives or npos == y.size:
                int_cal[iid] = {"n_pos": npos, "threshold": None, "rule": "too_few_positives"}
                continue
            oof = _oof_scores(xk, y, wk, fk, config.c_interest, config, balanced=False)
            for r, i in enumerate(idx):
                oof_int.setdefault(train[i].conversation_id, {})[iid] = float(oof[r])
            thr, f1 = tune_f1_threshold(oof, y)
            int_models[iid] = _fit(xk, y, wk, config.c_interest, config, balanced=False)
            int_thr[iid] = thr
            int_cal[iid] = {"n_pos": npos, "threshold": thr, "val_f1": f1, "rule": "max_f1"}
    timings["interests_s"] = time.perf_counter() - t0

    names = {i: taxonomy.by_id(i).name for i in int_models}
    bundle = FilterBundle(
        categories=cats,
        interest_ids=tuple(i for i in label_ids if i in int_models),
        interest_names=names,
        sensitive_models=sens_models,
        sensitive_thresholds=thresholds,
        sensitive_rules=rules,
        prototypes=prototypes,
        interest_models=int_models,
        interest_thresholds=int_thr,
        tfidf=tfidf,
        lexicon={c: lex.get(c, ()) for c in cats},
        embedding_model_id=embedding_model_id if emb_obj is not None else "none",
        embed_max_length=config.embed_max_length,
        uses_embeddings=emb_obj is not None,
        meta={
            "snapshot_hash": snapshot.content_hash,
            "train_config": config.as_params(),
            "taxonomy_version": taxonomy.version,
            "uses_embeddings": emb_obj is not None,
        },
    )
    return TrainResult(
        bundle, calib, int_cal, val_fb, val_leak, timings, oof_all, lex_all, labels_all, is_gold,
        oof_int,
    )  # fmt: skip
