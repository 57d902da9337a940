"""LLM proposals traced in MLflow: a fake LangChain chat model, a SQLite tracking store in tmp_path.

The trace of one proposal carries the prompt hash (tag and span input), the messages sent, the
answer, the token usage and the latency; a cache hit makes no trace; an unreachable server turns
tracing off instead of failing the proposal.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from labeling.llm import ChatLLM, LLMLabeler
from labeling.llm_traces import PROPOSAL_SPAN, LLMTraceConfig, enable_llm_traces, flush
from labeling.policy import load_policy
from labeling.prompts import label_prompt_variables, load_prompt, offered_interests
from labeling.taxonomy import load_taxonomy
from labelloop.store import LabelStore
from labelloop.store.models import Base

POLICY = load_policy()
TAXONOMY = load_taxonomy(categories=POLICY.categories)
OFFERED = dict(offered_interests(TAXONOMY))
REPLY = json.dumps({"sensitive": [], "interests": ["Travel"], "rationale": "a trip"})


class UsageChat(BaseChatModel):
    """Answers ``reply`` with token usage, as OpenAI-compatible servers report it."""

    reply: str = REPLY

    @property
    def _llm_type(self) -> str:
        return "usage-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        usage = {"input_tokens": 321, "output_tokens": 17, "total_tokens": 338}
        msg = AIMessage(self.reply, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=msg)])


@pytest.fixture
def traces_to(tmp_path: Path) -> Iterator[LLMTraceConfig]:
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before = utils._tracking_uri
    yield LLMTraceConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", "labelloop-llm-proposals")
    mlflow.tracing.reset()
    mlflow.set_tracking_uri(before)


def _traces(config: LLMTraceConfig, prompt_hash: str) -> list[Any]:
    import mlflow
    from mlflow import MlflowClient

    flush()
    exp = MlflowClient(config.tracking_uri).get_experiment_by_name(config.experiment)
    assert exp is not None
    return list(
        mlflow.search_traces(
            locations=[exp.experiment_id],
            filter_string=f"tags.prompt_hash = '{prompt_hash}'",
            return_type="list",
        )
    )


def test_a_proposal_is_one_trace_with_prompt_answer_tokens_and_latency(
    traces_to: LLMTraceConfig, tmp_path: Path
) -> None:
    assert enable_llm_traces(traces_to)
    store = LabelStore(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(store.engine)
    labeler = LLMLabeler(
        ChatLLM(UsageChat(), model_id="fake-model", trace=True),
        interests=OFFERED,
        categories=POLICY.categories,
        store=store,
    )
    text = "user: I want to book a hotel in Rome for three nights in May."
    prompt = load_prompt().render(
        **label_prompt_variables(POLICY, TAXONOMY, examples=[], conversation=text)
    )
    out = labeler.label(prompt, text)
    assert out.valid and out.calls == 1

    (trace,) = _traces(traces_to, prompt.prompt_hash)
    assert trace.info.tags["llm_model_id"] == "fake-model"
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.name == PROPOSAL_SPAN
    assert root.inputs["prompt_hash"] == prompt.prompt_hash
    assert root.outputs["valid"] is True and root.outputs["answer"] == REPLY
    assert root.get_attribute("labelloop.input_tokens") == 321
    chat_spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(chat_spans) == 1
    chat = chat_spans[0]
    assert chat.parent_id == root.span_id
    sent = json.dumps(chat.inputs)
    assert "Rome for three nights" in sent  # the conversation as sent, in the user message
    assert "a trip" in json.dumps(chat.outputs)
    assert chat.get_attribute("mlflow.chat.tokenUsage") == {
        "input_tokens": 321, "output_tokens": 17, "total_tokens": 338,
    }  # fmt: skip
    assert chat.end_time_ns is not None and chat.end_time_ns >= chat.start_time_ns
    assert trace.info.execution_duration is not None

    # the same conversation again: answered from the label store's cache, no call, no trace
    again = labeler.label(prompt, text)
    assert again.cached and again.calls == 0
    assert len(_traces(traces_to, prompt.prompt_hash)) == 1
    store.dispose()


def test_without_trace_no_span_is_recorded(traces_to: LLMTraceConfig) -> None:
    assert enable_llm_traces(traces_to)
    labeler = LLMLabeler(
        ChatLLM(UsageChat(), model_id="fake-model"), interests=OFFERED, categories=POLICY.categories
    )
    text = "user: which running shoes for a first marathon?"
    prompt = load_prompt().render(
        **label_prompt_variables(POLICY, TAXONOMY, examples=[], conversation=text)
    )
    assert labeler.label(prompt, text).valid
    assert _traces(traces_to, prompt.prompt_hash) == []


def test_unreachable_tracking_server_turns_tracing_off(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    config = LLMTraceConfig(f"http://127.0.0.1:{port}", "labelloop-llm-proposals")
    with caplog.at_level("WARNING", logger="labeling.llm_traces"):
        assert enable_llm_traces(config, timeout_s=2.0) is False
    assert "not traced" in caplog.text and f"127.0.0.1:{port}" in caplog.text
