"""Access to the label store: SQLite (default) or PostgreSQL (psycopg 3), by SQLAlchemy URL.

Concurrent writers (two ``labelloop sample`` runs, flows in parallel on Dask) neither fail nor
duplicate: every table a step writes has a natural unique key and new rows go in with
``INSERT ... ON CONFLICT DO NOTHING`` / ``DO UPDATE`` (:func:`insert_ignore`, :func:`upsert`);
audit appends are serialised (:func:`lock_audit_chain`); on SQLite every transaction begins
with ``BEGIN IMMEDIATE`` (one writer at a time, waiting up to 30 s, instead of failing).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from labelloop.store.models import (
    AuditRow,
    ConversationRow,
    EvalSplitRow,
    GoldLabelRow,
    LLMCacheRow,
    ProposalRow,
    ReviewTaskRow,
    RunRow,
    SyncStateRow,
    utcnow,
)

if TYPE_CHECKING:
    from labelloop.store.review import ReviewTransaction

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
GENESIS_HASH = "0" * 64
PROPOSAL_KEY = ("conversation_id", "proposer_id", "prompt_hash", "model_id")  # one row per these


class AuditBrokenError(RuntimeError):
    """The audit hash chain does not verify."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def audit_hash(
    prev_hash: str, ts: datetime, kind: str, subject: str | None, payload: dict[str, Any]
) -> str:
    body = _canonical(
        {
            "prev": prev_hash,
            "ts": ts.isoformat(),
            "kind": kind,
            "subject": subject,
            "payload": payload,
        }
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrainingData:
    """What a training snapshot reads from the store, in one transaction."""

    gold: list[tuple[GoldLabelRow, list[dict[str, Any]] | None]]  # with the redacted turns
    # the latest auto-accepted proposal of each conversation, with its redacted turns
    silver: list[tuple[ProposalRow, list[dict[str, Any]] | None]]
    eval_ids: set[str]  # the frozen evaluation split so far
    gold_max_id: int | None
    gold_revisions: int | None
    gold_last_resolved: datetime | None


class LabelStore:
    """One label store. Creates nothing until :meth:`migrate` or a write is called."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, future=True)
            if engine.dialect.name == "sqlite":

                @event.listens_for(engine, "connect")
                def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                    dbapi_conn.isolation_level = None  # transactions begin below, not implicitly
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()

                @event.listens_for(engine, "begin")
                def _sqlite_begin_immediate(conn: Any) -> None:
                    # Every transaction takes the write lock when it begins (waiting up to
                    # busy_timeout for another writer): a transaction that read first and
                    # wrote later would otherwise fail at once ("database is locked") when
                    # another process committed in between. SQLite has one writer anyway.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")

            self._engine = engine
            self._sessionmaker = sessionmaker(engine, expire_on_commit=False)
        return self._engine

    def migrate(self) -> None:
        """Bring the schema to the latest alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        _ = self.engine
        assert self._sessionmaker is not None
        with self._sessionmaker() as s, s.begin():
            yield s

    @contextmanager
    def review(self) -> Iterator[ReviewTransaction]:
        """One transaction of the review queries (routing, task import, annotation sync, gold
        resolution): committed when the block ends, rolled back when it raises."""
        from labelloop.store.review import ReviewTransaction

        with self.session() as s:
            yield ReviewTransaction(s)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ---- conversations ----
    def add_conversations(self, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Insert conversation rows keyed by conversation_id; existing ids are left alone.

        Idempotent and safe against a concurrent writer: each chunk is one
        ``INSERT ... ON CONFLICT (conversation_id) DO NOTHING`` (SQLite and PostgreSQL), so a row
        another run committed in the meantime is skipped, never an IntegrityError.
        Returns (inserted, already_present)."""
        if not rows:
            return (0, 0)
        unique: dict[str, dict[str, Any]] = {}
        for r in rows:
            unique.setdefault(r["conversation_id"], r)
        inserted = 0
        with self.session() as s:
            values = list(unique.values())
            for i in range(0, len(values), _INSERT_CHUNK):
                inserted += insert_ignore(
                    s, ConversationRow, values[i : i + _INSERT_CHUNK], ["conversation_id"]
                )
        return (inserted, len(rows) - inserted)

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        with self.session() as s:
            for chunk in _chunks(list(ids), 500):
                out.update(
                    s.scalars(
                        select(ConversationRow.conversation_id).where(
                            ConversationRow.conversation_id.in_(chunk)
                        )
                    )
                )
        return out

    def conversation_counts(self) -> dict[str, Any]:
        with self.session() as s:
            surface_rows = s.execute(
                select(ConversationRow.surface, func.count()).group_by(ConversationRow.surface)
            )
            by_surface = Counter({k: int(v) for k, v in surface_rows})
            reason_rows = s.execute(
                select(ConversationRow.exclusion_reason, func.count()).group_by(
                    ConversationRow.exclusion_reason
                )
            )
            by_reason = Counter({(k or "eligible"): int(v) for k, v in reason_rows})
        return {
            "by_surface": dict(by_surface),
            "by_reason": dict(by_reason),
            "total": sum(by_surface.values()),
        }

    def conversations_without_proposal(
        self, prompt_hash: str, model_id: str, limit: int | None = None
    ) -> list[str]:
        """Eligible conversations with no proposal from this prompt + model yet (oldest first)."""
        q = (
            select(ConversationRow.conversation_id)
            .outerjoin(
                ProposalRow,
                and_(
                    ProposalRow.conversation_id == ConversationRow.conversation_id,
                    ProposalRow.prompt_hash == prompt_hash,
                    ProposalRow.model_id == model_id,
                ),
            )
            .where(ConversationRow.eligible.is_(True), ProposalRow.id.is_(None))
            .order_by(ConversationRow.id)
        )
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return list(s.scalars(q))

    def redacted_turns(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """conversation_id -> redacted turns, for the conversations of ``ids`` that have them
        (eligible ones: ineligible conversations are stored without text)."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.session() as s:
            for chunk in _chunks(list(ids), 500):
                rows = s.execute(
                    select(ConversationRow.conversation_id, ConversationRow.redacted_turns).where(
                        ConversationRow.conversation_id.in_(chunk)
                    )
                )
                out.update({cid: turns for cid, turns in rows if turns})
        return out

    def source_gold(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """conversation_id -> the gold labels its input record carried (None when it had none)."""
        out: dict[str, dict[str, Any] | None] = {}
        with self.session() as s:
            for chunk in _chunks(list(ids), 500):
                rows = s.execute(
                    select(ConversationRow.conversation_id, ConversationRow.source_gold).where(
                        ConversationRow.conversation_id.in_(chunk)
                    )
                )
                for cid, gold in rows:
                    out[cid] = gold
        return out

    # ---- proposals ----
    def upsert_proposals(self, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Insert proposal rows, or update the row of the same conversation, proposer, prompt and
        model (every column of ``rows`` besides those four). Returns (inserted, updated).

        Safe against a concurrent writer: a row it inserted first in the meantime is updated
        instead of failing. The conversations must already be in the store (foreign key)."""
        inserted = updated = 0
        with self.session() as s:
            for r in rows:
                ident = {k: r[k] for k in PROPOSAL_KEY}
                values = {k: v for k, v in r.items() if k not in PROPOSAL_KEY}
                where = [getattr(ProposalRow, k) == v for k, v in ident.items()]
                row = s.scalars(select(ProposalRow).where(*where)).first()
                if row is None:
                    # ON CONFLICT DO NOTHING: a concurrent run that inserted the same key first
                    # makes this an update instead of an IntegrityError
                    if insert_ignore(s, ProposalRow, [{**ident, **values}], list(PROPOSAL_KEY)):
                        inserted += 1
                        continue
                    row = s.scalars(select(ProposalRow).where(*where)).one()
                for k, v in values.items():
                    setattr(row, k, v)
                updated += 1
        return inserted, updated

    # ---- training data ----
    def training_data(self, *, include_silver: bool = True) -> TrainingData:
        """Gold labels (by conversation id) and, with ``include_silver``, the latest
        auto-accepted proposal of each conversation, each with its redacted turns; the
        evaluation split so far and where the gold labels stand (for the snapshot's lineage)."""
        with self.session() as s:
            gold = s.execute(
                select(GoldLabelRow, ConversationRow.redacted_turns)
                .join(
                    ConversationRow, ConversationRow.conversation_id == GoldLabelRow.conversation_id
                )
                .order_by(GoldLabelRow.conversation_id)
            ).all()
            silver: list[Any] = []
            if include_silver:
                latest = (
                    select(ProposalRow.conversation_id, func.max(ProposalRow.id).label("pid"))
                    .where(ProposalRow.route == "auto_accepted")
                    .group_by(ProposalRow.conversation_id)
                    .subquery()
                )
                silver = list(
                    s.execute(
                        select(ProposalRow, ConversationRow.redacted_turns)
                        .join(latest, latest.c.pid == ProposalRow.id)
                        .join(
                            ConversationRow,
                            ConversationRow.conversation_id == ProposalRow.conversation_id,
                        )
                    ).all()
                )
            eval_ids = set(s.scalars(select(EvalSplitRow.conversation_id)))
            max_id, revisions, last = s.execute(
                select(
                    func.max(GoldLabelRow.id),
                    func.sum(GoldLabelRow.revision),
                    func.max(GoldLabelRow.resolved_at),
                )
            ).one()
        return TrainingData(
            gold=[(g, turns) for g, turns in gold],
            silver=[(p, turns) for p, turns in silver],
            eval_ids=eval_ids,
            gold_max_id=max_id,
            gold_revisions=revisions,
            gold_last_resolved=last,
        )

    def add_eval_split(self, rows: Sequence[dict[str, Any]]) -> int:
        """Add items (``conversation_id``, ``stratum``, ``rule``) to the frozen evaluation split;
        items already in it stay as they are. Returns how many were added."""
        with self.session() as s:
            return sum(
                insert_ignore(s, EvalSplitRow, rows[i : i + _INSERT_CHUNK], ["conversation_id"])
                for i in range(0, len(rows), _INSERT_CHUNK)
            )

    # ---- LLM answer cache ----
    def llm_cache_get(self, key: str) -> dict[str, Any] | None:
        """The cached LLM answer of ``key``, or None."""
        with self.session() as s:
            row = s.scalars(select(LLMCacheRow).where(LLMCacheRow.cache_key == key)).first()
            return dict(row.response) if row is not None else None

    def llm_cache_put(self, row: dict[str, Any]) -> None:
        """Cache one LLM answer (``cache_key``, ``prompt_hash``, ``model_id``, ``response``,
        tokens, latency); the first writer of a key wins (concurrent runs)."""
        with self.session() as s:
            insert_ignore(s, LLMCacheRow, [row], ["cache_key"])

    def llm_seconds_per_call(self, min_calls: int = 3) -> float | None:
        """Mean latency of the LLM calls in the cache; None with fewer than ``min_calls``."""
        with self.session() as s:
            n, lat = s.execute(select(func.count(), func.sum(LLMCacheRow.latency_s))).one()
        return float(lat) / n if n and lat and n >= min_calls else None

    # ---- gold labels and review tasks ----
    def gold_count(self, origins: Iterable[str]) -> int:
        """Gold labels of these origins."""
        with self.session() as s:
            q = select(func.count()).select_from(GoldLabelRow)
            return int(s.scalar(q.where(GoldLabelRow.origin.in_(list(origins)))) or 0)

    def gold_conversation_ids(self, origins: Iterable[str]) -> set[str]:
        """The conversations with a gold label of one of these origins."""
        with self.session() as s:
            q = select(GoldLabelRow.conversation_id)
            return set(s.scalars(q.where(GoldLabelRow.origin.in_(sorted(origins)))))

    def gold_by_origin(self) -> dict[str, int]:
        """How many gold labels came from each origin."""
        with self.session() as s:
            rows = s.execute(
                select(GoldLabelRow.origin, func.count()).group_by(GoldLabelRow.origin)
            )
            return {str(k): int(v) for k, v in rows}

    def review_task_statuses(self, ls_project_id: int) -> dict[str, int]:
        """How many review tasks of one Label Studio project are in each status."""
        with self.session() as s:
            rows = s.execute(
                select(ReviewTaskRow.status, func.count())
                .where(ReviewTaskRow.ls_project_id == ls_project_id)
                .group_by(ReviewTaskRow.status)
            )
            return {str(k): int(v) for k, v in rows}

    # ---- runs ----
    def record_run(self, run_id: str, kind: str, stats: dict[str, Any]) -> None:
        """Record a finished run and its stats; a run recorded before gets the new stats."""
        with self.session() as s:
            row = s.scalars(select(RunRow).where(RunRow.run_id == run_id)).first()
            if row is None:
                s.add(RunRow(run_id=run_id, kind=kind, stats=stats, finished_at=utcnow()))
            else:
                row.stats = stats
                row.finished_at = utcnow()

    def last_run_stats(self, kind: str) -> dict[str, Any] | None:
        """The stats of the newest run of ``kind`` ({} when it has none), None when none ran."""
        with self.session() as s:
            row = s.scalars(
                select(RunRow).where(RunRow.kind == kind).order_by(RunRow.id.desc()).limit(1)
            ).first()
            return dict(row.stats or {}) if row is not None else None

    # ---- sync state (what was read from a source, ids of external projects) ----
    def sync_value(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(SyncStateRow, key)
            return row.value if row is not None else None

    def sync_values(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix`` and its value."""
        with self.session() as s:
            rows = s.scalars(select(SyncStateRow).where(SyncStateRow.key.startswith(prefix)))
            return {row.key: row.value for row in rows}

    def set_sync_values(self, values: Mapping[str, str]) -> None:
        """Set keys to values in one transaction (a key another run set in the meantime is
        overwritten, never an error); a key that already has its value is left alone."""
        with self.session() as s:
            for key, value in values.items():
                set_sync_value(s, key, value)

    # ---- audit log ----
    def append_audit(self, kind: str, subject: str | None, payload: dict[str, Any]) -> str:
        """Append one hash-chained entry; returns its hash.

        Concurrent writers (two flows, two processes) are serialised before the last hash is
        read -- a transaction-scoped advisory lock on PostgreSQL, the write lock every SQLite
        transaction of the store takes when it begins -- so the chain never forks; ``audit_log.prev_hash`` is unique as a last guard."""
        with self.session() as s:
            lock_audit_chain(s)
            last = s.scalars(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)).first()
            prev = last or GENESIS_HASH
            ts = utcnow()
            h = audit_hash(prev, ts, kind, subject, payload)
            s.add(
                AuditRow(ts=ts, kind=kind, subject=subject, payload=payload, prev_hash=prev, hash=h)
            )
        return h

    def verify_audit(self) -> int:
        """Verify the whole chain; returns the number of entries or raises AuditBrokenError."""
        prev = GENESIS_HASH
        n = 0
        with self.session() as s:
            for row in s.scalars(select(AuditRow).order_by(AuditRow.id)):
                ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=utcnow().tzinfo)
                expect = audit_hash(prev, ts, row.kind, row.subject, row.payload)
                if row.prev_hash != prev or row.hash != expect:
                    raise AuditBrokenError(f"audit entry {row.id} ({row.kind}) does not verify")
                prev = row.hash
                n += 1
        return n


_INSERT_CHUNK = 200  # rows per INSERT statement (SQLite allows 32,766 bound parameters)


def insert_ignore(
    session: Session, model: type[Any], rows: Sequence[dict[str, Any]], key: Sequence[str]
) -> int:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` for SQLite and PostgreSQL; rows inserted.

    Python-side column defaults (``ingested_at``...) are filled in here, as the ORM would."""
    if not rows:
        return 0
    session.flush()  # pending ORM rows first (foreign keys, order)
    table = model.__table__
    full = []
    for r in rows:
        row = dict(r)
        for col in table.columns:
            if col.name not in row and col.default is not None and not col.primary_key:
                arg = col.default.arg
                row[col.name] = arg(None) if callable(arg) else arg
        full.append(row)
    stmt = (
        _dialect_insert(session, table)
        .values(full)
        .on_conflict_do_nothing(index_elements=key)
        .returning(table.c[key[0]])  # the rows inserted (rowcount is -1 on psycopg)
    )
    return len(session.execute(stmt).all())


def _dialect_insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    raise NotImplementedError(f"upserts are not implemented for {dialect}")


def upsert(
    session: Session,
    model: type[Any],
    row: dict[str, Any],
    key: Sequence[str],
    update: Sequence[str],
) -> None:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET <update columns>`` (SQLite, PostgreSQL): one
    statement, so a concurrent writer of the same key never makes it fail; the last write wins.
    Python-side defaults of missing columns (``updated_at``...) are filled in."""
    session.flush()  # pending ORM rows first (foreign keys, order)
    table = model.__table__
    full = dict(row)
    for col in table.columns:
        if col.name not in full and col.default is not None and not col.primary_key:
            arg = col.default.arg
            full[col.name] = arg(None) if callable(arg) else arg
    for col in table.columns:  # onupdate columns are set on the update path too
        if col.onupdate is not None and col.name not in update and col.name in full:
            update = [*update, col.name]
    stmt = _dialect_insert(session, table).values(full)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key), set_={c: stmt.excluded[c] for c in update}
    )
    session.execute(stmt)


def set_sync_value(session: Session, key: str, value: str) -> None:
    """Set a ``sync_state`` key: a new key is an upsert (a concurrent writer never fails it), a
    key that already has this value is left alone."""
    row = session.get(SyncStateRow, key)
    if row is None:
        upsert(session, SyncStateRow, {"key": key, "value": value}, ["key"], ["value"])
    elif row.value != value:
        row.value = value


AUDIT_LOCK_ID = 0x6C6C6175  # advisory lock id of the audit chain ("llau")


def lock_audit_chain(session: Session) -> None:
    """Serialise appends to ``audit_log`` until the end of this transaction."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_ID})
    # SQLite: every transaction of the store already holds the write lock (BEGIN IMMEDIATE)


def _chunks(seq: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
