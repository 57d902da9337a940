"""Lazily built handles shared by the CLI and the flows (one place that knows how to open things).

Nothing connects at construction: each handle is created on first use and cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from labelloop.settings import Settings, get_settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from labeling.collection import GoldExample
    from labeling.policy import Policy
    from labeling.studio import StudioClient, TurnScorer
    from labeling.taxonomy import Taxonomy
    from labelloop.store import LabelStore
    from targeting.model_ref import FilterModelRef
    from targeting.partitions import ScoringSpec


class Runtime:
    """Settings plus the store, policy, taxonomy and service clients derived from them."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else get_settings()

    @cached_property
    def store(self) -> LabelStore:
        from labelloop.store import LabelStore

        self.settings.ensure_dirs()
        ensure_label_store_server(self.settings)
        store = LabelStore(self.settings.db_url)
        store.migrate()
        return store

    @cached_property
    def policy(self) -> Policy:
        from labeling.policy import load_policy

        return load_policy(self.settings.policy_path)

    @cached_property
    def taxonomy(self) -> Taxonomy:
        from labeling.taxonomy import load_taxonomy

        return load_taxonomy(
            self.settings.taxonomy_path,
            self.settings.sensitive_map_path,
            categories=self.policy.categories,
        )

    @cached_property
    def studio(self) -> StudioClient:
        from labeling.studio import StudioClient

        return StudioClient.from_settings(self.settings)


def filter_model_ref(settings: Settings) -> FilterModelRef:
    """The registered filter model (``filter_model_name``) and the alias it follows
    (``filter_model_alias``): what training registers, the gate moves and serving loads."""
    from targeting.model_ref import FilterModelRef

    return FilterModelRef(name=settings.filter_model_name, alias=settings.filter_model_alias)


def served_model_uri(settings: Settings) -> str:
    """What the filter serves: ``filter_model_uri`` when set, else ``models:/<name>@<alias>``."""
    return settings.filter_model_uri or filter_model_ref(settings).alias_uri


def ensure_label_store_server(settings: Settings) -> str | None:
    """Start the local PostgreSQL server of the label store when it is the configured store and
    not running yet (idempotent); its SQLAlchemy URL, or None for SQLite / an external server."""
    if not settings.local_postgres:
        return None
    from infra.postgres import LocalPostgres

    return LocalPostgres(settings.postgres_dir).start()


def scoring_spec(settings: Settings, *, onnx_threads: int | None = 1) -> ScoringSpec:
    """What each worker of a cluster needs to score partitions with the production filter
    (one encoder thread per worker by default: one worker per core)."""
    from targeting.partitions import ScoringSpec

    return ScoringSpec(
        model_uri=served_model_uri(settings),
        tracking_uri=settings.mlflow_uri,
        model_cache_dir=str(settings.state / "filter" / "models"),
        policy_path=str(settings.policy_path) if settings.policy_path else None,
        max_text_chars=settings.max_text_chars,
        max_turns=settings.max_turns,
        onnx_threads=settings.filter_onnx_threads or onnx_threads,
        embed_cache=settings.filter_embed_cache,
        audit_fsync=settings.filter_audit_fsync,
    )


def review_embedder(settings: Settings) -> Callable[[Sequence[str]], object] | None:
    """MiniLM texts -> vectors for review routing (diversity, near-duplicates), built lazily.

    None when the model files are not installed (``labelloop models install``): routing then
    compares word vectors of the texts instead, which is weaker but never blocks a push.
    """
    from labeling.embeddings import MiniLMEmbedder

    try:
        embedder = MiniLMEmbedder.from_models_dir(settings.models_dir)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        log.warning("review routing without MiniLM embeddings: %s", exc)
        return None
    return embedder.embed


def review_turn_scorer(settings: Settings) -> TurnScorer:
    """Per-turn sensitive scores for review tasks: the production filter's own segment scores
    when a production model is registered and loads, else the sensitive vocabulary."""
    from targeting.evidence import FilterTurnScorer, LexiconTurnScorer
    from targeting.scorer import load_lexicon_file

    try:
        from targeting.model import load_filter

        model = load_filter(filter_model_ref(settings).alias_uri, tracking_uri=settings.mlflow_uri)
        if model.bundle is not None:
            return FilterTurnScorer(model.bundle, model.embedder, str(model.model_version))
    except Exception as exc:  # no production model yet, or MLflow unreachable
        log.info("review turn scores from the vocabulary: %s", exc)
    policy = Runtime(settings).policy
    return LexiconTurnScorer(load_lexicon_file(categories=policy.categories), policy.categories)


def gold_indexer(settings: Settings) -> Callable[[Sequence[GoldExample]], object]:
    """Upsert resolved gold examples into the Chroma gold collection the proposer reads (lazily)."""

    def index(examples: Sequence[GoldExample]) -> object:
        from labeling.embeddings import MiniLMEmbedder
        from labeling.vectorstore import GoldExample as IndexedExample
        from labeling.vectorstore import GoldIndex, open_chroma_client

        embedder = MiniLMEmbedder.from_models_dir(settings.models_dir)
        gold_index = GoldIndex(
            open_chroma_client(settings), embedder.as_chroma(), settings.chroma_collection
        )
        return gold_index.upsert(
            [
                IndexedExample(
                    id=e.conversation_id,
                    text=e.text,
                    interests=e.interests,
                    sensitive=e.sensitive,
                    origin=e.origin,
                )
                for e in examples
            ]
        )

    return index
