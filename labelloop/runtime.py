"""Lazily built handles shared by the CLI and the flows (one place that knows how to open things).

Nothing connects at construction: each handle is created on first use and cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from labelloop.settings import Settings, get_settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pathlib import Path

    from experiments.contrast import ContrastPair
    from experiments.gate import GateRules
    from experiments.training import TrainConfig
    from labeling.collection import GoldExample
    from labeling.llm import LLMConfig
    from labeling.llm_traces import LLMTraceConfig
    from labeling.policy import Policy
    from labeling.proposals import ProposalClassifier, Proposer
    from labeling.records import Limits
    from labeling.routing import RoutingConfig
    from labeling.studio import StudioClient, StudioConfig, TurnScorer
    from labeling.taxonomy import Taxonomy
    from labeling.vectorstore import VectorStoreConfig
    from labelloop.store import LabelStore
    from targeting.engine import FilterEngine
    from targeting.model_ref import FilterModelRef
    from targeting.partitions import ScoringSpec
    from targeting.service import ServiceConfig


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
        return load_policy_from(self.settings)

    @cached_property
    def taxonomy(self) -> Taxonomy:
        return load_taxonomy_from(self.settings, self.policy)

    @cached_property
    def studio(self) -> StudioClient:
        return studio_client(self.settings)


def load_policy_from(settings: Settings) -> Policy:
    """The policy file the settings name (every caller loads it here)."""
    from labeling.policy import load_policy

    return load_policy(settings.policy_path)


def load_taxonomy_from(settings: Settings, policy: Policy) -> Taxonomy:
    """The taxonomy and sensitive map the settings name, for ``policy``'s categories."""
    from labeling.taxonomy import load_taxonomy

    return load_taxonomy(
        settings.taxonomy_path, settings.sensitive_map_path, categories=policy.categories
    )


def policy_and_taxonomy(settings: Settings) -> tuple[Policy, Taxonomy]:
    policy = load_policy_from(settings)
    return policy, load_taxonomy_from(settings, policy)


def record_limits(settings: Settings) -> Limits:
    """Size limits of one input record (text per turn, turns)."""
    from labeling.records import Limits

    return Limits(max_text_chars=settings.max_text_chars, max_turns=settings.max_turns)


def train_config(
    settings: Settings, *, use_embeddings: bool = True, use_tfidf: bool = True
) -> TrainConfig:
    """The filter's training configuration: the library defaults, with what the settings name."""
    from experiments.training import TrainConfig

    return TrainConfig(
        leak_budget=settings.train_leak_budget,
        category_recall_floor=settings.train_category_recall_floor,
        false_block_target=settings.train_false_block_target,
        max_clean_conversations=settings.train_max_clean_conversations,
        composed_training=settings.train_composed_dialogues,
        n_jobs=settings.train_workers,
        use_embeddings=use_embeddings,
        use_tfidf=use_tfidf,
    )


@dataclass(frozen=True)
class TrainingPairs:
    """The contrast pairs training adds, and where they come from (file name and content hash,
    for the model's lineage)."""

    pairs: tuple[ContrastPair, ...]
    source: str


def training_pairs(settings: Settings) -> TrainingPairs | None:
    """The contrast pairs to add to training (None when ``train_contrast_pairs`` is off)."""
    if not settings.train_contrast_pairs:
        return None
    from experiments.contrast import DEFAULT_PAIRS_PATH, load_pairs

    path = settings.train_contrast_pairs_path or DEFAULT_PAIRS_PATH
    pairs, digest = load_pairs(path)
    return TrainingPairs(tuple(pairs), f"{path.name} sha256:{digest[:12]}")


@dataclass(frozen=True)
class TrainingEncoder:
    """The filter's sentence encoder for training: the embedder (cached on disk by text hash
    under ``<state>/cache``, one file per model id and length), its model files and its id."""

    embedder: Any
    onnx_path: Path
    tokenizer_path: Path
    model_id: str


def training_encoder(settings: Settings, max_length: int) -> TrainingEncoder:
    from labeling.embedding_cache import CachedTextEmbedder
    from labeling.encoders import encoder_files, load_encoder

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    onnx, tok = encoder_files(settings.filter_encoder, settings.models_dir)
    inner = load_encoder(
        settings.filter_encoder, onnx, tok, max_length=max_length,
        exact_int8=settings.filter_exact_int8,
    )  # fmt: skip
    model_id = str(inner.model_id)
    safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in model_id)
    cache = settings.state_dir / "cache" / f"embeddings-{safe}-L{max_length}.sqlite"
    return TrainingEncoder(CachedTextEmbedder(inner, cache), onnx, tok, model_id)


def gate_rules(settings: Settings) -> GateRules:
    """The champion/challenger rules the settings set."""
    from experiments.gate import GateRules

    return GateRules(
        sensitive_recall_floor=settings.gate_sensitive_recall_floor,
        interest_f1_tolerance=settings.gate_interest_f1_tolerance,
        max_false_block_rate=settings.gate_max_false_block_rate,
        max_long_dialogue_leak_rate=settings.gate_max_long_dialogue_leak_rate,
        long_dialogues=settings.gate_long_dialogues,
        long_dialogue_controls=settings.gate_long_dialogue_controls,
    )


def studio_config(settings: Settings) -> StudioConfig:
    """Label Studio's URL and API token."""
    from labeling.studio import StudioConfig

    return StudioConfig(settings.label_studio, settings.label_studio_token.get_secret_value())


def studio_client(settings: Settings) -> StudioClient:
    """A Label Studio client (connects on its first call)."""
    from labeling.studio import StudioClient

    return StudioClient.from_config(studio_config(settings))


def vectorstore_config(settings: Settings) -> VectorStoreConfig:
    """The Chroma server (``chroma_url``) or local directory (``chroma_dir``) of the gold index."""
    from labeling.vectorstore import VectorStoreConfig

    return VectorStoreConfig(path=settings.chroma_dir, url=settings.chroma_url)


def llm_config(settings: Settings) -> LLMConfig:
    """The labeling LLM: provider spec, where it is served or stored, and call limits."""
    from labeling.llm import LLMConfig

    return LLMConfig(
        spec=settings.llm,
        models_dir=settings.models_dir,
        server_url=settings.llm_server_url,
        base_url=settings.llm_base_url,
        timeout_s=settings.llm_timeout_s,
        runtime=settings.llm_runtime,
        structured_output=settings.llm_structured_output,
        max_tokens=settings.llm_max_tokens,
        n_ctx=settings.llm_n_ctx,
        threads=settings.llm_threads,
        retries=settings.llm_retries,
        backoff_s=settings.llm_backoff_s,
    )


def llm_trace_config(settings: Settings) -> LLMTraceConfig | None:
    """Where LLM proposal traces go (the MLflow server, ``llm_trace_experiment``); None when
    ``llm_trace`` is off."""
    from labeling.llm_traces import LLMTraceConfig

    if not settings.llm_trace:
        return None
    return LLMTraceConfig(
        tracking_uri=settings.mlflow_uri, experiment=settings.llm_trace_experiment
    )


def build_proposer(
    settings: Settings,
    *,
    store: LabelStore | None,
    classifier: ProposalClassifier | None = None,
    with_llm: bool = True,
    with_knn: bool = True,
    embedding_function: Any = None,
    chroma_client: Any = None,
) -> Proposer:
    """Wire a :class:`Proposer` from ``Settings`` (loads the models it needs; seeds an empty index).

    ``embedding_function`` / ``chroma_client`` override the MiniLM function and the client from
    settings (tests use an ephemeral client and a fake embedding).
    """
    from labeling.llm import LLMLabeler, build_chat_llm
    from labeling.prompts import load_prompt, offered_interests
    from labeling.proposals import CascadeConfig, Proposer
    from labeling.vectorstore import GoldIndex, load_seed_examples, open_chroma_client

    policy, taxonomy = policy_and_taxonomy(settings)
    prompt = load_prompt()
    seeds, lexicon = load_seed_examples(taxonomy, policy.categories)
    index: GoldIndex | None = None
    emb_id: str | None = None
    if with_knn:
        ef = embedding_function
        if ef is None:
            from labeling.embeddings import MiniLMEmbedder

            ef = MiniLMEmbedder.from_models_dir(settings.models_dir).as_chroma()
        emb_id = str(getattr(getattr(ef, "embedder", None), "model_id", None) or ef.name())
        client = (
            chroma_client
            if chroma_client is not None
            else open_chroma_client(vectorstore_config(settings))
        )
        index = GoldIndex(client, ef, settings.chroma_collection)
        index.ensure_seeded(seeds)
    labeler: LLMLabeler | None = None
    if with_llm:
        from labeling.llm_traces import enable_llm_traces

        offered = dict(offered_interests(taxonomy))
        trace = llm_trace_config(settings)
        chat = build_chat_llm(
            llm_config(settings),
            interest_names=list(offered.values()),
            categories=policy.categories,
            trace=trace is not None and enable_llm_traces(trace),
        )
        labeler = LLMLabeler(
            chat,
            interests=offered,
            categories=policy.categories,
            store=store,
            nologprob_conf=settings.llm_nologprob_conf,
        )
    return Proposer(
        policy=policy,
        taxonomy=taxonomy,
        prompt=prompt,
        index=index,
        labeler=labeler,
        classifier=classifier,
        lexicon=lexicon,
        embedding_model_id=emb_id,
        cascade=CascadeConfig(
            enabled=settings.cascade_enabled,
            skip_confidence=settings.cascade_skip_confidence,
            min_similarity=settings.cascade_min_similarity,
            sensitive_suspect=settings.sensitive_suspect_threshold,
            sensitive_flag=settings.sensitive_flag_threshold,
        ),
        knn_k=settings.knn_k,
        knn_temperature=settings.knn_temperature,
        knn_seed_weight=settings.knn_seed_weight,
        fewshot_k=settings.fewshot_k,
        fewshot_token_budget=settings.fewshot_token_budget,
        conversation_tokens=settings.prompt_conversation_tokens,
    )


def routing_config(settings: Settings, *, budget: int | None = None) -> RoutingConfig:
    """How proposals are routed to review (the ``review_*``, ``qa_sample_rate`` and ``overlap_*``
    settings); ``budget`` overrides ``review_budget`` for one run."""
    from labeling.routing import RoutingConfig

    return RoutingConfig(
        sensitive_confidence=settings.review_sensitive_confidence,
        uncertainty_threshold=settings.review_uncertainty_threshold,
        budget=settings.review_budget if budget is None else budget,
        qa_sample_rate=settings.qa_sample_rate,
        overlap_share=settings.overlap_share,
        overlap_sensitive=settings.overlap_sensitive,
        seed=settings.review_seed,
        label_threshold=settings.review_label_threshold,
        selection=settings.review_selection,
        sensitive_share=settings.review_sensitive_share,
        explore_share=settings.review_explore_share,
    )


def filter_model_ref(settings: Settings) -> FilterModelRef:
    """The registered filter model (``filter_model_name``) and the alias it follows
    (``filter_model_alias``): what training registers, the gate moves and serving loads."""
    from targeting.model_ref import FilterModelRef

    return FilterModelRef(name=settings.filter_model_name, alias=settings.filter_model_alias)


def served_model_uri(settings: Settings) -> str:
    """What the filter serves: ``filter_model_uri`` when set, else ``models:/<name>@<alias>``."""
    return settings.filter_model_uri or filter_model_ref(settings).alias_uri


def serving_check(settings: Settings) -> Callable[[Any], None]:
    """What the batch filter does to every model it loads: refuse one whose encoder computes
    other vectors here than in training (unless the settings allow it)."""
    from targeting.holder import serving_configurer

    return serving_configurer(require_training_numerics=settings.filter_require_training_numerics)


def engine_from_settings(
    settings: Settings, *, model_uri: str | None = None, poll_s: float = 0.0, load: bool = True
) -> FilterEngine:
    """The engine every caller uses (batch CLI, score_batch flow): model holder, policy, audit.

    ``model_uri`` defaults to :func:`served_model_uri`. With ``load`` the model is loaded now; if
    that fails the engine still works and fails closed.
    """
    from targeting.audit import AuditLog
    from targeting.engine import FilterEngine
    from targeting.holder import ModelHolder

    holder = ModelHolder.for_uri(
        model_uri or served_model_uri(settings),
        settings.mlflow_uri,
        poll_s=poll_s,
        cache_dir=settings.state / "filter" / "models",
        configure=serving_check(settings),
    )
    if load:
        holder.refresh()
    return FilterEngine(
        holder,
        load_policy_from(settings),
        AuditLog(settings.decisions_audit_path, fsync=settings.filter_audit_fsync),
        limits=record_limits(settings),
    )


def service_config(settings: Settings) -> ServiceConfig:
    """The filter service: keys, the model it serves, limits and the decision log."""
    from targeting.service import ServiceConfig

    return ServiceConfig(
        api_key=settings.filter_api_key,
        admin_key=settings.filter_admin_key,
        model=filter_model_ref(settings),
        model_uri=settings.filter_model_uri,
        tracking_uri=settings.mlflow_uri,
        poll_s=settings.filter_poll_s,
        model_cache_dir=settings.state / "filter" / "models",
        onnx_threads=settings.filter_onnx_threads,
        embed_cache=settings.filter_embed_cache,
        require_training_numerics=settings.filter_require_training_numerics,
        audit_path=settings.decisions_audit_path,
        audit_fsync=settings.filter_audit_fsync,
        policy_path=settings.policy_path,
        max_text_chars=settings.max_text_chars,
        max_turns=settings.max_turns,
        max_batch=settings.filter_max_batch,
        max_queue=settings.filter_max_queue,
        max_body_bytes=settings.filter_max_body_bytes,
    )


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
        require_training_numerics=settings.filter_require_training_numerics,
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
        from labeling.vectorstore import GoldIndex, IndexedExample, open_chroma_client

        embedder = MiniLMEmbedder.from_models_dir(settings.models_dir)
        gold_index = GoldIndex(
            open_chroma_client(vectorstore_config(settings)),
            embedder.as_chroma(),
            settings.chroma_collection,
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
