"""SQLAlchemy 2 schema of the label store.

Every table that a pipeline step writes has a natural unique key, so re-running any step is an
upsert or a no-op, never a duplicate row. ``audit_log`` is append-only (enforced by triggers in
the migration) and hash-chained.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ConversationRow(Base):
    """A sampled conversation after the gate; text is stored redacted only."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(256), unique=True, index=True)
    account_hash: Mapped[str] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(32), index=True)
    country: Mapped[str | None] = mapped_column(String(8))
    account_linked: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    eligible: Mapped[bool] = mapped_column(Boolean, index=True)
    exclusion_reason: Mapped[str | None] = mapped_column(String(32), index=True)
    exclusion_detail: Mapped[str | None] = mapped_column(Text)
    redacted_turns: Mapped[list[Any] | None] = mapped_column(JSON)
    redaction_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # detected language per turn ("und": too short to tell) and the conversation's main one;
    # only for eligible conversations (the content of the others is never processed)
    languages: Mapped[list[Any] | None] = mapped_column(JSON)
    language: Mapped[str | None] = mapped_column(String(8), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    source_gold: Mapped[dict[str, Any] | None] = mapped_column(
        JSON
    )  # labels shipped with input data
    policy_version: Mapped[str] = mapped_column(String(64))
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64))


class ProposalRow(Base):
    __tablename__ = "proposals"
    __table_args__ = (
        UniqueConstraint(
            "conversation_id", "proposer_id", "prompt_hash", "model_id", name="uq_proposal"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), index=True
    )
    proposer_id: Mapped[str] = mapped_column(String(128))
    prompt_hash: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(256))
    embedding_model_id: Mapped[str | None] = mapped_column(String(256))
    interests: Mapped[dict[str, Any]] = mapped_column(JSON)  # label -> confidence
    sensitive: Mapped[dict[str, Any]] = mapped_column(JSON)  # category -> confidence
    uncertainty: Mapped[float] = mapped_column(Float)
    flags: Mapped[list[Any]] = mapped_column(JSON)
    route: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64))


class LLMCacheRow(Base):
    __tablename__ = "llm_cache"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(256))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewTaskRow(Base):
    __tablename__ = "review_tasks"
    __table_args__ = (UniqueConstraint("conversation_id", "ls_project_id", name="uq_review_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), index=True
    )
    ls_project_id: Mapped[int] = mapped_column(Integer)
    ls_task_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(
        String(32), index=True
    )  # queued|open|done|adjudication|skipped
    reason: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    run_id: Mapped[str | None] = mapped_column(String(64))  # the review run that routed it
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # proposal snapshot, QA silver, ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AnnotationRow(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("ls_annotation_id", name="uq_ls_annotation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), index=True
    )
    ls_annotation_id: Mapped[int] = mapped_column(Integer)
    ls_task_id: Mapped[int] = mapped_column(Integer)
    ls_project_id: Mapped[int | None] = mapped_column(Integer)  # review or adjudication project
    annotator: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32))  # completed|skipped|cancelled
    interests: Mapped[list[Any]] = mapped_column(JSON)
    sensitive: Mapped[list[Any]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    lead_time_s: Mapped[float | None] = mapped_column(Float)
    ls_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pulled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GoldLabelRow(Base):
    __tablename__ = "gold_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), unique=True, index=True
    )
    interests: Mapped[list[Any]] = mapped_column(JSON)
    sensitive: Mapped[list[Any]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(32))  # human|adjudicated|seed|silver
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    resolved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SyncStateRow(Base):
    __tablename__ = "sync_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AuditRow(Base):
    """Append-only, hash-chained log of decisions and state changes."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_kind_ts", "kind", "ts"),
        # one successor per entry: two writers that read the same last hash cannot both append
        Index("uq_audit_prev_hash", "prev_hash", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class EvalSplitRow(Base):
    """The frozen evaluation split: gold items that are never trained on.

    Grows only (items are added, never removed); see ``experiments.dataset.update_eval_split``.
    """

    __tablename__ = "eval_split"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), unique=True, index=True
    )
    stratum: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32))  # hash|stratum_min
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
