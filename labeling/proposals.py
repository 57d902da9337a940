"""Label proposals: LLM + kNN (+ a production classifier) -> per-label confidence and uncertainty.

For each eligible, redacted conversation the :class:`Proposer`

1. queries the gold-example index (:mod:`labeling.vectorstore`) for the ``k`` nearest examples and
   takes their distance-weighted vote; asks the production classifier, when one is given; matches
   the sensitive-cue lexicon;
2. decides whether the LLM is needed (**cascade**, :func:`needs_llm`): it is skipped only when no
   source suspects a sensitive category (every sensitive signal < ``sensitive_suspect_threshold``,
   no lexicon hit), the nearest gold example is close (``cascade_min_similarity``), every kNN
   interest decision is clear-cut (p >= ``cascade_skip_confidence`` or p <= 1 - it) and, when a
   classifier is given, the classifier's decisions are as clear-cut and the same;
3. otherwise renders the prompt (few-shot examples chosen among the neighbours) and calls the LLM
   (:class:`labeling.llm.LLMLabeler`: validated, repaired once, cached) -- while the run's
   :class:`LLMBudget` lasts (``Settings.llm_budget_per_run``): a conversation that needs the LLM
   after the budget is spent gets a proposal from kNN (+ classifier, lexicon) alone with
   uncertainty 1.0, so routing sends it to human review and it is never auto-accepted;
4. combines the sources (:func:`combine`) into ``interests {tier-1 iab id: conf}``,
   ``sensitive {category: conf}``, one ``uncertainty`` in [0, 1] and flags.

Combination rule (documented, simple, measured by ``benchmarks/proposals.py``):

* interests: weighted mean of the available sources (LLM 0.5, kNN 0.3, classifier 0.2,
  renormalised over the sources present; an LLM that answered but did not emit a label says 0);
* sensitive: ``max(weighted mean, 0.75 * strongest single source)`` with the lexicon as one more
  source (0.35 on a hit): recall first -- one confident source is enough to keep a category;
* uncertainty: the largest binary entropy (bits) of any candidate label's confidence, raised to
  0.6 when the LLM and kNN disagree, to ``1 - nearest similarity`` when the LLM was skipped, and
  1.0 when the LLM output was invalid or the LLM was needed but over the run's budget.

Every proposal records its ``source`` (:data:`PROPOSAL_SOURCES`): ``llm`` (the LLM answered, with
kNN as a second source), ``knn`` (the cascade found kNN (+ classifier) sure: no LLM call),
``knn_over_budget`` (the LLM was needed, the run's LLM budget was spent) or ``knn_no_llm`` (the
LLM was needed and the proposer has none, e.g. ``--no-llm``).

Flags: ``llm_knn_disagree`` (the LLM's sensitive set differs from kNN's p>=0.5 set, or the interest
sets' Jaccard < 0.5), ``possible_sensitive`` (any sensitive signal from any source >=
``sensitive_flag_threshold``), ``llm_invalid_output`` (invalid after repair, or the model failed).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from labeling.llm import LLMLabeler, LLMOutcome
from labeling.policy import Policy
from labeling.prompts import PromptTemplate, label_prompt_variables, offered_interests
from labeling.records import render_turns
from labeling.routing import FLAG_DISAGREE, FLAG_INVALID, FLAG_POSSIBLE_SENSITIVE
from labeling.taxonomy import Taxonomy
from labeling.vectorstore import (
    GoldIndex,
    KnnVote,
    Lexicon,
    Neighbor,
    knn_vote,
    select_few_shot,
    truncate_chars,
)
from labelloop.store import LabelStore

__all__ = [
    "FLAG_DISAGREE",
    "FLAG_INVALID",
    "FLAG_POSSIBLE_SENSITIVE",
    "PROPOSAL_SOURCES",
    "PROPOSER_VERSION",
    "CascadeConfig",
    "LLMBudget",
    "Proposal",
    "ProposalClassifier",
    "ProposeStats",
    "Proposer",
    "combine",
    "needs_llm",
    "split_budget",
    "write_proposals",
]

PROPOSER_VERSION: Final = "v1"
SOURCE_WEIGHTS: Final = {"llm": 0.5, "knn": 0.3, "classifier": 0.2, "lexicon": 0.2}
LEXICON_SIGNAL: Final = 0.35
# where a proposal's labels came from (see the module docstring)
SOURCE_LLM: Final = "llm"
SOURCE_KNN: Final = "knn"
SOURCE_KNN_OVER_BUDGET: Final = "knn_over_budget"
SOURCE_KNN_NO_LLM: Final = "knn_no_llm"
PROPOSAL_SOURCES: Final = (SOURCE_LLM, SOURCE_KNN, SOURCE_KNN_OVER_BUDGET, SOURCE_KNN_NO_LLM)


@runtime_checkable
class ProposalClassifier(Protocol):
    """A production classifier (built by the training step).

    ``predict_proba(texts)`` returns ``(interest_probs, sensitive_probs)``: two lists with one dict
    per text, ``{iab_id: p}`` and ``{category: p}``. An optional ``model_id`` attribute names it in
    the proposer id.
    """

    def predict_proba(
        self, texts: Sequence[str]
    ) -> tuple[list[dict[str, float]], list[dict[str, float]]]: ...


class Proposal(BaseModel):
    """One proposal for one conversation (what routing/review consume; stored as ProposalRow)."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str
    interests: dict[str, float]  # tier-1 IAB id -> combined confidence
    sensitive: dict[str, float]  # policy category -> combined confidence
    uncertainty: float = Field(ge=0.0, le=1.0)
    flags: list[str] = Field(default_factory=list)
    proposer_id: str
    prompt_hash: str
    model_id: str
    embedding_model_id: str | None
    llm_called: bool
    source: str  # one of PROPOSAL_SOURCES (a simulated proposer in a benchmark names itself)
    rationale: str = ""
    sources: dict[str, Any] = Field(default_factory=dict)  # llm / knn / classifier / lexicon raw

    def interest_labels(self, threshold: float = 0.5) -> list[str]:
        return sorted(k for k, v in self.interests.items() if v >= threshold)

    def sensitive_labels(self, threshold: float = 0.3) -> list[str]:
        return sorted(k for k, v in self.sensitive.items() if v >= threshold)


@dataclass(frozen=True)
class CascadeConfig:
    enabled: bool = True
    skip_confidence: float = 0.8
    min_similarity: float = 0.55
    sensitive_suspect: float = 0.1
    sensitive_flag: float = 0.15


@dataclass
class LLMBudget:
    """How many conversations of one run may get an LLM answer (``limit`` None: no limit).

    One object per run, shared by every :meth:`Proposer.propose` call of that run (the proposer
    itself lives longer than a run). Cache hits count too: the budget bounds answers, not time."""

    limit: int | None = None
    used: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"LLM budget {self.limit} is negative")

    def take(self) -> bool:
        """Use one unit of the budget; False (and nothing used) when it is spent."""
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += 1
        return True


def split_budget(limit: int | None, sizes: Sequence[int]) -> list[int | None]:
    """Split a run's LLM budget over its batches in proportion to their sizes (largest
    remainders first, ties to the earlier batch); never more than a batch's size. ``None``: no
    limit for any batch."""
    if limit is None:
        return [None] * len(sizes)
    if limit < 0 or any(n < 0 for n in sizes):
        raise ValueError("budget and batch sizes must be >= 0")
    total = sum(sizes)
    if total <= limit:
        return list(sizes)
    shares = [limit * n / total for n in sizes]
    out = [math.floor(x) for x in shares]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(shares[i] - out[i]), i))
    for i in by_remainder[: limit - sum(out)]:
        out[i] += 1
    return list(out)


@dataclass
class ProposeStats:
    n: int = 0
    llm_called: int = 0
    llm_calls: int = 0  # model invocations, repairs included
    cache_hits: int = 0
    invalid: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_latency_s: float = 0.0
    wall_s: float = 0.0
    flags: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "llm_called": self.llm_called,
            "llm_call_rate": round(self.llm_called / self.n, 4) if self.n else 0.0,
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "invalid": self.invalid,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "llm_latency_s": round(self.llm_latency_s, 3),
            "llm_s_per_call": round(
                self.llm_latency_s / max(1, self.llm_calls - self.cache_hits), 3
            ),
            "wall_s": round(self.wall_s, 3),
            "conversations_per_s": round(self.n / self.wall_s, 3) if self.wall_s > 0 else None,
            "flags": dict(self.flags),
            "cascade": dict(self.skip_reasons),
            "by_source": dict(self.by_source),
        }


# --------------------------------------------------------------------------- pure decisions


def _decisive(probs: Mapping[str, float], c: float) -> bool:
    return all(p >= c or p <= 1.0 - c for p in probs.values())


def needs_llm(
    vote: KnnVote | None,
    clf: tuple[dict[str, float], dict[str, float]] | None,
    lexicon_hits: Mapping[str, Any],
    cfg: CascadeConfig,
) -> tuple[bool, str]:
    """The cascade decision: ``(call the LLM?, reason)``."""
    if not cfg.enabled:
        return True, "cascade_off"
    if lexicon_hits:
        return True, "sensitive_suspect"
    sens_signals = list(vote.sensitive.values()) if vote else []
    if clf is not None:
        sens_signals += list(clf[1].values())
    if any(p >= cfg.sensitive_suspect for p in sens_signals):
        return True, "sensitive_suspect"
    if vote is None or vote.n == 0 or vote.n_interest_known == 0:
        return True, "no_neighbours"
    if vote.max_similarity < cfg.min_similarity:
        return True, "far_from_gold"
    if not _decisive(vote.interests, cfg.skip_confidence):
        return True, "knn_unsure"
    if clf is not None:
        if not _decisive(clf[0], cfg.skip_confidence):
            return True, "classifier_unsure"
        knn_set = {k for k, v in vote.interests.items() if v >= 0.5}
        clf_set = {k for k, v in clf[0].items() if v >= 0.5}
        if knn_set != clf_set:
            return True, "knn_classifier_disagree"
    return False, "confident"


def _entropy(p: float) -> float:
    p = min(1.0 - 1e-9, max(1e-9, p))
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _jaccard(a: set[str], b: set[str]) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def combine(
    *,
    llm: LLMOutcome | None,
    vote: KnnVote | None,
    clf: tuple[dict[str, float], dict[str, float]] | None,
    lexicon_hits: Mapping[str, Any],
    sensitive_flag: float,
    llm_over_budget: bool = False,
) -> tuple[dict[str, float], dict[str, float], float, list[str]]:
    """``(interests, sensitive, uncertainty, flags)`` from the sources (see module docstring).

    ``llm_over_budget``: the cascade wanted the LLM and the run's budget was spent; the
    uncertainty is then 1.0 (human review, never auto-accepted)."""
    llm_ok = llm is not None and llm.valid
    sources_i: dict[str, Mapping[str, float]] = {}
    sources_s: dict[str, Mapping[str, float]] = {}
    if llm_ok:
        assert llm is not None
        sources_i["llm"] = llm.interests
        sources_s["llm"] = llm.sensitive
    if vote is not None and vote.n:
        if vote.n_interest_known:
            sources_i["knn"] = vote.interests
        sources_s["knn"] = vote.sensitive
    if clf is not None:
        sources_i["classifier"], sources_s["classifier"] = clf
    if lexicon_hits:
        sources_s["lexicon"] = dict.fromkeys(lexicon_hits, LEXICON_SIGNAL)

    def mean(srcs: Mapping[str, Mapping[str, float]], label: str) -> float:
        wsum = sum(SOURCE_WEIGHTS[s] for s in srcs if s != "lexicon")
        if wsum <= 0:
            return 0.0
        return (
            sum(
                SOURCE_WEIGHTS[s] * float(v.get(label, 0.0))
                for s, v in srcs.items()
                if s != "lexicon"
            )
            / wsum
        )

    interests: dict[str, float] = {}
    for lab in sorted({k for v in sources_i.values() for k in v}):
        c = mean(sources_i, lab)
        if c > 0.005:
            interests[lab] = round(c, 4)
    sensitive: dict[str, float] = {}
    for lab in sorted({k for v in sources_s.values() for k in v}):
        strongest = max(float(v.get(lab, 0.0)) for v in sources_s.values())
        c = max(mean(sources_s, lab), 0.75 * strongest)
        if c > 0.005:
            sensitive[lab] = round(min(1.0, c), 4)

    flags: list[str] = []
    if llm is not None and not llm.valid:
        flags.append(FLAG_INVALID)
    if llm_ok and vote is not None and vote.n:
        assert llm is not None
        knn_s = {k for k, v in vote.sensitive.items() if v >= 0.5}
        knn_i = {k for k, v in vote.interests.items() if v >= 0.5}
        if set(llm.sensitive) != knn_s or (
            vote.n_interest_known and _jaccard(set(llm.interests), knn_i) < 0.5
        ):
            flags.append(FLAG_DISAGREE)
    signals = [float(p) for v in sources_s.values() for p in v.values()]
    if llm_ok and llm is not None and llm.p_any_sensitive is not None:
        signals.append(llm.p_any_sensitive)
    if any(p >= sensitive_flag for p in signals):
        flags.append(FLAG_POSSIBLE_SENSITIVE)

    u = max([_entropy(c) for c in (*interests.values(), *sensitive.values())], default=0.0)
    if FLAG_DISAGREE in flags:
        u = max(u, 0.6)
    if llm is None and vote is not None:
        u = max(u, 1.0 - vote.max_similarity)
    if llm is None and (vote is None or vote.n == 0):
        u = 1.0
    if FLAG_INVALID in flags or llm_over_budget:
        u = 1.0
    return interests, sensitive, round(min(1.0, max(0.0, u)), 4), flags


# --------------------------------------------------------------------------- proposer


@dataclass(frozen=True)
class ProposalInput:
    conversation_id: str
    text: str  # redacted conversation text (render_turns)

    @classmethod
    def from_turns(cls, conversation_id: str, turns: Iterable[Mapping[str, Any]]) -> ProposalInput:
        return cls(conversation_id, render_turns(turns))


class Proposer:
    """Proposes labels for redacted conversations. See the module docstring.

    Args:
        policy, taxonomy: the label sets (categories, tier-1 interests).
        prompt: the label prompt (:func:`labeling.prompts.load_prompt`).
        index: the gold-example index (None: no kNN).
        labeler: the LLM labeler (None: no LLM, e.g. kNN-only evaluation).
        classifier: an optional production :class:`ProposalClassifier`.
        lexicon: sensitive cue words (from the seed file).
        embedding_model_id: id of the index's vector space.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        taxonomy: Taxonomy,
        prompt: PromptTemplate,
        index: GoldIndex | None,
        labeler: LLMLabeler | None,
        classifier: ProposalClassifier | None = None,
        lexicon: Lexicon | None = None,
        embedding_model_id: str | None = None,
        cascade: CascadeConfig = CascadeConfig(),
        knn_k: int = 10,
        knn_temperature: float = 0.05,
        knn_seed_weight: float = 0.5,
        fewshot_k: int = 4,
        fewshot_token_budget: int = 260,
        conversation_tokens: int = 320,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.policy = policy
        self.taxonomy = taxonomy
        self.prompt = prompt
        self.index = index
        self.labeler = labeler
        self.classifier = classifier
        self.lexicon = lexicon
        self.embedding_model_id = embedding_model_id
        self.cascade = cascade
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.knn_seed_weight = knn_seed_weight
        self.fewshot_k = fewshot_k
        self.fewshot_token_budget = fewshot_token_budget
        self.conversation_tokens = conversation_tokens
        self._count = count_tokens or (
            labeler.llm.count_tokens if labeler else (lambda t: len(t) // 4)
        )
        self.offered = dict(offered_interests(taxonomy))
        self._tier1_cache: dict[str, str | None] = {}

    @property
    def proposer_id(self) -> str:
        parts = [p for p, on in (("llm", self.labeler), ("knn", self.index)) if on is not None]
        if self.classifier is not None:
            parts.append(
                "clf:" + str(getattr(self.classifier, "model_id", type(self.classifier).__name__))
            )
        return f"labelloop-proposer/{PROPOSER_VERSION}:" + "+".join(parts or ["none"])

    @property
    def model_id(self) -> str:
        return self.labeler.model_id if self.labeler is not None else "none"

    def tier1(self, iab_id: str) -> str | None:
        if iab_id not in self._tier1_cache:
            try:
                self._tier1_cache[iab_id] = self.taxonomy.tier1_of(iab_id).id
            except KeyError:
                self._tier1_cache[iab_id] = None
        return self._tier1_cache[iab_id]

    def _answer_json(self, n: Neighbor) -> str:
        names = []
        for i in n.interests or ():
            t1 = self.tier1(i)
            if t1 is not None and self.offered.get(t1) and self.offered[t1] not in names:
                names.append(self.offered[t1])
        return json.dumps({"sensitive": list(n.sensitive), "interests": names, "rationale": ""})

    def render_prompt(self, text: str, neighbors: Sequence[Neighbor]) -> Any:
        """The rendered prompt for one conversation (few-shot examples from ``neighbors``)."""
        shots = select_few_shot(
            neighbors,
            k=self.fewshot_k,
            token_budget=self.fewshot_token_budget,
            count_tokens=self._count,
            render=lambda n, t: f"Conversation: {t}\nAnswer: {self._answer_json(n)}",
        )
        shots = sorted(
            shots, key=lambda n: -n.similarity
        )  # the closest one furthest from the query
        examples = [
            {"text": truncate_chars(n.text, 280), "answer": self._answer_json(n)} for n in shots
        ]
        conv = truncate_chars(text, self.conversation_tokens * 4)
        variables = label_prompt_variables(
            self.policy, self.taxonomy, examples=examples, conversation=conv
        )
        return self.prompt.render(**variables), [n.id for n in shots]

    def propose(
        self,
        items: Sequence[ProposalInput],
        *,
        stats: ProposeStats | None = None,
        on_item: Callable[[Proposal], None] | None = None,
        budget: LLMBudget | None = None,
    ) -> list[Proposal]:
        """Propose for a batch; never raises for one bad item (it is flagged instead).

        ``budget``: the run's LLM budget (shared by the run's calls; default: no limit). Items
        that need the LLM get it in the order given, while the budget lasts."""
        stats = stats if stats is not None else ProposeStats()
        budget = budget if budget is not None else LLMBudget()
        t0 = time.perf_counter()
        texts = [it.text for it in items]
        neighbours = (
            self.index.query(texts, self.knn_k) if self.index is not None else [[] for _ in items]
        )
        clf_out: list[tuple[dict[str, float], dict[str, float]]] | None = None
        if self.classifier is not None:
            ip, sp = self.classifier.predict_proba(texts)
            clf_out = [(self._tier1_probs(a), dict(b)) for a, b in zip(ip, sp, strict=True)]
        out: list[Proposal] = []
        for n, it in enumerate(items):
            p = self._propose_one(it, neighbours[n], clf_out[n] if clf_out else None, stats, budget)
            out.append(p)
            if on_item is not None:
                on_item(p)
        stats.wall_s += time.perf_counter() - t0
        return out

    def _tier1_probs(self, probs: Mapping[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in probs.items():
            t1 = self.tier1(k)
            if t1 is not None:
                out[t1] = max(out.get(t1, 0.0), float(v))
        return out

    def _propose_one(
        self,
        it: ProposalInput,
        neighbors: Sequence[Neighbor],
        clf: tuple[dict[str, float], dict[str, float]] | None,
        stats: ProposeStats,
        budget: LLMBudget,
    ) -> Proposal:
        vote = (
            knn_vote(
                neighbors,
                temperature=self.knn_temperature,
                seed_weight=self.knn_seed_weight,
                interest_map=self.tier1,
            )
            if self.index is not None
            else None
        )
        lex = self.lexicon.match(it.text) if self.lexicon is not None else {}
        call, reason = needs_llm(vote, clf, lex, self.cascade)
        llm: LLMOutcome | None = None
        shot_ids: list[str] = []
        if not call:
            source = SOURCE_KNN
        elif self.labeler is None:
            source = SOURCE_KNN_NO_LLM
        elif not budget.take():
            source = SOURCE_KNN_OVER_BUDGET
        else:
            source = SOURCE_LLM
        if source == SOURCE_LLM:
            assert self.labeler is not None
            try:
                rendered, shot_ids = self.render_prompt(it.text, neighbors)
                llm = self.labeler.label(rendered, it.text)
            except Exception as exc:  # never crash a batch for one item
                llm = LLMOutcome(valid=False, error=f"{type(exc).__name__}: {exc}")
        stats.n += 1
        stats.skip_reasons[reason if call else "skipped_confident"] += 1
        stats.by_source[source] += 1
        if llm is not None:
            stats.llm_called += 1
            stats.llm_calls += llm.calls
            stats.cache_hits += int(llm.cached)
            stats.invalid += int(not llm.valid)
            stats.input_tokens += llm.input_tokens
            stats.output_tokens += llm.output_tokens
            stats.llm_latency_s += llm.latency_s
        interests, sensitive, uncertainty, flags = combine(
            llm=llm,
            vote=vote,
            clf=clf,
            lexicon_hits=lex,
            sensitive_flag=self.cascade.sensitive_flag,
            llm_over_budget=source == SOURCE_KNN_OVER_BUDGET,
        )
        stats.flags.update(flags)
        sources: dict[str, Any] = {"cascade": reason}
        if llm is not None:
            sources["llm"] = {
                "valid": llm.valid,
                "interests": llm.interests,
                "sensitive": llm.sensitive,
                "p_any_sensitive": llm.p_any_sensitive,
                "error": llm.error,
                "cached": llm.cached,
                "calls": llm.calls,
                "input_tokens": llm.input_tokens,
                "output_tokens": llm.output_tokens,
                "latency_s": round(llm.latency_s, 3),
                "has_logprobs": llm.has_logprobs,
                "few_shot_ids": shot_ids,
            }
        if vote is not None:
            sources["knn"] = {
                "interests": {k: round(v, 4) for k, v in vote.interests.items()},
                "sensitive": {k: round(v, 4) for k, v in vote.sensitive.items()},
                "max_similarity": round(vote.max_similarity, 4),
                "neighbours": [[n.id, round(n.similarity, 4)] for n in neighbors[:5]],
            }
        if clf is not None:
            sources["classifier"] = {"interests": clf[0], "sensitive": clf[1]}
        if lex:
            sources["lexicon"] = lex
        return Proposal(
            conversation_id=it.conversation_id,
            interests=interests,
            sensitive=sensitive,
            uncertainty=uncertainty,
            flags=flags,
            proposer_id=self.proposer_id,
            prompt_hash=self.prompt.sha256,
            model_id=self.model_id,
            embedding_model_id=self.embedding_model_id,
            llm_called=llm is not None,
            source=source,
            rationale=llm.rationale if llm is not None else "",
            sources=sources,
        )


# --------------------------------------------------------------------------- store


def write_proposals(
    store: LabelStore, proposals: Sequence[Proposal], run_id: str | None = None
) -> tuple[int, int]:
    """Upsert proposals (unique per conversation/proposer/prompt/model). Returns (inserted, updated).

    The conversations must already be in the store (foreign key).
    """
    return store.upsert_proposals(
        [
            {
                "conversation_id": p.conversation_id,
                "proposer_id": p.proposer_id,
                "prompt_hash": p.prompt_hash,
                "model_id": p.model_id,
                "embedding_model_id": p.embedding_model_id,
                "interests": p.interests,
                "sensitive": p.sensitive,
                "uncertainty": p.uncertainty,
                "flags": p.flags,
                "detail": {
                    "llm_called": p.llm_called,
                    "source": p.source,
                    "rationale": p.rationale,
                    "sources": p.sources,
                },
                "run_id": run_id,
            }
            for p in proposals
        ]
    )


def record_run(
    store: LabelStore, run_id: str, stats: ProposeStats, extra: Mapping[str, Any] | None = None
) -> None:
    """Roll the run's LLM usage (calls, tokens, latency, call rate) up into the ``runs`` table."""
    payload = {**stats.as_dict(), **(extra or {})}
    store.record_run(run_id, "propose", payload)
