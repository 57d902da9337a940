"""The deployable targeting filter: an MLflow pyfunc model (registered under
``filter_model_name``, ``labelloop-targeting-filter`` by default).

Self-contained artifacts: the policy file, both taxonomy files, the trained :class:`FilterBundle`
(classifiers, thresholds, TF-IDF, lexicon, prototypes) and the MiniLM ONNX model + tokenizer.

* ``predict(context, model_input, params=None)``: records (a pandas DataFrame with the record
  columns, a list of dicts, or one dict) -> a list of decision dicts (see
  ``targeting.decide.Decision.to_dict``; ``sensitive_category`` is for the audit log only).
  ``params={"model_version": "7"}`` overrides the reported model version.
* In-process callers (the filter service, batch filter) should use
  :func:`load_filter` -> :class:`TargetingFilterModel` and call :meth:`TargetingFilterModel.decide`,
  which skips MLflow's input-schema enforcement so malformed records become ``invalid_record``
  decisions instead of an exception.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

from labeling.policy import Policy, load_policy
from labeling.records import Limits
from labeling.taxonomy import Taxonomy, load_taxonomy
from targeting.decide import AUDIT_PARAM, Decision, decide_batch, normalize_input
from targeting.scorer import ContentVerdict, FilterBundle, TextEmbedder

BUNDLE_FILE = "filter_bundle.pkl"

log = logging.getLogger("labelloop.targeting")


class ModelLoadError(RuntimeError):
    """The model's artifacts are missing or inconsistent."""


class TargetingFilterModel(PythonModel):
    """Policy gate + redaction + sensitive classifier + interests, in one pyfunc."""

    def __init__(self) -> None:
        self.bundle: FilterBundle | None = None
        self.policy: Policy | None = None
        self.taxonomy: Taxonomy | None = None
        self.embedder: TextEmbedder | None = None
        self.model_version: str | None = None
        self.limits = Limits()
        self.onnx_path: Path | None = None  # the bundled encoder file (loaded models only)
        # why the encoder computes other vectors here than in training (None: the same, or unknown)
        self.numerics_mismatch: str | None = None

    # ---- construction
    @classmethod
    def from_parts(
        cls,
        bundle: FilterBundle,
        policy: Policy,
        taxonomy: Taxonomy | None,
        embedder: TextEmbedder | None,
        model_version: str | None = None,
    ) -> TargetingFilterModel:
        m = cls()
        m._set(bundle, policy, taxonomy, embedder, model_version)
        return m

    def _set(
        self,
        bundle: FilterBundle,
        policy: Policy,
        taxonomy: Taxonomy | None,
        embedder: TextEmbedder | None,
        model_version: str | None,
    ) -> None:
        if tuple(bundle.categories) != tuple(policy.categories):
            raise ModelLoadError(
                f"model was trained for categories {list(bundle.categories)} but the policy has "
                f"{list(policy.categories)}"
            )
        self.bundle, self.policy, self.taxonomy, self.embedder = bundle, policy, taxonomy, embedder
        self.model_version = model_version or str(
            bundle.meta.get("model_version") or bundle.meta.get("run_id") or "unregistered"
        )

    def load_context(self, context: Any) -> None:
        arts = context.artifacts
        # a model pickled before these attributes existed is unpickled without them
        self.onnx_path, self.numerics_mismatch = None, None
        try:
            policy = load_policy(Path(arts["policy"]))
            taxonomy = load_taxonomy(
                Path(arts["interests"]), Path(arts["sensitive_map"]), categories=policy.categories
            )
            with Path(arts["bundle"]).open("rb") as fh:
                bundle = pickle.load(fh)  # noqa: S301 - our own artifact, written by training
        except KeyError as exc:
            raise ModelLoadError(f"model artifact {exc} is missing") from exc
        embedder: TextEmbedder | None = None
        if bundle.uses_embeddings:
            from labeling.encoders import computes_exact_int8, load_encoder

            if "onnx" not in arts or "tokenizer" not in arts:
                raise ModelLoadError(
                    "the model uses embeddings but has no onnx/tokenizer artifacts"
                )
            embedder = load_encoder(
                getattr(bundle, "encoder", "minilm"),
                Path(arts["onnx"]),
                Path(arts["tokenizer"]),
                max_length=bundle.embed_max_length,
                # computed as in training: exact int8 products if its vectors were
                exact_int8=computes_exact_int8(bundle.embedding_model_id),
            )
            self.onnx_path = Path(arts["onnx"])
        self._set(bundle, policy, taxonomy, embedder, None)

    def check_numerics(self) -> str | None:
        """Compare how this CPU computes the encoder's products with how the training machine
        did (recorded in the bundle, ``labeling.int8.encoder_numerics``); sets and returns
        :attr:`numerics_mismatch`."""
        self.numerics_mismatch = None
        trained = self.bundle.meta.get("encoder_numerics") if self.bundle is not None else None
        if self.bundle is not None and self.onnx_path is not None and trained:
            from labeling.encoders import computes_exact_int8
            from labeling.int8 import encoder_numerics, numerics_differ

            exact = computes_exact_int8(self.bundle.embedding_model_id)
            here = encoder_numerics(self.onnx_path, exact=exact)
            self.numerics_mismatch = numerics_differ(trained, here)
        return self.numerics_mismatch

    def configure_serving(
        self,
        *,
        onnx_threads: int | None = None,
        embed_cache: int = 0,
        require_training_numerics: bool = True,
    ) -> None:
        """Serving knobs, applied right after loading (before the first call): onnxruntime
        threads of the encoder (its session is created lazily, on first use) and an in-memory
        LRU of ``embed_cache`` segment vectors in front of it (0: none).

        A model whose encoder computes other vectors on this CPU than on the one it was trained
        on (:meth:`check_numerics`) raises :class:`ModelLoadError` unless
        ``require_training_numerics`` is off (then it is only logged): its thresholds were
        calibrated on vectors this machine does not reproduce."""
        from labeling.embedding_cache import LRUEmbedder

        mismatch = self.check_numerics()
        if mismatch is not None:
            if require_training_numerics:
                raise ModelLoadError(
                    f"model {self.model_version} is not served on this machine: {mismatch} "
                    "(retrain it on this kind of CPU, or with exact int8 products)"
                )
            log.warning("model %s served although %s", self.model_version, mismatch)
        emb = self.embedder
        if emb is None:
            return
        inner = emb.inner if isinstance(emb, LRUEmbedder) else emb
        if onnx_threads is not None and hasattr(inner, "use_threads"):
            inner.use_threads(onnx_threads)  # each encoder knows where its threads go
        self.embedder = LRUEmbedder(inner, embed_cache) if embed_cache > 0 else inner

    def embed_cache_stats(self) -> dict[str, int] | None:
        """``{"hits", "misses", "entries"}`` of the serving LRU, None without one."""
        from labeling.embedding_cache import LRUEmbedder

        emb = self.embedder
        if not isinstance(emb, LRUEmbedder):
            return None
        return {"hits": emb.hits, "misses": emb.misses, "entries": len(emb)}

    # ---- scoring
    def judge_conversations(self, conversations: Sequence[Sequence[str]]) -> list[ContentVerdict]:
        if self.bundle is None:
            raise RuntimeError("model not loaded")
        return self.bundle.judge(conversations, self.embedder)

    def decide(self, records: Any, *, model_version: str | None = None) -> list[Decision]:
        """Decisions for records (DataFrame, list of dicts/Conversations, or one dict)."""
        if self.policy is None:
            raise RuntimeError("model not loaded")
        recs = normalize_input(records)
        return decide_batch(
            recs,
            policy=self.policy,
            judge=self if self.bundle is not None else None,
            model_version=model_version or self.model_version,
            interest_names=self.bundle.interest_names if self.bundle is not None else None,
            limits=self.limits,
        )

    # MLflow inspects predict's type hints for its own input validation; leaving them off keeps
    # the DataFrame/list input untouched (our decide() validates each record, failing closed).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ARG002
        """Public decisions (what ``mlflow models serve`` answers: never the sensitive category
        or the triggering turn); with ``params={"audit": True}`` the full ones, for the engine's
        decision log."""
        mv = str(params["model_version"]) if params and params.get("model_version") else None
        decisions = self.decide(model_input, model_version=mv)
        if params and params.get(AUDIT_PARAM):
            return [d.to_dict() for d in decisions]
        return [d.public() for d in decisions]


# ------------------------------------------------------------------------------------ helpers
def save_bundle(bundle: FilterBundle, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def model_artifacts(
    bundle_path: Path,
    policy: Policy,
    *,
    interests_path: Path | None = None,
    sensitive_map_path: Path | None = None,
    onnx_path: Path | None = None,
    tokenizer_path: Path | None = None,
) -> dict[str, str]:
    """The artifact mapping for ``mlflow.pyfunc.log_model``."""
    from labeling.taxonomy import DEFAULT_INTERESTS_PATH, DEFAULT_SENSITIVE_MAP_PATH

    arts = {
        "bundle": str(bundle_path),
        "policy": str(policy.path),
        "interests": str(interests_path or DEFAULT_INTERESTS_PATH),
        "sensitive_map": str(sensitive_map_path or DEFAULT_SENSITIVE_MAP_PATH),
    }
    if onnx_path is not None and tokenizer_path is not None:
        arts["onnx"] = str(onnx_path)
        arts["tokenizer"] = str(tokenizer_path)
    return arts


def load_filter(model_uri: str, *, tracking_uri: str | None = None) -> TargetingFilterModel:
    """Load a registered filter (e.g. ``models:/labelloop-targeting-filter@production``) and set
    its ``model_version`` to the registry version number the URI resolves to."""
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    version: str | None = None
    if model_uri.startswith("models:/"):
        rest = model_uri.removeprefix("models:/")
        client = MlflowClient()
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = str(client.get_model_version_by_alias(name, alias).version)
        elif "/" in rest:
            version = rest.split("/", 1)[1]
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(model_uri)
    model = loaded.unwrap_python_model()
    if not isinstance(model, TargetingFilterModel):
        raise ModelLoadError(f"{model_uri} is not a targeting filter model")
    if version is not None:
        model.model_version = version
    return model
