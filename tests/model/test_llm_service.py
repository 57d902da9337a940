"""The stack's ``llm`` service: the bundled GGUF behind llama.cpp's OpenAI-compatible server
(prebuilt xllamacpp wheel), called through the same code path as vLLM or any hosted server."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeling.assets import AssetError, ensure_llm_model
from labelloop.settings import Settings

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    models = Settings().models_dir
    try:
        ensure_llm_model(models, "default")
    except AssetError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"models not installed: {exc}")
        pytest.skip(f"models not installed: {exc}")
    state = tmp_path_factory.mktemp("llm-state")
    (state / "models").symlink_to(models.resolve())
    return Settings(
        _env_file=None, state_dir=state, llm_port=_free_port(), mlflow_port=_free_port(),
        llm_threads=2,
    )  # type: ignore[call-arg]  # fmt: skip


@pytest.fixture(scope="module")
def service(settings: Settings) -> Iterator[str]:
    from infra.stack import Stack

    stack = Stack(settings)
    try:
        (report,) = stack.up(services=["llm"], timeout_s=600)
        assert report.name == "llm"
        yield settings.llm_server_url
    finally:
        stack.down(services=["llm"])


def test_llm_service_answers_with_schema_valid_labels_and_logprobs(
    settings: Settings, service: str
) -> None:
    from labeling.llm import LLMLabeler, build_chat_llm
    from labeling.llm_server import serves_model
    from labeling.policy import load_policy
    from labeling.prompts import label_prompt_variables, load_prompt, offered_interests
    from labeling.taxonomy import load_taxonomy
    from labelloop.runtime import llm_config

    assert serves_model(service, Path(ensure_llm_model(settings.models_dir, "default")))
    policy = load_policy()
    taxonomy = load_taxonomy(categories=policy.categories)
    offered = dict(offered_interests(taxonomy))
    chat = build_chat_llm(
        llm_config(settings), interest_names=list(offered.values()), categories=policy.categories
    )
    assert str(chat.chat_model.openai_api_base) == service  # type: ignore[attr-defined]
    labeler = LLMLabeler(chat, interests=offered, categories=policy.categories)
    text = "user: I want to book a hotel in Rome for three nights in May."
    prompt = load_prompt().render(
        **label_prompt_variables(policy, taxonomy, examples=[], conversation=text)
    )
    out = labeler.label(prompt, text)
    assert out.valid, out.error
    assert out.calls == 1  # the schema leaves nothing to repair
    assert out.has_logprobs and out.p_any_sensitive is not None
    assert out.input_tokens > 100 and out.output_tokens > 0
    assert chat.count_tokens("hello world") < 5  # exact counts from the server's tokenizer


@pytest.fixture(scope="module")
def mlflow_server(settings: Settings) -> Iterator[str]:
    from infra.stack import Stack

    stack = Stack(settings)
    try:
        stack.up(services=["mlflow"])
        yield settings.mlflow_uri
    finally:
        stack.down(services=["mlflow"])


def test_llm_proposal_is_traced_in_the_mlflow_server(
    settings: Settings, service: str, mlflow_server: str
) -> None:
    """The runtime's trace settings: one trace per proposal in the MLflow server, found by the
    prompt hash, with the messages, the answer, the token usage and the latency of the call."""
    import json

    import mlflow
    from mlflow import MlflowClient

    from labeling.llm import LLMLabeler, build_chat_llm
    from labeling.llm_traces import enable_llm_traces, flush
    from labeling.policy import load_policy
    from labeling.prompts import label_prompt_variables, load_prompt, offered_interests
    from labeling.taxonomy import load_taxonomy
    from labelloop.runtime import llm_config, llm_trace_config

    config = llm_trace_config(settings)
    assert config is not None and config.tracking_uri == mlflow_server
    try:
        assert enable_llm_traces(config)
        policy = load_policy()
        taxonomy = load_taxonomy(categories=policy.categories)
        offered = dict(offered_interests(taxonomy))
        chat = build_chat_llm(llm_config(settings), interest_names=list(offered.values()),
                              categories=policy.categories, trace=True)  # fmt: skip
        labeler = LLMLabeler(chat, interests=offered, categories=policy.categories)
        text = "user: Which tent should I take for a week of camping in the Alps?"
        prompt = load_prompt().render(
            **label_prompt_variables(policy, taxonomy, examples=[], conversation=text)
        )
        out = labeler.label(prompt, text)
        assert out.valid, out.error
        flush()
        exp = MlflowClient(mlflow_server).get_experiment_by_name(config.experiment)
        assert exp is not None
        traces = mlflow.search_traces(
            locations=[exp.experiment_id],
            filter_string=f"tags.prompt_hash = '{prompt.prompt_hash}'",
            return_type="list",
        )
        assert len(traces) == 1
        spans = traces[0].data.spans
        (chat_span,) = [s for s in spans if s.span_type == "CHAT_MODEL"]
        assert "camping in the Alps" in json.dumps(chat_span.inputs)
        assert out.text and json.dumps(out.text)[1:-1] in json.dumps(chat_span.outputs)
        usage = chat_span.get_attribute("mlflow.chat.tokenUsage")
        assert usage["input_tokens"] == out.input_tokens > 100
        assert usage["output_tokens"] == out.output_tokens > 0
        assert (chat_span.end_time_ns - chat_span.start_time_ns) / 1e9 > 0
    finally:
        mlflow.tracing.reset()
