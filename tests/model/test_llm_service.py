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
    return Settings(_env_file=None, state_dir=state, llm_port=_free_port(), llm_threads=2)  # type: ignore[call-arg]


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
