"""Access to the label store (SQLite by default, any SQLAlchemy URL by setting)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from labelloop.store.models import AuditRow, ConversationRow, utcnow

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
GENESIS_HASH = "0" * 64


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
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()

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

    # ---- audit log ----
    def append_audit(self, kind: str, subject: str | None, payload: dict[str, Any]) -> str:
        """Append one hash-chained entry; returns its hash."""
        with self.session() as s:
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
    table = model.__table__
    full = []
    for r in rows:
        row = dict(r)
        for col in table.columns:
            if col.name not in row and col.default is not None and not col.primary_key:
                arg = col.default.arg
                row[col.name] = arg(None) if callable(arg) else arg
        full.append(row)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt: Any = sqlite_insert(table).values(full).on_conflict_do_nothing(index_elements=key)
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).values(full).on_conflict_do_nothing(index_elements=key)
    else:
        raise NotImplementedError(f"insert-or-ignore is not implemented for {dialect}")
    result = cast(CursorResult[Any], session.execute(stmt))
    return int(result.rowcount or 0)


def _chunks(seq: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
