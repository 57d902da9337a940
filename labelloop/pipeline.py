"""Settings-driven entry points (used by the CLI; Prefect flows can wrap them as tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.dataset import (
    Snapshot,
    StoreSnapshotConfig,
    snapshot_from_records,
    snapshot_from_store,
)
from experiments.gate import GateResult, approve, evaluate
from experiments.registry import TrainOutcome, train_and_register
from experiments.training import Progress, TrainConfig
from labeling.records import Conversation, read_records
from labelloop.runtime import gate_rules, policy_and_taxonomy, record_limits
from labelloop.settings import Settings


def read_gold_records(paths: Sequence[Path], settings: Settings) -> tuple[list[Conversation], int]:
    """Valid records from files (bad ones are counted and skipped, as everywhere)."""
    limits = record_limits(settings)
    convs: list[Conversation] = []
    bad = 0
    for item in read_records(paths, limits=limits):
        if isinstance(item, Conversation):
            convs.append(item)
        else:
            bad += 1
    return convs, bad


def build_snapshot(settings: Settings, from_records: Sequence[Path] | None = None) -> Snapshot:
    policy, taxonomy = policy_and_taxonomy(settings)
    from labeling.prompts import load_prompt
    from labeling.studio import label_config, project_title, schema_version

    lineage = {
        "policy_version": policy.version,
        "taxonomy_version": taxonomy.version,
        # the prompt that proposed the silver labels / pre-annotations of this snapshot
        "prompt_hash": load_prompt().sha256,
        # the Label Studio project (one per label-schema version) the gold labels came from
        "label_studio_project": project_title(schema_version(label_config(taxonomy, policy))),
    }
    if from_records:
        convs, _ = read_gold_records(from_records, settings)
        return snapshot_from_records(
            convs,
            taxonomy,
            policy.categories,
            eval_fraction=settings.eval_fraction,
            lineage=lineage,
            errors=[],
            workers=settings.train_workers,
        )
    from labelloop.runtime import Runtime

    store = Runtime(settings).store
    cfg = StoreSnapshotConfig(
        eval_fraction=settings.eval_fraction, silver_precision=settings.train_silver_precision
    )
    return snapshot_from_store(store, policy.categories, config=cfg, lineage=lineage)


def train(
    settings: Settings,
    *,
    from_records: Sequence[Path] | None = None,
    use_embeddings: bool = True,
    use_tfidf: bool = True,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Snapshot -> train -> MLflow run -> registered version (and the gate with auto-approve).

    Sentence embeddings are cached on disk by text hash (``<state>/cache``), so training again on
    the same or overlapping data embeds only the new texts."""
    policy, taxonomy = policy_and_taxonomy(settings)
    snapshot = build_snapshot(settings, from_records)
    embedder = onnx = tok = None
    model_id = "none"
    cfg = TrainConfig(
        leak_budget=settings.train_leak_budget,
        category_recall_floor=settings.train_category_recall_floor,
        max_clean_conversations=settings.train_max_clean_conversations,
        n_jobs=settings.train_workers,
        use_embeddings=use_embeddings,
        use_tfidf=use_tfidf,
    )
    if use_embeddings:
        from labeling.embedding_cache import CachedTextEmbedder
        from labeling.encoders import encoder_files, load_encoder

        settings.models_dir.mkdir(parents=True, exist_ok=True)
        onnx, tok = encoder_files(settings.filter_encoder, settings.models_dir)
        inner = load_encoder(settings.filter_encoder, onnx, tok, max_length=cfg.embed_max_length)
        model_id = str(inner.model_id)
        safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in model_id)
        embedder = CachedTextEmbedder(
            inner,
            settings.state_dir / "cache" / f"embeddings-{safe}-L{cfg.embed_max_length}.sqlite",
        )
    from labelloop.runtime import filter_model_ref

    return train_and_register(
        snapshot,
        tracking_uri=settings.mlflow_uri,
        model_name=filter_model_ref(settings).name,
        policy=policy,
        taxonomy=taxonomy,
        embedder=embedder,
        onnx_path=onnx,
        tokenizer_path=tok,
        config=cfg,
        experiment=settings.mlflow_experiment,
        embedding_model_id=model_id,
        encoder=settings.filter_encoder,
        progress=progress,
    )


def evaluate_and_maybe_approve(settings: Settings, version: str) -> tuple[GateResult, bool]:
    """The gate; with ``gate_auto_approve`` a passing version goes to production."""
    from labelloop.runtime import filter_model_ref

    model = filter_model_ref(settings)
    result = evaluate(version, tracking_uri=settings.mlflow_uri, model=model,
                      rules=gate_rules(settings), experiment=settings.mlflow_experiment)  # fmt: skip
    approved = False
    if result.passed and settings.gate_auto_approve:
        approve(version, tracking_uri=settings.mlflow_uri, model=model)
        approved = True
    return result, approved
