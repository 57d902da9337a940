from __future__ import annotations

import pytest
from pydantic import ValidationError

from labelloop.settings import Settings


def test_defaults_and_env_prefix(isolated_env, monkeypatch):
    monkeypatch.setenv("LABELLOOP_MLFLOW_PORT", "5999")
    s = Settings()
    assert s.mlflow_uri.endswith(":5999")
    assert s.state == isolated_env.resolve()
    assert s.db_url == f"sqlite:///{isolated_env.resolve() / 'labelstore.db'}"


def test_nothing_is_created_at_construction(isolated_env):
    Settings()
    assert not isolated_env.exists()


def test_dotenv_is_read(isolated_env):
    (isolated_env.parent / ".env").write_text("LABELLOOP_PREFECT_PORT=4999\n")
    assert Settings().prefect_api.endswith(":4999/api")


def test_placeholder_secrets_refused_in_prod(isolated_env, monkeypatch):
    monkeypatch.setenv("LABELLOOP_ENV", "prod")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
    for name in (
        "LABEL_STUDIO_PASSWORD",
        "LABEL_STUDIO_TOKEN",
        "FILTER_API_KEY",
        "FILTER_ADMIN_KEY",
    ):
        monkeypatch.setenv(f"LABELLOOP_{name}", f"real-{name.lower()}-8f3a9c2e7b")
    assert Settings().env == "prod"


def test_secrets_are_not_printed(isolated_env):
    s = Settings()
    text = repr(s) + str(s.model_dump())
    assert s.filter_api_key.get_secret_value() not in text
    assert s.label_studio_token.get_secret_value() not in text


def test_label_store_default_is_sqlite_and_postgres_is_chosen_by_setting(isolated_env, monkeypatch):
    s = Settings()
    assert s.database == "sqlite" and not s.local_postgres
    monkeypatch.setenv("LABELLOOP_DATABASE", "postgres")
    s = Settings()
    assert s.local_postgres
    assert s.db_url == (
        f"postgresql+psycopg://postgres@/labelloop?host={isolated_env.resolve() / 'postgres'}"
    )
    # an external server wins: nothing local is started for it
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", "postgresql+psycopg://u@db.example/labels")
    s = Settings()
    assert not s.local_postgres and s.db_url.endswith("@db.example/labels")


def test_train_config_takes_what_the_settings_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.training import TrainConfig
    from labelloop.runtime import train_config

    monkeypatch.setenv("LABELLOOP_TRAIN_LEAK_BUDGET", "0.03")
    monkeypatch.setenv("LABELLOOP_TRAIN_MAX_CLEAN_CONVERSATIONS", "1234")
    monkeypatch.setenv("LABELLOOP_TRAIN_WORKERS", "3")
    monkeypatch.setenv("LABELLOOP_TRAIN_COMPOSED_DIALOGUES", "500")
    assert train_config(Settings()).false_block_target is None  # off by default
    monkeypatch.setenv("LABELLOOP_TRAIN_FALSE_BLOCK_TARGET", "0.05")
    cfg = train_config(Settings(), use_tfidf=False)
    assert (cfg.leak_budget, cfg.max_clean_conversations, cfg.n_jobs) == (0.03, 1234, 3)
    assert cfg.false_block_target == 0.05
    assert cfg.composed_training == 500
    assert cfg.use_embeddings and not cfg.use_tfidf
    # everything the settings do not name keeps the library default
    assert cfg.c_segment == TrainConfig().c_segment


def test_an_empty_value_unsets_an_optional_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_TRAIN_FALSE_BLOCK_TARGET", "")
    monkeypatch.setenv("LABELLOOP_TRAIN_MAX_CLEAN_CONVERSATIONS", "None")
    monkeypatch.setenv("LABELLOOP_LLM_THREADS", " ")
    s = Settings(_env_file=None)
    assert s.train_false_block_target is None and s.train_max_clean_conversations is None
    assert s.llm_threads is None
    monkeypatch.setenv("LABELLOOP_TRAIN_FALSE_BLOCK_TARGET", "abc")
    with pytest.raises(ValueError, match="train_false_block_target"):
        Settings(_env_file=None)
