"""Inter-annotator agreement, resolution of overlapped annotations, and the label-error check.

All pure functions over small typed views (no store, no Label Studio):

* :func:`agreement` -- per label group (``interests``, ``sensitive``), over items with two or more
  completed annotations: Krippendorff's alpha (nominal, the ``krippendorff`` package) and Cohen's
  kappa (scikit-learn, mean over annotator pairs weighted by shared units), overall and per
  annotator. Multi-label answers are binarised: one unit per (item, label), value 1 if chosen.
* :func:`resolve` -- what the annotations of one task amount to: ``wait`` (not enough independent
  annotations yet), ``skipped`` (only skips), ``gold`` (one annotation, or agreeing ones) or
  ``adjudicate`` (disagreement). A sensitive-category disagreement is resolved conservatively
  (union of the categories) as a *provisional* answer until an adjudicator decides.
* :func:`find_label_errors` -- confident learning (as in cleanlab's ``find_label_issues`` with
  per-class thresholds), binarised per label: a gold label is an issue when the model's
  out-of-sample probability of the opposite value is both above that value's per-class threshold
  (mean self-confidence of the items carrying it) and at least ``min_confidence``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

COMPLETED = "completed"
SKIPPED = "skipped"
CANCELLED = "cancelled"

GROUPS = ("interests", "sensitive")


@dataclass(frozen=True)
class AnnotationView:
    annotator: str
    status: str  # completed|skipped|cancelled
    interests: frozenset[str] = frozenset()
    sensitive: frozenset[str] = frozenset()
    updated_at: datetime | None = None
    ls_annotation_id: int = 0

    def labels(self, group: str) -> frozenset[str]:
        if group == "interests":
            return self.interests
        if group == "sensitive":
            return self.sensitive
        raise ValueError(f"unknown label group {group!r}")


def latest_per_annotator(annotations: Iterable[AnnotationView]) -> list[AnnotationView]:
    """One annotation per annotator: the latest (by update time, then id)."""
    best: dict[str, AnnotationView] = {}
    for a in annotations:
        cur = best.get(a.annotator)
        if cur is None or _key(a) > _key(cur):
            best[a.annotator] = a
    return [best[k] for k in sorted(best)]


def _key(a: AnnotationView) -> tuple[float, int]:
    return (a.updated_at.timestamp() if a.updated_at else 0.0, a.ls_annotation_id)


# ---- resolution --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolution:
    kind: Literal["wait", "skipped", "gold", "adjudicate"]
    interests: tuple[str, ...] = ()
    sensitive: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()
    why: str = ""


def resolve(annotations: Iterable[AnnotationView], required: int, min_jaccard: float) -> Resolution:
    """Resolve one task's annotations (see module doc). ``required``: independent annotations needed."""
    latest = latest_per_annotator(annotations)
    done = [a for a in latest if a.status == COMPLETED]
    who = tuple(a.annotator for a in done)
    required = max(1, required)
    if len(done) < required:
        skips = [a for a in latest if a.status != COMPLETED]
        if not done and len(skips) >= required:
            return Resolution("skipped", why=f"{len(skips)} skip(s), no completed annotation")
        return Resolution("wait", annotators=who, why=f"{len(done)}/{required} completed")
    if len(done) == 1:
        a = done[0]
        return Resolution(
            "gold", tuple(sorted(a.interests)), tuple(sorted(a.sensitive)), who, "single"
        )
    sens_union = frozenset().union(*(a.sensitive for a in done))
    sens_equal = all(a.sensitive == done[0].sensitive for a in done)
    worst = min(jaccard(a.interests, b.interests) for a, b in itertools.combinations(done, 2))
    if not sens_equal or worst < min_jaccard:
        why = "sensitive categories differ" if not sens_equal else f"interest Jaccard {worst:.2f}"
        return Resolution("adjudicate", (), tuple(sorted(sens_union)), who, why)
    counts: dict[str, int] = defaultdict(int)
    for a in done:
        for label in a.interests:
            counts[label] += 1
    majority = tuple(sorted(k for k, v in counts.items() if v * 2 > len(done)))
    return Resolution("gold", majority, tuple(sorted(done[0].sensitive)), who, "agreed")


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# ---- agreement ---------------------------------------------------------------------------------
@dataclass
class GroupAgreement:
    group: str
    n_items: int
    n_units: int
    alpha: float | None
    kappa: float | None
    per_annotator: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "n_units": self.n_units,
            "alpha": _round(self.alpha),
            "kappa": _round(self.kappa),
            "per_annotator": self.per_annotator,
        }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def krippendorff_alpha(matrix: np.ndarray) -> float | None:
    """Nominal alpha of an (annotators x units) matrix with NaN for missing; None if undefined."""
    import krippendorff

    usable = np.sum(~np.isnan(matrix), axis=0) >= 2
    if usable.sum() == 0:
        return None
    m = matrix[:, usable]
    values = m[~np.isnan(m)]
    if np.unique(values).size < 2:
        return None  # no variation at all: alpha is undefined
    return float(krippendorff.alpha(reliability_data=m, level_of_measurement="nominal"))


def cohen_kappa(y1: Sequence[int], y2: Sequence[int]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if not y1:
        return None
    if len(set(y1) | set(y2)) < 2:
        return None  # both constant and equal: kappa undefined
    k = float(cohen_kappa_score(list(y1), list(y2), labels=[0, 1]))
    return None if math.isnan(k) else k


def agreement(
    items: Mapping[str, Sequence[AnnotationView]], label_sets: Mapping[str, Sequence[str]]
) -> dict[str, GroupAgreement]:
    """Agreement per group over items with >= 2 completed annotations (latest per annotator).

    ``label_sets``: group -> every label of that group (e.g. the taxonomy ids; the policy categories).
    """
    overlapped: dict[str, list[AnnotationView]] = {}
    for cid, anns in items.items():
        done = [a for a in latest_per_annotator(anns) if a.status == COMPLETED]
        if len(done) >= 2:
            overlapped[cid] = done
    annotators = sorted({a.annotator for anns in overlapped.values() for a in anns})
    idx = {a: i for i, a in enumerate(annotators)}
    out: dict[str, GroupAgreement] = {}
    for group, labels in label_sets.items():
        labels = sorted(set(labels))
        n_units = len(overlapped) * len(labels)
        matrix = np.full((len(annotators), n_units), np.nan)
        for j, cid in enumerate(sorted(overlapped)):
            for ann in overlapped[cid]:
                chosen = ann.labels(group)
                for k, label in enumerate(labels):
                    matrix[idx[ann.annotator], j * len(labels) + k] = (
                        1.0 if label in chosen else 0.0
                    )
        alpha = krippendorff_alpha(matrix) if annotators else None
        pair_k: dict[tuple[str, str], tuple[float | None, int]] = {}
        for n1, n2 in itertools.combinations(annotators, 2):
            both = ~np.isnan(matrix[idx[n1]]) & ~np.isnan(matrix[idx[n2]])
            y1 = matrix[idx[n1], both].astype(int).tolist()
            y2 = matrix[idx[n2], both].astype(int).tolist()
            if y1:
                pair_k[(n1, n2)] = (cohen_kappa(y1, y2), len(y1))
        kappa = _weighted(list(pair_k.values()))
        per: dict[str, dict[str, Any]] = {}
        for name in annotators:
            mine = [v for (x, y), v in pair_k.items() if name in (x, y)]
            n_items = sum(
                1 for anns in overlapped.values() if any(z.annotator == name for z in anns)
            )
            per[name] = {"kappa": _round(_weighted(mine)), "n_items": n_items}
        out[group] = GroupAgreement(group, len(overlapped), n_units, alpha, kappa, per)
    return out


def _weighted(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    good = [(k, n) for k, n in pairs if k is not None and n > 0]
    total = sum(n for _, n in good)
    return sum(k * n for k, n in good) / total if total else None


# ---- label errors (confident learning) ---------------------------------------------------------
@dataclass(frozen=True)
class LabelIssue:
    conversation_id: str
    label: str
    gold_value: int  # 1: gold has the label, 0: gold lacks it
    p_label: float  # the model's probability of the label
    margin: float  # how far the contradicting probability is above its threshold


def find_label_errors(
    gold: Mapping[str, Iterable[str]],
    probs: Mapping[str, Mapping[str, float]],
    labels: Sequence[str],
    *,
    min_confidence: float = 0.9,
) -> list[LabelIssue]:
    """Gold labels that out-of-sample probabilities confidently contradict (see module doc).

    ``gold``: conversation id -> its gold labels; ``probs``: conversation id -> label -> P(label)
    (out-of-sample, e.g. cross-validated). Items missing from ``probs`` are ignored.
    """
    ids = sorted(c for c in gold if c in probs)
    issues: list[LabelIssue] = []
    for label in labels:
        y = np.array([1 if label in set(gold[c]) else 0 for c in ids], dtype=int)
        p = np.array([float(probs[c].get(label, 0.0)) for c in ids], dtype=float)
        if y.size == 0:
            continue
        # per-class thresholds: mean self-confidence of the items given that class
        t1 = float(p[y == 1].mean()) if (y == 1).any() else 1.0
        t0 = float((1 - p[y == 0]).mean()) if (y == 0).any() else 1.0
        for c, yi, pi in zip(ids, y, p, strict=True):
            if yi == 1:
                contra, thr = 1.0 - pi, t0
            else:
                contra, thr = pi, t1
            if contra >= thr and contra > 0.5 and contra >= min_confidence:
                issues.append(LabelIssue(c, label, int(yi), float(pi), float(contra - thr)))
    issues.sort(key=lambda i: (-i.margin, i.conversation_id, i.label))
    return issues
