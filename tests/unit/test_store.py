from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, inspect, select

from labeling.policy import load_policy
from labeling.sampling import sample_into_store
from labelloop.store import AuditBrokenError, LabelStore
from labelloop.store.models import Base, ConversationRow
from tests.conftest import make_record


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
    if store.engine.dialect.name == "postgresql":
        _tamper_postgres(store)
        return
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


def _tamper_postgres(store: LabelStore) -> None:
    import psycopg

    dsn = store.url.replace("postgresql+psycopg://", "postgresql://")
    store.dispose()
    with psycopg.connect(dsn, autocommit=True) as con:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            con.execute("UPDATE audit_log SET payload = '{\"eligible\": true}' WHERE id = 2")
        con.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
        con.execute("UPDATE audit_log SET payload = '{\"eligible\": true}' WHERE id = 2")
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

    # PostgreSQL: the other run commits while our transaction is open, right before our INSERT.
    # SQLite: a transaction holds the write lock from its start (BEGIN IMMEDIATE), so the other
    # run can only commit before it begins -- still after our known_ids() check.
    first = "INSERT INTO CONVERSATIONS" if store.engine.dialect.name != "sqlite" else "BEGIN"

    @event.listens_for(store.engine, "before_cursor_execute")
    def _other_run_commits_first(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith(first) and not fired:
            fired.append(True)
            assert other.add_conversations(rows) == (2, 0)

    assert store.add_conversations([*rows, _row("race-3")]) == (1, 2)
    assert fired == [True]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConversationRow)) == 3


def _in_threads(n: int, fn) -> list[BaseException]:
    """Run fn(i) in n threads released together; the exceptions they raised."""
    import threading

    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_concurrent_audit_appends_keep_one_chain(store):
    """Writers in parallel (each its own connection pool, as two processes would) never fork
    the hash chain: every entry verifies and none is lost."""
    stores = [LabelStore(store.url) for _ in range(3)]

    def write(i: int) -> None:
        for k in range(10):
            stores[i].append_audit("decision", f"w{i}-{k}", {"k": k})

    assert _in_threads(3, write) == []
    for st in stores:
        st.dispose()
    assert store.verify_audit() == 30


def test_concurrent_proposal_and_sync_writes_neither_fail_nor_duplicate(store):
    """Two sample runs storing the same proposals and marking the same files at once."""
    from labeling.proposals import Proposal, write_proposals
    from labelloop.store.models import ProposalRow, SyncStateRow

    store.add_conversations([_row(f"p-{i}") for i in range(20)])
    props = [
        Proposal(conversation_id=f"p-{i}", interests={"IAB-1": 0.9}, sensitive={},
                 uncertainty=0.1, proposer_id="llm", prompt_hash="ph", model_id="m",
                 embedding_model_id=None, llm_called=True, source="llm")
        for i in range(20)
    ]  # fmt: skip
    stores = [LabelStore(store.url) for _ in range(3)]
    results: list[tuple[int, int]] = []

    def write(i: int) -> None:
        results.append(write_proposals(stores[i], props, run_id=f"run-{i}"))
        with stores[i].review() as tx:
            tx.set_sync_value("source:incoming:day1", f"fingerprint-{i}")

    assert _in_threads(3, write) == []
    for st in stores:
        st.dispose()
    # every proposal inserted exactly once; the other runs updated it
    assert sum(ins for ins, _ in results) == 20
    assert sum(ins + upd for ins, upd in results) == 60
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ProposalRow)) == 20
        assert s.scalar(select(func.count()).select_from(SyncStateRow)) == 1
