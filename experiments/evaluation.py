"""Quality metrics of the targeting filter on labelled examples, and their artifacts.

Definitions (all on the frozen eval split):

* ``leak_rate``: share of gold-sensitive items the filter would pass (not blocked by any category).
* ``false_block_rate``: share of gold-non-sensitive items blocked.
* per category ``c``: ``recall`` = share of gold-``c`` items that are blocked (by any category: what
  matters for privacy), ``category_recall``/``precision``/``f1`` = exact-category detection.
* interests (only items whose gold interests are known): micro/macro precision, recall, F1 of the
  classifier's interests above threshold (independent of blocking), and ``interest_micro_f1_e2e``
  (what the filter outputs: no interests for blocked items) on gold-non-sensitive items.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments.dataset import Example
from targeting.scorer import ContentVerdict, FilterBundle, ScoreBatch, TextEmbedder

if TYPE_CHECKING:
    from experiments.composition import ComposedSet


@dataclass
class EvalReport:
    n: int
    n_sensitive: int
    n_non_sensitive: int
    leak_rate: float
    false_block_rate: float
    per_category: dict[str, dict[str, float]]
    interest_micro_f1: float
    interest_macro_f1: float
    interest_micro_precision: float
    interest_micro_recall: float
    interest_micro_f1_e2e: float
    n_interest_items: int
    per_interest: dict[str, dict[str, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat metric dict (MLflow-friendly keys; NaN where undefined)."""
        out: dict[str, float] = {
            "n_eval": float(self.n),
            "n_eval_sensitive": float(self.n_sensitive),
            "leak_rate": self.leak_rate,
            "false_block_rate": self.false_block_rate,
            "interest_micro_f1": self.interest_micro_f1,
            "interest_macro_f1": self.interest_macro_f1,
            "interest_micro_precision": self.interest_micro_precision,
            "interest_micro_recall": self.interest_micro_recall,
            "interest_micro_f1_e2e": self.interest_micro_f1_e2e,
            "n_eval_interest_items": float(self.n_interest_items),
        }
        for cat, m in self.per_category.items():
            for k in ("recall", "precision", "category_recall", "f1", "support"):
                out[f"{k}_{cat}"] = m[k]
        return out

    def table_rows(self) -> list[dict[str, Any]]:
        return [{"category": c, **m} for c, m in self.per_category.items()]

    def table_csv(self) -> str:
        buf = io.StringIO()
        cols = [
            "category",
            "support",
            "recall",
            "category_recall",
            "precision",
            "f1",
            "tp",
            "fp",
            "fn",
        ]
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in self.table_rows():
            w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def table_markdown(self) -> str:
        lines = [
            f"leak rate: {_fmt(self.leak_rate)} | false-block rate: {_fmt(self.false_block_rate)} | "
            f"interest micro-F1: {_fmt(self.interest_micro_f1)} | macro-F1: {_fmt(self.interest_macro_f1)} "
            f"(n={self.n}, sensitive={self.n_sensitive}, interest items={self.n_interest_items})",
            "",
            "| category | support | recall (blocked) | category recall | precision | F1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c, m in self.per_category.items():
            lines.append(
                f"| {c} | {int(m['support'])} | {_fmt(m['recall'])} | {_fmt(m['category_recall'])} | "
                f"{_fmt(m['precision'])} | {_fmt(m['f1'])} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")


def evaluate_verdicts(
    examples: Sequence[Example], verdicts: Sequence[ContentVerdict], categories: Sequence[str]
) -> EvalReport:
    """Compute the report from content verdicts (rows follow ``examples``)."""
    if len(examples) != len(verdicts):
        raise ValueError(f"{len(examples)} examples but {len(verdicts)} verdicts")
    sens = [bool(e.sensitive) for e in examples]
    blocked = [v.blocked for v in verdicts]
    n_s = sum(sens)
    n_ns = len(examples) - n_s
    leaks = sum(1 for s, b in zip(sens, blocked, strict=True) if s and not b)
    fblocks = sum(1 for s, b in zip(sens, blocked, strict=True) if not s and b)
    per_cat: dict[str, dict[str, float]] = {}
    for c in categories:
        gold = [c in e.sensitive for e in examples]
        pred = [c in v.sensitive for v in verdicts]
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g and p)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if p and not g)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g and not p)
        sup = sum(gold)
        blk = sum(1 for g, b in zip(gold, blocked, strict=True) if g and b)
        per_cat[c] = {
            "support": float(sup),
            "recall": _div(blk, sup),
            "category_recall": _div(tp, sup),
            "precision": _div(tp, tp + fp),
            "f1": _f1(tp, fp, fn),
            "tp": float(tp),
            "fp": float(fp),
            "fn": float(fn),
        }
    # interests
    labels: set[str] = set()
    tp_t = fp_t = fn_t = 0
    tp_e = fp_e = fn_e = 0
    per_label: dict[str, list[int]] = {}
    n_int = 0
    for e, v in zip(examples, verdicts, strict=True):
        if e.interests is None:
            continue
        n_int += 1
        gold_i = set(e.interests)
        pred_i = {i for i, _ in v.interests}
        labels |= gold_i | pred_i
        tp_t += len(gold_i & pred_i)
        fp_t += len(pred_i - gold_i)
        fn_t += len(gold_i - pred_i)
        for lab in gold_i | pred_i:
            cnt = per_label.setdefault(lab, [0, 0, 0])
            cnt[0] += int(lab in gold_i and lab in pred_i)
            cnt[1] += int(lab in pred_i and lab not in gold_i)
            cnt[2] += int(lab in gold_i and lab not in pred_i)
        if not e.sensitive:
            pred_e = set() if v.blocked else pred_i
            tp_e += len(gold_i & pred_e)
            fp_e += len(pred_e - gold_i)
            fn_e += len(gold_i - pred_e)
    per_interest = {
        lab: {
            "f1": _f1(*c),
            "precision": _div(c[0], c[0] + c[1]),
            "recall": _div(c[0], c[0] + c[2]),
            "support": float(c[0] + c[2]),
        }
        for lab, c in sorted(per_label.items())
    }
    macro_vals = [
        m["f1"] for m in per_interest.values() if m["support"] > 0 and not math.isnan(m["f1"])
    ]
    if n_int and tp_t + fp_t + fn_t == 0:
        micro = 1.0  # every gold set empty and nothing predicted: perfect
    else:
        micro = _f1(tp_t, fp_t, fn_t) if n_int else float("nan")
    return EvalReport(
        n=len(examples),
        n_sensitive=n_s,
        n_non_sensitive=n_ns,
        leak_rate=_div(leaks, n_s),
        false_block_rate=_div(fblocks, n_ns),
        per_category=per_cat,
        interest_micro_f1=micro,
        interest_macro_f1=float(np.mean(macro_vals)) if macro_vals else float("nan"),
        interest_micro_precision=_div(tp_t, tp_t + fp_t),
        interest_micro_recall=_div(tp_t, tp_t + fn_t),
        interest_micro_f1_e2e=_f1(tp_e, fp_e, fn_e) if n_int else float("nan"),
        n_interest_items=n_int,
        per_interest=per_interest,
    )


def evaluate_bundle(
    bundle: FilterBundle,
    examples: Sequence[Example],
    embedder: TextEmbedder | None,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalReport, ScoreBatch, list[ContentVerdict]]:
    """Score ``examples`` with ``bundle`` and compute the report; ``progress(done, total)``
    after every ``batch_size`` conversations."""
    batches = []
    for start in range(0, len(examples), batch_size):
        batches.append(
            bundle.score([e.turns for e in examples[start : start + batch_size]], embedder)
        )
        if progress is not None:
            progress(min(start + batch_size, len(examples)), len(examples))
    batch = concat_batches(batches, len(bundle.categories), len(bundle.interest_ids))
    verdicts = bundle.verdicts(batch)
    return evaluate_verdicts(examples, verdicts, bundle.categories), batch, verdicts


@dataclass(frozen=True)
class LongDialogueReport:
    """Composed long dialogues (``experiments.composition``): a sensitive turn block inserted
    late must block; a neutral one must not."""

    n_sensitive: int
    n_controls: int
    leak_rate: float
    control_false_block_rate: float
    trigger_is_inserted_turn: float  # share of blocked items whose trigger is the inserted block

    def metrics(self) -> dict[str, float]:
        return {
            "long_dialogue_leak_rate": self.leak_rate,
            "long_dialogue_control_false_block_rate": self.control_false_block_rate,
            "n_long_dialogues": float(self.n_sensitive),
        }


def evaluate_long_dialogues(
    bundle: FilterBundle,
    examples: Sequence[Example],
    embedder: TextEmbedder | None,
    *,
    n: int = 200,
    seed: int = 0,
    max_donor_turns: int = 4,
    max_donor_chars: int = 1000,
    n_controls: int | None = None,
    spread_hosts: bool = False,
) -> LongDialogueReport:
    """Compose up to ``n`` sensitive long dialogues and ``n_controls`` (default ``n``) controls
    from ``examples`` (chaining short clean ones into hosts when there are no long ones; hosts
    used evenly with ``spread_hosts``) and score them."""
    from experiments.composition import compose_long_dialogues

    comp = compose_long_dialogues(
        examples, n=n, seed=seed, max_donor_turns=max_donor_turns,
        max_donor_chars=max_donor_chars, chain_hosts=True, n_controls=n_controls,
        spread_hosts=spread_hosts,
    )  # fmt: skip
    verdicts = evaluate_bundle(bundle, list(comp.examples), embedder)[2] if comp.examples else []
    return long_dialogue_report(comp, verdicts)


def long_dialogue_report(
    comp: ComposedSet, verdicts: Sequence[ContentVerdict]
) -> LongDialogueReport:
    """The report of composed long dialogues from their verdicts (in ``comp.examples``' order:
    the sensitive items, then the controls)."""
    if not comp.examples:
        return LongDialogueReport(0, 0, float("nan"), float("nan"), float("nan"))
    ns = len(comp.sensitive)
    sens, ctrl = verdicts[:ns], verdicts[ns:]
    hits = []
    for e, x in zip(comp.sensitive, sens, strict=True):
        if x.blocked and x.trigger_turn is not None:
            a, b = comp.spans[e.conversation_id]
            hits.append(a <= x.trigger_turn < b)
    return LongDialogueReport(
        ns,
        len(ctrl),
        _div(sum(1 for x in sens if not x.blocked), ns),
        _div(sum(1 for x in ctrl if x.blocked), len(ctrl)),
        _div(sum(hits), len(hits)),
    )


def concat_batches(
    batches: Sequence[ScoreBatch], n_categories: int, n_interests: int
) -> ScoreBatch:
    """One :class:`ScoreBatch` from consecutive ones."""
    if not batches:
        return ScoreBatch(
            np.zeros((0, n_categories)), np.zeros(0), [], np.zeros((0, n_interests)),
            np.zeros(0), [], [],
        )  # fmt: skip
    return ScoreBatch(
        np.vstack([b.sensitive for b in batches]),
        np.concatenate([b.any for b in batches]),
        [h for b in batches for h in b.lexicon_hits],
        np.vstack([b.interests for b in batches]),
        np.concatenate([b.margin for b in batches]),
        [t for b in batches for t in b.trigger_turn],
        [t for b in batches for t in b.turn_scores],
    )


# ------------------------------------------------------------------------------------ artifacts
def write_artifacts(
    report: EvalReport,
    examples: Sequence[Example],
    batch: ScoreBatch,
    verdicts: Sequence[ContentVerdict],
    bundle: FilterBundle,
    out_dir: Path,
) -> list[Path]:
    """Confusion matrices + PR curves (PNG), the per-category table (CSV + markdown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    (out_dir / "per_category_metrics.csv").write_text(report.table_csv(), encoding="utf-8")
    (out_dir / "per_category_metrics.md").write_text(report.table_markdown(), encoding="utf-8")
    paths += [out_dir / "per_category_metrics.csv", out_dir / "per_category_metrics.md"]

    cats = list(bundle.categories)
    ncols = 4
    nrows = math.ceil((len(cats) + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    panels: list[tuple[str, list[bool], list[bool]]] = [
        (
            "any sensitive (blocked)",
            [bool(e.sensitive) for e in examples],
            [v.blocked for v in verdicts],
        )
    ]
    panels += [
        (c, [c in e.sensitive for e in examples], [c in v.sensitive for v in verdicts])
        for c in cats
    ]
    for ax, (title, gold_f, pred_f) in zip(axes.flat, panels, strict=False):
        m = np.zeros((2, 2), dtype=int)
        for g, pr in zip(gold_f, pred_f, strict=True):
            m[int(g), int(pr)] += 1
        ax.imshow(m, cmap="Blues")
        for (i, j), val in np.ndenumerate(m):
            ax.text(j, i, str(val), ha="center", va="center")
        ax.set_xticks([0, 1], ["pass", "block"])
        ax.set_yticks([0, 1], ["gold no", "gold yes"])
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    p = out_dir / "confusion_matrices.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(6, 5))
    for j, c in enumerate(cats):
        y = np.array([c in e.sensitive for e in examples])
        if y.sum() == 0 or y.all():
            continue
        prec, rec, _ = precision_recall_curve(y, batch.sensitive[:, j])
        ax.plot(rec, prec, label=f"{c} (n={int(y.sum())})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("sensitive categories: precision-recall (eval split)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "pr_curves_sensitive.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)

    known = [i for i, e in enumerate(examples) if e.interests is not None]
    if known and bundle.interest_ids:
        fig, ax = plt.subplots(figsize=(6, 5))
        for j, iid in enumerate(bundle.interest_ids):
            y = np.array([iid in (examples[i].interests or ()) for i in known])
            if y.sum() == 0 or y.all():
                continue
            prec, rec, _ = precision_recall_curve(y, batch.interests[known, j])
            ax.plot(rec, prec, label=bundle.interest_names.get(iid, iid))
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("interests: precision-recall (eval split)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        p = out_dir / "pr_curves_interests.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths
