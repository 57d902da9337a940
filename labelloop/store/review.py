"""The queries of human review (routing, task import, annotation sync, gold resolution), run
inside one transaction of the label store: :meth:`LabelStore.review` opens it and hands out a
:class:`ReviewTransaction`.

The review steps hold one transaction across Label Studio calls (reconciling intents against the
project's tasks, setting overlaps, pulling annotations and resolving them), so the queries are
methods of the transaction rather than of the store. Rows come back as the store's row models;
every write to them goes through a method here, and lands when the transaction commits (or at
the next query of the same transaction, as the ORM flushes before it reads).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from labelloop.store.models import (
    AnnotationRow,
    ConversationRow,
    GoldLabelRow,
    ProposalRow,
    ReviewTaskRow,
    SyncStateRow,
    utcnow,
)
from labelloop.store.store import insert_ignore, set_sync_value

AnnotationWrite = Literal["inserted", "updated", "unchanged"]


def as_utc(ts: datetime | None) -> datetime | None:
    """A timestamp read back from the store as an aware UTC datetime (SQLite returns it naive)."""
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AnnotationValues:
    """What one Label Studio annotation sets on its row (keyed by its Label Studio id)."""

    conversation_id: str
    ls_task_id: int
    ls_project_id: int
    annotator: str
    status: str
    interests: list[str]
    sensitive: list[str]
    comment: str | None
    lead_time_s: float | None
    ls_updated_at: datetime | None


@dataclass(frozen=True)
class TaskIntent:
    """A review task to create in a Label Studio project (or a queued one routed again)."""

    conversation_id: str
    project_id: int
    status: str
    reason: str
    priority: float
    overlap: int
    run_id: str
    detail: dict[str, Any]

    def row_values(self) -> dict[str, Any]:
        """The columns of the task's row (``project_id`` is ``ls_project_id`` there)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["ls_project_id"] = values.pop("project_id")
        return values


class ReviewTransaction:
    """The review queries of one open transaction (see the module doc)."""

    def __init__(self, session: Session) -> None:
        self._s = session

    # ---- sync state ----
    def sync_value(self, key: str) -> str | None:
        row = self._s.get(SyncStateRow, key)
        return row.value if row else None

    def set_sync_value(self, key: str, value: str) -> None:
        """Insert or update; a new key is an upsert, so a concurrent writer never fails it."""
        set_sync_value(self._s, key, value)

    # ---- conversations and proposals ----
    def conversation_ids(self) -> set[str]:
        """Every conversation id in the store."""
        return set(self._s.scalars(select(ConversationRow.conversation_id)))

    def conversations(self, ids: Collection[str]) -> dict[str, ConversationRow]:
        """conversation_id -> its row, for the ids that are in the store."""
        if not ids:
            return {}
        q = select(ConversationRow).where(ConversationRow.conversation_id.in_(list(ids)))
        return {c.conversation_id: c for c in self._s.scalars(q)}

    def unrouted_conversation_ids(self) -> set[str]:
        """Conversations with a proposal not routed yet."""
        q = select(ProposalRow.conversation_id).where(ProposalRow.route.is_(None))
        return set(self._s.scalars(q))

    def latest_proposals(self, ids: Collection[str]) -> dict[str, ProposalRow]:
        """conversation_id -> its newest proposal (highest id), for the ids that have one."""
        if not ids:
            return {}
        q = select(ProposalRow).order_by(ProposalRow.id).where(ProposalRow.conversation_id.in_(ids))
        out: dict[str, ProposalRow] = {}
        for row in self._s.scalars(q):
            out[row.conversation_id] = row
        return out

    def proposals(self, ids: Collection[int]) -> dict[int, ProposalRow]:
        """Proposal id -> its row, for the ids that are in the store."""
        if not ids:
            return {}
        q = select(ProposalRow).where(ProposalRow.id.in_(list(ids)))
        return {p.id: p for p in self._s.scalars(q)}

    def set_proposal_route(self, proposal: ProposalRow, route: str) -> None:
        proposal.route = route

    def route_unrouted_proposals(
        self, conversation_id: str, route: str, *, except_id: int | None = None
    ) -> int:
        """Give the unrouted proposals of a conversation (but ``except_id``) this route; how many."""
        q = select(ProposalRow).where(
            ProposalRow.conversation_id == conversation_id, ProposalRow.route.is_(None)
        )
        if except_id is not None:
            q = q.where(ProposalRow.id != except_id)
        rows = list(self._s.scalars(q))
        for p in rows:
            p.route = route
        return len(rows)

    # ---- review tasks ----
    def task_conversation_ids(self, project_id: int, status: str) -> set[str]:
        """Conversations with a task of this status in the project."""
        q = select(ReviewTaskRow.conversation_id).where(
            ReviewTaskRow.ls_project_id == project_id, ReviewTaskRow.status == status
        )
        return set(self._s.scalars(q))

    def task_conversation_ids_not_in(self, project_id: int, status: str) -> set[str]:
        """Conversations with a task of any other status than ``status`` in the project."""
        q = select(ReviewTaskRow.conversation_id).where(
            ReviewTaskRow.ls_project_id == project_id, ReviewTaskRow.status != status
        )
        return set(self._s.scalars(q))

    def task(self, task_row_id: int) -> ReviewTaskRow | None:
        """A review task by its row id in the store."""
        return self._s.get(ReviewTaskRow, task_row_id)

    def task_of(self, conversation_id: str, project_id: int) -> ReviewTaskRow | None:
        """The task of a conversation in a project (one at most: unique key)."""
        q = select(ReviewTaskRow).where(
            ReviewTaskRow.conversation_id == conversation_id,
            ReviewTaskRow.ls_project_id == project_id,
        )
        return self._s.scalars(q).first()

    def tasks_of(
        self, project_id: int, conversation_ids: Collection[str]
    ) -> dict[str, ReviewTaskRow]:
        """conversation_id -> its task in the project, for the ids that have one."""
        if not conversation_ids:
            return {}
        q = select(ReviewTaskRow).where(
            ReviewTaskRow.ls_project_id == project_id,
            ReviewTaskRow.conversation_id.in_(list(conversation_ids)),
        )
        return {r.conversation_id: r for r in self._s.scalars(q)}

    def tasks_with_status(self, project_id: int, status: str) -> list[ReviewTaskRow]:
        """The project's tasks of this status (in the store's order)."""
        q = select(ReviewTaskRow).where(
            ReviewTaskRow.ls_project_id == project_id, ReviewTaskRow.status == status
        )
        return list(self._s.scalars(q))

    def tasks_with_status_by_priority(self, project_id: int, status: str) -> list[ReviewTaskRow]:
        """The project's tasks of this status, highest priority first, then oldest first."""
        q = (
            select(ReviewTaskRow)
            .where(ReviewTaskRow.ls_project_id == project_id, ReviewTaskRow.status == status)
            .order_by(ReviewTaskRow.priority.desc(), ReviewTaskRow.id)
        )
        return list(self._s.scalars(q))

    def tasks_with_reason(self, project_id: int, reason: str) -> list[ReviewTaskRow]:
        """The project's tasks routed for this reason (``qa_sample``...)."""
        q = select(ReviewTaskRow).where(
            ReviewTaskRow.ls_project_id == project_id, ReviewTaskRow.reason == reason
        )
        return list(self._s.scalars(q))

    def multi_annotation_tasks(self, project_id: int) -> list[ReviewTaskRow]:
        """The project's imported tasks (with a Label Studio id) that need more than one
        annotation."""
        q = select(ReviewTaskRow).where(
            ReviewTaskRow.ls_project_id == project_id,
            ReviewTaskRow.overlap > 1,
            ReviewTaskRow.ls_task_id.is_not(None),
        )
        return list(self._s.scalars(q))

    def insert_task_if_absent(self, intent: TaskIntent) -> bool:
        """Insert a task now (``INSERT ... ON CONFLICT DO NOTHING``: a task a concurrent run
        inserted first is kept); True if this one was inserted."""
        key = ["conversation_id", "ls_project_id"]
        return bool(insert_ignore(self._s, ReviewTaskRow, [intent.row_values()], key))

    def add_task(self, intent: TaskIntent) -> None:
        """Add a task, written when the transaction commits (or at its next query)."""
        self._s.add(ReviewTaskRow(**intent.row_values()))

    def set_task_status(self, task: ReviewTaskRow, status: str) -> None:
        task.status = status

    def link_task(self, task: ReviewTaskRow, ls_task_id: int, status: str) -> None:
        """Record the Label Studio task id of an imported task and its new status."""
        task.ls_task_id = ls_task_id
        task.status = status

    def merge_task_detail(self, task: ReviewTaskRow, detail: Mapping[str, Any]) -> None:
        """Add (or replace) keys of the task's ``detail``."""
        task.detail = {**(task.detail or {}), **detail}

    def reroute_task(self, task: ReviewTaskRow, intent: TaskIntent) -> None:
        """A queued task routed again by a later run: the intent's status, reason, priority,
        overlap and run; its ``detail`` merged into the old one."""
        task.status = intent.status
        task.reason = intent.reason
        task.priority = intent.priority
        task.overlap = intent.overlap
        task.run_id = intent.run_id
        self.merge_task_detail(task, intent.detail)

    def reopen_task(
        self, task: ReviewTaskRow, *, status: str, reason: str, detail: Mapping[str, Any]
    ) -> None:
        """A finished task sent back for review (``detail`` merged into the old one)."""
        task.status = status
        task.reason = reason
        self.merge_task_detail(task, detail)

    # ---- annotations ----
    def upsert_annotation(self, ls_annotation_id: int, values: AnnotationValues) -> AnnotationWrite:
        """Insert the annotation of this Label Studio id, or update the fields that differ."""
        row = self._s.scalars(
            select(AnnotationRow).where(AnnotationRow.ls_annotation_id == ls_annotation_id)
        ).first()
        new = {f.name: getattr(values, f.name) for f in fields(values)}
        if row is None:
            self._s.add(AnnotationRow(ls_annotation_id=ls_annotation_id, **new))
            return "inserted"
        changed = False
        for k, v in new.items():
            cur = getattr(row, k)
            if k == "ls_updated_at":
                cur = as_utc(cur)
            if cur != v:
                setattr(row, k, v)
                changed = True
        return "updated" if changed else "unchanged"

    def task_annotations_not_in(self, ls_task_id: int, status: str) -> list[AnnotationRow]:
        """The annotations of a Label Studio task whose status is not ``status``."""
        q = select(AnnotationRow).where(
            AnnotationRow.ls_task_id == ls_task_id, AnnotationRow.status != status
        )
        return list(self._s.scalars(q))

    def annotations_of(self, conversation_id: str, project_id: int) -> list[AnnotationRow]:
        """The annotations of a conversation in a project."""
        q = select(AnnotationRow).where(
            AnnotationRow.conversation_id == conversation_id,
            AnnotationRow.ls_project_id == project_id,
        )
        return list(self._s.scalars(q))

    def project_annotations(self, project_id: int) -> list[AnnotationRow]:
        """Every annotation of a project."""
        q = select(AnnotationRow).where(AnnotationRow.ls_project_id == project_id)
        return list(self._s.scalars(q))

    def set_annotation_status(self, annotation: AnnotationRow, status: str) -> None:
        annotation.status = status

    # ---- gold labels ----
    def gold_label(self, conversation_id: str) -> GoldLabelRow | None:
        q = select(GoldLabelRow).where(GoldLabelRow.conversation_id == conversation_id)
        return self._s.scalars(q).first()

    def gold_labels(self) -> list[GoldLabelRow]:
        """Every gold label (in the store's order)."""
        return list(self._s.scalars(select(GoldLabelRow)))

    def gold_with_conversations(
        self, ids: Iterable[str]
    ) -> list[tuple[GoldLabelRow, ConversationRow]]:
        """The gold labels of these conversations, each with its conversation."""
        q = (
            select(GoldLabelRow, ConversationRow)
            .join(ConversationRow, ConversationRow.conversation_id == GoldLabelRow.conversation_id)
            .where(GoldLabelRow.conversation_id.in_(list(ids)))
        )
        return [(g, c) for g, c in self._s.execute(q)]

    def add_gold_label(
        self,
        conversation_id: str,
        interests: list[str],
        sensitive: list[str],
        origin: str,
        weight: float,
    ) -> None:
        """A first gold label of the conversation (revision 1)."""
        self._s.add(
            GoldLabelRow(
                conversation_id=conversation_id,
                interests=interests,
                sensitive=sensitive,
                origin=origin,
                weight=weight,
                revision=1,
            )
        )

    def revise_gold_label(
        self,
        gold: GoldLabelRow,
        interests: list[str],
        sensitive: list[str],
        origin: str,
        weight: float,
    ) -> int:
        """Replace the labels of a gold row: ``revision`` + 1, resolved now; the new revision."""
        gold.interests = interests
        gold.sensitive = sensitive
        gold.origin = origin
        gold.weight = weight
        gold.revision += 1
        gold.resolved_at = utcnow()
        return gold.revision
