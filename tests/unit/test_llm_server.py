"""The OpenAI-compatible text call the benchmarks share (no server: an httpx mock transport)."""

from __future__ import annotations

import json

import httpx
import pytest

from labeling.llm_server import chat_text


def _client(
    seen: list[httpx.Request], status: int = 200, content: object = "Hola."
) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"choices": [{"message": {"content": content}}]})

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_chat_text_posts_messages_and_params_and_returns_the_answer() -> None:
    seen: list[httpx.Request] = []
    messages = [{"role": "system", "content": "Translate."}, {"role": "user", "content": "Hi."}]
    out = chat_text(_client(seen), "http://llm.test/v1/", messages, temperature=0.0, seed=3)
    assert out == "Hola."
    assert str(seen[0].url) == "http://llm.test/v1/chat/completions"
    assert json.loads(seen[0].content) == {"messages": messages, "temperature": 0.0, "seed": 3}


def test_chat_text_null_content_is_empty_and_http_errors_raise() -> None:
    assert chat_text(_client([], content=None), "http://llm.test/v1", []) == ""
    with pytest.raises(httpx.HTTPStatusError):
        chat_text(_client([], status=503), "http://llm.test/v1", [])
