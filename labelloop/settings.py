"""The one typed settings object of labelloop.

Every knob is an environment variable with the ``LABELLOOP_`` prefix (or a line in ``.env``).
Nothing here connects to a service or writes a file: paths are computed, never created, until a
command asks for them (``Settings.ensure_dirs``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labeling.encoders import DEFAULT_ENCODER, EncoderName

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "dev", "dev-token", "secret", "password"}
)
DEV_LS_TOKEN = "labelloop-dev-token-0123456789abcdef0123"  # noqa: S105 - documented dev-only default
DEV_LS_PASSWORD = "labelloop-dev-password"  # noqa: S105 - documented dev-only default
DEV_FILTER_KEY = "dev-filter-key"
DEV_ADMIN_KEY = "dev-admin-key"


class Settings(BaseSettings):
    """All configuration. See ``.env.example`` for the documented list."""

    model_config = SettingsConfigDict(
        env_prefix="LABELLOOP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = Field(
        "dev", description="dev | test | prod (prod refuses placeholder and dev secrets)"
    )
    state_dir: Path = Field(
        Path(".labelloop"),
        description="all state: label store, Chroma, MLflow, Label Studio, Prefect, models, logs",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the label store (e.g. postgresql+psycopg://user@host/db); unset: see `database`",
    )
    database: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="label store when database_url is unset: sqlite (a file in state_dir; the default: nothing to run) or postgres (a local server in state_dir/postgres that `stack up` and every command start when needed)",
    )

    # Inputs
    max_text_chars: int = Field(20_000, description="max characters per turn before quarantine")
    max_turns: int = Field(200, description="max turns per conversation before quarantine")

    # Policy / taxonomy files (default: the ones shipped in the repo)
    policy_path: Path | None = Field(
        None, description="policy file; default labeling/data/policy.yaml"
    )
    taxonomy_path: Path | None = Field(
        None, description="interest taxonomy; default labeling/data/interests.tsv"
    )
    sensitive_map_path: Path | None = Field(
        None,
        description="taxonomy -> sensitive categories; default labeling/data/sensitive_map.yaml",
    )

    # Local stack
    host: str = Field("127.0.0.1", description="address the local stack binds and is reached at")
    prefect_port: int = Field(4200, description="Prefect server (API + UI)")
    mlflow_port: int = Field(5000, description="MLflow tracking server (UI + registry)")
    label_studio_port: int = Field(8080, description="Label Studio")
    filter_port: int = Field(8000, description="targeting filter service (OpenAPI at /docs)")
    chroma_url: str | None = Field(default=None, description="Chroma server URL; default embedded")
    stack_filter_enabled: bool = Field(
        False, description="`stack up` also starts the filter (uvicorn labelloop.serving:app)"
    )
    stack_start_timeout_s: float = Field(180.0, description="`stack up`: max s to wait for health")
    stack_stop_timeout_s: float = Field(15.0, description="`stack down`: SIGTERM grace (s)")
    ls_venv: Path | None = Field(
        default=None, description="Label Studio's own venv; default <state_dir>/venvs/label-studio"
    )
    label_studio_version: str = Field("1.23.2", description="installed into ls_venv by `stack up`")

    # Label Studio admin (dev defaults refused outside dev)
    label_studio_username: str = Field(
        "admin@labelloop.local", description="Label Studio admin (created on first start)"
    )
    label_studio_password: SecretStr = Field(
        SecretStr(DEV_LS_PASSWORD),
        description="Label Studio admin password (dev default shown by the demo)",
    )
    label_studio_token: SecretStr = Field(
        SecretStr(DEV_LS_TOKEN), description="API token of the Label Studio admin (>= 40 chars)"
    )
    label_studio_url: str | None = Field(
        None, description="an external Label Studio; default the local stack's"
    )

    # Targeting filter service keys
    filter_api_key: SecretStr = Field(
        SecretStr(DEV_FILTER_KEY), description="X-API-Key for POST /v1/decisions"
    )
    filter_admin_key: SecretStr = Field(
        SecretStr(DEV_ADMIN_KEY), description="X-API-Key for /admin/* (reload)"
    )
    filter_model_name: str = Field(
        "labelloop-targeting-filter", description="registered model served"
    )
    filter_model_alias: str = Field("production", description="alias the filter follows")
    filter_model_uri: str | None = Field(
        default=None,
        description="fixed model URI to serve instead of models:/<name>@<alias> (no alias polling)",
    )
    filter_poll_s: float = Field(30.0, ge=0, description="s between alias polls (0 = never)")
    filter_max_batch: int = Field(256, ge=1, description="max records per POST /v1/decisions")
    filter_max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="max request body")
    filter_audit_fsync: bool = Field(False, description="fsync the decision audit log per batch")
    filter_max_queue: int = Field(
        2048,
        ge=1,
        description="records that may wait for the filter engine; past that POST /v1/decisions is 429 with Retry-After (at least filter_max_batch)",
    )
    filter_embed_cache: int = Field(
        20_000,
        ge=0,
        description="segment embeddings the filter keeps in memory (LRU; ~1.6 KB each; 0 = off)",
    )
    filter_onnx_threads: int | None = Field(
        None,
        ge=1,
        description="threads of the filter's encoder per worker: concurrent one-thread calls for minilm, minilm-q8 and minilm-pairs, onnxruntime threads per call for e5 (unset: 2)",
    )
    filter_require_training_numerics: bool = Field(
        True,
        description="refuse to serve a filter model whose encoder this CPU computes otherwise than the training machine did (int8 products: AVX2 without VNNI saturates, VNNI is exact): its thresholds were calibrated on other vectors",
    )

    # MLflow / Prefect URLs (default: the local stack)
    mlflow_tracking_uri: str | None = Field(
        None, description="an external MLflow server; default the local stack's"
    )
    prefect_api_url: str | None = Field(
        None, description="an external Prefect API; default the local stack's"
    )

    # Training / champion-challenger gate (experiments/)
    mlflow_experiment: str = Field(
        "labelloop-targeting-filter", description="MLflow experiment of training runs"
    )
    train_leak_budget: float = Field(
        0.015,
        description="share of sensitive training conversations (out of fold) the any-sensitive threshold may pass",
    )
    train_category_recall_floor: float = Field(
        0.95, description="per-category recall (out of fold) a category floor threshold restores"
    )
    train_false_block_target: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="where the leak budget's any-sensitive threshold blocks fewer clean training conversations (out of fold) than this share, lower it until it blocks this many; empty = the leak budget alone (measured in docs/filter-quality.md)",
    )
    train_max_clean_conversations: int | None = Field(
        15_000,
        description="train on at most this many clean conversations (a fixed hash sample; sensitive ones are always all used); empty = all",
    )
    train_workers: int = Field(
        2,
        ge=1,
        description="parallel workers in training: processes that redact the input records and threads that fit the classifiers (the model does not depend on it)",
    )
    train_contrast_pairs: bool = Field(
        True,
        description="add LLM-written contrast pairs to training (a message that touches a sensitive category and the same message made clean; each clean side weighs as much as its sensitive side): a lower leak on sources unlike the training data (measured in docs/filter-quality.md)",
    )
    train_contrast_pairs_path: Path | None = Field(
        None,
        description="the contrast pair file (JSON lines as benchmarks/contrast_pairs.py writes them, checked); default labeling/data/contrast_pairs.jsonl",
    )
    train_composed_dialogues: int = Field(
        0,
        ge=0,
        description="add at most this many composed long dialogues to training (a short sensitive training conversation inserted into the last third of a long clean one of another source; its inserted turn is the sensitive segment, origin augmented, no part in calibration); 0 = none (measured in docs/filter-quality.md)",
    )
    filter_encoder: EncoderName = Field(
        DEFAULT_ENCODER,
        description="sentence encoder of the targeting filter: minilm-pairs (all-MiniLM-L6-v2 tuned on the contrast pairs, built from a shipped weight delta, int8 matrix products, one text per call on two threads), minilm-q8 (the untuned network, the same products), minilm (untuned, float products, batched) or e5 (multilingual-e5-small)",
    )
    filter_exact_int8: bool = Field(
        False,
        description="train the filter with the int8 encoders' products computed exactly on every CPU (split where AVX2 without VNNI saturates; about 0.6x the encoder's texts/s there): its model then decides alike on every kind of CPU and is served anywhere",
    )
    train_silver_precision: float = Field(
        0.8,
        description="measured QA precision of auto-accepted proposals = weight of silver labels (0 = no silver)",
    )
    eval_fraction: float = Field(
        0.2, description="share of new gold items that join the frozen eval split"
    )
    gate_sensitive_recall_floor: float = Field(
        0.98, description="gate: per-category sensitive recall floor"
    )
    gate_interest_f1_tolerance: float = Field(
        0.01, description="gate: allowed interest micro-F1 drop vs champion"
    )
    gate_max_false_block_rate: float = Field(
        0.10, description="gate: ceiling on the share of clean eval conversations blocked"
    )
    gate_max_long_dialogue_leak_rate: float = Field(
        0.02,
        description="gate: ceiling on leaks of sensitive turns inserted late into long dialogues",
    )
    gate_long_dialogues: int = Field(
        2000,
        ge=1,
        description="gate: long dialogues composed, one per sensitive eval conversation, at most",
    )
    gate_long_dialogue_controls: int = Field(
        1000, ge=1, description="gate: composed long dialogues with a neutral turn inserted"
    )
    gate_auto_approve: bool = Field(
        False, description="move @production automatically when the gate passes"
    )

    # LLM
    llm: str = Field(
        "llamacpp:default",
        description="llamacpp:default|llamacpp:/path.gguf|hf:repo/file|openai:model|ollama:model",
    )
    llm_base_url: str | None = Field(
        default=None,
        description="base URL of an OpenAI-compatible server (vLLM, llama.cpp server) or Ollama",
    )
    llm_timeout_s: float = Field(60.0, description="timeout of one remote LLM call (s)")
    llm_runtime: Literal["server", "inprocess"] = Field(
        "server",
        description="local GGUF models: server = llama.cpp's server from the prebuilt xllamacpp "
        "wheel (the stack's llm service, or embedded); inprocess = llama-cpp-python "
        "(compiled; `uv sync --extra inprocess`)",
    )
    llm_port: int = Field(8001, description="port of the stack's llm service (local GGUF models)")
    llm_structured_output: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description="OpenAI-compatible servers and Ollama: constrain answers to the label JSON "
        "schema, or only to JSON (servers without schema support)",
    )
    llm_trace: bool = Field(
        True,
        description="trace LLM label proposals in MLflow (prompt, answer, latency, tokens; "
        "skipped with a warning when the tracking server is unreachable)",
    )
    llm_trace_experiment: str = Field(
        "labelloop-llm-proposals", description="MLflow experiment of the LLM traces"
    )
    # Label proposals (labeling.llm / labeling.vectorstore / labeling.proposals)
    llm_max_tokens: int = Field(96, description="max generated tokens per label answer")
    llm_n_ctx: int = Field(2048, description="llama.cpp context window")
    llm_threads: int | None = Field(None, description="llama.cpp threads; default: all cores")
    llm_retries: int = Field(2, description="retries of a failing/timed-out LLM call (backoff)")
    llm_backoff_s: float = Field(1.0, description="first retry wait; doubles per retry")
    llm_nologprob_conf: float = Field(
        0.7, description="confidence of an emitted label without logprobs"
    )
    prompt_conversation_tokens: int = Field(
        320, description="conversation tokens kept in the prompt"
    )
    chroma_collection: str = Field(
        "gold_examples", description="Chroma collection of gold examples"
    )
    knn_k: int = Field(10, description="neighbours for the kNN vote")
    knn_temperature: float = Field(0.05, description="softmax temperature over cosine similarity")
    fewshot_k: int = Field(4, description="max few-shot examples per prompt")
    fewshot_token_budget: int = Field(260, description="token budget of all few-shot examples")
    knn_seed_weight: float = Field(0.5, description="vote weight of a cold-start seed example")
    cascade_enabled: bool = Field(True, description="skip the LLM when kNN (+classifier) are sure")
    llm_budget_per_run: int | None = Field(
        None,
        ge=0,
        description="at most this many conversations per proposal run get an LLM answer; the "
        "others that need one get a kNN-only proposal and go to human review (empty = no limit; "
        "on a CPU each answer takes seconds)",
    )
    cascade_skip_confidence: float = Field(0.8, description="label decisions this sure (p or 1-p)")
    cascade_min_similarity: float = Field(
        0.55, description="nearest gold example at least this close"
    )
    sensitive_suspect_threshold: float = Field(0.1, description="any sensitive signal >= this: LLM")
    sensitive_flag_threshold: float = Field(0.15, description="possible_sensitive flag threshold")
    label_threshold: float = Field(0.5, description="combined confidence that counts as a label")

    # Human review (labeling/routing.py, studio.py, agreement.py, collection.py)
    review_sensitive_confidence: float = Field(
        0.9, ge=0, le=1, description="a possible_sensitive category below this confidence -> review"
    )
    review_uncertainty_threshold: float = Field(
        0.35, ge=0, le=1, description="uncertainty above -> review"
    )
    review_budget: int = Field(
        200, ge=0, description="max conversations sent to Label Studio per run"
    )
    review_label_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a proposed label at/above this confidence is selected (silver/pre-annotation)",
    )
    qa_sample_rate: float = Field(
        0.05, ge=0, le=1, description="share of auto-accepted items also reviewed (QA)"
    )
    overlap_share: float = Field(
        0.2, ge=0, le=1, description="share of review tasks needing two annotations"
    )
    overlap_sensitive: bool = Field(
        True, description="every sensitive-suspect task needs two annotations"
    )
    adjudication_min_jaccard: float = Field(
        0.5,
        ge=0,
        le=1,
        description="interest sets of two annotators agreeing less than this -> adjudication",
    )
    silver_weight: float = Field(
        0.5, ge=0, le=1, description="training weight of auto-accepted (silver) labels"
    )
    review_seed: int = Field(0, description="seed of the QA sample and the overlap draw")
    review_selection: Literal["uncertainty", "diverse"] = Field(
        "diverse",
        description="order within the review budget: highest uncertainty, or uncertainty x "
        "density x novelty (labeling/routing.py diverse_order)",
    )
    review_explore_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the review budget drawn at random among all review candidates",
    )
    review_sensitive_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="max share of the review budget taken by sensitive suspects first "
        "(the rest of them compete after the other items)",
    )
    review_import_batch: int = Field(25, ge=1, description="tasks per Label Studio import request")
    label_error_threshold: float = Field(
        0.9,
        ge=0.5,
        le=1,
        description="label-error check: model probability contradicting gold at/above this",
    )

    # Orchestration (flows/)
    source_dir: Path = Field(Path("data/incoming"), description="folder of new conversation files")
    signals_dir: Path | None = Field(
        None, description="interest signals for the ad side (default state/signals)"
    )
    task_runner: Literal["threads", "dask"] = Field("threads", description="Prefect task runner")
    dask_address: str | None = Field(
        None, description="Dask scheduler address; default: local cluster"
    )
    dask_workers: int = Field(2, ge=1, description="workers of the local Dask cluster")
    score_partition_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="score_batch on Dask: JSONL bytes per partition"
    )
    score_partition_rows: int = Field(
        100_000, ge=1, description="score_batch on Dask: Parquet rows per partition (row groups)"
    )
    flow_workers: int = Field(2, ge=1, description="threads of the thread task runner")
    flow_batch_size: int = Field(64, ge=1, description="conversations per proposal/filter task")
    sample_cap_per_surface: int | None = Field(
        500, description="new conversations per surface per run"
    )
    llm_concurrency: int = Field(
        1, ge=1, description="Prefect global concurrency limit on LLM batches"
    )
    retrain_min_new_gold: int = Field(
        50, ge=1, description="new gold labels that trigger a retrain"
    )
    schedule_sample_and_propose: str = Field("0 * * * *", description="cron")
    schedule_collect_reviews: str = Field("*/15 * * * *", description="cron")
    schedule_retrain: str = Field("0 2 * * *", description="cron")
    schedule_score_batch: str = Field("0 4 * * *", description="cron")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object, info: ValidationInfo) -> object:
        """An empty value (``LABELLOOP_TRAIN_MAX_CLEAN_CONVERSATIONS=``) or "none" unsets an
        optional number, as the descriptions say."""
        if not (isinstance(v, str) and v.strip().lower() in ("", "none")) or not info.field_name:
            return v
        args = set(get_args(cls.model_fields[info.field_name].annotation))
        return None if type(None) in args and args & {int, float} else v

    @model_validator(mode="after")
    def _refuse_placeholders_outside_dev(self) -> Settings:
        if self.env == "prod":
            for name in (
                "label_studio_password",
                "label_studio_token",
                "filter_api_key",
                "filter_admin_key",
            ):
                value: SecretStr = getattr(self, name)
                raw = value.get_secret_value()
                if raw.lower() in PLACEHOLDER_SECRETS or raw.startswith(("labelloop-dev", "dev-")):
                    raise ValueError(
                        f"LABELLOOP_{name.upper()} is a placeholder/dev secret; set a real one for env=prod"
                    )
        return self

    # ---- derived paths (pure; nothing is created here) ----
    @cached_property
    def state(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.database == "postgres":  # the local server listens on a socket in its data dir
            return f"postgresql+psycopg://postgres@/labelloop?host={self.postgres_dir}"
        return f"sqlite:///{self.state / 'labelstore.db'}"

    @property
    def local_postgres(self) -> bool:
        """True when the label store is the local PostgreSQL server (started by labelloop)."""
        return self.database == "postgres" and not self.database_url

    @property
    def postgres_dir(self) -> Path:
        return self.state / "postgres"

    @property
    def signals(self) -> Path:
        return self.signals_dir or self.state / "signals"

    @property
    def chroma_dir(self) -> Path:
        return self.state / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.state / "models"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def quarantine_dir(self) -> Path:
        return self.state / "quarantine"

    @property
    def mlflow_dir(self) -> Path:
        return self.state / "mlflow"

    @property
    def label_studio_dir(self) -> Path:
        return self.state / "label-studio"

    @property
    def venvs_dir(self) -> Path:
        return self.state / "venvs"

    @property
    def prefect_home(self) -> Path:
        return self.state / "prefect"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def label_studio(self) -> str:
        return self.label_studio_url or f"http://{self.host}:{self.label_studio_port}"

    @property
    def llm_server_url(self) -> str:
        """The stack's llm service (OpenAI-compatible base URL)."""
        return f"http://{self.host}:{self.llm_port}/v1"

    @property
    def filter_url(self) -> str:
        return f"http://{self.host}:{self.filter_port}"

    @property
    def decisions_audit_path(self) -> Path:
        return self.state / "audit" / "decisions.jsonl"

    def ensure_dirs(self) -> None:
        """Create the state directory layout (called by commands, never at import)."""
        for d in (self.state, self.logs_dir, self.run_dir, self.quarantine_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides: object) -> Settings:
    """Build settings from env/.env, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
