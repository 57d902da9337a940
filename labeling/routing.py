"""Routing of label proposals: auto-accept (silver) or human review, under a per-run budget.

Pure functions only: :func:`route` takes typed views of proposals and a :class:`RoutingConfig` and
returns a :class:`RoutingResult`; the caller (``labeling.studio.push``) persists it.

Rules (each one that fires is recorded as a :class:`Reason`):

* ``sensitive_suspect``: a ``possible_sensitive`` flag, or any proposed sensitive category, whose
  confidence is below ``sensitive_confidence`` (a *confident* sensitive call is not ambiguous: it is
  auto-accepted as sensitive, which keeps the conversation out of targeting);
* ``llm_knn_disagree``: the LLM and the kNN neighbours disagree;
* ``high_uncertainty``: ``uncertainty > uncertainty_threshold``;
* ``llm_invalid_output``: the LLM answer could not be parsed;
* ``qa_sample``: a seeded random share (``qa_sample_rate``) of the items that would be auto-accepted
  also goes to review, so the precision of auto-accepted labels is *measured* (they still get their
  silver label now).

Budget: at most ``budget`` items are sent per run, by priority tier: sensitive-suspect first (at
most ``sensitive_share`` of the budget; the rest of them after the other tiers), then the QA sample
(small; never starved, or the precision could not be measured), then the rest. Optionally an
``explore_share`` of the budget is first drawn uniformly among all candidates. Within a tier the
order is ``selection``: ``"uncertainty"`` (highest first) or ``"diverse"`` (the default in settings:
uncertainty x density x novelty, :func:`diverse_order` -- pure uncertainty sampling spends the
budget on outliers and on one cluster; measured in ``benchmarks/loop_efficiency.py``). An item that
is a near-duplicate of one already selected (same content hash, embedding cosine >= ``dup_cosine``,
or word-shingle Jaccard >= ``dup_jaccard``) is deferred. Everything not sent this run is ``queued``
(never dropped) and competes again next run.

Overlap: every sensitive-suspect item (when ``overlap_sensitive``) and a seeded ``overlap_share`` of
the others need two independent annotations before they count.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

# Review flags: set on a proposal by labeling.proposals, read here to route it to a reviewer.
FLAG_DISAGREE: Final = "llm_knn_disagree"
FLAG_POSSIBLE_SENSITIVE: Final = "possible_sensitive"
FLAG_INVALID: Final = "llm_invalid_output"
SELECTIONS: tuple[str, ...] = ("uncertainty", "diverse")


class Route(StrEnum):
    AUTO_ACCEPTED = "auto_accepted"
    NEEDS_REVIEW = "needs_review"


class Reason(StrEnum):
    SENSITIVE_SUSPECT = "sensitive_suspect"
    LLM_KNN_DISAGREE = "llm_knn_disagree"
    HIGH_UNCERTAINTY = "high_uncertainty"
    LLM_INVALID_OUTPUT = "llm_invalid_output"
    QA_SAMPLE = "qa_sample"


class Dispatch(StrEnum):
    """What happens to the item in this run."""

    AUTO = "auto"  # auto-accepted, not reviewed
    SEND = "send"  # goes to Label Studio now
    QUEUED = "queued"  # needs review, waits for a later run (over budget or near-duplicate)


class ProposalLike(Protocol):
    """The fields of ``labelloop.store.models.ProposalRow`` (or ``labeling.proposals.Proposal``)."""

    conversation_id: str
    interests: Any
    sensitive: Any
    uncertainty: float
    flags: Any
    proposer_id: str


@dataclass(frozen=True)
class ProposalView:
    """A minimal typed view of one proposal, plus optional content for the diversity rule."""

    conversation_id: str
    interests: Mapping[str, float]
    sensitive: Mapping[str, float]
    uncertainty: float
    flags: frozenset[str] = frozenset()
    proposer_id: str = ""
    content_hash: str | None = None
    text: str | None = None
    embedding: Sequence[float] | None = None

    @classmethod
    def from_row(
        cls,
        row: ProposalLike,
        *,
        content_hash: str | None = None,
        text: str | None = None,
        embedding: Sequence[float] | None = None,
    ) -> ProposalView:
        """Build from a ProposalRow; bad values raise ValueError naming the record and field."""
        cid = str(row.conversation_id)
        return cls(
            conversation_id=cid,
            interests=_conf_map(row.interests, cid, "interests"),
            sensitive=_conf_map(row.sensitive, cid, "sensitive"),
            uncertainty=_unit(row.uncertainty, cid, "uncertainty"),
            flags=frozenset(str(f) for f in (row.flags or [])),
            proposer_id=str(row.proposer_id),
            content_hash=content_hash,
            text=text,
            embedding=embedding,
        )

    def labels(self, threshold: float) -> tuple[list[str], list[str]]:
        """(interest ids, sensitive categories) at or above ``threshold`` (sorted)."""
        return (
            sorted(k for k, v in self.interests.items() if v >= threshold),
            sorted(k for k, v in self.sensitive.items() if v >= threshold),
        )


def _unit(value: Any, cid: str, fld: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"proposal {cid!r} field {fld!r}: {value!r} is not a number") from None
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"proposal {cid!r} field {fld!r}: {v} is not in [0, 1]")
    return v


def _conf_map(value: Any, cid: str, fld: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"proposal {cid!r} field {fld!r}: expected an object label -> confidence")
    return {str(k): _unit(v, cid, f"{fld}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class RoutingConfig:
    sensitive_confidence: float = 0.9
    uncertainty_threshold: float = 0.35
    budget: int = 200
    qa_sample_rate: float = 0.05
    overlap_share: float = 0.2
    overlap_sensitive: bool = True
    seed: int = 0
    label_threshold: float = 0.5
    sensitive_floor: float = 0.2
    dup_cosine: float = 0.97
    dup_jaccard: float = 0.8
    selection: str = "diverse"  # or "uncertainty" (see diverse_order)
    sensitive_share: float = 1.0  # max share of the budget the sensitive-suspect tier may take
    explore_share: float = 0.0  # share of the budget drawn at random among all review candidates
    density_neighbors: int = 10

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"routing selection {self.selection!r}: choose one of {SELECTIONS}")
        for name in ("sensitive_share", "explore_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"routing {name} {v} is not in [0, 1]")


@dataclass(frozen=True)
class RoutingDecision:
    conversation_id: str
    route: Route
    reasons: tuple[Reason, ...]
    dispatch: Dispatch
    priority: float
    overlap: int
    sensitive_suspect: bool
    duplicate_of: str | None = None

    @property
    def reason(self) -> str:
        """The primary reason (first in priority order), or 'auto'."""
        return self.reasons[0].value if self.reasons else "auto"


@dataclass
class RoutingResult:
    decisions: list[RoutingDecision]
    counts: dict[str, int] = field(default_factory=dict)

    def with_dispatch(self, dispatch: Dispatch) -> list[RoutingDecision]:
        return [d for d in self.decisions if d.dispatch == dispatch]

    @property
    def to_send(self) -> list[RoutingDecision]:
        return self.with_dispatch(Dispatch.SEND)

    @property
    def queued(self) -> list[RoutingDecision]:
        return self.with_dispatch(Dispatch.QUEUED)

    @property
    def auto_accepted(self) -> list[RoutingDecision]:
        return [d for d in self.decisions if d.route == Route.AUTO_ACCEPTED]

    def by_id(self) -> dict[str, RoutingDecision]:
        return {d.conversation_id: d for d in self.decisions}


# ---- rules -------------------------------------------------------------------------------------
def is_sensitive_suspect(p: ProposalView, cfg: RoutingConfig) -> bool:
    """A sensitive signal that is not confident.

    Signals are the sensitive categories proposed with confidence >= ``sensitive_floor``. Suspect
    when the ``possible_sensitive`` flag is set without any such signal, or when any signal is below
    ``sensitive_confidence``. (Flag + every signal confident = a confident sensitive call.)
    """
    signals = [v for v in p.sensitive.values() if v >= cfg.sensitive_floor]
    if FLAG_POSSIBLE_SENSITIVE in p.flags and not signals:
        return True
    return any(v < cfg.sensitive_confidence for v in signals)


def review_reasons(p: ProposalView, cfg: RoutingConfig) -> tuple[Reason, ...]:
    """Every rule that sends this proposal to review, in priority order (empty = auto-accept)."""
    out: list[Reason] = []
    if is_sensitive_suspect(p, cfg):
        out.append(Reason.SENSITIVE_SUSPECT)
    if FLAG_INVALID in p.flags:
        out.append(Reason.LLM_INVALID_OUTPUT)
    if FLAG_DISAGREE in p.flags:
        out.append(Reason.LLM_KNN_DISAGREE)
    if p.uncertainty > cfg.uncertainty_threshold:
        out.append(Reason.HIGH_UNCERTAINTY)
    return tuple(out)


def unit_draw(seed: int, purpose: str, key: str) -> float:
    """A seeded, order-independent uniform draw in [0, 1) for (purpose, key)."""
    h = hashlib.sha256(f"{seed}\x1f{purpose}\x1f{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def overlap_for(cid: str, sensitive_suspect: bool, cfg: RoutingConfig) -> int:
    if sensitive_suspect and cfg.overlap_sensitive:
        return 2
    return 2 if unit_draw(cfg.seed, "overlap", cid) < cfg.overlap_share else 1


# ---- near-duplicates ---------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, k: int = 3) -> frozenset[str]:
    words = _WORD.findall(text.casefold())
    if len(words) < k:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + k]) for i in range(len(words) - k + 1))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _unit_vec(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


class _DupIndex:
    """Selected items so far; answers 'is this a near-duplicate of one of them?'."""

    def __init__(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.hashes: dict[str, str] = {}
        self.vecs: list[tuple[str, list[float]]] = []
        self.shingles: list[tuple[str, frozenset[str]]] = []

    def duplicate_of(self, p: ProposalView) -> str | None:
        if p.content_hash and p.content_hash in self.hashes:
            return self.hashes[p.content_hash]
        if p.embedding is not None:
            v = _unit_vec(p.embedding)
            for cid, u in self.vecs:
                if sum(a * b for a, b in zip(u, v, strict=False)) >= self.cfg.dup_cosine:
                    return cid
        elif p.text:
            sh = shingles(p.text)
            for cid, other in self.shingles:
                if jaccard(sh, other) >= self.cfg.dup_jaccard:
                    return cid
        return None

    def add(self, p: ProposalView) -> None:
        if p.content_hash:
            self.hashes.setdefault(p.content_hash, p.conversation_id)
        if p.embedding is not None:
            self.vecs.append((p.conversation_id, _unit_vec(p.embedding)))
        elif p.text:
            self.shingles.append((p.conversation_id, shingles(p.text)))


# ---- routing -----------------------------------------------------------------------------------
def _tier(reasons: tuple[Reason, ...]) -> int:
    if Reason.SENSITIVE_SUSPECT in reasons:
        return 0
    if reasons == (Reason.QA_SAMPLE,):
        return 1
    return 2


def route(proposals: Iterable[ProposalView], cfg: RoutingConfig) -> RoutingResult:
    """Route every proposal; select at most ``cfg.budget`` for review this run (see module doc).

    Deterministic for a given input set and seed (independent of input order). If one conversation
    appears more than once, the last view wins.
    """
    latest: dict[str, ProposalView] = {}
    for p in proposals:
        latest[p.conversation_id] = p
    items = sorted(latest.values(), key=lambda p: p.conversation_id)

    prelim: list[tuple[ProposalView, Route, tuple[Reason, ...], bool]] = []
    for p in items:
        reasons = review_reasons(p, cfg)
        suspect = Reason.SENSITIVE_SUSPECT in reasons
        if reasons:
            prelim.append((p, Route.NEEDS_REVIEW, reasons, suspect))
        elif unit_draw(cfg.seed, "qa", p.conversation_id) < cfg.qa_sample_rate:
            prelim.append((p, Route.AUTO_ACCEPTED, (Reason.QA_SAMPLE,), False))
        else:
            prelim.append((p, Route.AUTO_ACCEPTED, (), False))

    candidates = [x[0] for x in prelim if x[2]]
    tier = {x[0].conversation_id: _tier(x[2]) for x in prelim if x[2]}
    sent, dup_of = _select(candidates, tier, items, cfg)

    decisions: list[RoutingDecision] = []
    for p, r, reasons, suspect in prelim:
        if not reasons:
            dispatch = Dispatch.AUTO
        elif p.conversation_id in sent:
            dispatch = Dispatch.SEND
        else:
            dispatch = Dispatch.QUEUED
        decisions.append(
            RoutingDecision(
                conversation_id=p.conversation_id,
                route=r,
                reasons=reasons,
                dispatch=dispatch,
                priority=(2 - _tier(reasons)) + p.uncertainty if reasons else 0.0,
                overlap=overlap_for(p.conversation_id, suspect, cfg) if reasons else 0,
                sensitive_suspect=suspect,
                duplicate_of=dup_of.get(p.conversation_id),
            )
        )
    return RoutingResult(decisions=decisions, counts=_counts(decisions))


def _select(
    candidates: Sequence[ProposalView],
    tier: Mapping[str, int],
    everything: Sequence[ProposalView],
    cfg: RoutingConfig,
) -> tuple[set[str], dict[str, str]]:
    """Pick at most ``cfg.budget`` candidates: (sent ids, deferred near-duplicate -> kept id).

    Order of the tiers: sensitive suspects up to ``sensitive_share`` of the budget, the QA sample,
    the rest, then suspects again with whatever budget is left. Within a tier: highest uncertainty
    first (``selection="uncertainty"``) or :func:`diverse_order` (``"diverse"``).
    """
    tiers: dict[int, list[ProposalView]] = {0: [], 1: [], 2: []}
    for p in candidates:
        tiers[tier[p.conversation_id]].append(p)
    for group in tiers.values():
        group.sort(key=lambda p: (-p.uncertainty, p.conversation_id))
    vecs = _vectors(everything) if cfg.selection == "diverse" and candidates else None
    dup = _DupIndex(cfg)
    sent: set[str] = set()
    order: list[str] = []  # selected so far, in order (for the diversity term)
    dup_of: dict[str, str] = {}

    def take(ranked: Sequence[ProposalView], limit: int) -> None:
        """Select in order until ``limit`` items are selected; near-duplicates are deferred."""
        for p in ranked:
            if len(sent) >= limit:
                return
            other = dup.duplicate_of(p)
            if other is not None:
                dup_of[p.conversation_id] = other
                continue
            dup.add(p)
            sent.add(p.conversation_id)
            order.append(p.conversation_id)

    n_explore = min(cfg.budget, math.floor(cfg.explore_share * cfg.budget + 0.5))
    if n_explore:
        # exploration: a seeded uniform draw among every review candidate, whatever its tier
        # (keeps the reviewed set representative; uncertainty alone over-samples odd items)
        draw = sorted(
            candidates,
            key=lambda p: (unit_draw(cfg.seed, "explore", p.conversation_id), p.conversation_id),
        )
        take(draw, n_explore)
    cap0 = math.ceil(cfg.sensitive_share * (cfg.budget - len(sent)))
    plan = [(0, cap0), (1, cfg.budget), (2, cfg.budget), (0, cfg.budget)]
    for t, cap in plan:
        limit = min(cfg.budget, len(sent) + cap)
        pool = [
            p for p in tiers[t] if p.conversation_id not in sent and p.conversation_id not in dup_of
        ]
        if not pool or len(sent) >= limit:
            continue
        ranked = (
            pool
            if vecs is None
            else diverse_order(pool, vecs, chosen=order, need=limit - len(sent), cfg=cfg)
        )
        take(ranked, limit)
    return sent, dup_of


_VEC_DIM = 256


def _hashed_text_vector(text: str) -> np.ndarray:
    v = np.zeros(_VEC_DIM, dtype=np.float32)
    for w in _WORD.findall(text.casefold()):
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big")
        v[h % _VEC_DIM] += 1.0 if (h >> 16) & 1 else -1.0
    return v


def _vectors(items: Sequence[ProposalView]) -> dict[str, np.ndarray]:
    """Unit vectors per conversation: the embeddings when every item has one of the same size,
    else hashed bag-of-words vectors of the texts (no text and no embedding: a zero vector)."""
    dims = {len(p.embedding) for p in items if p.embedding is not None}
    use_emb = len(dims) == 1 and all(p.embedding is not None for p in items)
    out: dict[str, np.ndarray] = {}
    for p in items:
        if use_emb:
            v = np.asarray(p.embedding, dtype=np.float32)
        else:
            v = _hashed_text_vector(p.text or "")
        n = float(np.linalg.norm(v))
        out[p.conversation_id] = v / n if n > 0 else v
    return out


def diverse_order(
    pool: Sequence[ProposalView],
    vecs: Mapping[str, np.ndarray],
    *,
    chosen: Sequence[str],
    need: int,
    cfg: RoutingConfig,
) -> list[ProposalView]:
    """Greedy uncertainty x density x novelty order of ``pool`` (the first ``need`` matter).

    * density: mean cosine similarity to the ``density_neighbors`` nearest items of this routing
      call (all proposals, not only candidates; at most 2,000 seeded reference items) -- a typical
      conversation teaches the classifier more than an outlier;
    * novelty: ``1 - max cosine`` to the items already selected in this run -- the batch should
      not spend its budget on one cluster;
    * score = uncertainty * density * novelty; ties by conversation id. Deterministic.
    """
    ids = [p.conversation_id for p in pool]
    x = np.stack([vecs[c] for c in ids]) if ids else np.zeros((0, 1), dtype=np.float32)
    ref_ids = sorted(vecs, key=lambda c: (unit_draw(cfg.seed, "density-ref", c), c))[:2000]
    ref = np.stack([vecs[c] for c in ref_ids])
    sims = x @ ref.T
    k = max(1, min(cfg.density_neighbors, ref.shape[0] - 1))
    # drop each item's similarity to itself (when it is in the reference sample)
    pos = {c: i for i, c in enumerate(ref_ids)}
    for r, c in enumerate(ids):
        if c in pos:
            sims[r, pos[c]] = -np.inf
    top = -np.sort(-sims, axis=1)[:, :k]
    top = np.where(np.isfinite(top), top, 0.0)
    density = np.clip(top.mean(axis=1), 0.0, 1.0)
    base = np.array([p.uncertainty for p in pool], dtype=np.float64) * density
    novelty: npt.NDArray[np.float64] = np.ones(len(pool), dtype=np.float64)
    for c in chosen:
        if c in vecs:
            novelty = np.minimum(novelty, 1.0 - x @ vecs[c])
    novelty = np.clip(novelty, 0.0, 1.0)
    out: list[ProposalView] = []
    left = np.ones(len(pool), dtype=bool)
    rank_ids = np.array(ids)
    for _ in range(min(max(need, 0), len(pool))):
        score = np.where(left, base * novelty, -np.inf)
        best = float(score.max())
        i = int(min(np.flatnonzero(score == best), key=lambda j: rank_ids[j]))
        out.append(pool[i])
        left[i] = False
        novelty = np.minimum(novelty, np.clip(1.0 - x @ x[i], 0.0, 1.0))
    out += [p for i, p in enumerate(pool) if left[i]]  # the rest (duplicates may be skipped)
    return out


def _counts(decisions: Sequence[RoutingDecision]) -> dict[str, int]:
    c: Counter[str] = Counter()
    c["total"] = len(decisions)
    for d in decisions:
        c[d.route.value] += 1
        c[f"dispatch_{d.dispatch.value}"] += 1
        for r in d.reasons:
            c[f"reason_{r.value}"] += 1
        if d.duplicate_of:
            c["deferred_duplicate"] += 1
        if d.dispatch == Dispatch.SEND and d.overlap > 1:
            c["overlap_2"] += 1
    for key in (
        "auto_accepted",
        "needs_review",
        "dispatch_send",
        "dispatch_queued",
        "dispatch_auto",
    ):
        c.setdefault(key, 0)
    return dict(c)
