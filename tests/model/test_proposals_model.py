"""Real local models: the embedded Qwen GGUF LLM and MiniLM + a persistent Chroma.

Slow on two cores (~10-20 s per LLM call): a handful of conversations only. The models come from
the ``models`` dependency group (``make setup``); the test is skipped when they are not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labeling.assets import AssetError, ensure_embedding_model, ensure_llm_model
from labeling.proposals import FLAG_INVALID, ProposalInput, Proposer, ProposeStats
from labeling.vectorstore import GoldIndex, IndexedExample, open_chroma_client
from labelloop.runtime import build_proposer, vectorstore_config
from labelloop.settings import Settings
from labelloop.store import LabelStore
from labelloop.store.models import Base

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Settings().models_dir
    try:
        ensure_embedding_model(d)
        ensure_llm_model(d, "default")
    except AssetError as exc:
        if os.environ.get("CI"):  # make test installs them: missing is a failure there
            pytest.fail(f"models not installed: {exc}")
        pytest.skip(f"models not installed: {exc}")
    return d


def _settings(state: Path, models_dir: Path, **kw: Any) -> Settings:
    state.mkdir(parents=True, exist_ok=True)
    link = state / "models"
    if not link.exists():
        link.symlink_to(models_dir.resolve())
    return Settings(state_dir=state, **kw)


@pytest.fixture(scope="module")
def proposer(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Proposer]:
    state = tmp_path_factory.mktemp("state")
    s = _settings(state, models_dir, cascade_enabled=False)
    store = LabelStore(f"sqlite:///{state / 'store.db'}")
    Base.metadata.create_all(store.engine)
    yield build_proposer(s, store=store)
    store.dispose()


def test_real_llm_labels_synthetic_conversations(proposer: Proposer) -> None:
    items = [
        ProposalInput("m-1", "user: Book me a hotel in Rome for three nights in May."),
        ProposalInput(
            "m-2", "user: Our union rep says the strike vote is Thursday. What are my rights?"
        ),
        ProposalInput("m-3", "user: What time is Friday prayer at the mosque near me?"),
    ]
    stats = ProposeStats()
    props = proposer.propose(items, stats=stats)
    assert stats.llm_called == 3
    for p in props:
        assert p.llm_called and FLAG_INVALID not in p.flags, p.sources
        assert p.sources["llm"]["valid"] and p.sources["llm"]["has_logprobs"]
        assert all(0.0 <= v <= 1.0 for v in (*p.interests.values(), *p.sensitive.values()))
    travel = proposer.taxonomy.name_to_id("Travel")
    assert props[0].interests.get(travel, 0) >= 0.5
    assert props[1].sensitive.get("union_membership", 0) >= 0.5
    assert props[2].sensitive.get("religion", 0) >= 0.5
    # a re-run is answered from the cache
    again = ProposeStats()
    proposer.propose(items, stats=again)
    assert again.cache_hits == 3 and again.llm_calls == 0


def test_behaviour_place_name_and_health_mention(proposer: Proposer) -> None:
    a, b, c = proposer.propose(
        [
            ProposalInput("h-1", "user: Which hiking boots are best for the Appalachian Trail?"),
            ProposalInput("h-2", "user: Which hiking boots are best for the Pacific Crest Trail?"),
            ProposalInput(
                "h-3",
                "user: Which hiking boots are best for the Appalachian Trail? "
                "I had knee surgery last month and my doctor says I need support.",
            ),
        ]
    )
    # changing the trail name keeps the labels
    assert a.interest_labels() == b.interest_labels()
    assert a.sensitive_labels(0.5) == b.sensitive_labels(0.5)
    # adding a health mention adds health (clearly above the plain conversation)
    assert c.sensitive.get("health", 0) >= 0.5
    assert c.sensitive["health"] >= a.sensitive.get("health", 0) + 0.2


def test_real_chroma_persists_and_reopens(tmp_path: Path, models_dir: Path) -> None:
    from labeling.embeddings import MiniLMEmbedder

    s = _settings(tmp_path / "state", models_dir)
    ef = MiniLMEmbedder.from_models_dir(s.models_dir).as_chroma()
    idx = GoldIndex(open_chroma_client(vectorstore_config(s)), ef, "gold")
    idx.upsert(
        [IndexedExample("g-1", "user: cheap flights to Lisbon in June", ("653",), (), "human")]
    )
    idx.upsert(
        [IndexedExample("g-1", "user: cheap flights to Lisbon in June", ("653",), (), "human")]
    )
    del idx
    reopened = GoldIndex(open_chroma_client(vectorstore_config(s)), ef, "gold")
    assert reopened.count() == 1
    [hits] = reopened.query(["user: flights to Lisbon"], 1)
    assert hits[0].id == "g-1" and hits[0].interests == ("653",) and hits[0].similarity > 0.6
