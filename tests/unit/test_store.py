from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from labeling.policy import load_policy
from labeling.sampling import sample_into_store
from labelloop.store import AuditBrokenError, LabelStore
from labelloop.store.models import Base, ConversationRow
from tests.conftest import make_record


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    s = LabelStore(f"sqlite:///{tmp_path / 'db' / 'ls.db'}")
    s.migrate()
    return s


def test_migration_creates_every_model_table_and_is_idempotent(store):
    store.migrate()  # second run: no error, no change
    tables = set(inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _row(cid: str, **kw):
    base = {
        "conversation_id": cid,
        "account_hash": "h",
        "surface": "vibes",
        "country": "US",
        "account_linked": True,
        "started_at": None,
        "eligible": True,
        "exclusion_reason": None,
        "content_hash": "x",
        "source": "t",
        "policy_version": "p",
    }
    base.update(kw)
    return base


def test_add_conversations_is_idempotent(store):
    assert store.add_conversations([_row("a"), _row("b"), _row("a")]) == (2, 1)
    assert store.add_conversations([_row("a"), _row("c")]) == (1, 1)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConversationRow)) == 3


def test_sampling_twice_creates_no_duplicates_and_stores_no_text_for_excluded(
    store, write_jsonl, tmp_path
):
    recs = [
        make_record(
            conversation_id="ok",
            turns=[{"role": "user", "text": "mail me at jo@example.com about the hiking trip"}],
        ),
        make_record(conversation_id="eu", country="FR"),
        make_record(conversation_id="old", started_at="2025-01-01T00:00:00Z"),
        "{broken",
    ]
    path = write_jsonl(recs)
    policy = load_policy()
    r1 = sample_into_store([path], policy=policy, store=store, quarantine_path=tmp_path / "q.jsonl")
    assert (r1.inserted, r1.eligible, r1.quarantined) == (3, 1, 1)
    assert r1.by_reason == {"eligible": 1, "region": 1, "before_policy_date": 1}
    r2 = sample_into_store(
        [path], policy=policy, store=store, quarantine_path=tmp_path / "q2.jsonl"
    )
    assert (r2.inserted, r2.already_known) == (0, 3)
    with store.session() as s:
        rows = {r.conversation_id: r for r in s.scalars(select(ConversationRow))}
    assert rows["eu"].redacted_turns is None and rows["eu"].exclusion_reason == "region"
    assert "jo@example.com" not in str(rows["ok"].redacted_turns)
    assert rows["ok"].policy_version == policy.version
    assert store.conversation_counts()["by_reason"] == {
        "eligible": 1,
        "region": 1,
        "before_policy_date": 1,
    }
    # languages are recorded for eligible conversations only (excluded content is never read)
    assert rows["ok"].languages == ["en"] and rows["ok"].language == "en"
    assert rows["eu"].languages is None
    assert r1.by_language == {"en": 1} and r1.unsupported_language == 0


def test_sampling_counts_conversations_in_unsupported_languages(store, write_jsonl, tmp_path):
    recs = [
        make_record(conversation_id="es", turns=[
            {"role": "user", "text": "Which trail near Denver is good for a sunset hike?"},
            {"role": "user", "text": "¿Dónde puedo comprar unas botas de montaña baratas en Denver?"},
        ]),
        make_record(conversation_id="pt", turns=[
            {"role": "user", "text": "Onde posso comprar tênis de corrida baratos em São Paulo?"},
        ]),
    ]  # fmt: skip
    r = sample_into_store([write_jsonl(recs)], policy=load_policy(), store=store,
                          quarantine_path=tmp_path / "q.jsonl")  # fmt: skip
    # still sampled (reviewers label them; that is how a language becomes supported) but counted
    assert r.eligible == 2 and r.unsupported_language == 2
    assert r.by_language == {"en": 1, "pt": 1}


def test_audit_chain_verifies_and_detects_tampering(store, tmp_path):
    for i in range(5):
        store.append_audit("decision", f"c-{i}", {"eligible": i % 2 == 0})
    assert store.verify_audit() == 5
    db = store.url.removeprefix("sqlite:///")
    store.dispose()
    con = sqlite3.connect(db)
    # the table is append-only: a plain UPDATE is refused by a trigger...
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit_log SET payload = '{\"eligible\": true}' WHERE id = 2")
    # ...and if someone drops the trigger to edit a row, the chain catches it
    con.execute("DROP TRIGGER audit_log_no_update")
    con.execute("UPDATE audit_log SET payload = '{\"eligible\": true}' WHERE id = 2")
    con.commit()
    con.close()
    with pytest.raises(AuditBrokenError, match="entry 2"):
        store.verify_audit()


def test_nothing_created_until_used(tmp_path):
    path = tmp_path / "lazy" / "x.db"
    LabelStore(f"sqlite:///{path}")
    assert not path.parent.exists()


def test_concurrent_inserts_of_the_same_ids_do_not_fail(store, tmp_path):
    """Two `labelloop sample` runs that both decide an id is new: the second insert is a no-op,
    not an IntegrityError (the other run commits between our check and our insert)."""
    from sqlalchemy import event

    other = LabelStore(store.url)
    rows = [_row("race-1"), _row("race-2")]
    fired: list[bool] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _other_run_commits_first(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO CONVERSATIONS") and not fired:
            fired.append(True)
            assert other.add_conversations(rows) == (2, 0)

    assert store.add_conversations([*rows, _row("race-3")]) == (1, 2)
    assert fired == [True]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConversationRow)) == 3
