"""``labelloop stack up`` starts the label store's local PostgreSQL (LABELLOOP_DATABASE=postgres),
every command then uses it (migrations 0001..head run on PostgreSQL), ``stack down`` stops it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select
from typer.testing import CliRunner

from tests.conftest import make_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_stack_up_starts_local_postgres_and_sample_writes_to_it(
    isolated_env, monkeypatch, write_jsonl
):
    from infra.postgres import LocalPostgres
    from labelloop.cli import app
    from labelloop.settings import Settings
    from labelloop.store import LabelStore
    from labelloop.store.models import Base, ConversationRow

    monkeypatch.setenv("LABELLOOP_DATABASE", "postgres")
    settings = Settings()
    runner = CliRunner()
    pg = LocalPostgres(settings.postgres_dir)
    try:
        up = runner.invoke(app, ["stack", "up", "--only", "postgres"])
        assert up.exit_code == 0, up.output
        assert "postgres" in up.output and "started" in up.output
        assert pg.running
        again = runner.invoke(app, ["stack", "up", "--only", "postgres"])
        assert again.exit_code == 0 and "already-running" in again.output, again.output

        data = write_jsonl([make_record(conversation_id=f"pg-{i}") for i in range(5)])
        res = runner.invoke(app, ["store", "init"])
        assert res.exit_code == 0, res.output
        store = LabelStore(settings.db_url)
        assert store.engine.dialect.name == "postgresql"
        assert set(Base.metadata.tables) <= set(inspect(store.engine).get_table_names())
        from labeling.policy import load_policy
        from labeling.sampling import sample_into_store

        for _ in range(2):  # a rerun inserts nothing
            sample_into_store([data], policy=load_policy(), store=store,
                              quarantine_path=isolated_env / "q.jsonl")  # fmt: skip
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(ConversationRow)) == 5
        store.dispose()

        down = runner.invoke(app, ["stack", "down", "--only", "postgres"])
        assert down.exit_code == 0 and "postgres" in down.output, down.output
        assert not pg.running
    finally:
        if pg.running:
            pg.stop()
