"""Collecting annotations from Label Studio back into the label store, and resolving them to gold.

:func:`pull` is incremental and idempotent:

1. For the review and the adjudication project, list the tasks updated since the last sync
   (``sync_state`` key ``ls:<project>:updated_at``, minus a small safety window) with their
   annotations. Each annotation is upserted by its Label Studio id: annotator, labels, comment,
   lead time, status (``completed``; ``skipped`` when the annotator skipped/cancelled it, recorded
   without labels; ``cancelled`` when it was deleted in Label Studio). An edit of an earlier
   annotation updates its row.
2. Every touched conversation is resolved (``labeling.agreement.resolve``): enough independent
   annotations -> ``human`` gold (upsert, ``revision`` + 1 only on change); a disagreement -> a task
   in the adjudication project (the annotators' answers as predictions) and, for sensitive
   categories, a *provisional* gold (union, no interests, weight 0) until the adjudicator answers;
   the adjudicator's latest answer -> ``adjudicated`` gold.
3. Changed human/adjudicated gold is upserted into the vector store through ``index_gold`` (an
   injected callable, e.g. ``labeling.vectorstore``'s idempotent upsert keyed by conversation id).
4. Agreement (per group, per annotator) and the QA precision of auto-accepted labels are computed
   and written to ``runs`` (kind ``review_pull``).

Re-running with nothing new in Label Studio changes no label row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from labeling.agreement import (
    CANCELLED,
    COMPLETED,
    SKIPPED,
    AnnotationView,
    agreement,
    find_label_errors,
    resolve,
)
from labeling.gold import HUMAN_ORIGINS, GoldChange, upsert_gold
from labeling.studio import (
    ADJUDICATION,
    DONE,
    IMPORTING,
    PushReport,
    StudioClient,
    import_pending,
    parse_result,
)
from labeling.studio import (
    SKIPPED as TASK_SKIPPED,
)
from labelloop.store.models import AnnotationRow, utcnow
from labelloop.store.review import AnnotationValues, TaskIntent, as_utc

if TYPE_CHECKING:
    from labeling.studio import Projects
    from labeling.taxonomy import Taxonomy
    from labelloop.store import LabelStore, ReviewTransaction

SYNC_WINDOW = timedelta(seconds=2)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GoldExample:
    """What the vector store needs of a gold label (text is the redacted rendering)."""

    conversation_id: str
    text: str
    interests: tuple[str, ...]
    sensitive: tuple[str, ...]
    origin: str
    revision: int


IndexGold = Callable[[Sequence[GoldExample]], object]


@dataclass
class PullReport:
    run_id: str
    tasks_seen: int = 0
    annotations_new: int = 0
    annotations_updated: int = 0
    annotations_unchanged: int = 0
    skipped: int = 0
    cancelled: int = 0
    unknown_conversations: int = 0
    gold_created: int = 0
    gold_updated: int = 0
    provisional: int = 0
    adjudication_sent: int = 0
    waiting: int = 0
    indexed: int = 0
    index_error: str | None = None
    agreement: dict[str, Any] = field(default_factory=dict)
    qa: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"seconds": round(self.seconds, 3)}


# ---- helpers -----------------------------------------------------------------------------------
def _parse_ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return None


def _sync_key(project_id: int) -> str:
    return f"ls:{project_id}:updated_at"


def view(row: AnnotationRow) -> AnnotationView:
    return AnnotationView(
        annotator=row.annotator,
        status=row.status,
        interests=frozenset(row.interests or []),
        sensitive=frozenset(row.sensitive or []),
        updated_at=as_utc(row.ls_updated_at),
        ls_annotation_id=row.ls_annotation_id,
    )


# ---- step 1: annotations -----------------------------------------------------------------------
def upsert_annotation(
    tx: ReviewTransaction,
    cid: str,
    task_id: int,
    project_id: int,
    ann: Mapping[str, Any],
    users: Mapping[int, str],
    report: PullReport,
) -> bool:
    """Insert/update one Label Studio annotation; True if the row changed."""
    ann_id = int(ann["id"])
    cancelled = bool(ann.get("was_cancelled"))
    if cancelled:
        interests: list[str] = []
        sensitive: list[str] = []
        comment = None
    else:
        interests, sensitive, comment = parse_result(ann.get("result") or [])
    by = ann.get("completed_by")
    by_id = int(by["id"]) if isinstance(by, Mapping) else (int(by) if by is not None else None)
    annotator = users.get(by_id, f"user:{by_id}") if by_id is not None else "unknown"
    status = SKIPPED if cancelled else COMPLETED
    lead = ann.get("lead_time")
    values = AnnotationValues(
        conversation_id=cid,
        ls_task_id=task_id,
        ls_project_id=project_id,
        annotator=annotator,
        status=status,
        interests=interests,
        sensitive=sensitive,
        comment=comment,
        lead_time_s=float(lead) if lead is not None else None,
        ls_updated_at=_parse_ts(ann.get("updated_at")),
    )
    write = tx.upsert_annotation(ann_id, values)
    if write == "inserted":
        report.annotations_new += 1
        if cancelled:
            report.skipped += 1
        return True
    if write == "updated":
        report.annotations_updated += 1
        return True
    report.annotations_unchanged += 1
    return False


def sync_project(
    tx: ReviewTransaction,
    client: StudioClient,
    project_id: int,
    users: Mapping[int, str],
    report: PullReport,
    progress: Progress | None = None,
) -> set[str]:
    """Step 1 for one project; returns the conversation ids whose annotations changed."""
    key = _sync_key(project_id)
    since_raw = tx.sync_value(key)
    since = _parse_ts(since_raw) if since_raw else None
    known = tx.conversation_ids()
    touched: set[str] = set()
    newest = since
    n = 0
    for task in client.iter_tasks(
        project_id, updated_after=(since - SYNC_WINDOW) if since else None, full=True
    ):
        n += 1
        report.tasks_seen += 1
        cid = (task.get("data") or {}).get("conversation_id")
        updated = _parse_ts(task.get("updated_at"))
        if updated and (newest is None or updated > newest):
            newest = updated
        if not isinstance(cid, str) or cid not in known:
            report.unknown_conversations += 1
            continue
        task_id = int(task["id"])
        anns = task.get("annotations") or []
        present = set()
        for ann in anns:
            present.add(int(ann["id"]))
            if upsert_annotation(tx, cid, task_id, project_id, ann, users, report):
                touched.add(cid)
        for row in tx.task_annotations_not_in(task_id, CANCELLED):
            if row.ls_annotation_id not in present:  # deleted in Label Studio
                tx.set_annotation_status(row, CANCELLED)
                report.cancelled += 1
                touched.add(cid)
        if progress and n % 25 == 0:
            progress(f"pull project {project_id}", n, 0)
    if newest is not None and newest != since:
        tx.set_sync_value(key, newest.isoformat())
    return touched


# ---- step 2: resolution ------------------------------------------------------------------------
def _count(change: GoldChange | None, report: PullReport, changes: list[GoldChange]) -> None:
    if change is None:
        return
    changes.append(change)
    if change.created:
        report.gold_created += 1
    else:
        report.gold_updated += 1


def resolve_conversation(
    tx: ReviewTransaction,
    cid: str,
    projects: Projects,
    *,
    min_jaccard: float,
    run_id: str,
    report: PullReport,
    changes: list[GoldChange],
) -> None:
    """Step 2 for one conversation (see module doc)."""
    review = tx.task_of(cid, projects.review)
    adj = tx.task_of(cid, projects.adjudication)
    if adj is not None:
        # once a conversation went to adjudication, only the adjudicator's answer becomes gold
        since = _parse_ts((adj.detail or {}).get("reopened_at"))
        answers = [
            a
            for a in tx.annotations_of(cid, projects.adjudication)
            if a.status == COMPLETED
            and (since is None or (as_utc(a.ls_updated_at) or since) >= since)
        ]
        if answers:
            last = max(
                answers, key=lambda a: view(a).updated_at or datetime.min.replace(tzinfo=UTC)
            )
            _count(
                upsert_gold(
                    tx, cid, last.interests, last.sensitive, "adjudicated", 1.0, force=True
                ),
                report,
                changes,
            )
            tx.set_task_status(adj, DONE)
            if review is not None:
                tx.set_task_status(review, DONE)
            return
        return  # waiting for the adjudicator; the provisional answer stands
    required = review.overlap if review is not None else 1
    res = resolve((view(a) for a in tx.annotations_of(cid, projects.review)), required, min_jaccard)
    if res.kind == "wait":
        report.waiting += 1
        return
    if res.kind == "skipped":
        if review is not None:
            tx.set_task_status(review, TASK_SKIPPED)
        return
    if res.kind == "gold":
        _count(upsert_gold(tx, cid, res.interests, res.sensitive, "human", 1.0), report, changes)
        if review is not None:
            tx.set_task_status(review, DONE)
        return
    # disagreement -> adjudication (intent first; imported right after, crash-safe)
    if review is not None:
        tx.set_task_status(review, ADJUDICATION)
    if res.sensitive:
        change = upsert_gold(tx, cid, (), res.sensitive, "provisional", 0.0, force=True)
        if change is not None:
            report.provisional += 1
    answers_detail = [
        {
            "annotator": a.annotator,
            "interests": sorted(a.interests),
            "sensitive": sorted(a.sensitive),
        }
        for a in tx.annotations_of(cid, projects.review)
        if a.status == COMPLETED
    ]
    request_adjudication(
        tx,
        cid,
        projects.adjudication,
        reason="disagreement",
        why=res.why,
        answers=answers_detail,
        run_id=run_id,
    )
    report.adjudication_sent += 1


def request_adjudication(
    tx: ReviewTransaction,
    cid: str,
    adjudication_project: int,
    *,
    reason: str,
    why: str,
    answers: Sequence[Mapping[str, Any]],
    run_id: str,
) -> bool:
    """Record the intent of an adjudication task (imported by ``import_pending``); True if new."""
    row = tx.task_of(cid, adjudication_project)
    detail = {"why": why, "answers": list(answers)}
    if row is None:
        tx.add_task(
            TaskIntent(
                conversation_id=cid,
                project_id=adjudication_project,
                status=IMPORTING,
                reason=reason,
                priority=2.0 if reason == "disagreement" else 1.0,
                overlap=1,
                run_id=run_id,
                detail=detail,
            )
        )
        return True
    if row.status == DONE and reason == "label_error":
        tx.reopen_task(
            row,
            status=ADJUDICATION,
            reason=reason,
            detail={**detail, "reopened_at": utcnow().isoformat()},
        )
        return True
    return False


# ---- metrics -----------------------------------------------------------------------------------
def agreement_metrics(
    tx: ReviewTransaction, projects: Projects, label_sets: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    items: dict[str, list[AnnotationView]] = defaultdict(list)
    for a in tx.project_annotations(projects.review):
        items[a.conversation_id].append(view(a))
    return {g: r.as_dict() for g, r in agreement(items, label_sets).items()}


def qa_precision(tx: ReviewTransaction, projects: Projects) -> dict[str, Any]:
    """Precision of auto-accepted (silver) labels on the QA sample that humans have resolved."""
    tp = fp = exact = n = sens_missed = 0
    for row in tx.tasks_with_reason(projects.review, "qa_sample"):
        silver = (row.detail or {}).get("silver")
        if not silver:
            continue
        gold = tx.gold_label(row.conversation_id)
        if gold is None or gold.origin not in HUMAN_ORIGINS:
            continue
        n += 1
        si, gi = set(silver.get("interests") or []), set(gold.interests or [])
        ss, gs = set(silver.get("sensitive") or []), set(gold.sensitive or [])
        tp += len(si & gi)
        fp += len(si - gi)
        exact += int(si == gi and ss == gs)
        sens_missed += int(bool(gs - ss))
    return {
        "n_reviewed": n,
        "interest_precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "exact_match": round(exact / n, 4) if n else None,
        "sensitive_missed": sens_missed,
    }


def queue_counts(store: LabelStore, projects: Projects) -> dict[str, dict[str, int]]:
    """Review tasks by status in the review and adjudication projects, gold labels by origin."""
    return {
        "review": store.review_task_statuses(projects.review),
        "adjudication": store.review_task_statuses(projects.adjudication),
        "gold": store.gold_by_origin(),
    }


# ---- pull --------------------------------------------------------------------------------------
def gold_examples(tx: ReviewTransaction, ids: Iterable[str]) -> list[GoldExample]:
    from labeling.records import render_turns

    out: list[GoldExample] = []
    for gold, conv in tx.gold_with_conversations(ids):
        if gold.origin not in HUMAN_ORIGINS or not conv.redacted_turns:
            continue
        out.append(
            GoldExample(
                conversation_id=gold.conversation_id,
                text=render_turns(conv.redacted_turns),
                interests=tuple(gold.interests or []),
                sensitive=tuple(gold.sensitive or []),
                origin=gold.origin,
                revision=gold.revision,
            )
        )
    return out


def pull(
    store: LabelStore,
    client: StudioClient,
    projects: Projects,
    *,
    run_id: str,
    label_sets: Mapping[str, Sequence[str]],
    min_jaccard: float = 0.5,
    index_gold: IndexGold | None = None,
    reindex: bool = False,
    progress: Progress | None = None,
    taxonomy: Taxonomy | None = None,
) -> PullReport:
    """Collect, resolve, import adjudication tasks, index, measure (see module doc). The
    ``taxonomy`` gives the annotators' answers on adjudication tasks their tree paths (without
    it an interest shows as its bare id)."""
    t0 = time.perf_counter()
    report = PullReport(run_id)
    users = client.users()
    changes: list[GoldChange] = []
    with store.review() as tx:
        touched: set[str] = set()
        for pid in (projects.review, projects.adjudication):
            touched |= sync_project(tx, client, pid, users, report, progress)
        for i, cid in enumerate(sorted(touched)):
            resolve_conversation(
                tx,
                cid,
                projects,
                min_jaccard=min_jaccard,
                run_id=run_id,
                report=report,
                changes=changes,
            )
            if progress:
                progress("resolve", i + 1, len(touched))
    # adjudication tasks recorded above are imported now (reconciled first: crash-safe)
    push_report = PushReport(run_id)
    import_pending(
        store,
        client,
        projects.adjudication,
        label_threshold=0.5,
        report=push_report,
        progress=progress,
        taxonomy=taxonomy,
    )
    to_index = {c.conversation_id for c in changes if c.origin in HUMAN_ORIGINS}
    if reindex:
        to_index |= store.gold_conversation_ids(HUMAN_ORIGINS)
    with store.review() as tx:
        examples = gold_examples(tx, to_index) if to_index and index_gold else []
        report.agreement = agreement_metrics(tx, projects, label_sets)
        report.qa = qa_precision(tx, projects)
    if examples and index_gold is not None:
        try:
            index_gold(examples)
            report.indexed = len(examples)
        except Exception as exc:  # reported; `review pull --reindex` repairs
            report.index_error = f"{type(exc).__name__}: {exc}"
    report.seconds = time.perf_counter() - t0
    store.record_run(run_id, "review_pull", report.as_dict())
    return report


# ---- label-error check -------------------------------------------------------------------------
def queue_label_errors(
    store: LabelStore,
    client: StudioClient,
    projects: Projects,
    probs: Mapping[str, Mapping[str, float]],
    labels: Sequence[str],
    *,
    run_id: str,
    min_confidence: float = 0.9,
    group: str = "interests",
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """Queue gold labels that ``probs`` (out-of-sample) confidently contradict for re-review.

    Returns counts: issues found, conversations queued (adjudication tasks created or reopened).
    """
    with store.review() as tx:
        gold = {
            g.conversation_id: (g.interests if group == "interests" else g.sensitive) or []
            for g in tx.gold_labels()
        }
        issues = find_label_errors(gold, probs, labels, min_confidence=min_confidence)
        by_cid: dict[str, list[str]] = defaultdict(list)
        for i in issues:
            by_cid[i.conversation_id].append(
                f"{i.label}: gold {'has' if i.gold_value else 'lacks'} it, model p={i.p_label:.2f}"
            )
        queued = 0
        for cid, why in sorted(by_cid.items()):
            g = tx.gold_label(cid)
            answers = [
                {
                    "annotator": f"gold:{g.origin}" if g else "gold",
                    "interests": list(g.interests or []) if g else [],
                    "sensitive": list(g.sensitive or []) if g else [],
                }
            ]
            if request_adjudication(
                tx,
                cid,
                projects.adjudication,
                reason="label_error",
                why="; ".join(why),
                answers=answers,
                run_id=run_id,
            ):
                queued += 1
    rep = PushReport(run_id)
    import_pending(
        store, client, projects.adjudication, label_threshold=0.5, report=rep, taxonomy=taxonomy
    )
    return {"issues": len(issues), "conversations": len(by_cid), "queued": queued}
