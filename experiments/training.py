"""Train the targeting filter and calibrate its thresholds.

Sensitive topics (segment level, see ``targeting.scorer``)
----------------------------------------------------------
Gold labels are per conversation, the classifier scores segments (turns, and sentence windows of
long turns): a multiple-instance problem. A clean conversation's segments are all clean; a
sensitive conversation has at least one sensitive segment, usually not all ("thanks, bye" in a
dialogue about booking a therapist is not about health).

1. Round 0: one multinomial logistic regression over segments, classes ``clean`` + the policy
   categories; every segment of a sensitive conversation carries that conversation's categories
   with weight ``1 / n_segments`` (each conversation weighs as much as a one-segment one).
2. Witnesses: in each sensitive conversation, its best segment under round 0 is its sensitive
   segment (the default ``witness_ratio=1``: one witness per conversation; with a ratio below 1,
   also the segments that score above 99 % of the clean segments and at least ratio x the best
   one); the others are left out (neither clean nor sensitive). Optionally a segment whose
   embedding is nearly identical (cosine >= ``witness_max_clean_similarity``) to a segment of a
   clean conversation is never a witness (dialogue templates). Optionally
   (``witness_noise_share``) a sensitive conversation whose best segment scores, out of fold, no
   higher than 99 % of the clean segments gives no witness at all (a suspected label error, a
   source's convention), at most that share of them. Measured variant by variant in
   ``docs/filter-quality.md``: one witness per conversation blocks far fewer clean dialogues.
3. Final model: clean segments + witnesses (full weight each). The witnesses per conversation
   are also what the label-review tools show as "which turn".

Thresholds are calibrated **out of fold** at the conversation level (``folds`` folds keyed by a
hash of the conversation id; every training conversation is scored by a model that did not see
it, max over all its segments):

* one any-sensitive threshold: the highest ``t`` with ``P(any) >= t`` blocking at least
  ``1 - leak_budget`` of the plausible sensitive conversations. Sensitive conversations that
  score like a typical clean one out of fold (at or below the ``label_noise_quantile`` of the
  clean scores; at most ``label_noise_max_share`` of them) are suspected label errors and left
  out of that calibration (they still count in the reported leak);
* per-category floors: a category whose positives (>= ``min_positives``) the any-threshold
  blocks less than ``category_recall_floor`` gets a threshold on its own score that reaches the
  floor, unless that would block more than ``floor_false_block_budget`` of the clean
  conversations (then the budget caps it: rule ``capped_by_false_block_budget``). Categories with
  fewer positives catch all of them within the same budget (``fallback_low``); categories without
  any are scored by similarity to prototypes (the policy's description and examples) at a
  ``prototype_false_block_budget`` (``prototype``), or by the lexicon alone (``lexicon_only``).
  Both budgets hold for long dialogues too: a floor or prototype threshold is also capped on the
  clean *segments* at ``budget / reference_turns``, so a clean dialogue of ``reference_turns``
  turns is blocked by that rule at most about ``budget`` of the time (a conversation-level cap
  alone lets a 20-turn dialogue cross it up to 20 times as often as a one-turn request); with
  too few clean segments to estimate that quantile, at the highest clean segment score.
* Every rate is reported with its Wilson 95 % interval (``calibration["any"]``, per category).

Interests (conversation level): one logistic regression per interest id with at least
``interest_min_positives`` positives over the mean of the conversation's segment embeddings plus
TF-IDF of its text; per-label threshold maximising the out-of-fold F1. With
``mask_interest_names`` (the default) both read the text with the places it names masked
(``labeling.proper_names``; the segments that change are embedded again, phase "embed places"),
as serving does (``FilterBundle.interest_places``, ``interest_segment_embeddings``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning

from experiments.composition import ComposedSet, compose_long_dialogues, source_of
from experiments.dataset import Example, Snapshot, unit_hash
from labeling.segments import DEFAULT_SEGMENT_CHARS
from labeling.taxonomy import Taxonomy
from targeting.scorer import (
    CLEAN,
    BlendedSegmentModel,
    FilterBundle,
    Lexicon,
    SegmentScores,
    TextEmbedder,
    embed_features,
    load_lexicon_file,
    masked_segment_texts,
    mean_pool,
    segment_words,
    stack_features,
)

__all__ = [
    "CachedEmbedder",
    "TrainConfig",
    "TrainResult",
    "calibrate_recall_threshold",
    "recalibrate",
    "train_filter",
    "tune_f1_threshold",
    "wilson_interval",
]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class TrainConfig:
    # share of the plausible sensitive training conversations (out of fold) the any-sensitive
    # threshold may pass; 0.015 with minilm-pairs and the contrast pairs passes the gate on all
    # dev where 0.02 does not (docs/filter-quality.md)
    leak_budget: float = 0.015
    # None: the leak budget alone sets the any-sensitive threshold. A rate: where that threshold
    # blocks fewer clean training conversations than this (out of fold), it is lowered until it
    # blocks this many: false-block left unused buys margin against sources not seen in training
    false_block_target: float | None = None
    # with a false-block target: the lowered threshold stays at or above the score that
    # target / reference_turns of the clean segments reach out of fold, so a clean dialogue of
    # reference_turns turns is not blocked much more often than the target either
    false_block_target_per_turn: bool = False
    category_recall_floor: float = 0.95
    floor_false_block_budget: float = 0.005
    use_embeddings: bool = True
    use_tfidf: bool = True
    use_char_tfidf: bool = False
    use_cues: bool = True
    cue_weight: float = 1.0
    # scale of the short-segment cue features (0: not used): per category, whether a cue occurs,
    # times min(1, 12 / words) ("I'm Methodist" is about the cue, a long post naming it in
    # passing is not)
    cue_short_weight: float = 0.0
    use_lexicon: bool = True
    # the leak budget is a share of all plausible sensitive training conversations, those the
    # vocabulary blocks counted as caught; off: a share of those it does not block (a better
    # vocabulary then lowers the threshold: the positives left are the harder ones)
    leak_budget_counts_vocabulary: bool = True
    # identity statements of the vocabulary ("I'm a South Asian person", "my gay friend") block
    # like its keywords (``targeting.scorer.IdentityRule``); off: the keywords alone
    use_identities: bool = True
    tfidf_max_features: int = 50_000
    tfidf_ngram_max: int = 2
    # the segment TF-IDF sees a segment's leading role tag ("user: ", "assistant/voice: "): who
    # spoke, not what was said; off: the words after it only (targeting.scorer.segment_words)
    tfidf_role_tags: bool = True
    # stop words left out of the segment TF-IDF (scikit-learn's "english"); None: every word
    tfidf_stop_words: str | None = None
    # scale of the word TF-IDF columns against the sentence vector and the cues (one C for all:
    # below 1 regularises the words more)
    tfidf_weight: float = 1.0
    char_tfidf_max_features: int = 100_000
    # inverse regularisation of the segment classifier; 8 beat 0.5 and 2 on false-block at the
    # same leak budget (docs/filter-quality.md)
    c_segment: float = 8.0
    # class weights of the segment classifier: "balanced" (every class the same total weight),
    # "pooled" (all sensitive classes together as much as clean, split by their counts), "none"
    class_weight: str = "pooled"
    # 0: rows weigh as they come; a > 0: each source's (the id prefix) clean rows, and its
    # sensitive rows, are reweighted towards the same total per source, by (mean / own)^a
    source_balance: float = 0.0
    # 0: off; s > 0: while the segment classifier is fitted, each row also carries its source
    # (the id prefix) as a one-hot column of this scale, so a source's own base rate per class
    # (every counselling question is health) is learned there rather than from its wording; the
    # columns are dropped from the fitted model, which scores every text as from no known source
    source_columns: float = 0.0
    # "linear": logistic regression on every feature; "blend": that, averaged with a one-hidden-
    # layer network on the dense columns (embedding + cues), the network's share segment_net_weight
    segment_head: str = "linear"
    segment_net_hidden: int = 256
    segment_net_weight: float = 0.5
    segment_net_epochs: int = 30
    c_interest: float = 4.0
    folds: int = 3
    min_positives: int = 20
    prototype_false_block_budget: float = 0.005
    # floors and prototype thresholds are also capped per clean segment at budget / this many
    # turns (the length of a long dialogue they must not block); None = conversation level only
    reference_turns: int | None = 20
    label_noise_quantile: float | None = 0.5
    label_noise_max_share: float = 0.1
    witness_ratio: float = 1.0
    # a segment of a sensitive conversation this similar (cosine) to a segment of a clean one is
    # never a witness (dialogue templates, greetings); None = no such filter
    witness_max_clean_similarity: float | None = None
    # at most this share of the sensitive gold conversations, those whose best segment round 0
    # scores out of fold no higher than the clean segments' 99th percentile (the lowest first), give no
    # witness: a label that only a source's convention explains ("political views" on a traffic
    # stop) would teach the model that such small talk is sensitive; 0 = every one gives one
    witness_noise_share: float = 0.0
    mil: bool = True
    # this many composed long dialogues (a short sensitive training conversation inserted into
    # the last third of a long clean one from another source, ``experiments.composition``) are
    # added as sensitive training conversations; the inserted turns are their witnesses, they
    # share their donor's fold and take no part in calibration (origin "augmented"); 0 = none
    composed_training: int = 0
    interest_min_positives: int = 5
    # the interest model reads the places a conversation names as one placeholder
    # (labeling.proper_names); off: as written, so a trail's or a city's name moves the interests
    mask_interest_names: bool = True
    # the segment model reads them so too (its vectors, words and cues; not the keywords)
    mask_sensitive_names: bool = False
    embed_max_length: int = 128
    segment_chars: int = DEFAULT_SEGMENT_CHARS
    unit: str = "segment"  # or "conversation" (one unit per conversation: the old baseline)
    # clean conversations beyond this many (deterministic hash sample) are not used: they are the
    # bulk of the data and add little; None = all
    max_clean_conversations: int | None = None
    # the segment classifier is fitted on at most this many clean segments (a fixed hash sample,
    # reweighted to the full count); every segment is still scored for the calibration
    max_clean_segments: int | None = 40_000
    # lbfgs iterations of each segment-model fit: on all dev round 0 stops here, before the 1e-4
    # gradient tolerance (255), with no eval figure worse than at 300 and less training time;
    # smaller data converges first (docs/filter-quality.md)
    max_iter: int = 150
    # independent fits (out-of-fold models, the final model, interest labels) run on this many
    # threads; the fits release the GIL in their numeric kernels and the result does not depend
    # on it
    n_jobs: int = 2
    fold_salt: str = "labelloop-folds-v1"

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    bundle: FilterBundle
    calibration: dict[str, dict[str, Any]]  # "any" + per category: threshold, rule, rates, CIs
    interest_calibration: dict[str, dict[str, Any]]
    val_false_block_rate: float
    val_leak_rate: float
    seconds: dict[str, float] = field(default_factory=dict)
    # out-of-fold conversation-level scores (rows follow the training examples used)
    example_ids: tuple[str, ...] = ()
    oof_any: npt.NDArray[np.float64] | None = None
    oof_sensitive: npt.NDArray[np.float64] | None = None  # (n, C)
    oof_lexicon: npt.NDArray[np.bool_] | None = None  # (n,)
    val_labels: npt.NDArray[np.bool_] | None = None  # (n, C) gold category membership
    val_is_gold: npt.NDArray[np.bool_] | None = None
    # conversation id -> turn indexes of its witness segments (sensitive conversations)
    witnesses: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # conversation id -> interest id -> out-of-fold P(interest), for training items whose
    # interests are known and interests with a model (the label-error check reads it)
    oof_interests: dict[str, dict[str, float]] = field(default_factory=dict)
    n_segments: int = 0
    n_clean_skipped: int = 0


class CachedEmbedder:
    """Wraps an embedder with an in-memory text -> vector cache (each text is embedded once)."""

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


def lower_to_false_block(
    t: float, clean_scores: npt.NDArray[Any], clean_blocked: npt.NDArray[np.bool_], target: float
) -> float:
    """``t``, or the highest lower threshold at which ``score >= t`` (or being blocked already)
    blocks ``target`` of the clean conversations, whichever is lower."""
    n = len(clean_scores)
    if n == 0:
        return t
    need = math.floor(target * n + 1e-9) - int(clean_blocked.sum())
    free = np.sort(np.asarray(clean_scores, dtype=np.float64)[~clean_blocked])[::-1]
    if need <= 0 or not free.size:
        return t
    return min(t, float(free[min(need, free.size) - 1]))


def any_threshold(
    pos: npt.NDArray[np.float64],
    neg: npt.NDArray[np.float64],
    neg_blocked: npt.NDArray[np.bool_],
    leak_budget: float,
    false_block_target: float | None,
    noise_quantile: float | None,
    noise_max_share: float,
    target_floor: float | None = None,
    pos_blocked: int = 0,
) -> tuple[float, float, int]:
    """The any-sensitive threshold from out-of-fold scores (``pos``: gold positives the
    vocabulary does not block; ``pos_blocked``: how many it does; ``neg``: gold negatives,
    ``neg_blocked`` those it blocks): (threshold, the leak budget's threshold, suspected label
    errors set aside). The leak budget is a share of all plausible positives, those the
    vocabulary blocks counted as caught. The false-block target lowers the threshold no further
    than ``target_floor``."""
    plausible, suspects = _plausible_positives(pos, neg, noise_quantile, noise_max_share)
    t_leak = 1.01
    if plausible.size:
        share = (pos_blocked + plausible.size) / plausible.size
        t_leak = calibrate_recall_threshold(plausible, max(1e-9, 1.0 - leak_budget * share))
    t_any = t_leak
    if false_block_target is not None:
        t_any = lower_to_false_block(t_leak, neg, neg_blocked, false_block_target)
        if target_floor is not None:
            t_any = min(t_leak, max(t_any, target_floor))
    return t_any, t_leak, suspects


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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n ((nan, nan) for n == 0)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    k, n = int(mask.sum()), int(mask.size)
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "k": k, "n": n, "ci95": [lo, hi]}


def _plausible_positives(
    pos: npt.NDArray[np.float64],
    neg: npt.NDArray[np.float64],
    quantile: float | None,
    max_share: float = 0.1,
) -> tuple[npt.NDArray[np.float64], int]:
    """(positives to calibrate on, how many were set aside as suspected label errors).

    A positive whose out-of-fold score is at or below the ``quantile`` of the clean items' scores
    looks like a typical clean conversation to a model that did not see it: most often a wrong
    label. Calibrating on it would pull the threshold into the bulk of the clean traffic. At most
    ``max_share`` of the positives (the lowest-scoring) are set aside -- a label-noise budget: the
    rest of the low scorers are hard cases and stay. Needs >= 20 clean items; ``quantile=None``
    disables it.
    """
    if quantile is None or neg.size < 20 or pos.size == 0:
        return pos, 0
    floor = float(np.quantile(neg, quantile))
    order = np.sort(pos)
    n_out = min(int(np.sum(order <= floor)), math.floor(max_share * pos.size))
    return order[n_out:], n_out


def _capped_floor(
    cat_scores: npt.NDArray[np.float64],
    already: npt.NDArray[np.bool_],
    pos_mask: npt.NDArray[np.bool_],
    neg_mask: npt.NDArray[np.bool_],
    target: float,
    budget: float,
    segment_cap: float | None = None,
) -> tuple[float, bool]:
    """Highest threshold on ``cat_scores`` so that (already | score >= t) blocks >= target of the
    positives, raised when needed so that it blocks at most ``budget`` of the negatives that
    ``already`` does not block, and to at least ``segment_cap`` (the same budget per clean
    segment, see :func:`segment_cap`). Returns (threshold, capped)."""
    missed = cat_scores[pos_mask & ~already]
    need = math.ceil(target * int(pos_mask.sum()) - 1e-9) - int((pos_mask & already).sum())
    if need <= 0 or missed.size == 0:
        return 1.01, False
    thr = float(np.sort(missed)[::-1][min(need, missed.size) - 1])
    free_neg = cat_scores[neg_mask & ~already]
    capped = False
    if free_neg.size >= 20:
        cap = float(np.quantile(free_neg, 1.0 - budget))
        if cap > thr:
            thr, capped = cap, True
    if segment_cap is not None and segment_cap > thr:
        thr, capped = segment_cap, True
    return thr, capped


def segment_cap(
    clean_segment_scores: npt.NDArray[np.float64], budget: float, reference_turns: int | None
) -> float | None:
    """The score that at most ``budget / reference_turns`` of the clean segments reach: a rule
    thresholded there blocks a clean dialogue of ``reference_turns`` turns at most about
    ``budget`` of the time. With fewer than ``reference_turns / budget`` segments that quantile
    lies beyond the sample, and the highest clean segment score is the cap (the least it can
    be). None without a reference length or without clean segments."""
    if reference_turns is None or reference_turns < 1 or clean_segment_scores.size == 0:
        return None
    q = budget / reference_turns
    if clean_segment_scores.size < math.ceil(1.0 / q):
        return float(np.max(clean_segment_scores))
    return float(np.quantile(clean_segment_scores, 1.0 - q))


# ------------------------------------------------------------------------------------ fitting
def _parallel_map(
    fn: Callable[[Any], Any],
    items: Sequence[Any] | range,
    n_jobs: int,
    on_done: Callable[[int], None] | None = None,
) -> list[Any]:
    """``[fn(i) for i in items]`` on up to ``n_jobs`` threads, results in input order;
    ``on_done(k)`` after the k-th finished item, always on the calling thread (progress reports
    reach the run's Prefect context there, which the pool's threads do not have)."""
    items = list(items)
    say = on_done or (lambda _: None)
    if n_jobs <= 1 or len(items) <= 1:
        out = []
        for k, i in enumerate(items):
            out.append(fn(i))
            say(k + 1)
        return out
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(fn, i) for i in items]
        for k, _ in enumerate(as_completed(futures)):
            say(k + 1)
        return [f.result() for f in futures]


def _segment_lr(cfg: TrainConfig, init: Any | None = None) -> Any:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(
        C=cfg.c_segment,
        solver="lbfgs",
        max_iter=cfg.max_iter,
        class_weight="balanced" if cfg.class_weight == "balanced" else None,
        warm_start=init is not None,
    )
    if init is not None:  # start from a fitted model's weights (same optimum, fewer iterations)
        m.coef_ = init.coef_.copy()
        m.intercept_ = init.intercept_.copy()
    return m


def _fit_segments(
    x: Any,
    classes: list[str],
    weights: npt.NDArray[np.float64],
    cfg: TrainConfig,
    init: Any | None = None,
    dense_cols: npt.NDArray[np.int_] | None = None,
    drop_last: int = 0,
) -> Any | None:
    """The segment classifier on ``x``; ``drop_last``: that many trailing columns of ``x``
    (the source columns) are fitted and then removed from the model."""
    if len(set(classes)) < 2:
        return None
    y = np.asarray(classes)
    if init is not None and sorted(set(classes)) != [str(c) for c in init.classes_]:
        init = None
    if drop_last:  # no warm start: ``init`` was fitted without the source columns
        init = None
        if cfg.segment_head != "linear":
            raise ValueError("source_columns needs segment_head 'linear'")
    w = np.asarray(weights, dtype=np.float64)
    if cfg.class_weight == "pooled":
        clean = y == CLEAN
        w_clean, w_sens = float(w[clean].sum()), float(w[~clean].sum())
        if w_clean > 0 and w_sens > 0:
            w = np.where(clean, w, w * (w_clean / w_sens))
    elif cfg.class_weight not in ("balanced", "none"):
        raise ValueError(f"unknown class_weight {cfg.class_weight!r}")
    if cfg.segment_head not in ("linear", "blend"):
        raise ValueError(f"unknown segment_head {cfg.segment_head!r}")
    blend_init = init if isinstance(init, BlendedSegmentModel) else None
    lin_init = blend_init.linear if blend_init is not None else init
    m = _segment_lr(cfg, lin_init if hasattr(lin_init, "coef_") else None)
    sw = w / max(1e-12, float(w.mean()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        if cfg.segment_head == "linear" or dense_cols is None or not len(dense_cols):
            m.fit(x, y, sample_weight=sw)
            return _drop_columns(m, drop_last)
        if cfg.segment_net_weight < 1.0:
            m.fit(x, y, sample_weight=sw)
        else:  # the network alone: the linear part only carries the classes
            m.classes_ = np.unique(y)
        net = _segment_net(cfg)
        part = x[:, dense_cols]
        net.fit(part.toarray() if hasattr(part, "toarray") else part, y, sample_weight=sw)
    return BlendedSegmentModel(m, net, dense_cols, cfg.segment_net_weight)


def _drop_columns(m: Any, k: int) -> Any:
    """The fitted logistic regression ``m`` without its last ``k`` input columns (their
    weights removed: the model then scores as if every such column were 0)."""
    if k <= 0:
        return m
    m.coef_ = np.ascontiguousarray(m.coef_[:, :-k])
    m.n_features_in_ = m.coef_.shape[1]
    return m


def with_source_columns(
    x: Any, seg_owner: npt.NDArray[np.int_], examples: Sequence[Example], scale: float
) -> tuple[Any, int]:
    """(``x`` with one column per source appended, ``scale`` in the column of each row's
    source (its conversation id's prefix); how many columns were appended). ``scale`` <= 0:
    ``x`` unchanged, 0 columns."""
    if scale <= 0:
        return x, 0
    from scipy.sparse import csr_matrix

    conv_src = [source_of(e.conversation_id) for e in examples]
    names = sorted(set(conv_src))
    col = {n: j for j, n in enumerate(names)}
    rows = np.arange(len(seg_owner))
    cols = np.array([col[conv_src[o]] for o in seg_owner.tolist()], dtype=np.int_)
    onehot = csr_matrix(
        (np.full(len(rows), float(scale)), (rows, cols)), shape=(len(rows), len(names))
    )
    return stack_features([x, onehot]), len(names)


def _segment_net(cfg: TrainConfig) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(cfg.segment_net_hidden,), alpha=1e-4, batch_size=256,
        learning_rate_init=1e-3, max_iter=cfg.segment_net_epochs, shuffle=True,
        random_state=0, early_stopping=False, n_iter_no_change=cfg.segment_net_epochs,
    )  # fmt: skip


def _interest_lr(cfg: TrainConfig) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=cfg.c_interest, solver="liblinear", max_iter=2000)


def _fit_folds(
    x: Any,
    idx: npt.NDArray[np.int_],
    cls: list[str],
    w: npt.NDArray[np.float64],
    seg_fold: npt.NDArray[np.int_],
    config: TrainConfig,
    init: Any | None,
    dense_cols: npt.NDArray[np.int_],
    *,
    with_final: bool = False,
    drop_last: int = 0,
) -> list[Any | None]:
    """Per fold, the segment model fitted on the rows (``idx``: their segments) of the other
    folds (None for a fold without segments); ``with_final``: the model on every row last.
    Fitted on ``config.n_jobs`` threads; ``drop_last`` as in :func:`_fit_segments`."""
    row_fold = seg_fold[idx]

    def fit_fold(f: int) -> Any | None:  # f == folds: the final model on every row
        keep = row_fold != f
        if f < config.folds and not (seg_fold == f).any():
            return None
        return _fit_segments(x[idx[keep]], [cls[i] for i in np.flatnonzero(keep)], w[keep],
                             config, init=init, dense_cols=dense_cols,
                             drop_last=drop_last)  # fmt: skip

    return _parallel_map(fit_fold, range(config.folds + with_final), config.n_jobs)


def _out_of_fold_scores(
    bundle: FilterBundle, fitted: Sequence[Any | None], x: Any, seg_fold: npt.NDArray[np.int_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(P(any), category scores) of every segment by the model of its fold (``fitted[f]``, as
    :func:`_fit_folds` returns them; zeros where a fold has none)."""
    p_any = np.zeros(x.shape[0])
    p_cat = np.zeros((x.shape[0], len(bundle.categories)))
    for f, m in enumerate(fitted):
        va = seg_fold == f
        if m is None:
            continue
        probe = replace(bundle, segment_model=m, segment_classes=tuple(str(c) for c in m.classes_))
        p_any[va], p_cat[va] = probe.segment_probabilities(x[va], int(va.sum()))
    return p_any, p_cat


def _fold_ids(ids: Sequence[str], cfg: TrainConfig) -> npt.NDArray[np.int_]:
    return np.array(
        [min(cfg.folds - 1, int(unit_hash(i, cfg.fold_salt) * cfg.folds)) for i in ids],
        dtype=np.int_,
    )


@dataclass
class _Rows:
    """Training rows of the segment classifier (row -> segment, class, weight)."""

    seg: list[int]
    cls: list[str]
    w: list[float]

    def arrays(self, keep: npt.NDArray[np.bool_] | None = None) -> tuple[Any, list[str], Any]:
        idx = np.asarray(self.seg, dtype=np.int_)
        cls = np.asarray(self.cls, dtype=object)
        w = np.asarray(self.w, dtype=np.float64)
        if keep is not None:
            idx, cls, w = idx[keep], cls[keep], w[keep]
        return idx, [str(c) for c in cls], w


def _rows(
    seg_owner: npt.NDArray[np.int_],
    examples: Sequence[Example],
    cats: Sequence[str],
    witness: npt.NDArray[np.bool_] | None,
) -> _Rows:
    """Rows for round 0 (``witness`` None: every segment of a sensitive conversation, weight
    1/n_segments) or the final round (witnesses only, full weight)."""
    n_seg = np.bincount(seg_owner, minlength=len(examples))
    rows = _Rows([], [], [])
    for k, i in enumerate(seg_owner.tolist()):
        e = examples[i]
        sens = [c for c in e.sensitive if c in cats]
        if not sens:
            rows.seg.append(k)
            rows.cls.append(CLEAN)
            rows.w.append(e.weight)
            continue
        if witness is not None and not witness[k]:
            continue
        base = e.weight if witness is not None else e.weight / max(1, int(n_seg[i]))
        for c in sens:
            rows.seg.append(k)
            rows.cls.append(c)
            rows.w.append(base / len(sens))
    return rows


def _balance_sources(
    idx: npt.NDArray[np.int_],
    cls: list[str],
    w: npt.NDArray[np.float64],
    seg_owner: npt.NDArray[np.int_],
    examples: Sequence[Example],
    power: float,
) -> npt.NDArray[np.float64]:
    """Row weights moved towards the same total per source on each side (clean / sensitive):
    a row of a source whose side weighs W_g, against a mean of W per source, is scaled by
    (W / W_g) ** power. Each side's total weight is kept."""
    if power <= 0 or not len(w):
        return w
    conv_src = np.array([source_of(e.conversation_id) for e in examples])
    src = conv_src[seg_owner[idx]]
    clean = np.array([c == CLEAN for c in cls], dtype=bool)
    out = np.asarray(w, dtype=np.float64).copy()
    for side in (clean, ~clean):
        if not side.any():
            continue
        groups = {g: side & (src == g) for g in np.unique(src[side]).tolist()}
        totals = {g: float(w[m].sum()) for g, m in groups.items()}
        mean = sum(totals.values()) / len(totals)
        for g, m in groups.items():
            if totals[g] > 0:
                out[m] = w[m] * (mean / totals[g]) ** power
        out[side] *= float(w[side].sum()) / max(1e-12, float(out[side].sum()))
    return out


def _sample_clean_rows(
    idx: npt.NDArray[np.int_],
    cls: list[str],
    w: npt.NDArray[np.float64],
    texts: Sequence[str],
    cap: int | None,
    salt: str,
    exempt: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int_], list[str], npt.NDArray[np.float64]]:
    """At most ``cap`` clean rows (a fixed sample by text hash), reweighted to the full count.
    ``exempt`` (per segment): rows that are always kept and not counted (augmented examples:
    a contrast pair's clean side answers its sensitive side, it is not a sample of traffic)."""
    clean = np.array([c == CLEAN for c in cls], dtype=bool)
    if exempt is not None:
        clean &= ~exempt[idx]
    n_clean = int(clean.sum())
    if cap is None or n_clean <= cap:
        return idx, cls, w
    order = sorted(
        np.flatnonzero(clean).tolist(), key=lambda r: unit_hash(texts[int(idx[r])], salt)
    )
    keep = ~clean
    keep[order[:cap]] = True
    w2 = np.where(clean, w * (n_clean / cap), w)[keep]
    return idx[keep], [c for c, k in zip(cls, keep, strict=True) if k], w2


def _max_similarity_to_clean(
    embeddings: npt.NDArray[np.float32],
    seg_owner: npt.NDArray[np.int_],
    sensitive: npt.NDArray[np.bool_],
    chunk: int = 2048,
) -> npt.NDArray[np.float64]:
    """For each segment of a sensitive conversation, its highest cosine similarity to a segment
    of a clean conversation (0 for the clean segments themselves)."""
    seg_sens = sensitive[seg_owner]
    clean = embeddings[~seg_sens]
    out = np.zeros(len(seg_owner))
    if not clean.size:
        return out
    pos = np.flatnonzero(seg_sens)
    for start in range(0, pos.size, chunk):
        rows = pos[start : start + chunk]
        out[rows] = (embeddings[rows] @ clean.T).max(axis=1)
    return out


# the clean segments' score quantile that a witness must pass (a segment scoring like clean text
# is not evidence) and under which a sensitive conversation's best segment is implausible
WITNESS_CLEAN_QUANTILE = 0.99


def _witness_basis(
    p_any: npt.NDArray[np.float64],
    seg_owner: npt.NDArray[np.int_],
    examples: Sequence[Example],
    clean_quantile: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], float | None]:
    """(each conversation's best segment score, which conversations are sensitive, the
    ``clean_quantile`` of the clean segments' scores; None without clean segments)."""
    best = np.zeros(len(examples))
    np.maximum.at(best, seg_owner, p_any)
    sensitive = np.array([bool(e.sensitive) for e in examples], dtype=bool)
    clean_scores = p_any[~sensitive[seg_owner]]
    floor = float(np.quantile(clean_scores, clean_quantile)) if clean_scores.size else None
    return best, sensitive, floor


def _select_witnesses(
    p_any: npt.NDArray[np.float64],
    seg_owner: npt.NDArray[np.int_],
    examples: Sequence[Example],
    ratio: float,
    clean_quantile: float = WITNESS_CLEAN_QUANTILE,
) -> npt.NDArray[np.bool_]:
    """Witness segments of the sensitive conversations: each one's best segment, and every other
    segment that scores above ``clean_quantile`` of the clean segments' scores and at least
    ``ratio`` x its conversation's best (a segment that scores like clean text is not one)."""
    best, sensitive, clean_floor = _witness_basis(p_any, seg_owner, examples, clean_quantile)
    seg_sensitive = sensitive[seg_owner]
    floor = 0.0 if clean_floor is None else clean_floor
    is_best = p_any >= best[seg_owner] - 1e-12
    strong = (p_any >= ratio * best[seg_owner]) & (p_any > floor)
    return np.asarray(seg_sensitive & (is_best | strong), dtype=bool)


def _drop_implausible_witnesses(
    witness: npt.NDArray[np.bool_],
    p_any: npt.NDArray[np.float64],
    seg_owner: npt.NDArray[np.int_],
    examples: Sequence[Example],
    share: float,
    clean_quantile: float = WITNESS_CLEAN_QUANTILE,
) -> tuple[npt.NDArray[np.bool_], int]:
    """(``witness`` without the witnesses of the sensitive gold conversations whose best segment
    scores no higher than ``clean_quantile`` of the clean segments, the lowest first, at most
    ``share`` of the sensitive gold conversations (augmented and silver ones always keep theirs);
    how many conversations lost their witnesses)."""
    best, sensitive, floor = _witness_basis(p_any, seg_owner, examples, clean_quantile)
    if floor is None:
        return witness, 0
    gold = np.array([e.origin not in ("silver", "augmented") for e in examples], dtype=bool)
    candidates = np.flatnonzero(sensitive & gold & (best <= floor))
    budget = int(share * int((sensitive & gold).sum()))
    drop = candidates[np.argsort(best[candidates], kind="stable")][:budget]
    out = witness.copy()
    out[np.isin(seg_owner, drop)] = False
    return out, int(np.isin(drop, seg_owner[witness]).sum())


def _composed_witnesses(
    witness: npt.NDArray[np.bool_],
    seg_owner: npt.NDArray[np.int_],
    seg_turn: Sequence[int],
    ids: Sequence[str],
    composed: ComposedSet,
) -> npt.NDArray[np.bool_]:
    """``witness`` with the segments of composed conversations replaced by what is known: the
    segments of the inserted turns are witnesses, the host's segments are not."""
    if not composed.spans:
        return witness
    out = witness.copy()
    for k, owner in enumerate(seg_owner.tolist()):
        span = composed.spans.get(ids[owner])
        if span is not None:
            out[k] = span[0] <= seg_turn[k] < span[1]
    return out


# ------------------------------------------------------------------------------------ training
def train_filter(
    snapshot: Snapshot,
    taxonomy: Taxonomy,
    embedder: TextEmbedder | None,
    *,
    config: TrainConfig = TrainConfig(),
    prototype_texts: Mapping[str, Sequence[str]] | None = None,
    lexicon: Lexicon | None = None,
    embedding_model_id: str = "none",
    encoder: str = "minilm",
    progress: Progress | None = None,
) -> TrainResult:
    """Train both classifiers on ``snapshot.train`` and calibrate thresholds (see module doc)."""
    if not snapshot.train:
        raise ValueError("the snapshot has no training examples")
    if config.folds < 2:
        raise ValueError("folds must be >= 2 (thresholds are calibrated out of fold)")
    say = progress or (lambda *_: None)
    timings: dict[str, float] = {}
    cats = tuple(snapshot.categories)
    train, n_skipped = subsample_clean(list(snapshot.train), config)
    composed = (
        compose_long_dialogues(train, n=config.composed_training, seed=0, n_controls=0)
        if config.composed_training > 0
        else ComposedSet((), ())
    )
    train = train + list(composed.sensitive)
    emb_obj = embedder if config.use_embeddings else None

    # ---------------- segments and their features
    t0 = time.perf_counter()
    seg_texts: list[str] = []
    seg_owner_l: list[int] = []
    seg_turn: list[int] = []
    if config.unit not in ("segment", "conversation"):
        raise ValueError("unit must be 'segment' or 'conversation'")
    unit_probe = FilterBundle.empty(cats, segment_chars=config.segment_chars, unit=config.unit)
    for i, e in enumerate(train):
        for s in unit_probe.segments_of(e.turns):
            seg_texts.append(s.text)
            seg_owner_l.append(i)
            seg_turn.append(s.turn)
    seg_owner = np.asarray(seg_owner_l, dtype=np.int_)
    augmented = np.array([train[i].origin == "augmented" for i in seg_owner_l], dtype=bool)
    # what the segment model reads (places masked with mask_sensitive_names); the keywords read
    # seg_texts as written
    model_texts = (
        masked_segment_texts([e.turns for e in train], seg_texts, seg_owner)
        if config.mask_sensitive_names
        else seg_texts
    )
    embeddings = None
    if emb_obj is not None:
        embeddings = _embed_with_progress(model_texts, emb_obj, say)
    timings["embed_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lex = lexicon if lexicon is not None else load_lexicon_file(categories=cats)
    keywords = (
        {c: lex.keywords.get(c, ()) for c in cats}
        if config.use_lexicon
        else dict.fromkeys(cats, ())
    )
    bundle = FilterBundle.empty(
        cats, cue_weight=config.cue_weight if config.use_cues else 0.0,
        cue_short_weight=config.cue_short_weight if config.use_cues else 0.0, lexicon=keywords,
        cues={c: lex.cues.get(c, ()) for c in cats}, embedding_model_id=embedding_model_id,
        cue_not_before={c: w for c, w in lex.cue_not_before.items() if c in cats},
        identity_rule=lex.identities if config.use_lexicon and config.use_identities else None,
        embed_max_length=config.embed_max_length, segment_chars=config.segment_chars,
        unit=config.unit, uses_embeddings=emb_obj is not None, encoder=encoder,
        tfidf_weight=config.tfidf_weight, sensitive_names_masked=config.mask_sensitive_names,
    )  # fmt: skip
    if config.use_tfidf:
        from sklearn.feature_extraction.text import TfidfVectorizer

        bundle.segment_tfidf = TfidfVectorizer(
            max_features=config.tfidf_max_features, ngram_range=(1, config.tfidf_ngram_max),
            sublinear_tf=True, min_df=2, strip_accents="unicode",
            preprocessor=None if config.tfidf_role_tags else segment_words,
            stop_words=config.tfidf_stop_words,
        ).fit(model_texts)  # fmt: skip
    if config.use_char_tfidf:
        from sklearn.feature_extraction.text import TfidfVectorizer

        bundle.segment_char_tfidf = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), max_features=config.char_tfidf_max_features,
            sublinear_tf=True, min_df=3,
        ).fit(model_texts)  # fmt: skip
    if embeddings is None and bundle.segment_tfidf is None and bundle.segment_char_tfidf is None:
        raise ValueError("no segment features: enable embeddings or TF-IDF")
    x = bundle.segment_features(model_texts, embeddings)
    if hasattr(x, "tocsr"):
        x = x.tocsr()
    timings["features_s"] = time.perf_counter() - t0
    # the dense columns of x: the embedding first, the cue counts and short-segment cues last
    # (segment_features' order)
    dense_l = list(range(embeddings.shape[1])) if embeddings is not None else []
    n_cue_cols = len(cats) * ((bundle.cue_weight > 0) + (bundle.cue_short_weight > 0))
    dense_l += list(range(x.shape[1] - n_cue_cols, x.shape[1]))
    dense_cols = np.asarray(dense_l, dtype=np.int_)
    # what the segment classifier is fitted on (x, or x and the source columns it then drops);
    # every score below is of x, as served
    x_fit, n_src = with_source_columns(x, seg_owner, train, config.source_columns)

    # ---------------- multiple-instance training of the segment classifier
    t0 = time.perf_counter()
    ids = [e.conversation_id for e in train]
    # a composed conversation shares its donor's fold: the donor's out-of-fold score must not
    # come from a model that saw its text inside a composed copy
    folds = _fold_ids([composed.donors.get(i, i) for i in ids], config)
    is_gold = np.array([e.origin not in ("silver", "augmented") for e in train], dtype=bool)
    labels = np.array([[c in e.sensitive for c in cats] for e in train], dtype=bool).reshape(
        len(train), len(cats)
    )
    y_any: npt.NDArray[np.bool_] = np.asarray(labels.any(axis=1), dtype=bool)
    witness: npt.NDArray[np.bool_] | None = None
    n_dropped = 0  # sensitive conversations that give no witness (witness_noise_share)
    salt = config.fold_salt + "-rows"
    m0: Any | None = None
    if config.mil and y_any.any():
        say("mil round 0", 0, 1)
        idx, cls, w = _rows(seg_owner, train, cats, None).arrays()
        idx, cls, w = _sample_clean_rows(
            idx, cls, w, seg_texts, config.max_clean_segments, salt, augmented
        )
        w = _balance_sources(idx, cls, w, seg_owner, train, config.source_balance)
        m0 = _fit_segments(x_fit[idx], cls, w, config, dense_cols=dense_cols, drop_last=n_src)
        if m0 is not None:
            bundle.segment_model, bundle.segment_classes = m0, tuple(str(c) for c in m0.classes_)
            p_any0, _ = bundle.segment_probabilities(x, x.shape[0])
            if embeddings is not None and config.witness_max_clean_similarity is not None:
                # a segment that (nearly) also occurs in clean conversations is not evidence
                sim = _max_similarity_to_clean(embeddings, seg_owner, y_any)
                p_any0 = np.where(sim >= config.witness_max_clean_similarity, 0.0, p_any0)
            witness = _select_witnesses(p_any0, seg_owner, train, config.witness_ratio)
            if config.witness_noise_share > 0:
                # out of fold: in sample, round 0 has fitted the very labels in question
                say("mil round 0 out of fold", 0, 1)
                fitted0 = _fit_folds(
                    x_fit, idx, cls, w, folds[seg_owner], config, m0, dense_cols, drop_last=n_src
                )
                p_oof0, _ = _out_of_fold_scores(bundle, fitted0, x, folds[seg_owner])
                say("mil round 0 out of fold", 1, 1)
                witness, n_dropped = _drop_implausible_witnesses(
                    witness, p_oof0, seg_owner, train, config.witness_noise_share
                )
            witness = _composed_witnesses(witness, seg_owner, seg_turn, ids, composed)
        say("mil round 0", 1, 1)
    rows = _rows(seg_owner, train, cats, witness)
    idx, cls, w = rows.arrays()
    idx, cls, w = _sample_clean_rows(
        idx, cls, w, seg_texts, config.max_clean_segments, salt, augmented
    )
    w = _balance_sources(idx, cls, w, seg_owner, train, config.source_balance)
    witnesses: dict[str, list[int]] = {}
    if witness is not None:
        for k in np.flatnonzero(witness).tolist():
            witnesses.setdefault(ids[seg_owner[k]], []).append(seg_turn[k])

    # out of fold: every conversation scored by a model that did not see it
    n = len(train)
    oof_any = np.zeros(n)
    oof_cat = np.zeros((n, len(cats)))
    seg_fold = folds[seg_owner]
    say("out-of-fold", 0, config.folds)
    fitted = _fit_folds(
        x_fit, idx, cls, w, seg_fold, config, m0, dense_cols, with_final=True, drop_last=n_src
    )
    oof_seg_any, oof_seg_cat = _out_of_fold_scores(bundle, fitted[: config.folds], x, seg_fold)
    np.maximum.at(oof_any, seg_owner, oof_seg_any)
    for j in range(len(cats)):
        np.maximum.at(oof_cat[:, j], seg_owner, oof_seg_cat[:, j])
    say("out-of-fold", config.folds, config.folds)
    final = fitted[config.folds]
    bundle.segment_model = final
    bundle.segment_classes = tuple(str(c) for c in final.classes_) if final is not None else ()
    timings["segment_model_s"] = time.perf_counter() - t0

    # ---------------- lexicon, prototypes, thresholds
    t0 = time.perf_counter()
    say("thresholds", 0, 1)
    seg_lex = [bundle.lexicon_hits(t) for t in seg_texts]
    lex_conv = np.zeros((n, len(cats)), dtype=bool)
    for k, h in enumerate(seg_lex):
        for j, c in enumerate(cats):
            if c in h:
                lex_conv[seg_owner[k], j] = True
    lex_any: npt.NDArray[np.bool_] = np.asarray(lex_conv.any(axis=1), dtype=bool)
    neg_mask = ~y_any & is_gold
    pos_mask = y_any & is_gold
    vocabulary_pos = int((pos_mask & lex_any).sum())  # sensitive conversations it blocks
    clean_seg = neg_mask[seg_owner]  # segments of clean gold conversations
    calib: dict[str, dict[str, Any]] = {}
    target_floor = None
    if config.false_block_target is not None and config.false_block_target_per_turn:
        seg_free = clean_seg & ~lex_any[seg_owner]
        target_floor = segment_cap(
            oof_seg_any[seg_free], config.false_block_target, config.reference_turns
        )
    t_any, t_leak, suspects = any_threshold(
        oof_any[pos_mask & ~lex_any], oof_any[neg_mask], lex_any[neg_mask], config.leak_budget,
        config.false_block_target, config.label_noise_quantile, config.label_noise_max_share,
        target_floor,
        vocabulary_pos if config.leak_budget_counts_vocabulary else 0,
    )  # fmt: skip
    bundle.any_threshold = t_any
    blocked = (oof_any >= t_any) | lex_any
    thresholds: dict[str, float] = {}
    rules: dict[str, str] = {}
    for j, cat in enumerate(cats):
        cpos = labels[:, j] & is_gold
        n_pos = int(cpos.sum())
        info: dict[str, Any] = {"n_pos": int(labels[:, j].sum()), "n_pos_gold": n_pos}
        if cat not in bundle.segment_classes:
            protos_src = list((prototype_texts or {}).get(cat, ()))
            if emb_obj is not None and embeddings is not None and protos_src:
                protos = embed_features(protos_src, emb_obj)
                bundle.prototypes[cat] = protos
                sims = np.zeros(n)
                np.maximum.at(sims, seg_owner, (embeddings @ protos.T).max(axis=1))
                neg = sims[neg_mask] if neg_mask.any() else sims
                thr = (
                    float(np.quantile(neg, 1.0 - config.prototype_false_block_budget))
                    if neg.size
                    else 0.5
                )
                seg_sims = (embeddings[clean_seg] @ protos.T).max(axis=1).astype(np.float64)
                cap = segment_cap(
                    seg_sims, config.prototype_false_block_budget, config.reference_turns
                )
                if cap is not None and cap > thr:
                    thr, info["capped_for_long_dialogues"] = cap, True
                thresholds[cat], rules[cat] = thr, "prototype"
                oof_cat[:, j] = sims
            else:
                thresholds[cat], rules[cat] = 1.01, "lexicon_only"
        else:
            target = config.category_recall_floor if n_pos >= config.min_positives else 1.0
            seg_already = blocked[seg_owner]
            thr, capped = _capped_floor(
                oof_cat[:, j], blocked, cpos, neg_mask, target, config.floor_false_block_budget,
                segment_cap(oof_seg_cat[clean_seg & ~seg_already, j],
                            config.floor_false_block_budget, config.reference_turns),
            )  # fmt: skip
            if thr > 1.0:
                rule = "any_threshold"
            elif n_pos >= config.min_positives:
                rule = "recall_floor"
            else:
                rule = "fallback_low"
            if capped:
                info["capped_by_false_block_budget"] = True
            thresholds[cat], rules[cat] = thr, rule
        blocked_c = blocked | (oof_cat[:, j] >= thresholds[cat])
        blocked = blocked_c
        calib[cat] = info
    for j, cat in enumerate(cats):
        cpos = labels[:, j] & is_gold
        calib[cat].update(
            threshold=thresholds[cat],
            rule=rules[cat],
            val_recall=_rate(blocked[cpos])["rate"] if cpos.any() else float("nan"),
            val_recall_ci95=wilson_interval(int(blocked[cpos].sum()), int(cpos.sum())),
            val_false_block=float((oof_cat[neg_mask, j] >= thresholds[cat]).mean())
            if neg_mask.any()
            else float("nan"),
            val_lexicon_hits_on_negatives=int(lex_conv[neg_mask, j].sum()),
        )
    bundle.sensitive_thresholds, bundle.sensitive_rules = thresholds, rules
    lowered = "" if t_any == t_leak else f", false_block_target={config.false_block_target}"
    calib["any"] = {
        "threshold": t_any,
        "rule": f"leak_budget={config.leak_budget}" + lowered,
        "leak_budget_threshold": t_leak,
        "false_block_target_floor": target_floor,
        "suspect_positives": suspects,
        "vocabulary_blocked_positives": vocabulary_pos,
        "leak": _rate(~blocked[pos_mask]),
        "false_block": _rate(blocked[neg_mask]),
    }
    val_fb = calib["any"]["false_block"]["rate"]
    val_leak = calib["any"]["leak"]["rate"]
    timings["thresholds_s"] = time.perf_counter() - t0
    say("thresholds", 1, 1)

    # ---------------- interests (conversation level)
    t0 = time.perf_counter()
    bundle.interest_names_masked = config.mask_interest_names
    int_cal, oof_int = _train_interests(
        bundle, train, taxonomy, snapshot.interest_ids, (model_texts, embeddings, seg_owner),
        emb_obj, folds, config, say,
    )  # fmt: skip
    timings["interests_s"] = time.perf_counter() - t0

    bundle.meta = {
        "snapshot_hash": snapshot.content_hash,
        "train_config": config.as_params(),
        "taxonomy_version": taxonomy.version,
        "uses_embeddings": emb_obj is not None,
        "n_segments": len(seg_texts),
        "n_clean_skipped": n_skipped,
        "n_composed": len(composed.sensitive),
        "witnesses_dropped": n_dropped,
    }
    return TrainResult(
        bundle, calib, int_cal, val_fb, val_leak, timings, tuple(ids), oof_any, oof_cat,
        lex_any, labels, is_gold, {k: tuple(sorted(set(v))) for k, v in witnesses.items()},
        oof_int, len(seg_texts), n_skipped,
    )  # fmt: skip


def subsample_clean(train: list[Example], cfg: TrainConfig) -> tuple[list[Example], int]:
    """The training examples the conversation cap keeps (``max_clean_conversations``: a fixed
    sample of the clean ones by id hash; sensitive and augmented ones are all kept), and how many
    it left out."""
    if cfg.max_clean_conversations is None:
        return train, 0
    clean = [e for e in train if not e.sensitive and e.origin != "augmented"]
    if len(clean) <= cfg.max_clean_conversations:
        return train, 0
    keep = {
        e.conversation_id
        for e in sorted(
            clean, key=lambda e: unit_hash(e.conversation_id, cfg.fold_salt + "-clean")
        )[: cfg.max_clean_conversations]
    }
    out = [e for e in train if e.sensitive or e.origin == "augmented" or e.conversation_id in keep]
    return out, len(train) - len(out)


def _embed_with_progress(
    texts: Sequence[str],
    embedder: TextEmbedder,
    say: Progress,
    chunk: int = 2048,
    phase: str = "embed",
) -> npt.NDArray[np.float32]:
    uniq = list(dict.fromkeys(texts))
    vecs: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(uniq), chunk):
        say(phase, start, len(uniq))
        vecs.append(embed_features(uniq[start : start + chunk], embedder))
    say(phase, len(uniq), len(uniq))
    if not vecs:
        return np.zeros((0, 0), dtype=np.float32)
    table = np.vstack(vecs)
    index = {t: i for i, t in enumerate(uniq)}
    return table[[index[t] for t in texts]]


def _train_interests(
    bundle: FilterBundle,
    train: Sequence[Example],
    taxonomy: Taxonomy,
    interest_ids: Sequence[str],
    segments: tuple[Sequence[str], npt.NDArray[np.float32] | None, npt.NDArray[np.int_]],
    embedder: TextEmbedder | None,
    folds: npt.NDArray[np.int_],
    config: TrainConfig,
    say: Progress | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    say = say or (lambda *_: None)
    known = np.array([e.interests is not None for e in train], dtype=bool)
    idx = np.flatnonzero(known)
    label_ids = tuple(i for i in interest_ids if i in taxonomy)
    int_cal: dict[str, dict[str, Any]] = {}
    oof_int: dict[str, dict[str, float]] = {}
    if not idx.size:
        return int_cal, oof_int
    convs = [train[i].turns for i in idx]
    places = bundle.interest_places(convs)
    if config.use_tfidf:
        from sklearn.feature_extraction.text import TfidfVectorizer

        bundle.interest_tfidf = TfidfVectorizer(
            max_features=config.tfidf_max_features,
            ngram_range=(1, config.tfidf_ngram_max),
            sublinear_tf=True,
            min_df=2,
            strip_accents="unicode",
        ).fit(bundle.interest_texts(convs, places))
    # the segments of the conversations whose interests are known, as the interest model reads them
    seg_texts, embeddings, seg_owner = segments
    sel = np.flatnonzero(known[seg_owner])
    conv_emb = None
    if embeddings is not None:
        if embedder is None:
            raise ValueError("segment embeddings given without the embedder that made them")
        inner, progress = embedder, say
        row = np.full(len(train), -1, dtype=np.int_)
        row[idx] = np.arange(idx.size)
        emb_i = bundle.interest_segment_embeddings(
            [seg_texts[k] for k in sel], row[seg_owner[sel]], places, embeddings[sel],
            lambda t: _embed_with_progress(t, inner, progress, phase="embed places"),
        )  # fmt: skip
        conv_emb = mean_pool(emb_i, seg_owner[sel], len(train)) if emb_i is not None else None
    xk = bundle.interest_features(convs, conv_emb[idx] if conv_emb is not None else None, places)
    if hasattr(xk, "tocsr"):
        xk = xk.tocsr()
    wk = np.array([train[i].weight for i in idx], dtype=np.float64)
    fk = folds[idx]

    def fit_label(
        iid: str,
    ) -> tuple[str, npt.NDArray[np.int_], Any | None, npt.NDArray[np.float64] | None]:
        y = np.array([int(iid in (train[i].interests or ())) for i in idx], dtype=np.int_)
        npos = int(y.sum())
        if npos < config.interest_min_positives or npos == y.size:
            return iid, y, None, None
        oof = np.zeros(y.size)
        for f in range(config.folds):
            tr, va = fk != f, fk == f
            if not va.any():
                continue
            if len(set(y[tr].tolist())) < 2:
                oof[va] = float(y[tr].mean()) if tr.any() else 0.0
                continue
            m = _interest_lr(config).fit(xk[tr], y[tr], sample_weight=wk[tr])
            oof[va] = m.predict_proba(xk[va])[:, 1]
        return iid, y, _interest_lr(config).fit(xk, y, sample_weight=wk), oof

    say("interests", 0, len(label_ids))
    done = _parallel_map(
        fit_label, label_ids, config.n_jobs, lambda k: say("interests", k, len(label_ids))
    )
    for iid, y, model, oof in done:
        npos = int(y.sum())
        if model is None or oof is None:
            int_cal[iid] = {"n_pos": npos, "threshold": None, "rule": "too_few_positives"}
            continue
        for r, i in enumerate(idx):
            oof_int.setdefault(train[i].conversation_id, {})[iid] = float(oof[r])
        thr, f1 = tune_f1_threshold(oof, y)
        bundle.interest_models[iid] = model
        bundle.interest_thresholds[iid] = thr
        int_cal[iid] = {"n_pos": npos, "threshold": thr, "val_f1": f1, "rule": "max_f1"}
    bundle.interest_ids = tuple(i for i in label_ids if i in bundle.interest_models)
    bundle.interest_names = {i: taxonomy.by_id(i).name for i in bundle.interest_models}
    return int_cal, oof_int


def recalibrate(result: TrainResult, leak_budget: float) -> TrainResult:
    """The same models with the any-sensitive threshold re-calibrated (from the stored
    out-of-fold scores) for another leak budget, by the rule they were trained with (its
    false-block target included); category floors are kept."""
    if result.oof_any is None or result.val_labels is None or result.val_is_gold is None:
        raise ValueError("this result has no out-of-fold scores")
    b = result.bundle
    lex = (
        result.oof_lexicon
        if result.oof_lexicon is not None
        else np.zeros(len(result.oof_any), bool)
    )
    y_any = result.val_labels.any(axis=1)
    neg_mask = ~y_any & result.val_is_gold
    tc = b.meta.get("train_config") or {}
    pos = y_any & result.val_is_gold
    t_any, _, _ = any_threshold(
        result.oof_any[pos & ~lex], result.oof_any[neg_mask], lex[neg_mask],
        leak_budget, tc.get("false_block_target"), tc.get("label_noise_quantile"),
        tc.get("label_noise_max_share", 0.1),
        result.calibration.get("any", {}).get("false_block_target_floor"),
        int((pos & lex).sum()) if tc.get("leak_budget_counts_vocabulary", False) else 0,
    )  # fmt: skip
    return replace(result, bundle=replace(b, any_threshold=t_any))


def segment_scores_for(
    bundle: FilterBundle, examples: Sequence[Example], embedder: TextEmbedder | None
) -> SegmentScores:
    """Segment-level scores of examples (evaluation, label review)."""
    return bundle.score_segments([e.turns for e in examples], embedder)
