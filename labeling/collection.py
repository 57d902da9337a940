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

from sqlalchemy import select
from sqlalchemy.orm import Session

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
from labelloop.store.models import (
    AnnotationRow,
    ConversationRow,
    GoldLabelRow,
    ReviewTaskRow,
    SyncStateRow,
    utcnow,
)

if TYPE_CHECKING:
    from labeling.studio import Projects
    from labeling.taxonomy import Taxonomy
    from labelloop.store import LabelStore

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


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _sync_key(project_id: int) -> str:
    return f"ls:{project_id}:updated_at"


def get_sync(s: Session, key: str) -> str | None:
    row = s.get(SyncStateRow, key)
    return row.value if row else None


def set_sync(s: Session, key: str, value: str) -> None:
    """Insert or update; a new key is an upsert, so a concurrent writer never fails it."""
    from labelloop.store.store import upsert

    row = s.get(SyncStateRow, key)
    if row is None:
        upsert(s, SyncStateRow, {"key": key, "value": value}, ["key"], ["value"])
    elif row.value != value:
        row.value = value


def view(row: AnnotationRow) -> AnnotationView:
    return AnnotationView(
        annotator=row.annotator,
        status=row.status,
        interests=frozenset(row.interests or []),
        sensitive=frozenset(row.sensitive or []),
        updated_at=_aware(row.ls_updated_at),
        ls_annotation_id=row.ls_annotation_id,
    )


# ---- step 1: annotations -----------------------------------------------------------------------
def upsert_annotation(
    s: Session,
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
    updated = _parse_ts(ann.get("updated_at"))
    values = {
        "conversation_id": cid,
        "ls_task_id": task_id,
        "ls_project_id": project_id,
        "annotator": annotator,
        "status": status,
        "interests": interests,
        "sensitive": sensitive,
        "comment": comment,
        "lead_time_s": float(lead) if lead is not None else None,
        "ls_updated_at": updated,
    }
    row = s.scalars(select(AnnotationRow).where(AnnotationRow.ls_annotation_id == ann_id)).first()
    if row is None:
        s.add(AnnotationRow(ls_annotation_id=ann_id, **values))
        report.annotations_new += 1
        if cancelled:
            report.skipped += 1
        return True
    changed = False
    for k, v in values.items():
        cur = getattr(row, k)
        if k == "ls_updated_at":
            cur = _aware(cur)
        if cur != v:
            setattr(row, k, v)
            changed = True
    if changed:
        report.annotations_updated += 1
    else:
        report.annotations_unchanged += 1
    return changed


def sync_project(
    s: Session,
    client: StudioClient,
    project_id: int,
    users: Mapping[int, str],
    report: PullReport,
    progress: Progress | None = None,
) -> set[str]:
    """Step 1 for one project; returns the conversation ids whose annotations changed."""
    key = _sync_key(project_id)
    since_raw = get_sync(s, key)
    since = _parse_ts(since_raw) if since_raw else None
    known = set(s.scalars(select(ConversationRow.conversation_id)))
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
            if upsert_annotation(s, cid, task_id, project_id, ann, users, report):
                touched.add(cid)
        for row in s.scalars(
            select(AnnotationRow).where(
                AnnotationRow.ls_task_id == task_id, AnnotationRow.status != CANCELLED
            )
        ):
            if row.ls_annotation_id not in present:  # deleted in Label Studio
                row.status = CANCELLED
                report.cancelled += 1
                touched.add(cid)
        if progress and n % 25 == 0:
            progress(f"pull project {project_id}", n, 0)
    if newest is not None and newest != since:
        set_sync(s, key, newest.isoformat())
    return touched


# ---- step 2: resolution ------------------------------------------------------------------------
def _task_row(s: Session, cid: str, project_id: int) -> ReviewTaskRow | None:
    return s.scalars(
        select(ReviewTaskRow).where(
            ReviewTaskRow.conversation_id == cid, ReviewTaskRow.ls_project_id == project_id
        )
    ).first()


def _annotations(s: Session, cid: str, project_id: int) -> list[AnnotationRow]:
    return list(
        s.scalars(
            select(AnnotationRow).where(
                AnnotationRow.conversation_id == cid, AnnotationRow.ls_project_id == project_id
            )
        )
    )


def _count(change: GoldChange | None, report: PullReport, changes: list[GoldChange]) -> None:
    if change is None:
        return
    changes.append(change)
    if change.created:
        report.gold_created += 1
    else:
        report.gold_updated += 1


def resolve_conversation(
    s: Session,
    cid: str,
    projects: Projects,
    *,
    min_jaccard: float,
    run_id: str,
    report: PullReport,
    changes: list[GoldChange],
) -> None:
    """Step 2 for one conversation (see module doc)."""
    review = _task_row(s, cid, projects.review)
    adj = _task_row(s, cid, projects.adjudication)
    if adj is not None:
        # once a conversation went to adjudication, only the adjudicator's answer becomes gold
        since = _parse_ts((adj.detail or {}).get("reopened_at"))
        answers = [
            a
            for a in _annotations(s, cid, projects.adjudication)
            if a.status == COMPLETED
            and (since is None or (_aware(a.ls_updated_at) or since) >= since)
        ]
        if answers:
            last = max(
                answers, key=lambda a: view(a).updated_at or datetime.min.replace(tzinfo=UTC)
            )
            _count(
                upsert_gold(s, cid, last.interests, last.sensitive, "adjudicated", 1.0, force=True),
                report,
                changes,
            )
            adj.status = DONE
            if review is not None:
                review.status = DONE
            return
        return  # waiting for the adjudicator; the provisional answer stands
    required = review.overlap if review is not None else 1
    res = resolve((view(a) for a in _annotations(s, cid, projects.review)), required, min_jaccard)
    if res.kind == "wait":
        report.waiting += 1
        return
    if res.kind == "skipped":
        if review is not None:
            review.status = TASK_SKIPPED
        return
    if res.kind == "gold":
        _count(upsert_gold(s, cid, res.interests, res.sensitive, "human", 1.0), report, changes)
        if review is not None:
            review.status = DONE
        return
    # disagreement -> adjudication (intent first; imported right after, crash-safe)
    if review is not None:
        review.status = ADJUDICATION
    if res.sensitive:
        change = upsert_gold(s, cid, (), res.sensitive, "provisional", 0.0, force=True)
        if change is not None:
            report.provisional += 1
    answers_detail = [
        {
            "annotator": a.annotator,
            "interests": sorted(a.interests),
            "sensitive": sorted(a.sensitive),
        }
        for a in _annotations(s, cid, projects.review)
        if a.status == COMPLETED
    ]
    request_adjudication(
        s,
        cid,
        projects.adjudication,
        reason="disagreement",
        why=res.why,
        answers=answers_detail,
        run_id=run_id,
    )
    report.adjudication_sent += 1


def request_adjudication(
    s: Session,
    cid: str,
    adjudication_project: int,
    *,
    reason: str,
    why: str,
    answers: Sequence[Mapping[str, Any]],
    run_id: str,
) -> bool:
    """Record the intent of an adjudication task (imported by ``import_pending``); True if new."""
    row = _task_row(s, cid, adjudication_project)
    detail = {"why": why, "answers": list(answers)}
    if row is None:
        s.add(
            ReviewTaskRow(
                conversation_id=cid,
                ls_project_id=adjudication_project,
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
        row.status = ADJUDICATION
        row.reason = reason
        row.detail = {**(row.detail or {}), **detail, "reopened_at": utcnow().isoformat()}
        return True
    return False


# ---- metrics -----------------------------------------------------------------------------------
def agreement_metrics(
    s: Session, projects: Projects, label_sets: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    items: dict[str, list[AnnotationView]] = defaultdict(list)
    for a in s.scalars(select(AnnotationRow).where(AnnotationRow.ls_project_id == projects.review)):
        items[a.conversation_id].append(view(a))
    return {g: r.as_dict() for g, r in agreement(items, label_sets).items()}


def qa_precision(s: Session, projects: Projects) -> dict[str, Any]:
    """Precision of auto-accepted (silver) labels on the QA sample that humans have resolved."""
    tp = fp = exact = n = sens_missed = 0
    for row in s.scalars(
        select(ReviewTaskRow).where(
            ReviewTaskRow.ls_project_id == projects.review, ReviewTaskRow.reason == "qa_sample"
        )
    ):
        silver = (row.detail or {}).get("silver")
        if not silver:
            continue
        gold = s.scalars(
            select(GoldLabelRow).where(GoldLabelRow.conversation_id == row.conversation_id)
        ).first()
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
def gold_examples(s: Session, ids: Iterable[str]) -> list[GoldExample]:
    from labeling.records import render_turns

    out: list[GoldExample] = []
    for gold, conv in s.execute(
        select(GoldLabelRow, ConversationRow)
        .join(ConversationRow, ConversationRow.conversation_id == GoldLabelRow.conversation_id)
        .where(GoldLabelRow.conversation_id.in_(list(ids)))
    ):
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
    with store.session() as s:
        touched: set[str] = set()
        for pid in (projects.review, projects.adjudication):
            touched |= sync_project(s, client, pid, users, report, progress)
        for i, cid in enumerate(sorted(touched)):
            resolve_conversation(
                s,
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
    with store.session() as s:
        examples = gold_examples(s, to_index) if to_index and index_gold else []
        report.agreement = agreement_metrics(s, projects, label_sets)
        report.qa = qa_precision(s, projects)
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
    with store.session() as s:
        gold = {
            g.conversation_id: (g.interests if group == "interests" else g.sensitive) or []
            for g in s.scalars(select(GoldLabelRow))
        }
        issues = find_label_errors(gold, probs, labels, min_confidence=min_confidence)
        by_cid: dict[str, list[str]] = defaultdict(list)
        for i in issues:
            by_cid[i.conversation_id].append(
                f"{i.label}: gold {'has' if i.gold_value else 'lacks'} it, model p={i.p_label:.2f}"
            )
        queued = 0
        for cid, why in sorted(by_cid.items()):
            g = s.scalars(select(GoldLabelRow).where(GoldLabelRow.conversation_id == cid)).first()
            answers = [
                {
                    "annotator": f"gold:{g.origin}" if g else "gold",
                    "interests": list(g.interests or []) if g else [],
                    "sensitive": list(g.sensitive or []) if g else [],
                }
            ]
            if request_adjudication(
                s,
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
