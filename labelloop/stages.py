"""One function per stage of the loop, shared by the CLI and the Prefect flows.

Each takes the :class:`~labelloop.runtime.Runtime` (settings, store, policy, taxonomy, Label
Studio client) and the options of one run, does the stage and returns a small frozen report with
the counts. The ``labelloop`` commands parse their options, call one of these and print the report;
the tasks in ``flows/`` call the same function and publish the report.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelloop.runtime import (
    Runtime,
    TrainingPairs,
    engine_from_settings,
    filter_model_ref,
    gate_rules,
    gold_indexer,
    record_limits,
    review_embedder,
    review_turn_scorer,
    routing_config,
    train_config,
    training_encoder,
    training_pairs,
)

if TYPE_CHECKING:
    from experiments.dataset import Snapshot
    from experiments.gate import GateResult
    from experiments.registry import TrainOutcome
    from experiments.training import TrainConfig
    from labeling.collection import PullReport
    from labeling.proposals import LLMBudget, Proposal, Proposer, ProposeStats
    from labeling.records import Conversation
    from labeling.sampling import GatedRecords, SampleReport
    from labeling.studio import PushReport
    from targeting.batch import FilterReport
    from targeting.engine import FilterEngine

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def new_run_id(kind: str | None = None) -> str:
    """A run id: ``[<kind>-]<UTC-ish local timestamp>-<6 hex>`` (every stage and flow names its
    runs this way)."""
    stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    return f"{kind}-{stamp}" if kind else stamp


# ----------------------------------------------------------------------------- ingest
@dataclass(frozen=True)
class IngestReport:
    """Files read into the label store (quarantine, gate, redact, store)."""

    run_id: str
    files: int
    sample: SampleReport | None = None  # None when there was nothing to read

    @property
    def inserted(self) -> int:
        return self.sample.inserted if self.sample else 0

    @property
    def eligible(self) -> int:
        return self.sample.eligible if self.sample else 0

    def as_dict(self) -> dict[str, Any]:
        if self.sample is None:
            return {"files": 0, "inserted": 0, "eligible": 0, "by_surface": {}, "by_reason": {}}
        return {"files": self.files, **self.sample.as_dict()}


def ingest(
    rt: Runtime,
    paths: Sequence[Path] | None = None,
    *,
    run_id: str | None = None,
    cap_per_surface: int | None = None,
    seed: int = 0,
) -> IngestReport:
    """Read record files, quarantine bad records, dedupe against the store, (sample per surface),
    gate, redact, store.

    ``paths`` None reads the files of the source folder (``source_dir``) not read before and marks
    them read afterwards; given paths are read as they are and not marked."""
    from labeling.sampling import sample_into_store
    from labeling.sources import FolderSource

    run_id = run_id or new_run_id()
    settings = rt.settings
    source = FolderSource(settings.source_dir) if paths is None else None
    files = source.pending(rt.store) if source is not None else list(paths or [])
    if not files:
        return IngestReport(run_id=run_id, files=0)
    report = sample_into_store(
        files,
        policy=rt.policy,
        store=rt.store,
        quarantine_path=settings.quarantine_dir / f"{run_id}.jsonl",
        limits=record_limits(settings),
        cap_per_surface=cap_per_surface,
        seed=seed,
        run_id=run_id,
    )
    if source is not None:
        source.mark_done(rt.store, files)
    return IngestReport(run_id=run_id, files=len(files), sample=report)


def read_gated(
    rt: Runtime, paths: Sequence[Path], *, limit: int | None = None, run_id: str | None = None
) -> GatedRecords:
    """Read, quarantine, gate and redact records (the first ``limit`` eligible ones), without
    storing them (``labelloop plan``); the quarantine file is ``propose-<time>.jsonl``."""
    from labeling.sampling import gate_records

    quarantine = rt.settings.quarantine_dir / f"propose-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    return gate_records(
        paths,
        rt.policy,
        limits=record_limits(rt.settings),
        quarantine_path=quarantine,
        limit=limit,
        run_id=run_id,
    )


def ingest_records(
    rt: Runtime, paths: Sequence[Path], *, limit: int | None = None, run_id: str
) -> GatedRecords:
    """:func:`read_gated`, then every row into the label store (rows already there are kept as
    they are); unlike :func:`ingest` no dedupe or sampling first: every row read is returned, so
    that the caller can propose labels for exactly these records."""
    gated = read_gated(rt, paths, limit=limit, run_id=run_id)
    rt.store.add_conversations(gated.rows)
    return gated


# ----------------------------------------------------------------------------- proposals
@dataclass(frozen=True)
class PendingProposals:
    """Eligible conversations without a proposal from this prompt and model."""

    ids: tuple[str, ...]
    prompt_hash: str
    model_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "prompt_hash": self.prompt_hash, "model_id": self.model_id}


def pending_proposals(rt: Runtime, proposer: Proposer, limit: int | None) -> PendingProposals:
    ids = rt.store.conversations_without_proposal(proposer.prompt.sha256, proposer.model_id, limit)
    return PendingProposals(tuple(ids), proposer.prompt.sha256, proposer.model_id)


@dataclass(frozen=True)
class ProposeReport:
    """Proposals of one batch: LLM usage, rows written, summed confidence per label."""

    run_id: str
    stats: ProposeStats
    inserted: int
    updated: int
    confidence_sum: Mapping[str, float]
    proposals: tuple[Proposal, ...] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.stats.as_dict(),
            "inserted": self.inserted,
            "updated": self.updated,
            "confidence_sum": dict(self.confidence_sum),
        }


def propose_pending(
    rt: Runtime,
    proposer: Proposer,
    ids: Sequence[str] | None = None,
    *,
    run_id: str,
    limit: int | None = None,
    turns: Mapping[str, list[dict[str, Any]]] | None = None,
    stats: ProposeStats | None = None,
    on_item: Callable[[Proposal], None] | None = None,
    write_each: bool = False,
    budget: LLMBudget | None = None,
) -> ProposeReport:
    """LLM + kNN proposals for ``ids`` (default: the pending ones, up to ``limit``), written to the
    label store (idempotent upsert).

    ``turns`` gives the redacted turns when the caller has them (else they are read from the
    store); ``stats`` accumulates over several calls; ``write_each`` proposes and writes one
    conversation at a time (``on_item`` then follows the store), else the batch is written once.
    ``budget`` is the run's LLM budget (default: no limit; see ``labeling.proposals``)."""
    from labeling.proposals import LLMBudget, ProposalInput, ProposeStats, write_proposals

    if ids is None:
        ids = pending_proposals(rt, proposer, limit).ids
    if turns is None:
        turns = rt.store.redacted_turns(list(ids))
    items = [ProposalInput.from_turns(cid, turns[cid]) for cid in ids if cid in turns]
    stats = stats if stats is not None else ProposeStats()
    budget = budget if budget is not None else LLMBudget()
    proposals: list[Proposal] = []
    inserted = updated = 0
    if write_each:
        for item in items:
            [p] = proposer.propose([item], stats=stats, budget=budget)
            ins, upd = write_proposals(rt.store, [p], run_id)
            inserted, updated = inserted + ins, updated + upd
            proposals.append(p)
            if on_item is not None:
                on_item(p)
    else:
        proposals = proposer.propose(items, stats=stats, on_item=on_item, budget=budget)
        inserted, updated = write_proposals(rt.store, proposals, run_id=run_id)
    conf: defaultdict[str, float] = defaultdict(float)
    for p in proposals:
        for k, v in p.sensitive.items():
            conf[f"sensitive:{k}"] += v
        for k, v in p.interests.items():
            conf[f"interest:{k}"] += v
    return ProposeReport(run_id, stats, inserted, updated, dict(conf), tuple(proposals))


# ----------------------------------------------------------------------------- review
@dataclass(frozen=True)
class PushReviewsReport:
    """Proposals routed (auto-accepted as silver, or to review) and review tasks imported."""

    run_id: str
    push: PushReport

    @property
    def imported(self) -> int:
        return self.push.imported

    def as_dict(self) -> dict[str, Any]:
        return self.push.as_dict()


def push_reviews(
    rt: Runtime,
    *,
    run_id: str | None = None,
    budget: int | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> PushReviewsReport:
    """Route new proposals and import review tasks with pre-annotations into Label Studio
    (resumable: a rerun never duplicates a task); the run goes to the audit log.

    ``budget`` and ``batch_size`` override ``review_budget`` / ``review_import_batch``."""
    from labeling.studio import push

    settings = rt.settings
    run_id = run_id or new_run_id("review-push")
    report = push(
        rt.store,
        rt.studio,
        taxonomy=rt.taxonomy,
        policy=rt.policy,
        cfg=routing_config(settings, budget=budget),
        run_id=run_id,
        silver_weight=settings.silver_weight,
        batch_size=batch_size or settings.review_import_batch,
        embed=review_embedder(settings),
        turn_scorer=review_turn_scorer(settings),
        progress=progress,
    )
    rt.store.append_audit("review_push", report.run_id, report.as_dict())
    return PushReviewsReport(report.run_id, report)


@dataclass(frozen=True)
class PullReviewsReport:
    """Annotations collected and resolved to gold, agreement and QA precision."""

    run_id: str
    pull: PullReport

    def as_dict(self) -> dict[str, Any]:
        return self.pull.as_dict()


def pull_reviews(
    rt: Runtime,
    *,
    run_id: str | None = None,
    reindex: bool = False,
    progress: Progress | None = None,
) -> PullReviewsReport:
    """Collect new and edited annotations, resolve them to gold (overlap, adjudication), index
    gold in the vector store; the run (without the agreement table) goes to the audit log.

    ``reindex`` re-upserts every human gold label into the vector store."""
    from labeling.collection import pull
    from labeling.studio import bootstrap, remember_projects

    run_id = run_id or new_run_id("review-pull")
    taxonomy, policy = rt.taxonomy, rt.policy
    projects = bootstrap(rt.studio, taxonomy, policy)
    remember_projects(rt.store, projects)
    report = pull(
        rt.store,
        rt.studio,
        projects,
        run_id=run_id,
        label_sets={"interests": list(taxonomy.ids()), "sensitive": list(policy.categories)},
        min_jaccard=rt.settings.adjudication_min_jaccard,
        index_gold=gold_indexer(rt.settings),
        reindex=reindex,
        progress=progress,
        taxonomy=taxonomy,
    )
    out = report.as_dict()
    rt.store.append_audit("review_pull", run_id, {k: v for k, v in out.items() if k != "agreement"})
    return PullReviewsReport(run_id, report)


# ----------------------------------------------------------------------------- training
def read_gold_records(rt: Runtime, paths: Sequence[Path]) -> tuple[list[Conversation], int]:
    """Valid records from files, and how many bad ones were counted and skipped (as everywhere)."""
    from labeling.records import Conversation, read_records

    convs: list[Conversation] = []
    bad = 0
    for item in read_records(paths, limits=record_limits(rt.settings)):
        if isinstance(item, Conversation):
            convs.append(item)
        else:
            bad += 1
    return convs, bad


def build_snapshot(rt: Runtime, from_records: Sequence[Path] | None = None) -> Snapshot:
    """The training snapshot: gold (and silver) labels from the label store, or from record files
    with gold labels (``from_records``; the store is then not opened), with its lineage."""
    from experiments.dataset import StoreSnapshotConfig, snapshot_from_records, snapshot_from_store
    from labeling.prompts import load_prompt
    from labeling.studio import label_config, project_title, schema_version

    settings, policy, taxonomy = rt.settings, rt.policy, rt.taxonomy
    lineage = {
        "policy_version": policy.version,
        "taxonomy_version": taxonomy.version,
        # the prompt that proposed the silver labels / pre-annotations of this snapshot
        "prompt_hash": load_prompt().sha256,
        # the Label Studio project (one per label-schema version) the gold labels came from
        "label_studio_project": project_title(schema_version(label_config(taxonomy, policy))),
    }
    if from_records:
        convs, _ = read_gold_records(rt, from_records)
        return snapshot_from_records(
            convs,
            taxonomy,
            policy.categories,
            eval_fraction=settings.eval_fraction,
            lineage=lineage,
            errors=[],
            workers=settings.train_workers,
        )
    cfg = StoreSnapshotConfig(
        eval_fraction=settings.eval_fraction, silver_precision=settings.train_silver_precision
    )
    return snapshot_from_store(rt.store, policy.categories, config=cfg, lineage=lineage)


@dataclass(frozen=True)
class TrainReport:
    """A trained and registered version: its MLflow run, model URI, snapshot and eval metrics
    (and, when asked for, the gold labels it contradicts that went back to review)."""

    outcome: TrainOutcome = field(repr=False)
    label_errors: Mapping[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return self.outcome.run_id

    @property
    def version(self) -> str | None:
        return self.outcome.version

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        out: dict[str, Any] = {
            "run_id": o.run_id,
            "run_url": o.run_url,
            "model_uri": o.model_uri,
            "version": o.version,
            "snapshot_hash": o.snapshot_hash,
            "metrics": dict(o.metrics),
        }
        if self.label_errors is not None:
            out["label_errors"] = dict(self.label_errors)
        return out


def train(
    rt: Runtime,
    *,
    from_records: Sequence[Path] | None = None,
    use_embeddings: bool = True,
    use_tfidf: bool = True,
    progress: Progress | None = None,
    label_errors: bool = False,
) -> TrainReport:
    """Snapshot -> train -> MLflow run -> registered version of the filter model.

    Sentence embeddings are cached on disk by text hash (``<state>/cache``), so training again on
    the same or overlapping data embeds only the new texts. ``label_errors`` sends the gold
    labels that the new model's out-of-fold probabilities confidently contradict back to Label
    Studio (:func:`queue_label_errors`)."""
    from experiments.registry import train_and_register

    settings = rt.settings
    snapshot = build_snapshot(rt, from_records)
    cfg = train_config(settings, use_embeddings=use_embeddings, use_tfidf=use_tfidf)
    snapshot = with_training_pairs(snapshot, training_pairs(settings), cfg)
    enc = training_encoder(settings, cfg.embed_max_length) if use_embeddings else None
    outcome = train_and_register(
        snapshot,
        tracking_uri=settings.mlflow_uri,
        model_name=filter_model_ref(settings).name,
        policy=rt.policy,
        taxonomy=rt.taxonomy,
        embedder=enc.embedder if enc else None,
        onnx_path=enc.onnx_path if enc else None,
        tokenizer_path=enc.tokenizer_path if enc else None,
        config=cfg,
        experiment=settings.mlflow_experiment,
        embedding_model_id=enc.model_id if enc else "none",
        encoder=settings.filter_encoder,
        progress=progress,
    )
    if not label_errors:
        return TrainReport(outcome)
    errors = queue_label_errors(
        rt,
        outcome.train.oof_interests,
        outcome.train.bundle.interest_ids,
        run_id=f"label-errors-{outcome.run_id}",
    )
    return TrainReport(outcome, errors)


def with_training_pairs(
    snapshot: Snapshot, pairs: TrainingPairs | None, cfg: TrainConfig
) -> Snapshot:
    """``snapshot`` with the contrast pairs added to its training split (origin ``augmented``;
    each clean side weighing as much as its sensitive side among the examples training keeps),
    recorded in its lineage; unchanged when there are none. A pair with an error or an empty side
    is left out."""
    if pairs is None:
        return snapshot
    from experiments.contrast import add_pairs, unchecked
    from experiments.training import subsample_clean

    out, weight = add_pairs(
        snapshot,
        unchecked(pairs.pairs),
        clean_share=1.0,
        unit=cfg.unit,
        segment_chars=cfg.segment_chars,
        reference=subsample_clean(list(snapshot.train), cfg)[0],
    )
    n_added = (len(out.train) - len(snapshot.train)) // 2
    lineage = {
        **snapshot.lineage,
        "contrast_pairs": f"{n_added} of {len(pairs.pairs)} from {pairs.source}",
        "contrast_clean_weight": f"{weight:.3f}",
    }
    return replace(out, lineage=lineage)


def queue_label_errors(
    rt: Runtime,
    probs: Mapping[str, Mapping[str, float]],
    labels: Sequence[str],
    *,
    run_id: str,
) -> dict[str, Any]:
    """Gold interest labels that a model's out-of-fold probabilities confidently contradict
    (>= ``label_error_threshold``) go back to Label Studio as adjudication tasks.

    A failure here (Label Studio down) does not fail the training: it is reported in the result
    and the audit log, and the next training finds the same issues again.
    """
    from labeling.collection import queue_label_errors as queue
    from labeling.studio import bootstrap, remember_projects

    if not probs or not labels:
        return {"issues": 0, "conversations": 0, "queued": 0}
    try:
        projects = bootstrap(rt.studio, rt.taxonomy, rt.policy)
        remember_projects(rt.store, projects)
        out = queue(
            rt.store, rt.studio, projects, probs, list(labels), run_id=run_id,
            min_confidence=rt.settings.label_error_threshold, group="interests",
            taxonomy=rt.taxonomy,
        )  # fmt: skip
    except Exception as exc:  # reported, never fatal for the model
        out = {"error": f"{type(exc).__name__}: {exc}"}
        log.warning("label-error check skipped: %s", out["error"])
    rt.store.append_audit("label_errors", run_id, out)
    return out


# ----------------------------------------------------------------------------- gate and promotion
@dataclass(frozen=True)
class PromoteReport:
    """``@production`` moved to a version (the one before keeps ``@previous``), or already there."""

    version: str
    previous: str | None
    changed: bool
    forced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "approved": self.version,
            "previous": self.previous,
            "changed": self.changed,
            "forced": self.forced,
        }


@dataclass(frozen=True)
class GateReport:
    """The champion/challenger verdict on one version (and its promotion when the gate
    auto-approves)."""

    result: GateResult
    promoted: PromoteReport | None = None

    @property
    def version(self) -> str:
        return self.result.version

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def approved(self) -> bool:
        return self.promoted is not None

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "version": r.version,
            "champion_version": r.champion_version,
            "passed": r.passed,
            "summary": r.summary(),
            "table": r.table_markdown(),
            "n_eval": r.n_eval,
            "gate_run_id": r.gate_run_id,
            "failed_checks": [
                {
                    "check": c.name,
                    "value": c.challenger,
                    "threshold": c.threshold,
                    "detail": c.detail,
                }
                for c in r.checks
                if not c.passed
            ],
            "approved": self.approved,
        }


def gate(rt: Runtime, version: str, *, auto_approve: bool | None = None) -> GateReport:
    """Gate ``version`` against the current production champion on the frozen eval split
    (verdict logged to MLflow, ``@challenger`` on pass).

    A passing version is promoted at once when ``auto_approve`` (default: the
    ``gate_auto_approve`` setting); the flows pass False and promote on the
    ``labelloop.gate.passed`` event instead."""
    from experiments.gate import evaluate

    settings = rt.settings
    result = evaluate(
        version,
        tracking_uri=settings.mlflow_uri,
        model=filter_model_ref(settings),
        rules=gate_rules(settings),
        experiment=settings.mlflow_experiment,
    )
    auto = settings.gate_auto_approve if auto_approve is None else auto_approve
    if not (result.passed and auto):
        return GateReport(result)
    return GateReport(result, promote(rt, version))


def promote(
    rt: Runtime, version: str, *, force: bool = False, reason: str | None = None
) -> PromoteReport:
    """Move ``@production`` (the ``filter_model_alias``) to ``version``; a version whose gate did
    not pass needs ``force`` and a ``reason``, both recorded on the version. Raises
    :class:`experiments.gate.GateError` when the rules refuse."""
    from experiments.gate import approve

    settings = rt.settings
    r = approve(
        version,
        tracking_uri=settings.mlflow_uri,
        model=filter_model_ref(settings),
        force=force,
        reason=reason,
    )
    return PromoteReport(
        version=str(r["version"]),
        previous=r.get("previous"),
        changed=bool(r["changed"]),
        forced=bool(r.get("forced", False)),
    )


# ----------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class ScoreReport:
    """One file decided by the production filter (and, for the flow, its interest signals)."""

    filter: FilterReport
    quarantine_path: Path
    signals: int | None = None
    signals_path: Path | None = None

    @property
    def run_id(self) -> str:
        return self.filter.run_id

    def as_dict(self) -> dict[str, Any]:
        out = self.filter.as_dict()
        if self.signals_path is not None:
            out |= {"signals": self.signals, "signals_path": str(self.signals_path)}
        return out


def score_file(
    rt: Runtime,
    src: Path,
    output: Path,
    *,
    engine: FilterEngine | None = None,
    run_id: str | None = None,
    chunk_size: int = 256,
    quarantine: Path | None = None,
    quarantine_prefix: str = "filter",
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """Decide every record of ``src`` with the production filter into ``output`` (fail closed,
    audited); an interrupted run on the same files is resumed with its run id.

    ``engine`` defaults to the one the settings build; bad lines go to ``quarantine`` (default
    ``<quarantine_dir>/<quarantine_prefix>-<run_id>.jsonl``)."""
    from targeting.batch import filter_file, resumable_run

    engine = engine if engine is not None else engine_from_settings(rt.settings)
    prior = resumable_run(src, output)
    run_id = prior.run_id if prior is not None else (run_id or new_run_id())
    qpath = quarantine or rt.settings.quarantine_dir / f"{quarantine_prefix}-{run_id}.jsonl"
    report = filter_file(
        engine,
        src,
        output,
        chunk_size=chunk_size,
        quarantine_path=qpath,
        run_id=run_id,
        on_progress=on_progress,
    )
    if engine.audit is not None:
        engine.audit.close()
    return ScoreReport(report, qpath)


def score_file_to_signals(rt: Runtime, src: Path, run_id: str) -> ScoreReport:
    """:func:`score_file` into ``<signals>/decisions/<stem>.<run_id>.jsonl`` (finishing an
    interrupted earlier run on the same file instead), then the interest signals (eligible
    decisions with interests) to ``<signals>/<stem>.<run_id>.signals.jsonl``."""
    from targeting.batch import resumable_run

    signals_dir = rt.settings.signals
    decisions = signals_dir / "decisions" / f"{src.stem}.{run_id}.jsonl"
    for partial in sorted((signals_dir / "decisions").glob(f"{src.stem}.*.jsonl.partial")):
        earlier = partial.with_name(partial.name.removesuffix(".partial"))
        prior = resumable_run(src, earlier)
        if prior is not None:  # an interrupted score_batch run on the same file: finish it
            decisions, run_id = earlier, prior.run_id
            break
    scored = score_file(rt, src, decisions, run_id=run_id, quarantine_prefix="score")
    signals = signals_dir / f"{src.stem}.{scored.run_id}.signals.jsonl"
    n = write_signals(decisions, signals)
    return ScoreReport(scored.filter, scored.quarantine_path, signals=n, signals_path=signals)


def write_signals(decisions: Path, signals: Path) -> int:
    """Interest signals (eligible decisions with interests) of a decisions file; renamed into
    place when complete. Returns how many."""
    partial = signals.with_name(signals.name + ".partial")
    n = 0
    with decisions.open(encoding="utf-8") as fin, partial.open("w", encoding="utf-8") as fout:
        for line in fin:
            d = json.loads(line)
            if d.get("eligible") and d.get("interests"):
                fout.write(json.dumps({"conversation_id": d["conversation_id"], "interests": d["interests"],
                                       "model_version": d.get("model_version"),
                                       "policy_version": d.get("policy_version")}) + "\n")  # fmt: skip
                n += 1
    partial.replace(signals)
    return n
