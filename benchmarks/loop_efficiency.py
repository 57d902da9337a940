"""Loop efficiency: human labels needed by labelloop routing vs random sampling.

    uv run --no-sync python -m benchmarks.loop_efficiency [--data DIR] [--out DIR] [--quick]
        [--synthetic N] [--fake-embeddings] [--llm] [--pool N --test N --rounds R --budget B]

* Data: records with gold labels (default ``../shared/data/dev``; or ``--synthetic N`` records from
  :func:`labeling.synth.generate`). Each file is subsampled deterministically (hash of the id; the
  quota is shared evenly between files, small files give what they have) and split into an
  **unlabeled pool** (gold hidden from the system, only the annotator simulation reads it) and a
  fixed **test split** (never in the pool). Texts are redacted exactly as in serving. No eligibility
  gate is applied (as in ``benchmarks/filter_quality.py``): the filter is what is measured.
* Start: the cold-start seed examples only (kNN index + training data of every arm).
* Each round ``r`` the next ``pool/R`` slice of the pool (same order for every arm) arrives:

  (a) ``labelloop``: the proposer (kNN + the arm's latest classifier; the LLM only with ``--llm``)
      proposes for the slice, :func:`labeling.routing.route` picks at most ``B`` items for review
      (sensitive-suspect first, the QA sample, then the rest; within each tier the settings'
      ``review_selection`` order -- ``diverse`` by default: uncertainty x density x novelty over
      MiniLM vectors, see :func:`labeling.routing.diverse_order`; items over budget stay queued
      and compete again next round, re-proposed with the latest model unless ``--llm``); the rest
      is auto-accepted as **silver** (weight 0.8);
  (b) ``random``: the same number of items as (a) sent this round, drawn at random among the pool
      items seen so far and not yet reviewed; trained on gold only (seed + reviewed);
  (c) ``silver_only``: no humans: every proposal becomes a silver label (kNN + classifier
      self-training; + LLM with ``--llm``);
  (d) ``full``: every pool item seen so far with its exact gold label (the ceiling).

  Reviews are answered from gold by :func:`labeling.annotator_sim.noisy_answer` (``--noise`` = the
  chance that an answer is perturbed once). Items with overlap 2 (every sensitive-suspect item in
  (a), a seeded ``--overlap-share`` of the others in (a) and (b)) get two independent annotators:
  sensitive categories are resolved as the **union**, differing interests by a third (adjudicator)
  answer. Reviewed items join the arm's gold labels and its kNN index (ephemeral Chroma client).
  Then the arm retrains (:func:`experiments.training.train_filter`) and is evaluated on the test
  split (:func:`experiments.evaluation.evaluate_bundle`).
* Per round and arm: human-labelled items (and their share of the pool), annotations, LLM calls,
  leak rate, false-block rate, per-category sensitive recall (blocked), interest micro-F1, wall time.
* Output (``--out``): ``loop_efficiency.csv``, ``loop_efficiency.png`` (leak rate and interest
  micro-F1 vs human labels, one line per arm), ``loop_efficiency.md`` (table + headline) and
  ``loop_efficiency.json``. Seeds (``--seeds``, default 0,1,2): each seed redraws the pool/test
  split, the arrival order, the annotator noise and the random arm; the table and the thick plot
  lines are the mean over seeds (F1 ± sd), thin lines the single seeds. Headline: the human-label share at which (a) first reaches 97 % of (d)'s
  final interest micro-F1 with leak rate <= 2 %, and the same for (b) ("not reached" otherwise).

Embeddings: MiniLM by default (each distinct text embedded once per run; vectors of
``benchmarks/filter_quality.py``'s on-disk cache are reused when present); ``--fake-embeddings``
uses the hashing stand-in (smoke tests, synthetic data). The LLM is off by default (2-8 s per
conversation on 2 CPU cores): pass ``--llm`` to include it (the output says which was used).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.dataset import (  # noqa: E402
    SILVER_MIN_CONFIDENCE,
    Example,
    Snapshot,
    example_from_record,
    unit_hash,
)
from labeling.annotator_sim import noisy_answer  # noqa: E402
from labeling.routing import ProposalView, RoutingConfig, overlap_for, route, unit_draw  # noqa: E402

if TYPE_CHECKING:
    from labeling.proposals import Proposal, Proposer
    from labeling.taxonomy import Taxonomy
    from targeting.scorer import FilterBundle

ARMS: tuple[str, ...] = ("labelloop", "random", "silver_only", "full")
ARM_LETTER = {"labelloop": "a", "random": "b", "silver_only": "c", "full": "d"}
SILVER_WEIGHT = 0.8  # = the store's default silver_precision
SUBSAMPLE_SALT = "bench-v1-subsample"  # same as filter_quality.py: its embedding cache applies
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dev"
DEFAULT_OUT = ROOT / ".labelloop" / "bench" / "loop_efficiency"
DEFAULT_CACHE = ROOT / ".labelloop" / "cache" / "bench-embeddings-L128.npz"
F1_FRACTION = 0.97
MAX_LEAK = 0.02
MAX_FALSE_BLOCK = 0.10  # the filter's false-block target (benchmarks/filter_quality.py)


# ------------------------------------------------------------------------------------ data
def split_pool_test(
    groups: Mapping[str, Sequence[Example]], pool_size: int, test_size: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """(pool in arrival order, test): per-group quotas, hash-ordered, deterministic by ``seed``.

    The total ``pool_size + test_size`` is shared evenly between groups (a group smaller than its
    share gives all it has, the rest goes to the others); each group's chosen items are split in
    the test/pool ratio. The pool order is a seeded hash order (the same for every arm).
    """
    if pool_size < 1 or test_size < 1:
        raise ValueError("pool and test sizes must be >= 1")
    total = pool_size + test_size
    names = sorted(groups, key=lambda g: (len(groups[g]), g))
    remaining = total
    pool: list[Example] = []
    test: list[Example] = []
    for i, name in enumerate(names):
        items = sorted(groups[name], key=lambda e: unit_hash(e.conversation_id, SUBSAMPLE_SALT))
        quota = min(len(items), remaining // (len(names) - i))
        remaining -= quota
        chosen = sorted(items[:quota], key=lambda e: unit_hash(e.conversation_id, f"split-{seed}"))
        k = round(quota * test_size / total)
        test += chosen[:k]
        pool += chosen[k:]
    pool.sort(key=lambda e: unit_hash(e.conversation_id, f"pool-order-{seed}"))
    test.sort(key=lambda e: e.conversation_id)
    return pool[:pool_size], test[:test_size]


def load_groups(
    data_dir: Path | None,
    synthetic: int | None,
    seed: int,
    taxonomy: Taxonomy,
    categories: Sequence[str],
) -> tuple[dict[str, list[Example]], list[str]]:
    """Examples with gold per source file (or one synthetic group); bad records are listed, skipped."""
    from labeling.records import Conversation, read_records

    errors: list[str] = []
    groups: dict[str, list[Example]] = {}

    def add(name: str, convs: Iterable[Any]) -> None:
        out: list[Example] = []
        for c in convs:
            if not isinstance(c, Conversation):
                continue
            try:
                ex = example_from_record(c, taxonomy, categories)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if ex is not None:
                out.append(ex)
        groups[name] = out

    if synthetic:
        from labeling.synth import generate

        convs = []
        for n, rec in enumerate(generate(synthetic, seed)):
            try:
                convs.append(Conversation.model_validate(rec))
            except Exception as exc:  # a bad synthetic record is reported, not fatal
                errors.append(f"synthetic record {n}: {exc}")
        add("synthetic", convs)
    else:
        assert data_dir is not None
        files = sorted(Path(data_dir).glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"no *.jsonl record files in {data_dir}")
        for f in files:
            add(f.stem, read_records([f]))
    return groups, errors


# ------------------------------------------------------------------------------------ embeddings
class TextCache:
    """Embeds each distinct text once per run (optionally pre-filled from an .npz keyed by sha256)."""

    def __init__(
        self, inner: Any, disk_cache: Path | None = None, model_id: str | None = None
    ) -> None:
        self.inner = inner
        self.model_id = model_id or str(getattr(inner, "model_id", type(inner).__name__))
        self.cache: dict[str, npt.NDArray[np.float32]] = {}
        self.disk: dict[str, npt.NDArray[np.float32]] = {}
        self.embedded = 0
        if disk_cache is not None and disk_cache.exists():
            with np.load(disk_cache) as z:
                self.disk = {k: z[k] for k in z.files}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        todo: list[str] = []
        for t in dict.fromkeys(texts):
            if t in self.cache:
                continue
            hit = self.disk.get(hashlib.sha256(t.encode("utf-8")).hexdigest())
            if hit is not None:
                self.cache[t] = np.asarray(hit, dtype=np.float32)
            else:
                todo.append(t)
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            vecs = np.asarray(self.inner.embed(chunk), dtype=np.float32)
            for t, v in zip(chunk, vecs, strict=True):
                self.cache[t] = v
            self.embedded += len(chunk)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def chroma_function(embedder: TextCache) -> Any:
    """A chromadb EmbeddingFunction over the run's text cache."""
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

    class _EF(EmbeddingFunction[Documents]):
        def __init__(self, inner: TextCache) -> None:
            self.embedder = inner

        def __call__(self, input: Documents) -> Embeddings:
            return list(self.embedder.embed(list(input)))

        @staticmethod
        def name() -> str:
            return "labelloop-bench-cache"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Any:
            raise NotImplementedError("benchmark-only embedding function")

    return _EF(embedder)


class BundleClassifier:
    """A trained FilterBundle as the proposer's classifier: scores mapped so threshold -> 0.5."""

    def __init__(self, bundle: FilterBundle, embedder: Any, model_id: str) -> None:
        self.bundle = bundle
        self.embedder = embedder
        self.model_id = model_id

    @staticmethod
    def to_prob(score: float, thr: float) -> float:
        """Piecewise-linear map with ``thr`` -> 0.5 (scores are not comparable across labels)."""
        s = min(1.0, max(0.0, float(score)))
        t = min(0.999, max(1e-3, float(thr)))
        return 0.5 * s / t if s < t else 0.5 + 0.5 * (s - t) / (1.0 - t)

    def predict_proba(
        self, texts: Sequence[str]
    ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        b = self.bundle
        batch = b.score([t.split("\n") for t in texts], self.embedder)
        ints: list[dict[str, float]] = []
        sens: list[dict[str, float]] = []
        for r in range(len(texts)):
            ints.append(
                {
                    iid: round(
                        self.to_prob(batch.interests[r, j], b.interest_thresholds.get(iid, 0.5)), 4
                    )
                    for j, iid in enumerate(b.interest_ids)
                }
            )
            sens.append(
                {
                    c: round(
                        self.to_prob(
                            batch.sensitive[r, j],
                            min(b.sensitive_thresholds.get(c, 1.01), b.any_threshold),
                        ),
                        4,
                    )
                    for j, c in enumerate(b.categories)
                }
            )
        return ints, sens


@dataclass
class SimulatedProposer:
    """A what-if proposer of known quality, answering from the hidden gold (``--simulated-proposer``).

    Per item (seeded): with probability ``coverage`` the proposal is *confident* (every label 0.97 or
    absent, uncertainty 0.05: routing auto-accepts it unless QA-sampled) and correct with
    probability ``precision`` (else the gold answer perturbed once: a missing or extra interest or
    sensitive category -- confident mistakes, the ones that become wrong silver labels); otherwise
    it is *unsure* (labels at 0.6, uncertainty 0.9: it needs review). Not a model: it says what
    the loop would deliver if the proposer (the LLM) reached that quality.
    """

    gold: Mapping[str, Example]
    coverage: float
    precision: float
    seed: int
    interest_pool: Sequence[str]
    categories: Sequence[str]
    index: Any = None
    classifier: Any = None

    def propose(self, items: Sequence[Any], stats: Any = None) -> list[Proposal]:
        from labeling.proposals import Proposal

        out: list[Proposal] = []
        for it in items:
            g = self.gold[it.conversation_id]
            rng = _rng(self.seed, "simulated-proposer", it.conversation_id)
            confident = rng.random() < self.coverage
            acc = self.precision if confident else 0.5
            ints, sens, _ = noisy_answer(
                g.interests or (), g.sensitive, accuracy=acc, rng=rng,
                interest_pool=self.interest_pool, categories=self.categories,
            )  # fmt: skip
            conf = 0.97 if confident else 0.6
            out.append(
                Proposal(
                    conversation_id=it.conversation_id,
                    interests=dict.fromkeys(ints, conf),
                    sensitive=dict.fromkeys(sens, conf),
                    uncertainty=0.05 if confident else 0.9,
                    flags=["possible_sensitive"] if sens else [],
                    proposer_id="simulated",
                    prompt_hash="simulated",
                    model_id=f"simulated(coverage={self.coverage}, precision={self.precision})",
                    embedding_model_id=None,
                    llm_called=False,
                    source="simulated",
                )
            )
            if stats is not None:
                stats.n += 1
        return out


def parse_simulated(spec: str | None) -> tuple[float, float] | None:
    """``"COVERAGE:PRECISION"`` (both in [0, 1]) -> the pair; None/'' -> None."""
    if not spec:
        return None
    try:
        cov, prec = (float(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(
            f"--simulated-proposer {spec!r}: expected COVERAGE:PRECISION, e.g. 0.6:0.95"
        ) from None
    if not (0.0 <= cov <= 1.0 and 0.0 <= prec <= 1.0):
        raise ValueError(f"--simulated-proposer {spec!r}: both numbers must be in [0, 1]")
    return cov, prec


# ------------------------------------------------------------------------------------ sampling logic
def view_of(
    p: Proposal, text: str | None = None, embedding: Sequence[float] | None = None
) -> ProposalView:
    return ProposalView(
        conversation_id=p.conversation_id,
        interests=dict(p.interests),
        sensitive=dict(p.sensitive),
        uncertainty=float(p.uncertainty),
        flags=frozenset(p.flags),
        proposer_id=p.proposer_id,
        text=text,
        embedding=embedding,
    )


@dataclass(frozen=True)
class Selection:
    send: list[str]  # reviewed this round
    auto: list[str]  # auto-accepted (silver), not reviewed
    queued: list[str]  # needs review, over budget: waits
    overlap: dict[str, int]  # annotators per sent item


def select_labelloop(views: Sequence[ProposalView], cfg: RoutingConfig) -> Selection:
    """Arm (a): labelloop routing. QA-sampled items are sent (and keep no silver label)."""
    res = route(views, cfg)
    send = sorted(d.conversation_id for d in res.to_send)
    sent = set(send)
    auto = sorted(d.conversation_id for d in res.auto_accepted if d.conversation_id not in sent)
    queued = sorted(d.conversation_id for d in res.queued)
    overlap = {d.conversation_id: max(1, d.overlap) for d in res.to_send}
    return Selection(send, auto, queued, overlap)


def select_random(
    candidates: Sequence[str], n: int, seed: int, round_no: int, cfg: RoutingConfig
) -> Selection:
    """Arm (b): ``n`` seeded-random items among ``candidates``; overlap share as in (a) (no sensitive rule)."""
    order = sorted(candidates, key=lambda c: (unit_draw(seed, f"random-arm-{round_no}", c), c))
    send = sorted(order[: max(0, n)])
    return Selection(send, [], [], {c: overlap_for(c, False, cfg) for c in send})


def silver_example(
    p: Proposal, text: str, threshold: float = SILVER_MIN_CONFIDENCE, weight: float = SILVER_WEIGHT
) -> Example:
    """An auto-accepted proposal as a down-weighted training example (like the store's silver)."""
    return Example(
        conversation_id=p.conversation_id,
        turns=text,  # type: ignore[arg-type]  # a conversation text: one turn per line
        sensitive=tuple(sorted(c for c, v in p.sensitive.items() if v >= threshold)),
        interests=tuple(sorted(i for i, v in p.interests.items() if v >= threshold)),
        weight=weight,
        origin="silver",
    )


def _rng(seed: int, *parts: object) -> random.Random:
    h = hashlib.sha256("\x1f".join([str(seed), *map(str, parts)]).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def annotate(
    ex: Example,
    *,
    overlap: int,
    accuracy: float,
    seed: int,
    interest_pool: Sequence[str],
    categories: Sequence[str],
) -> tuple[Example, int]:
    """Simulated review of one item: (resolved label, annotations spent).

    ``overlap`` annotators answer independently; sensitive = union of their answers; differing
    interests are settled by one more (adjudicator) answer. Unknown gold interests stay unknown.
    """
    answers = []
    for k in range(max(1, overlap)):
        ints, sens, _ = noisy_answer(
            ex.interests or (),
            ex.sensitive,
            accuracy=accuracy,
            rng=_rng(seed, "answer", ex.conversation_id, k),
            interest_pool=interest_pool,
            categories=categories,
        )
        answers.append((tuple(ints), tuple(sens)))
    spent = len(answers)
    sens_u = sorted({c for _, s in answers for c in s})
    ints_set = {a[0] for a in answers}
    if len(ints_set) == 1:
        ints_r = answers[0][0]
    else:
        adj, _, _ = noisy_answer(
            ex.interests or (),
            ex.sensitive,
            accuracy=accuracy,
            rng=_rng(seed, "adjudicate", ex.conversation_id),
            interest_pool=interest_pool,
            categories=categories,
        )
        ints_r = tuple(adj)
        spent += 1
    return (
        Example(
            conversation_id=ex.conversation_id,
            turns=ex.turns,
            sensitive=tuple(sens_u),
            interests=None if ex.interests is None else tuple(sorted(ints_r)),
            weight=1.0,
            origin="human",
        ),
        spent,
    )


# ------------------------------------------------------------------------------------ metrics
def silver_quality(silver: Sequence[Example], gold: Mapping[str, Example]) -> dict[str, Any]:
    """Quality of auto-accepted labels, measured against the hidden gold (the benchmark can).

    ``silver_interest_precision``: micro precision of silver interests on items whose gold
    interests are known (nan without any); ``silver_sensitive_missed``: silver items whose gold is
    sensitive but whose silver label has no sensitive category (they train the filter to leak).
    """
    tp = fp = 0
    missed = 0
    for x in silver:
        g = gold[x.conversation_id]
        if g.sensitive and not x.sensitive:
            missed += 1
        if g.interests is not None:
            tp += len(set(x.interests or ()) & set(g.interests))
            fp += len(set(x.interests or ()) - set(g.interests))
    return {
        "silver_interest_precision": tp / (tp + fp) if tp + fp else math.nan,
        "silver_sensitive_missed": missed,
    }


METRIC_COLS = ("human_share", "leak_rate", "false_block_rate", "interest_micro_f1")


def reach_share(
    rows: Sequence[Mapping[str, Any]],
    arm: str,
    ceiling_f1: float,
    *,
    fraction: float = F1_FRACTION,
    max_leak: float = MAX_LEAK,
    max_false_block: float | None = None,
) -> float | None:
    """The smallest human-label share at which ``arm`` has F1 >= fraction * ceiling and leak <= max
    (and, when ``max_false_block`` is given, false-block rate <= it)."""
    if ceiling_f1 is None or math.isnan(ceiling_f1):
        return None
    ok = [
        float(r["human_share"])
        for r in rows
        if r["arm"] == arm
        and _num(r["interest_micro_f1"]) >= fraction * ceiling_f1 - 1e-12
        and _num(r["leak_rate"], default=1.0) <= max_leak + 1e-12
        and (
            max_false_block is None
            or _num(r["false_block_rate"], default=1.0) <= max_false_block + 1e-12
        )
    ]
    return min(ok) if ok else None


def _num(v: Any, default: float = -1.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def headline(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Arm (d)'s final F1 (the ceiling) and the reach shares of (a) and (b), with the targets."""
    full = [r for r in rows if r["arm"] == "full"]
    ceiling = (
        _num(max(full, key=lambda r: int(r["round"]))["interest_micro_f1"], math.nan)
        if full
        else math.nan
    )
    out: dict[str, Any] = {
        "ceiling_f1": ceiling,
        "f1_target": F1_FRACTION * ceiling if not math.isnan(ceiling) else None,
    }
    for arm in ("labelloop", "random"):
        out[f"{arm}_share"] = reach_share(rows, arm, ceiling)
        # stricter: a filter that blocks most of everything also has a low leak rate
        out[f"{arm}_share_fb10"] = reach_share(rows, arm, ceiling, max_false_block=MAX_FALSE_BLOCK)
    a, b = out["labelloop_share"], out["random_share"]
    out["target_a_le_half_b"] = None if a is None or b is None else a <= 0.5 * b
    out["target_a_le_15pct"] = None if a is None else a <= 0.15
    return out


def fmt_share(v: float | None) -> str:
    return "not reached" if v is None else f"{100 * v:.1f} % of the pool"


# ------------------------------------------------------------------------------------ the run
@dataclass
class Config:
    data_dir: Path | None = DEFAULT_DATA
    synthetic: int | None = None
    out: Path = DEFAULT_OUT
    pool: int = 2000
    test: int = 800
    rounds: int = 8
    budget: int = 150
    noise: float = 0.05
    overlap_share: float = 0.2
    qa_rate: float = 0.05
    seed: int = 0
    seeds: tuple[int, ...] = ()  # empty: (seed,)
    llm: bool = False
    simulated_proposer: str | None = None  # "COVERAGE:PRECISION": what-if proposer from gold
    label_noise_quantile: float | str | None = "default"  # training; "default": TrainConfig's
    fake_embeddings: bool = False
    arms: tuple[str, ...] = ARMS
    max_length: int = 128
    embedding_cache: Path | None = DEFAULT_CACHE
    models_dir: Path = ROOT / ".labelloop" / "models"
    uncertainty_threshold: float | None = None
    sensitive_confidence: float | None = None
    selection: str | None = None
    sensitive_share: float | None = None
    explore_share: float | None = None
    silver_weight: float = (
        SILVER_WEIGHT  # arm (a)'s auto-accepted labels; 0 = train (a) on gold only
    )
    repropose_queued: bool | None = (
        None  # re-propose (a)'s queued items each round; None: unless --llm
    )
    quiet: bool = False


@dataclass
class ArmState:
    name: str
    gold: dict[str, Example] = field(default_factory=dict)
    silver: dict[str, Example] = field(default_factory=dict)
    queued: dict[str, Proposal] = field(default_factory=dict)
    reviewed: set[str] = field(default_factory=set)
    annotations: int = 0
    llm_calls: int = 0
    proposer: Proposer | SimulatedProposer | None = None
    wall_s: float = 0.0


def _log(cfg: Config, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def run(cfg: Config) -> dict[str, Any]:
    """Run the benchmark for every seed in ``cfg.seeds``; returns {rows, headline, paths, meta}.

    ``rows`` holds one row per (seed, arm, round) plus, with several seeds, the mean over seeds
    (``seed == "mean"``, with ``interest_micro_f1_sd``); the headline is computed on the mean rows
    (one seed: on that seed's rows) and per seed (``meta["per_seed"]``). Writes ``cfg.out``.
    """
    seeds = tuple(dict.fromkeys(cfg.seeds or (cfg.seed,)))
    t_start = time.perf_counter()
    shared: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    per_seed: dict[int, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    for sd in seeds:
        rows, meta = _run_seed(replace(cfg, seed=sd), shared)
        for r in rows:
            r["seed"] = sd
        all_rows += rows
        h = headline(rows)
        per_seed[sd] = {k: h[k] for k in ("ceiling_f1", "labelloop_share", "random_share")}
    mean = mean_rows(all_rows) if len(seeds) > 1 else []
    head = headline(mean or all_rows)
    meta = {
        **meta,
        "seeds": list(seeds),
        "per_seed": per_seed,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    paths = write_outputs(cfg.out, all_rows + mean, head, meta)
    return {"rows": all_rows + mean, "headline": head, "paths": paths, "meta": meta}


def mean_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, round): numeric columns averaged over seeds (nan-aware), plus the
    standard deviation of interest micro-F1 and leak rate over seeds."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["arm"]), int(r["round"])), []).append(r)
    out: list[dict[str, Any]] = []
    for (arm, rnd), grp in sorted(groups.items(), key=lambda kv: (kv[0][1], ARMS.index(kv[0][0]))):
        m: dict[str, Any] = {"arm": arm, "letter": ARM_LETTER[arm], "round": rnd}
        for k, v in grp[0].items():
            if k in m or k == "seed" or isinstance(v, str):
                continue
            vals = [_num(g.get(k), math.nan) for g in grp]
            ok = [x for x in vals if not math.isnan(x)]
            m[k] = float(np.mean(ok)) if ok else math.nan
            if isinstance(v, int) and not isinstance(v, bool) and ok:
                m[k] = round(m[k], 1)
        for k in ("interest_micro_f1", "leak_rate", "false_block_rate"):
            vals = [_num(g.get(k), math.nan) for g in grp]
            ok = [x for x in vals if not math.isnan(x)]
            m[f"{k}_sd"] = float(np.std(ok)) if len(ok) > 1 else math.nan
        m["seed"] = "mean"
        m["n_seeds"] = len(grp)
        out.append(m)
    return out


def _run_seed(cfg: Config, shared: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One seed: (rows, meta). ``shared`` carries the text-embedding cache between seeds."""
    from experiments.evaluation import evaluate_bundle
    from experiments.registry import default_prototypes
    from experiments.training import TrainConfig, train_filter
    from labeling.policy import load_policy
    from labeling.proposals import ProposalInput, ProposeStats
    from labeling.taxonomy import load_taxonomy
    from labeling.vectorstore import IndexedExample, load_seed_examples
    from labelloop.runtime import build_proposer, routing_config
    from labelloop.settings import get_settings

    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {ARMS}")
    arms = [a for a in ARMS if a in cfg.arms]
    if cfg.repropose_queued is None:
        cfg = replace(cfg, repropose_queued=not cfg.llm)
    if "random" in arms and "labelloop" not in arms:
        raise ValueError("arm 'random' needs arm 'labelloop' (it reviews as many items per round)")
    t_start = time.perf_counter()
    policy = load_policy()
    cats = policy.categories
    taxonomy = load_taxonomy(categories=cats)
    groups, errors = load_groups(cfg.data_dir, cfg.synthetic, cfg.seed, taxonomy, cats)
    pool, test = split_pool_test(groups, cfg.pool, cfg.test, cfg.seed)
    if len(pool) < cfg.rounds:
        raise ValueError(f"pool of {len(pool)} items is smaller than {cfg.rounds} rounds")
    _log(cfg, f"pool {len(pool)} ({sum(bool(e.sensitive) for e in pool)} sensitive), "
              f"test {len(test)} ({sum(bool(e.sensitive) for e in test)} sensitive), {len(errors)} bad records")  # fmt: skip

    if "embedder" in shared:
        embedder = shared["embedder"]
    elif cfg.fake_embeddings:
        from targeting.scorer import HashingEmbedder

        embedder = TextCache(HashingEmbedder(), None, model_id="hashing-64")
    else:
        from labeling.embeddings import MiniLMEmbedder

        embedder = TextCache(
            MiniLMEmbedder.from_models_dir(cfg.models_dir, max_length=cfg.max_length),
            cfg.embedding_cache,
        )
    shared["embedder"] = embedder
    t0 = time.perf_counter()
    embedder.embed([e.text for e in pool] + [e.text for e in test])
    t_embed = time.perf_counter() - t0
    _log(
        cfg, f"embedded {embedder.embedded} texts in {t_embed:.1f}s ({len(embedder.cache)} cached)"
    )

    settings = get_settings()
    rcfg = replace(
        routing_config(settings),
        budget=cfg.budget,
        qa_sample_rate=cfg.qa_rate,
        overlap_share=cfg.overlap_share,
        seed=cfg.seed,
    )
    if cfg.uncertainty_threshold is not None:
        rcfg = replace(rcfg, uncertainty_threshold=cfg.uncertainty_threshold)
    if cfg.sensitive_confidence is not None:
        rcfg = replace(rcfg, sensitive_confidence=cfg.sensitive_confidence)
    if cfg.selection is not None:
        rcfg = replace(rcfg, selection=cfg.selection)
    if cfg.sensitive_share is not None:
        rcfg = replace(rcfg, sensitive_share=cfg.sensitive_share)
    if cfg.explore_share is not None:
        rcfg = replace(rcfg, explore_share=cfg.explore_share)
    seeds_g, _lex = load_seed_examples(taxonomy, cats)
    seeds = [Example(s.id, s.text, s.sensitive, s.interests, 1.0, "seed") for s in seeds_g]
    prototypes = default_prototypes(policy)
    tcfg = TrainConfig(embed_max_length=cfg.max_length)
    if not isinstance(cfg.label_noise_quantile, str):
        tcfg = replace(tcfg, label_noise_quantile=cfg.label_noise_quantile)
    interest_pool = [i.id for i in taxonomy.tier1()]
    accuracy = 1.0 - cfg.noise
    text_of = {e.conversation_id: e.text for e in pool}
    by_id = {e.conversation_id: e for e in pool}

    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    ef = chroma_function(embedder)
    run_tag = uuid.uuid4().hex[:8]
    states = {a: ArmState(a) for a in arms}
    simulated = parse_simulated(cfg.simulated_proposer)
    for a in arms:
        if a in ("labelloop", "silver_only"):
            s_arm = settings.model_copy(
                update={"chroma_collection": f"bench-{a.replace('_', '-')}-{run_tag}"}
            )
            if simulated is not None:
                states[a].proposer = SimulatedProposer(
                    by_id, simulated[0], simulated[1], cfg.seed, interest_pool, cats
                )
                continue
            states[a].proposer = build_proposer(
                s_arm, store=None, with_llm=cfg.llm, embedding_function=ef, chroma_client=client
            )

    slices = np.array_split(np.arange(len(pool)), cfg.rounds)
    rows: list[dict[str, Any]] = []
    seen: list[Example] = []
    for r, idx in enumerate(slices, start=1):
        batch = [pool[i] for i in idx]
        seen += batch
        sent_a = 0
        for a in arms:
            st = states[a]
            t0 = time.perf_counter()
            if a in ("labelloop", "silver_only"):
                assert st.proposer is not None
                stats = ProposeStats()
                todo = list(batch)
                if a == "labelloop" and cfg.repropose_queued:
                    todo += [
                        by_id[c] for c in sorted(st.queued)
                    ]  # fresh uncertainty from the latest model
                props = st.proposer.propose(
                    [ProposalInput(e.conversation_id, e.text) for e in todo], stats=stats
                )
                st.llm_calls += stats.llm_calls
                if a == "silver_only":
                    for p in props:
                        st.silver[p.conversation_id] = silver_example(p, text_of[p.conversation_id])
                else:
                    cand = dict(st.queued)
                    cand.update({p.conversation_id: p for p in props})
                    vecs = embedder.embed([text_of[c] for c in cand])  # one batch, cached
                    views = [
                        view_of(p, text_of[c], vecs[i]) for i, (c, p) in enumerate(cand.items())
                    ]
                    sel = select_labelloop(views, rcfg)
                    for c in sel.auto:
                        if cfg.silver_weight > 0:
                            st.silver[c] = silver_example(
                                cand[c], text_of[c], weight=cfg.silver_weight
                            )
                    st.queued = {c: cand[c] for c in sel.queued}
                    sent_a = len(sel.send)
                    _review(st, sel, by_id, accuracy, cfg.seed, interest_pool, cats)
            elif a == "random":
                cands = [e.conversation_id for e in seen if e.conversation_id not in st.reviewed]
                sel = select_random(cands, sent_a, cfg.seed, r, rcfg)
                _review(st, sel, by_id, accuracy, cfg.seed, interest_pool, cats)
            else:  # full supervision: exact gold of everything seen
                for e in batch:
                    st.gold[e.conversation_id] = replace(e, origin="records")
                    st.reviewed.add(e.conversation_id)
                st.annotations = len(st.gold)
            if st.proposer is not None and st.proposer.index is not None and a == "labelloop":
                new = [g for c, g in st.gold.items() if c in st.reviewed]
                st.proposer.index.upsert(
                    [
                        IndexedExample(g.conversation_id, g.text, g.interests, g.sensitive, "human")
                        for g in new
                    ]
                )
            train = list(seeds) + list(st.gold.values())
            train += [s for c, s in st.silver.items() if c not in st.gold]
            snap = Snapshot(
                tuple(sorted(train, key=lambda e: e.conversation_id)),
                (),
                cats,
                {"source": "loop-bench"},
            )
            res = train_filter(snap, taxonomy, embedder, config=tcfg, prototype_texts=prototypes,
                               embedding_model_id=embedder.model_id)  # fmt: skip
            if st.proposer is not None:
                st.proposer.classifier = BundleClassifier(res.bundle, embedder, f"{a}-r{r}")
            report, _, _ = evaluate_bundle(res.bundle, test, embedder)
            dt = time.perf_counter() - t0
            st.wall_s += dt
            n_h = len(st.reviewed)
            row: dict[str, Any] = {
                "arm": a,
                "letter": ARM_LETTER[a],
                "round": r,
                "pool_seen": len(seen),
                "human_items": n_h,
                "human_share": n_h / len(pool),
                "human_sensitive": sum(1 for c in st.reviewed if by_id[c].sensitive),
                "human_interest_known": sum(
                    1 for c in st.reviewed if by_id[c].interests is not None
                ),
                "annotations": st.annotations,
                "silver_items": sum(1 for c in st.silver if c not in st.gold),
                **silver_quality([x for c, x in st.silver.items() if c not in st.gold], by_id),
                "queued": len(st.queued),
                "train_items": len(snap.train),
                "llm_calls": st.llm_calls,
                "leak_rate": report.leak_rate,
                "false_block_rate": report.false_block_rate,
                "interest_micro_f1": report.interest_micro_f1,
            }
            for c in cats:
                row[f"recall_{c}"] = report.per_category[c]["recall"]
            row["round_wall_s"] = round(dt, 2)
            row["wall_s"] = round(st.wall_s, 2)
            rows.append(row)
            _log(cfg, f"round {r} {a:11s} human={n_h:5d} leak={_f(report.leak_rate)} "
                      f"fb={_f(report.false_block_rate)} f1={_f(report.interest_micro_f1)} ({dt:.1f}s)")  # fmt: skip
    for a in arms:
        if states[a].proposer is not None:
            with contextlib.suppress(Exception):  # the collection is ephemeral anyway
                client.delete_collection(f"bench-{a.replace('_', '-')}-{run_tag}")
    meta = {
        "source": f"synthetic({cfg.synthetic}, seed={cfg.seed})"
        if cfg.synthetic
        else str(cfg.data_dir),
        "pool": len(pool),
        "pool_sensitive": sum(bool(e.sensitive) for e in pool),
        "test": len(test),
        "test_sensitive": sum(bool(e.sensitive) for e in test),
        "test_interest_items": sum(e.interests is not None for e in test),
        "rounds": cfg.rounds,
        "budget": cfg.budget,
        "noise": cfg.noise,
        "overlap_share": cfg.overlap_share,
        "qa_rate": cfg.qa_rate,
        "uncertainty_threshold": rcfg.uncertainty_threshold,
        "sensitive_confidence": rcfg.sensitive_confidence,
        "selection": rcfg.selection,
        "sensitive_share": rcfg.sensitive_share,
        "explore_share": rcfg.explore_share,
        "silver_weight_a": cfg.silver_weight,
        "repropose_queued": cfg.repropose_queued,
        "seed": cfg.seed,
        "llm": cfg.llm,
        "simulated_proposer": cfg.simulated_proposer,
        "label_noise_quantile": tcfg.label_noise_quantile,
        "embeddings": embedder.model_id,
        "embed_s": round(t_embed, 1),
        "bad_records": len(errors),
        "total_s": round(time.perf_counter() - t_start, 1),
        "arms": arms,
        "categories": list(cats),
    }
    return rows, meta


def _f(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"


def _review(
    st: ArmState,
    sel: Selection,
    by_id: Mapping[str, Example],
    accuracy: float,
    seed: int,
    interest_pool: Sequence[str],
    cats: Sequence[str],
) -> None:
    for c in sel.send:
        label, spent = annotate(
            by_id[c], overlap=sel.overlap.get(c, 1), accuracy=accuracy, seed=seed,
            interest_pool=interest_pool, categories=cats,
        )  # fmt: skip
        st.gold[c] = label
        st.silver.pop(c, None)
        st.reviewed.add(c)
        st.annotations += spent


# ------------------------------------------------------------------------------------ outputs
def write_outputs(
    out: Path, rows: Sequence[Mapping[str, Any]], head: Mapping[str, Any], meta: Mapping[str, Any]
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "loop_efficiency.csv",
        "png": out / "loop_efficiency.png",
        "md": out / "loop_efficiency.md",
        "json": out / "loop_efficiency.json",
    }
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v))
                        for k, v in r.items()})  # fmt: skip
    shown = display_rows(rows)
    plot(shown, head, paths["png"], per_seed=[r for r in rows if r.get("seed") != "mean"])
    paths["md"].write_text(markdown(shown, head, meta), encoding="utf-8")
    paths["json"].write_text(
        json.dumps({"headline": head, "meta": meta, "rows": rows}, indent=2, default=str),
        encoding="utf-8",
    )
    return paths


def display_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The mean-over-seeds rows when there are several seeds, else the rows themselves."""
    mean = [r for r in rows if r.get("seed") == "mean"]
    return mean or list(rows)


def plot(
    rows: Sequence[Mapping[str, Any]],
    head: Mapping[str, Any],
    path: Path,
    per_seed: Sequence[Mapping[str, Any]] = (),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for arm in ARMS:
        pts = sorted(
            ((int(r["human_items"]), r) for r in rows if r["arm"] == arm),
            key=lambda t: (t[0], int(t[1]["round"])),
        )
        if not pts:
            continue
        x = [p[0] for p in pts]
        n_seeds = len({r.get("seed") for r in per_seed if r["arm"] == arm})
        label = f"({ARM_LETTER[arm]}) {arm}" + (
            f" (mean of {n_seeds} seeds)" if n_seeds > 1 else ""
        )
        for ax, key in ((ax1, "leak_rate"), (ax2, "interest_micro_f1"), (ax3, "false_block_rate")):
            (line,) = ax.plot(x, [_num(p[1][key], math.nan) for p in pts], marker="o", label=label)
            if n_seeds > 1:  # each seed as a thin line of the same colour
                for sd in sorted({r.get("seed") for r in per_seed if r["arm"] == arm}, key=str):
                    one = sorted(
                        (r for r in per_seed if r["arm"] == arm and r.get("seed") == sd),
                        key=lambda r: int(r["round"]),
                    )
                    ax.plot(
                        [int(r["human_items"]) for r in one],
                        [_num(r[key], math.nan) for r in one],
                        color=line.get_color(), alpha=0.25, lw=0.8,
                    )  # fmt: skip
    ax1.axhline(MAX_LEAK, color="grey", ls="--", lw=1, label="leak target 2 %")
    if head.get("f1_target") is not None:
        ax2.axhline(
            float(head["f1_target"]), color="grey", ls="--", lw=1, label="97 % of (d) final"
        )
    ax3.axhline(MAX_FALSE_BLOCK, color="grey", ls="--", lw=1, label="false-block target 10 %")
    xmax = max([int(r["human_items"]) for r in rows] or [1])
    panels = ((ax1, "leak rate (test split)"), (ax2, "interest micro-F1 (test split)"),
              (ax3, "false-block rate (test split)"))  # fmt: skip
    for ax, title in panels:
        ax.set_xscale("symlog", linthresh=50)
        ax.set_xlim(0, xmax * 1.3)
        ax.set_xlabel("human-labelled items")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(
    rows: Sequence[Mapping[str, Any]], head: Mapping[str, Any], meta: Mapping[str, Any]
) -> str:
    cats = list(meta.get("categories", []))
    lines = [
        f"Pool {meta['pool']} items ({meta['pool_sensitive']} sensitive), test {meta['test']} "
        f"({meta['test_sensitive']} sensitive, {meta['test_interest_items']} with interest gold), "
        f"{meta['rounds']} rounds, review budget B={meta['budget']}/round, annotator noise {meta['noise']}, "
        f"overlap share {meta['overlap_share']}, QA rate {meta['qa_rate']}, "
        f"seeds {', '.join(map(str, meta.get('seeds', [meta.get('seed')])))}"
        f"{' (table: mean over seeds, F1 ± sd)' if len(meta.get('seeds', [])) > 1 else ''}, "
        f"routing selection {meta.get('selection', 'uncertainty')} (sensitive share {meta.get('sensitive_share', 1.0)}, "
        f"explore share {meta.get('explore_share', 0.0)}); "
        f"embeddings: {meta['embeddings']}; proposer: {_proposer_desc(meta)}; "
        f"total {meta['total_s']} s.",
        "",
        f"**Headline** (ceiling = arm (d) final interest micro-F1 {_f(head['ceiling_f1'])}; "
        f"target F1 >= {_f(head['f1_target']) if head.get('f1_target') is not None else 'n/a'} with leak <= 2 %): "
        f"(a) labelloop reaches it at **{fmt_share(head['labelloop_share'])}**, "
        f"(b) random at **{fmt_share(head['random_share'])}**. "
        f"Targets: (a) <= half of (b): {_yn(head['target_a_le_half_b'])}; (a) <= 15 % of the pool: {_yn(head['target_a_le_15pct'])}. "
        f"Stricter (also false-block <= 10 %): (a) {fmt_share(head['labelloop_share_fb10'])}, (b) {fmt_share(head['random_share_fb10'])}.",
        "",
        *_per_seed_lines(meta),
        "| arm | round | human items (share) | annotations | silver (precision, sensitive missed) | LLM calls | leak | false-block | interest µF1 | min cat. recall | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        recs = [_num(r[f"recall_{c}"], math.nan) for c in cats]
        recs = [x for x in recs if not math.isnan(x)]
        lines.append(
            f"| ({r['letter']}) {r['arm']} | {r['round']} | {_n(r['human_items'])} ({100 * float(r['human_share']):.1f} %) | "
            f"{_n(r['annotations'])} | {_silver_cell(r)} | {_n(r['llm_calls'])} | {_f(r['leak_rate'])} | "
            f"{_f(r['false_block_rate'])} | {_f1_cell(r)} | {_f(min(recs)) if recs else 'n/a'} | {_num(r['wall_s'], math.nan):.1f} |"
        )
    last = {r["arm"]: r for r in rows}
    if cats and last:
        lines += ["", "Per-category sensitive recall (blocked), last round:", "",
                  "| arm | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]  # fmt: skip
        for arm, r in last.items():
            lines.append(
                f"| ({r['letter']}) {arm} | "
                + " | ".join(_f(_num(r[f"recall_{c}"], math.nan)) for c in cats)
                + " |"
            )
    return "\n".join(lines) + "\n"


def _proposer_desc(meta: Mapping[str, Any]) -> str:
    if meta.get("simulated_proposer"):
        cov, prec = parse_simulated(meta["simulated_proposer"]) or (0.0, 0.0)
        return (
            f"**SIMULATED** from gold (what-if: {cov:.0%} of proposals confident, {prec:.0%} of "
            "those correct; not a model)"
        )
    if meta.get("llm"):
        return "kNN + classifier + the local LLM"
    return "kNN + classifier, LLM off (--llm to include it)"


def _per_seed_lines(meta: Mapping[str, Any]) -> list[str]:
    per = meta.get("per_seed") or {}
    if len(per) < 2:
        return []
    parts = [
        f"seed {sd}: (a) {fmt_share(h['labelloop_share'])}, (b) {fmt_share(h['random_share'])} "
        f"(ceiling {_f(h['ceiling_f1'])})"
        for sd, h in per.items()
    ]
    return ["Per seed (each against its own ceiling): " + "; ".join(parts) + ".", ""]


def _f1_cell(r: Mapping[str, Any]) -> str:
    sd = _num(r.get("interest_micro_f1_sd"), math.nan)
    return _f(r["interest_micro_f1"]) + ("" if math.isnan(sd) else f" ± {sd:.3f}")


def _n(v: Any) -> str:
    f = _num(v, math.nan)
    return "n/a" if math.isnan(f) else (str(int(f)) if f == int(f) else f"{f:.1f}")


def _silver_cell(r: Mapping[str, Any]) -> str:
    n = _num(r["silver_items"], 0.0)
    if not n:
        return "0"
    return f"{_n(n)} ({_f(_num(r['silver_interest_precision'], math.nan))}, {_n(r['silver_sensitive_missed'])})"


def _yn(v: bool | None) -> str:
    return "n/a (not reached)" if v is None else ("met" if v else "NOT met")


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv: Sequence[str] | None = None) -> Config:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", default=str(DEFAULT_DATA), help="directory of *.jsonl records with gold"
    )
    ap.add_argument(
        "--synthetic", type=int, default=None, metavar="N", help="use N synthetic records instead"
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--pool", type=int, default=None, help="pool size (default 2000; quick 150)")
    ap.add_argument("--test", type=int, default=None, help="test size (default 800; quick 100)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 8; quick 2)")
    ap.add_argument(
        "--budget", type=int, default=None, help="review budget per round (default 150; quick 10)"
    )
    ap.add_argument(
        "--noise", type=float, default=0.05, help="chance an annotator answer is perturbed"
    )
    ap.add_argument("--overlap-share", type=float, default=0.2)
    ap.add_argument("--qa-rate", type=float, default=0.05)
    ap.add_argument(
        "--uncertainty-threshold", type=float, default=None, help="routing (default: settings)"
    )
    ap.add_argument(
        "--sensitive-confidence",
        type=float,
        default=None,
        help="routing: sensitive signals below this are 'suspect' (default: settings; 0 = off)",
    )
    ap.add_argument(
        "--selection",
        choices=("uncertainty", "diverse"),
        default=None,
        help="routing order within the budget (default: settings)",
    )
    ap.add_argument(
        "--sensitive-share",
        type=float,
        default=None,
        help="routing: max budget share of sensitive suspects first (default: settings)",
    )
    ap.add_argument(
        "--explore-share",
        type=float,
        default=None,
        help="routing: share of the budget drawn at random among review candidates (default: settings)",
    )
    ap.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    ap.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds; the table shows the mean (default 0,1,2; quick 0)",
    )
    ap.add_argument(
        "--repropose-queued",
        choices=("auto", "yes", "no"),
        default="auto",
        help="re-propose arm (a)'s queued items every round (auto: yes unless --llm)",
    )
    ap.add_argument(
        "--silver-weight",
        type=float,
        default=SILVER_WEIGHT,
        help="weight of arm (a)'s auto-accepted silver labels (0: gold only)",
    )
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument(
        "--llm", action="store_true", help="include the local LLM in proposals (slow: 2-8 s/item)"
    )
    ap.add_argument(
        "--label-noise-quantile",
        default="default",
        help="training: positives scoring at/below this quantile of the negatives are left out of "
        "the recall calibration ('none': off; default: TrainConfig's)",
    )
    ap.add_argument(
        "--simulated-proposer",
        default=None,
        metavar="COVERAGE:PRECISION",
        help="what-if: arms (a)/(c) get proposals from gold, COVERAGE of them confident with "
        "PRECISION (instead of kNN/classifier/LLM)",
    )
    ap.add_argument(
        "--fake-embeddings", action="store_true", help="hashing embedder instead of MiniLM"
    )
    ap.add_argument("--quick", action="store_true", help="tiny pool and rounds (seconds)")
    ap.add_argument("--max-length", type=int, default=128, help="MiniLM tokens per text")
    ap.add_argument(
        "--embedding-cache",
        default=str(DEFAULT_CACHE),
        help="read-only .npz of vectors ('' = none)",
    )
    ap.add_argument("--models-dir", default=str(ROOT / ".labelloop" / "models"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    q = a.quick
    try:
        parse_simulated(a.simulated_proposer)
    except ValueError as exc:
        ap.error(str(exc))
    if a.seed is not None and a.seeds is not None:
        ap.error("give --seed or --seeds, not both")
    if a.seeds is not None:
        try:
            seeds = tuple(int(x) for x in a.seeds.split(",") if x.strip())
        except ValueError:
            ap.error(f"--seeds {a.seeds!r}: expected comma-separated integers")
        if not seeds:
            ap.error("--seeds: at least one seed")
    else:
        seeds = (a.seed,) if a.seed is not None else ((0,) if q else (0, 1, 2))
    return Config(
        data_dir=None if a.synthetic else Path(a.data),
        synthetic=a.synthetic,
        out=Path(a.out),
        pool=a.pool if a.pool is not None else (150 if q else 2000),
        test=a.test if a.test is not None else (100 if q else 800),
        rounds=a.rounds if a.rounds is not None else (2 if q else 8),
        budget=a.budget if a.budget is not None else (10 if q else 150),
        noise=a.noise,
        overlap_share=a.overlap_share,
        qa_rate=a.qa_rate,
        seed=seeds[0],
        seeds=seeds,
        llm=a.llm,
        simulated_proposer=a.simulated_proposer,
        label_noise_quantile=(
            a.label_noise_quantile
            if a.label_noise_quantile == "default"
            else (None if a.label_noise_quantile == "none" else float(a.label_noise_quantile))
        ),
        fake_embeddings=a.fake_embeddings,
        arms=tuple(x.strip() for x in a.arms.split(",") if x.strip()),
        max_length=a.max_length,
        embedding_cache=Path(a.embedding_cache) if a.embedding_cache else None,
        models_dir=Path(a.models_dir),
        uncertainty_threshold=a.uncertainty_threshold,
        sensitive_confidence=a.sensitive_confidence,
        selection=a.selection,
        sensitive_share=a.sensitive_share,
        explore_share=a.explore_share,
        silver_weight=a.silver_weight,
        repropose_queued=None if a.repropose_queued == "auto" else a.repropose_queued == "yes",
        quiet=a.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    res = run(cfg)
    print(res["paths"]["md"].read_text(encoding="utf-8"))
    print("outputs:", ", ".join(str(p) for p in res["paths"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
