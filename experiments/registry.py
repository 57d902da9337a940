"""Training runs in MLflow and the model registry (registered name: ``filter_model_name``).

:func:`train_and_register` trains on a snapshot, evaluates on its frozen eval split, and logs one
MLflow run: params, metrics, the snapshot as dataset inputs (digest = snapshot content hash),
lineage tags, artifacts (confusion matrices, PR curves, per-category table, calibration, the eval
set used by the gate) and the pyfunc model with signature (outputs include the interests) and
input example, registered as a new version of the filter model. The model carries its
code (``labeling``, ``targeting``) and pip requirements: it loads outside this repository.

The registry needs a database-backed tracking server (``labelloop stack up`` starts one).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.dataset import FRAME_COLUMNS, Example, Snapshot, examples_to_jsonl
from experiments.evaluation import EvalReport, evaluate_bundle, write_artifacts
from experiments.training import CachedEmbedder, Progress, TrainConfig, TrainResult, train_filter
from labeling.policy import Policy
from labeling.taxonomy import Taxonomy
from labelloop.safe_text import without_credentials
from targeting.model import TargetingFilterModel, model_artifacts, save_bundle
from targeting.scorer import TextEmbedder

EVAL_SET_ARTIFACT = "eval/eval_set.jsonl"
LINEAGE_KEYS = (
    "label_store_revision",
    "label_studio_project",
    "prompt_hash",
    "policy_version",
    "taxonomy_version",
    "snapshot_hash",
    "embedding_model_id",
)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    run_url: str
    model_uri: str
    version: str | None
    snapshot_hash: str
    metrics: dict[str, float]
    report: EvalReport
    train: TrainResult


def configure(tracking_uri: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run for people and artifacts (without the URI's credentials)."""
    base = without_credentials(tracking_uri).rstrip("/")
    if base.startswith(("http://", "https://")):
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base} (experiment {experiment_id}, run {run_id})"


def model_version_url(tracking_uri: str, model_name: str, version: str | int) -> str | None:
    """A link to one registered model version in the MLflow UI (without the URI's credentials);
    None when the registry is not an MLflow server (a local file store has no UI)."""
    from urllib.parse import quote

    base = without_credentials(tracking_uri).rstrip("/")
    if not base.startswith(("http://", "https://")):
        return None
    return f"{base}/#/models/{quote(model_name, safe='')}/versions/{quote(str(version), safe='')}"


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    turn = Object(
        [
            Property("role", "string"),
            Property("text", "string"),
            Property("modality", "string", required=False),
        ]
    )
    inputs = Schema(
        [
            ColSpec("string", "conversation_id", required=False),
            ColSpec("string", "account_id", required=False),
            ColSpec("string", "surface", required=False),
            ColSpec("string", "country", required=False),
            ColSpec("boolean", "account_linked", required=False),
            ColSpec("string", "started_at", required=False),
            ColSpec(Array(turn), "turns", required=False),
        ]
    )
    interest = Object(
        [Property("id", "string"), Property("name", "string"), Property("score", "double")]
    )
    outputs = Schema(
        [
            ColSpec("string", "conversation_id", required=False),
            ColSpec("boolean", "eligible"),
            ColSpec(Array(interest), "interests"),
            ColSpec("string", "excluded_reason", required=False),
            ColSpec("string", "model_version", required=False),
            ColSpec("string", "policy_version", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


INPUT_EXAMPLE: list[dict[str, Any]] = [
    {
        "conversation_id": "example-1",
        "account_id": "acct-example",
        "surface": "assistant_chat",
        "country": "US",
        "account_linked": True,
        "started_at": "2026-02-03T10:15:00Z",
        "turns": [
            {
                "role": "user",
                "text": "Which trail near Denver is good for a sunset hike?",
                "modality": "text",
            },
            {"role": "assistant", "text": "Try the Red Rocks trail.", "modality": "text"},
        ],
    }
]


def train_and_register(
    snapshot: Snapshot,
    *,
    tracking_uri: str,
    model_name: str,
    policy: Policy,
    taxonomy: Taxonomy,
    embedder: TextEmbedder | None,
    onnx_path: Path | None,
    tokenizer_path: Path | None,
    config: TrainConfig | None = None,
    experiment: str = "labelloop-targeting-filter",
    register: bool = True,
    lineage: Mapping[str, str] | None = None,
    embedding_model_id: str = "none",
    encoder: str = "minilm",
    prototype_texts: Mapping[str, Sequence[str]] | None = None,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Train, evaluate, log a run and (optionally) register a version of ``model_name``."""
    config = config or TrainConfig()
    if config.use_embeddings and (embedder is None or onnx_path is None or tokenizer_path is None):
        raise ValueError(
            "training with embeddings needs an embedder and the ONNX/tokenizer files to bundle"
        )
    cached = CachedEmbedder(embedder) if embedder is not None else None
    protos = prototype_texts if prototype_texts is not None else default_prototypes(policy)
    result = train_filter(snapshot, taxonomy, cached, config=config, prototype_texts=protos,
                          embedding_model_id=embedding_model_id, encoder=encoder,
                          progress=progress)  # fmt: skip
    return log_and_register(
        snapshot, result, tracking_uri=tracking_uri, model_name=model_name, policy=policy,
        taxonomy=taxonomy, embedder=cached, onnx_path=onnx_path, tokenizer_path=tokenizer_path,
        config=config, experiment=experiment, register=register, lineage=lineage,
        progress=progress,
    )  # fmt: skip


def log_and_register(
    snapshot: Snapshot,
    result: TrainResult,
    *,
    tracking_uri: str,
    model_name: str,
    policy: Policy,
    taxonomy: Taxonomy,
    embedder: TextEmbedder | None,
    onnx_path: Path | None,
    tokenizer_path: Path | None,
    config: TrainConfig | None = None,
    experiment: str = "labelloop-targeting-filter",
    register: bool = True,
    lineage: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Evaluate a trained bundle on the snapshot's eval split; log the run; register it as a
    version of ``model_name``."""
    config = config or TrainConfig()
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.data.pandas_dataset import from_pandas

    configure(tracking_uri)
    if result.bundle.uses_embeddings and (onnx_path is None or tokenizer_path is None):
        raise ValueError("a model that uses embeddings needs the ONNX/tokenizer files to bundle")
    say = progress or (lambda *_: None)
    t0 = time.perf_counter()
    say("evaluate", 0, len(snapshot.eval))
    report, batch, verdicts = evaluate_bundle(
        result.bundle, list(snapshot.eval), embedder,
        progress=lambda done, total: say("evaluate", done, total),
    )  # fmt: skip
    evaluate_s = time.perf_counter() - t0

    snap_hash = snapshot.content_hash
    tags = {
        "label_store_revision": "none",
        "label_studio_project": "none",
        "prompt_hash": "none",
        **{k: without_credentials(str(v)) for k, v in snapshot.lineage.items()},
        **{k: without_credentials(str(v)) for k, v in (lineage or {}).items()},
        "policy_version": policy.version,
        "taxonomy_version": taxonomy.version,
        "snapshot_hash": snap_hash,
        "embedding_model_id": result.bundle.embedding_model_id,
        "labelloop.kind": "train",
    }
    # int8 products saturate on some CPUs (labeling.int8): the model records how this one
    # computed its encoder, and serving refuses it where the encoder computes otherwise
    numerics: dict[str, Any] = {}
    if result.bundle.uses_embeddings and onnx_path is not None:
        from labeling.encoders import computes_exact_int8
        from labeling.int8 import encoder_numerics, machine_facts

        facts = machine_facts()
        exact = computes_exact_int8(result.bundle.embedding_model_id)
        numerics = {**encoder_numerics(onnx_path, exact=exact), "cpu": str(facts["cpu"])}
        tags["training_cpu"] = str(facts["cpu"])
        tags["training_int8_isa"] = ",".join(facts["int8_isa"]) or "none"
        tags["training_onnxruntime"] = str(facts["onnxruntime"])
        tags["training_int8_full_range_exact"] = str(facts["int8_full_range_exact"]).lower()
        tags["training_encoder_int8_exact"] = str(numerics["int8_products_exact"]).lower()
    exp = mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"train-{snap_hash[:8]}") as run:
        run_id = run.info.run_id
        mlflow.set_tags(tags)
        params: dict[str, Any] = {f"train.{k}": v for k, v in config.as_params().items()}
        params.update({
            "snapshot.n_train": len(snapshot.train), "snapshot.n_eval": len(snapshot.eval),
            "snapshot.hash": snap_hash, "prompt_hash": tags["prompt_hash"], "policy_version": policy.version,
            "taxonomy_version": taxonomy.version, "categories": ",".join(snapshot.categories),
        })  # fmt: skip
        mlflow.log_params(params)
        for part, rows in (("training", snapshot.train), ("evaluation", snapshot.eval)):
            df = pd.DataFrame([e.to_frame_row() for e in rows], columns=list(FRAME_COLUMNS))
            for col in ("sensitive", "interests"):
                df[col] = df[col].map(lambda v: json.dumps(v)) if len(df) else df[col]
            ds = from_pandas(df, name=f"labelloop-snapshot-{part}", digest=snap_hash[:32])
            mlflow.log_input(ds, context=part)
        metrics = report.metrics()
        metrics.update({
            "val_false_block_rate": result.val_false_block_rate, "val_leak_rate": result.val_leak_rate,
            **{f"threshold_{c}": result.bundle.sensitive_thresholds[c] for c in snapshot.categories},
            **{f"time_{k}": v for k, v in result.seconds.items()}, "time_evaluate_s": evaluate_s,
        })  # fmt: skip
        mlflow.log_metrics(_finite(metrics))
        meta = {**result.bundle.meta, "run_id": run_id, "model_version": f"run-{run_id[:12]}"}
        if numerics:
            meta["encoder_numerics"] = numerics
        bundle = replace(result.bundle, meta=meta)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            write_artifacts(report, list(snapshot.eval), batch, verdicts, bundle, t / "eval")
            (t / "eval" / "eval_set.jsonl").write_text(
                examples_to_jsonl(snapshot.eval), encoding="utf-8"
            )
            (t / "calibration.json").write_text(
                json.dumps({"sensitive": result.calibration, "interests": result.interest_calibration,
                            "val_false_block_rate": result.val_false_block_rate,
                            "val_leak_rate": result.val_leak_rate, "snapshot": snapshot.summary()},
                           indent=2, default=str), encoding="utf-8")  # fmt: skip
            mlflow.log_artifacts(str(t / "eval"), artifact_path="eval")
            mlflow.log_artifact(str(t / "calibration.json"))
            bpath = save_bundle(bundle, t / "model" / "filter_bundle.pkl")
            arts = model_artifacts(
                bpath, policy, onnx_path=onnx_path, tokenizer_path=tokenizer_path
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=TargetingFilterModel(),
                artifacts=arts,
                signature=_signature(),
                input_example=INPUT_EXAMPLE,
                registered_model_name=model_name if register else None,
                pip_requirements=_pip_requirements(),
                code_paths=model_code_paths(),
            )
    version = (
        str(info.registered_model_version)
        if register and info.registered_model_version is not None
        else None
    )
    if version is not None:
        client = MlflowClient()
        for k in (
            "snapshot_hash",
            "policy_version",
            "taxonomy_version",
            "prompt_hash",
            "label_store_revision",
        ):
            client.set_model_version_tag(model_name, version, k, tags[k])
        client.set_model_version_tag(model_name, version, "run_id", run_id)
        client.set_model_version_tag(model_name, version, "gate", "not_evaluated")
    return TrainOutcome(
        run_id=run_id,
        run_url=run_url(tracking_uri, exp.experiment_id, run_id),
        model_uri=f"models:/{model_name}/{version}" if version else info.model_uri,
        version=version,
        snapshot_hash=snap_hash,
        metrics=_finite(metrics),
        report=report,
        train=result,
    )


def model_code_paths() -> list[str]:
    """The packages the pyfunc imports, copied into the model (``code/``): a registered version
    loads and serves outside this repository (``mlflow models serve``)."""
    import labeling
    import targeting

    return [str(Path(m.__file__).parent) for m in (labeling, targeting) if m.__file__]


def _pip_requirements() -> list[str]:
    """Runtime needs of the pyfunc (its code, labeling and targeting, travels with the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in (
        "mlflow",
        "scikit-learn",
        "numpy",
        "scipy",
        "onnxruntime",
        "tokenizers",
        "pyyaml",
        "pydantic",
        "pandas",
        "phonenumbers",
        "py3langid",
    ):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def default_prototypes(policy: Policy) -> dict[str, list[str]]:
    """Per category: the policy description and examples (prototype texts for zero-shot scoring)."""
    return {k: [v.description, *v.examples] for k, v in policy.doc.sensitive_categories.items()}


def load_eval_set(run_id: str) -> list[Example]:
    """The frozen eval examples logged with a training run."""
    import mlflow

    from experiments.dataset import examples_from_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        p = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=EVAL_SET_ARTIFACT, dst_path=tmp
        )
        return examples_from_jsonl(Path(p).read_text(encoding="utf-8"))


def list_versions(tracking_uri: str, model_name: str) -> list[dict[str, Any]]:
    """Every version of the registered filter ``model_name`` with its aliases and gate tags
    (newest first)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(tracking_uri)
    client = MlflowClient()
    try:
        rm = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise  # e.g. the server is down: not the same as "no versions"
    aliases: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        aliases.setdefault(str(v), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        out.append({
            "version": str(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
            "run_id": mv.run_id, "created": mv.creation_timestamp, "gate": (mv.tags or {}).get("gate", ""),
            "forced": (mv.tags or {}).get("approval_forced", ""),
        })  # fmt: skip
    return sorted(out, key=lambda r: -int(r["version"]))
