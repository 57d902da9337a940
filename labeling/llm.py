"""The label-proposal LLM: provider specs, LangChain chat models, parsing, repair, cache, confidence.

Provider spec (``Settings.llm`` = ``LABELLOOP_LLM``)
---------------------------------------------------
* ``llamacpp:default`` (or ``llamacpp:small``) -- the bundled Qwen2.5-Coder GGUF assembled by
  :func:`labeling.assets.ensure_llm_model`. Runtime ``LABELLOOP_LLM_RUNTIME``: ``server`` (default)
  = llama.cpp's own server from the prebuilt ``xllamacpp`` wheel (:mod:`labeling.llm_server`: the
  stack's ``llm`` service, or embedded in the process), called like any OpenAI-compatible server;
  ``inprocess`` = ``langchain_community``'s ``ChatLlamaCpp`` over llama-cpp-python (compiled from
  source, the ``inprocess`` extra; ``rope_freq_base=0`` = read it from the GGUF, ``n_batch=512``,
  greedy, ``repeat_penalty=1``). Either way the output is constrained by a JSON-schema grammar
  whose enums are the offered labels.
* ``llamacpp:/path/model.gguf`` -- any local GGUF file; ``hf:<owner>/<repo>/<file>.gguf`` --
  downloaded by ``labeling.assets`` (fails offline with a clear message).
* ``openai:<model>`` -- ``langchain_openai.ChatOpenAI`` with ``Settings.llm_base_url`` as the base
  URL when set (vLLM or any OpenAI-compatible server), ``logprobs=True, top_logprobs=5``, the
  answer constrained by ``response_format={"type": "json_schema", ...}`` (strict) with the label
  schema (``LABELLOOP_LLM_STRUCTURED_OUTPUT=json_object`` for servers without schema support).
* ``ollama:<model>`` -- ``langchain_ollama.ChatOllama`` with ``format=<the label JSON schema>``
  (or ``"json"``), logprobs requested.

Confidence from token log-probabilities
---------------------------------------
Self-reported confidence is not asked for. Where the model gives token log-probabilities (llama.cpp
through a logits processor that records the raw, pre-grammar next-token distribution at every
step; OpenAI-compatible servers and Ollama through ``response_metadata["logprobs"]``):

* **label confidence** -- for each label the model emitted, ``exp(sum of log p)`` over the tokens
  from the separator before it (``[`` or ``,``: where the decision "one more item" vs "close the
  list" is made, e.g. ``",`` vs ``"]``) to the end of the label. It is the model's own probability of writing exactly this label at
  that point, unconstrained by the grammar: a label the grammar forced on an unwilling model
  (it wanted to write something else) gets a low value.
* **P(any sensitive)** -- at the first token after ``"sensitive": [`` the alternatives are split
  into "list closes" (``]``, ``[]``) and "an item starts" (``"``, ``["``); their normalised mass is
  the probability that the conversation touches *some* sensitive category, even when the greedy
  answer was ``[]``. Routing uses it for the ``possible_sensitive`` flag.

Without log-probabilities (e.g. a fake model) emitted labels get ``Settings.llm_nologprob_conf``.

Validation, repair, retries, cache
----------------------------------
The answer must be one JSON object ``{"sensitive": [...], "interests": [...], "rationale": "..."}``
with categories from the policy and interests from the offered list (names or IAB ids). Anything
else gets one repair turn (the bad answer and the error are shown to the model); if that fails too
the outcome is ``valid=False`` with the error (the proposal is flagged ``llm_invalid_output``).
Exceptions (timeouts, connection errors) are retried with exponential backoff, then give the same
invalid outcome. Nothing raises out of :meth:`LLMLabeler.label` for one bad answer.

Answers are cached in the label store's ``llm_cache`` table under
``sha256(prompt hash, model id, decoding params, sha256(redacted conversation text))``: a re-run on
the same data makes no LLM call. Few-shot examples are deliberately not part of the key (the same
conversation keeps its answer when the gold set grows); change the prompt to invalidate.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeling.assets import LLM_MODELS, ensure_llm_model
from labeling.prompts import RenderedPrompt
from labelloop.store import LabelStore

__all__ = [
    "ChatLLM",
    "LLMError",
    "LLMLabeler",
    "LLMOutcome",
    "LLMResponse",
    "LLMSpec",
    "LabelAnswer",
    "TokenLogprob",
    "build_chat_llm",
    "label_confidences",
    "p_list_nonempty",
    "parse_answer",
    "parse_llm_spec",
]

Provider = Literal["llamacpp", "hf", "openai", "ollama"]


class LLMError(ValueError):
    """Bad LLM configuration (spec, model file)."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class LLMSpec:
    provider: Provider
    target: str  # model key / path / hf spec / remote model name
    raw: str

    @property
    def is_local(self) -> bool:
        return self.provider in ("llamacpp", "hf")


def parse_llm_spec(spec: str) -> LLMSpec:
    """Parse ``LABELLOOP_LLM``; raises :class:`LLMError` naming the problem."""
    s = spec.strip()
    provider, sep, target = s.partition(":")
    if not sep or not target.strip():
        raise LLMError(
            f"bad LLM spec {spec!r}: expected llamacpp:default | llamacpp:/path.gguf | "
            "hf:<owner>/<repo>/<file>.gguf | openai:<model> | ollama:<model>"
        )
    target = target.strip()
    if provider == "llamacpp":
        if target not in LLM_MODELS and not target.endswith(".gguf"):
            raise LLMError(
                f"bad LLM spec {spec!r}: llamacpp takes one of {sorted(LLM_MODELS)} or a .gguf path"
            )
        return LLMSpec("llamacpp", target, s)
    if provider == "hf":
        parts = [p for p in target.split("/") if p]
        if len(parts) < 3 or not parts[-1].endswith(".gguf"):
            raise LLMError(f"bad LLM spec {spec!r}: expected hf:<owner>/<repo>/<file>.gguf")
        return LLMSpec("hf", target, s)
    if provider in ("openai", "ollama"):
        return LLMSpec(provider, target, s)  # type: ignore[arg-type]
    raise LLMError(f"unknown LLM provider {provider!r} in {spec!r} (llamacpp|hf|openai|ollama)")


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)  # alternative token -> logprob

    def to_json(self) -> list[Any]:
        return [self.token, round(self.logprob, 5), {k: round(v, 4) for k, v in self.top.items()}]

    @classmethod
    def from_json(cls, v: Sequence[Any]) -> TokenLogprob:
        return cls(str(v[0]), float(v[1]), dict(v[2]) if len(v) > 2 else {})


@dataclass
class LLMResponse:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    logprobs: list[TokenLogprob] | None = None


def _logprobs_from_metadata(meta: Mapping[str, Any]) -> list[TokenLogprob] | None:
    """OpenAI-style ``{"content": [{token, logprob, top_logprobs: [...]}, ...]}`` or a bare list."""
    raw = meta.get("logprobs")
    if isinstance(raw, Mapping):
        raw = raw.get("content")
    if not isinstance(raw, list) or not raw:
        return None
    out: list[TokenLogprob] = []
    for item in raw:
        if not isinstance(item, Mapping) or "token" not in item or item.get("logprob") is None:
            return None
        top: dict[str, float] = {}
        for alt in item.get("top_logprobs") or []:
            if isinstance(alt, Mapping) and alt.get("logprob") is not None:
                tok = str(alt.get("token"))
                top[tok] = max(top.get(tok, -math.inf), float(alt["logprob"]))
        out.append(TokenLogprob(str(item["token"]), float(item["logprob"]), top))
    return out


class _LogitCapture:
    """llama-cpp-python logits processor that records the raw next-token distribution.

    Called before penalties and the grammar sampler with the full vocabulary logits (token id
    order); returns them unchanged. At step ``i`` it learns the token chosen at step ``i-1`` (the
    last input id) and stores its log-probability plus the top-``k`` alternatives.
    """

    def __init__(self, detokenize: Callable[[int], str], top_k: int = 8) -> None:
        self.detokenize = detokenize
        self.top_k = top_k
        self.records: list[tuple[int, float, list[tuple[int, float]]]] = []
        self._prev: npt.NDArray[np.float32] | None = None
        self._prev_top: list[tuple[int, float]] = []

    def __call__(
        self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        if self._prev is not None and len(input_ids):
            chosen = int(input_ids[-1])
            self.records.append((chosen, float(self._prev[chosen]), self._prev_top))
        s = np.asarray(scores, dtype=np.float64)
        m = float(np.max(s))
        lp = (s - m - math.log(float(np.sum(np.exp(s - m))))).astype(np.float32)
        k = min(self.top_k, lp.shape[0])
        idx = np.argpartition(-lp, k - 1)[:k]
        idx = idx[np.argsort(-lp[idx])]
        self._prev = lp
        self._prev_top = [(int(i), float(lp[i])) for i in idx]
        return scores

    def finish(self, text: str) -> list[TokenLogprob]:
        """Token log-probs of the generated text (the final token, '}' or EOS, is unseen)."""
        out: list[TokenLogprob] = []
        for tok, lp, top in self.records:
            alts: dict[str, float] = {}
            for i, v in top:
                s = self.detokenize(i)
                alts[s] = max(alts.get(s, -math.inf), v)
            out.append(TokenLogprob(self.detokenize(tok), lp, alts))
        got = "".join(t.token for t in out)
        if text.startswith(got) and len(got) < len(text):
            out.append(TokenLogprob(text[len(got) :], 0.0, {}))  # unseen last token(s)
        return out


class ChatLLM:
    """One LangChain chat model plus what is needed to call it robustly.

    ``invoke_kwargs`` are passed to every ``invoke`` (e.g. a llama.cpp ``response_format``).
    ``capture_logits`` (llama.cpp only) installs :class:`_LogitCapture` per call.
    ``trace``: record each call in MLflow (:mod:`labeling.llm_traces`; enabled by the caller).
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model_id: str,
        params: Mapping[str, Any] | None = None,
        invoke_kwargs: Mapping[str, Any] | None = None,
        capture_logits: bool = False,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        token_counter: Callable[[str], int] | None = None,
        trace: bool = False,
    ) -> None:
        self.chat_model = chat_model
        self.model_id = model_id
        self.params = dict(params or {})
        self.invoke_kwargs = dict(invoke_kwargs or {})
        self.capture_logits = capture_logits
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._token_counter = token_counter
        self.trace = trace
        self.calls = 0  # successful model invocations (retries included as separate calls)

    def count_tokens(self, text: str) -> int:
        if self._token_counter is not None:
            return self._token_counter(text)
        return max(1, len(text) // 4)

    def _invoke_once(self, messages: Sequence[BaseMessage]) -> LLMResponse:
        kwargs = dict(self.invoke_kwargs)
        capture: _LogitCapture | None = None
        if self.capture_logits:
            from llama_cpp import LogitsProcessorList

            client = self.chat_model.client  # type: ignore[attr-defined]

            def detok(i: int) -> str:
                return bytes(client.detokenize([i])).decode("utf-8", errors="replace")

            capture = _LogitCapture(detok)
            kwargs["logits_processor"] = LogitsProcessorList([capture])
        if self.trace:
            from labeling.llm_traces import langchain_callbacks

            kwargs["config"] = {"callbacks": langchain_callbacks()}
        t0 = time.perf_counter()
        msg = self.chat_model.invoke(list(messages), **kwargs)
        latency = time.perf_counter() - t0
        text = msg.content if isinstance(msg.content, str) else json.dumps(msg.content)
        usage = getattr(msg, "usage_metadata", None) or {}
        meta = getattr(msg, "response_metadata", None) or {}
        tin = int(usage.get("input_tokens") or 0)
        tout = int(usage.get("output_tokens") or 0)
        if not tin and isinstance(meta.get("token_usage"), Mapping):
            tin = int(meta["token_usage"].get("prompt_tokens") or 0)
            tout = int(meta["token_usage"].get("completion_tokens") or 0)
        logprobs = capture.finish(text) if capture is not None else _logprobs_from_metadata(meta)
        if not tin:
            tin = sum(self.count_tokens(str(m.content)) for m in messages)
        if not tout:
            tout = len(logprobs) if logprobs else self.count_tokens(text)
        return LLMResponse(text, tin, tout, latency, logprobs)

    def invoke(self, messages: Sequence[BaseMessage]) -> LLMResponse:
        """Call the model; exceptions are retried with exponential backoff, then re-raised."""
        attempt = 0
        while True:
            try:
                resp = self._invoke_once(messages)
                self.calls += 1
                return resp
            except Exception:
                self.calls += 1
                if attempt >= self.max_retries:
                    raise
                self.sleep(self.backoff_s * (2**attempt))
                attempt += 1


# --------------------------------------------------------------------------- building


def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()


def _label_schema(interest_names: Sequence[str], categories: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "sensitive": {
                "type": "array",
                "items": {"type": "string", "enum": list(categories)},
                "maxItems": 3,
            },
            "interests": {
                "type": "array",
                "items": {"type": "string", "enum": list(interest_names)},
                "maxItems": 3,
            },
            "rationale": {"type": "string", "maxLength": 60},
        },
        "required": ["sensitive", "interests", "rationale"],
        "additionalProperties": False,
    }


SCHEMA_NAME = "label_answer"


def openai_response_format(schema: Mapping[str, Any], mode: str = "json_schema") -> dict[str, Any]:
    """The ``response_format`` of an OpenAI-compatible chat request (vLLM, llama.cpp server,
    OpenAI): the label JSON schema (strict), or only "some JSON object" for servers without
    schema support (``LABELLOOP_LLM_STRUCTURED_OUTPUT=json_object``)."""
    if mode == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": dict(schema)},
    }


def _llamacpp_model_id(path: Path, key: str | None) -> str:
    if key is not None and key in LLM_MODELS:
        return f"llamacpp:{LLM_MODELS[key].filename}@{LLM_MODELS[key].sha256[:12]}"
    st = path.stat()
    return f"llamacpp:{path.name}@size{st.st_size}"


def _server_token_counter(base_url: str) -> Callable[[str], int]:
    """Exact token counts from a llama.cpp server's ``/tokenize`` (approximate if it fails)."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")

    def count(text: str) -> int:
        try:
            r = httpx.post(f"{root}/tokenize", json={"content": text}, timeout=10.0,
                           trust_env=False)  # fmt: skip
            r.raise_for_status()
            return len(r.json()["tokens"])
        except Exception:
            return max(1, len(text) // 4)

    return count


@dataclass(frozen=True)
class LLMConfig:
    """How to reach or load the labeling LLM (built from the ``llm*`` settings by the runtime)."""

    spec: str
    """``llamacpp:default|llamacpp:/path.gguf|hf:repo/file|openai:model|ollama:model``."""
    models_dir: Path
    server_url: str
    """The stack's llm service (OpenAI-compatible base URL) for local GGUF models."""
    base_url: str | None
    timeout_s: float
    runtime: str
    structured_output: str
    max_tokens: int
    n_ctx: int
    threads: int | None
    retries: int
    backoff_s: float


def local_llm_base_url(config: LLMConfig, path: Path) -> str:
    """Where a local GGUF is served: the stack's llm service when it serves this file, else a
    server embedded in this process (:mod:`labeling.llm_server`)."""
    from labeling.llm_server import embedded_server, serves_model

    if serves_model(config.server_url, path):
        return config.server_url
    return embedded_server(path, n_ctx=config.n_ctx, threads=config.threads).base_url


def build_chat_llm(
    config: LLMConfig,
    *,
    interest_names: Sequence[str],
    categories: Sequence[str],
    spec: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    trace: bool = False,
) -> ChatLLM:
    """Build the :class:`ChatLLM` for ``spec`` (default ``config.spec``). Loads local models.
    ``trace``: record the calls in MLflow (after :func:`labeling.llm_traces.enable_llm_traces`)."""
    parsed = parse_llm_spec(spec or config.spec)
    params: dict[str, Any] = {"temperature": 0.0, "max_tokens": config.max_tokens}
    common = {
        "max_retries": config.retries,
        "backoff_s": config.backoff_s,
        "sleep": sleep,
        "trace": trace,
    }
    schema = _label_schema(interest_names, categories)
    if parsed.provider in ("llamacpp", "hf"):
        target = parsed.target if parsed.provider == "llamacpp" else "hf:" + parsed.target
        path = ensure_llm_model(config.models_dir, target)
        key = (
            parsed.target if parsed.provider == "llamacpp" and parsed.target in LLM_MODELS else None
        )
        params.update({"n_ctx": config.n_ctx, "grammar": "json_schema", "repeat_penalty": 1.0})
        if config.runtime == "server":
            return _llamacpp_server_llm(config, path, key, schema, params, common)
        return _llamacpp_inprocess_llm(config, path, key, schema, params, common)
    if parsed.provider == "openai":
        from langchain_openai import ChatOpenAI

        kwargs: dict[str, Any] = {
            "model": parsed.target,
            "temperature": 0.0,
            "max_tokens": config.max_tokens,
            "timeout": config.timeout_s,
            "max_retries": 0,  # ChatLLM retries with backoff
            "logprobs": True,
            "top_logprobs": 5,
        }
        if config.base_url:
            kwargs["base_url"] = config.base_url
        chat_o = ChatOpenAI(**kwargs)
        mid = f"openai:{parsed.target}" + (f"@{config.base_url}" if config.base_url else "")
        params["structured_output"] = config.structured_output
        return ChatLLM(
            chat_o,
            model_id=mid,
            params=params,
            invoke_kwargs={
                "response_format": openai_response_format(schema, config.structured_output)
            },
            **common,  # type: ignore[arg-type]
        )
    from langchain_ollama import ChatOllama

    okw: dict[str, Any] = {
        "model": parsed.target,
        "temperature": 0.0,
        "num_predict": config.max_tokens,
        # a JSON schema constrains Ollama's output to it; "json" only to some JSON object
        "format": schema if config.structured_output == "json_schema" else "json",
        "logprobs": True,
        "top_logprobs": 5,
        "client_kwargs": {"timeout": config.timeout_s},
    }
    if config.base_url:
        okw["base_url"] = config.base_url
    chat_l = ChatOllama(**okw)
    mid = f"ollama:{parsed.target}" + (f"@{config.base_url}" if config.base_url else "")
    params["structured_output"] = config.structured_output
    return ChatLLM(chat_l, model_id=mid, params=params, **common)  # type: ignore[arg-type]


def _llamacpp_server_llm(
    config: LLMConfig,
    path: Path,
    key: str | None,
    schema: Mapping[str, Any],
    params: dict[str, Any],
    common: Mapping[str, Any],
) -> ChatLLM:
    """A local GGUF behind llama.cpp's OpenAI-compatible server (xllamacpp, prebuilt)."""
    from langchain_openai import ChatOpenAI

    base = local_llm_base_url(config, path)
    chat = ChatOpenAI(
        model=path.name,
        base_url=base,
        api_key="local",  # type: ignore[arg-type]  # the local server checks none
        temperature=0.0,
        max_tokens=config.max_tokens,  # type: ignore[call-arg]
        timeout=max(config.timeout_s, 300.0),  # a loaded 2-core machine is slow
        max_retries=0,
        logprobs=True,
        top_logprobs=8,
    )
    return ChatLLM(
        chat,
        model_id=_llamacpp_model_id(path, key),
        params=params,
        invoke_kwargs={"response_format": openai_response_format(schema)},
        token_counter=_server_token_counter(base),
        **common,
    )


def _llamacpp_inprocess_llm(
    config: LLMConfig,
    path: Path,
    key: str | None,
    schema: Mapping[str, Any],
    params: dict[str, Any],
    common: Mapping[str, Any],
) -> ChatLLM:
    """A local GGUF run in this process by llama-cpp-python (the ``inprocess`` extra)."""
    try:
        import llama_cpp  # noqa: F401
        from langchain_community.chat_models import ChatLlamaCpp
    except ImportError as exc:
        raise LLMError(
            "LABELLOOP_LLM_RUNTIME=inprocess needs llama-cpp-python, compiled from source, and "
            "langchain-community: `uv sync --extra inprocess` (a C++ compiler and CMake; several "
            f"minutes), or use LABELLOOP_LLM_RUNTIME=server (prebuilt); missing: {exc.name or exc}"
        ) from exc

    chat = ChatLlamaCpp(
        model_path=str(path),
        n_ctx=config.n_ctx,
        n_batch=512,
        n_threads=config.threads,
        rope_freq_base=0,
        temperature=0.0,
        top_k=1,
        repeat_penalty=1.0,
        max_tokens=config.max_tokens,
        verbose=False,
    )
    client = chat.client
    # free the model before interpreter teardown (llama.cpp's own __del__ fails at exit)
    atexit.register(_close_quietly, client)

    def count(text: str) -> int:
        return len(client.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    return ChatLLM(
        chat,
        model_id=_llamacpp_model_id(path, key),
        params={**params, "runtime": "inprocess"},
        invoke_kwargs={"response_format": {"type": "json_object", "schema": dict(schema)}},
        capture_logits=True,
        token_counter=count,
        **common,
    )


# --------------------------------------------------------------------------- parsing


class LabelAnswer(BaseModel):
    """The raw JSON answer (before mapping to taxonomy ids)."""

    model_config = ConfigDict(extra="ignore")

    sensitive: list[str] = Field(default_factory=list)
    interests: list[str] = Field(default_factory=list)
    rationale: str = ""


@dataclass(frozen=True)
class ParsedAnswer:
    sensitive: list[str]  # categories, answer order, deduplicated
    interests: list[tuple[str, str]]  # (iab id, the string the model wrote)
    rationale: str


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def _extract_json_object(text: str) -> str | None:
    t = _FENCE.sub("", text.strip())
    start = t.find("{")
    if start < 0:
        return None
    depth, in_str, esc = 0, False, False
    for i in range(start, len(t)):
        ch = t[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return t[start : i + 1]
    return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.casefold().replace("&", " and ")).strip()


def parse_answer(
    text: str, *, interests: Mapping[str, str], categories: Sequence[str]
) -> ParsedAnswer | str:
    """Validate an answer. ``interests``: offered ``{iab_id: name}``. Returns an error string."""
    blob = _extract_json_object(text)
    if blob is None:
        return "no JSON object in the answer"
    try:
        data = json.loads(blob)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg}"
    if not isinstance(data, dict):
        return "the answer is not a JSON object"
    missing = [k for k in ("sensitive", "interests") if k not in data]
    if missing:
        return f"missing keys {missing}"
    try:
        ans = LabelAnswer.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"field {'.'.join(map(str, err['loc']))}: {err['msg']}"
    by_name = {_norm(n): i for i, n in interests.items()}
    cats = {c.casefold(): c for c in categories}
    bad_cats = [s for s in ans.sensitive if s.strip().casefold() not in cats]
    bad_int = [s for s in ans.interests if s.strip() not in interests and _norm(s) not in by_name]
    if bad_cats or bad_int:
        parts = []
        if bad_cats:
            parts.append(f"unknown sensitive categories {bad_cats}")
        if bad_int:
            parts.append(f"interests not in the list {bad_int}")
        return "; ".join(parts)
    sens: list[str] = []
    for s in ans.sensitive:
        c = cats[s.strip().casefold()]
        if c not in sens:
            sens.append(c)
    ints: list[tuple[str, str]] = []
    for s in ans.interests:
        iid = s.strip() if s.strip() in interests else by_name[_norm(s)]
        if iid not in [i for i, _ in ints]:
            ints.append((iid, s))
    return ParsedAnswer(sens, ints, ans.rationale.strip()[:300])


# --------------------------------------------------------------------------- confidence


def _token_spans(tokens: Sequence[TokenLogprob], text: str) -> list[tuple[int, int]] | None:
    spans: list[tuple[int, int]] = []
    pos = 0
    for t in tokens:
        spans.append((pos, pos + len(t.token)))
        pos += len(t.token)
    joined = "".join(t.token for t in tokens)
    if not (joined == text or joined.startswith(text) or text.startswith(joined)):
        return None
    return spans


def _list_span(text: str, key: str) -> tuple[int, int] | None:
    m = re.search(r'"' + re.escape(key) + r'"\s*:\s*\[', text)
    if m is None:
        return None
    end = text.find("]", m.end())
    return (m.end() - 1, end if end >= 0 else len(text))


def label_confidences(
    text: str, tokens: Sequence[TokenLogprob] | None, key: str
) -> dict[str, float] | None:
    """``{label string as written: confidence}`` for the items of the ``key`` list (see module doc)."""
    if not tokens:
        return None
    spans = _token_spans(tokens, text)
    lst = _list_span(text, key)
    if spans is None or lst is None:
        return None
    out: dict[str, float] = {}
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', text[lst[0] : lst[1]]):
        q = lst[0] + m.start()  # opening quote
        e = lst[0] + m.end() - 1  # closing quote (exclusive end of the label)
        # from the separator before it ('[' or ','): the "one more item" decision is made there
        s = max(text.rfind("[", lst[0], q), text.rfind(",", lst[0], q), lst[0])
        lp = sum(t.logprob for t, (a, b) in zip(tokens, spans, strict=False) if a < e and b > s)
        label = m.group(1)
        out[label] = max(out.get(label, 0.0), math.exp(lp))
    return out


def p_list_nonempty(text: str, tokens: Sequence[TokenLogprob] | None, key: str) -> float | None:
    """P(the ``key`` list has at least one item) from the alternatives where it opens."""
    if not tokens:
        return None
    spans = _token_spans(tokens, text)
    lst = _list_span(text, key)
    if spans is None or lst is None:
        return None
    bracket = lst[0]
    nxt = bracket + 1
    while nxt < len(text) and text[nxt] in " \n\t":
        nxt += 1
    for t, (a, b) in zip(tokens, spans, strict=False):
        if a <= nxt < b:
            alts = dict(t.top)
            alts.setdefault(t.token, t.logprob)
            covers_bracket = a <= bracket
            p_item = p_close = 0.0
            for tok, lp in alts.items():
                s = tok.lstrip()
                if covers_bracket:
                    s = s[s.find("[") :] if "[" in s else ""
                    s = s[1:].lstrip() if s else ""
                if not s:
                    continue
                if s[0] == '"':
                    p_item += math.exp(lp)
                elif s[0] == "]":
                    p_close += math.exp(lp)
            if p_item + p_close <= 0:
                return None
            return p_item / (p_item + p_close)
    return None


# --------------------------------------------------------------------------- labeler


@dataclass
class LLMOutcome:
    valid: bool
    interests: dict[str, float] = field(default_factory=dict)  # iab id -> confidence
    sensitive: dict[str, float] = field(default_factory=dict)  # category -> confidence
    p_any_sensitive: float | None = None
    rationale: str = ""
    error: str | None = None
    text: str = ""
    cached: bool = False
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    has_logprobs: bool = False


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LLMLabeler:
    """Prompt -> LLM -> validated labels with confidence; cached in the label store."""

    def __init__(
        self,
        llm: ChatLLM,
        *,
        interests: Mapping[str, str],
        categories: Sequence[str],
        store: LabelStore | None = None,
        nologprob_conf: float = 0.7,
    ) -> None:
        self.llm = llm
        self.interests = dict(interests)
        self.categories = tuple(categories)
        self.store = store
        self.nologprob_conf = nologprob_conf

    @property
    def model_id(self) -> str:
        return self.llm.model_id

    def cache_key(self, prompt_hash: str, conversation_text: str) -> str:
        payload = json.dumps(
            [prompt_hash, self.llm.model_id, self.llm.params, _text_hash(conversation_text)],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # ---- cache ----
    def _cache_get(self, key: str) -> dict[str, Any] | None:
        if self.store is None:
            return None
        return self.store.llm_cache_get(key)

    def _cache_put(
        self, key: str, prompt_hash: str, response: dict[str, Any], o: LLMOutcome
    ) -> None:
        if self.store is None:
            return
        row = {
            "cache_key": key,
            "prompt_hash": prompt_hash,
            "model_id": self.llm.model_id,
            "response": response,
            "input_tokens": o.input_tokens,
            "output_tokens": o.output_tokens,
            "latency_s": o.latency_s,
        }
        self.store.llm_cache_put(row)  # the first writer of a key wins (concurrent runs)

    # ---- scoring ----
    def _score(self, text: str, logprobs: list[TokenLogprob] | None) -> LLMOutcome:
        parsed = parse_answer(text, interests=self.interests, categories=self.categories)
        if isinstance(parsed, str):
            return LLMOutcome(valid=False, error=parsed, text=text)
        s_conf = label_confidences(text, logprobs, "sensitive")
        i_conf = label_confidences(text, logprobs, "interests")
        p_any = p_list_nonempty(text, logprobs, "sensitive")
        dflt = self.nologprob_conf
        sens = {
            c: _clip((s_conf or {}).get(c, dflt) if s_conf is not None else dflt)
            for c in parsed.sensitive
        }
        ints = {
            iid: _clip((i_conf or {}).get(raw, dflt) if i_conf is not None else dflt)
            for iid, raw in parsed.interests
        }
        if p_any is None:
            p_any = max(sens.values(), default=0.0)
        return LLMOutcome(
            valid=True,
            interests=ints,
            sensitive=sens,
            p_any_sensitive=_clip(p_any),
            rationale=parsed.rationale,
            text=text,
            has_logprobs=logprobs is not None,
        )

    def label(self, prompt: RenderedPrompt, conversation_text: str) -> LLMOutcome:
        """Label one conversation. Never raises for a bad answer or a failing model."""
        key = self.cache_key(prompt.prompt_hash, conversation_text)
        hit = self._cache_get(key)
        if hit is not None:
            lps = (
                [TokenLogprob.from_json(v) for v in hit["logprobs"]]
                if hit.get("logprobs")
                else None
            )
            o = self._score(str(hit.get("text", "")), lps)
            if not o.valid and hit.get("error"):
                o.error = str(hit["error"])
            o.cached = True
            return o
        if not self.llm.trace:
            return self._ask(prompt, key)
        from labeling.llm_traces import proposal_span

        with proposal_span(prompt_hash=prompt.prompt_hash, model_id=self.llm.model_id,
                           system=prompt.system, user=prompt.user) as span:  # fmt: skip
            o = self._ask(prompt, key)
            span.set_outputs({"valid": o.valid, "sensitive": o.sensitive, "interests": o.interests,
                              "rationale": o.rationale, "error": o.error, "answer": o.text})  # fmt: skip
            span.set_attributes({
                "labelloop.valid": o.valid, "labelloop.calls": o.calls,
                "labelloop.input_tokens": o.input_tokens, "labelloop.output_tokens": o.output_tokens,
                "labelloop.latency_s": round(o.latency_s, 4), "labelloop.has_logprobs": o.has_logprobs,
            })  # fmt: skip
        return o

    def _ask(self, prompt: RenderedPrompt, key: str) -> LLMOutcome:
        """The LLM call (and one repair), cached under ``key`` unless the call failed."""
        messages: list[BaseMessage] = [SystemMessage(prompt.system), HumanMessage(prompt.user)]
        total = LLMOutcome(valid=False)
        resp: LLMResponse | None = None
        outcome = LLMOutcome(valid=False, error="not called")
        for attempt in range(2):  # the answer, then one repair
            try:
                resp = self.llm.invoke(messages)
            except Exception as exc:
                total.calls += 1
                outcome = LLMOutcome(
                    valid=False, error=f"LLM call failed: {type(exc).__name__}: {exc}"
                )
                break  # transient failures: not cached, retried on the next run
            total.calls += 1
            total.input_tokens += resp.input_tokens
            total.output_tokens += resp.output_tokens
            total.latency_s += resp.latency_s
            outcome = self._score(resp.text, resp.logprobs)
            if outcome.valid or attempt == 1:
                break
            messages = [
                *messages,
                AIMessage(resp.text),
                HumanMessage(
                    f"That answer is invalid: {outcome.error}. Reply with only the JSON object "
                    '{"sensitive": [...], "interests": [...], "rationale": "..."}, using only '
                    "the categories and the interest names listed above."
                ),
            ]
        outcome.calls = total.calls
        outcome.input_tokens = total.input_tokens
        outcome.output_tokens = total.output_tokens
        outcome.latency_s = total.latency_s
        if resp is not None and (
            outcome.valid or (outcome.error and "LLM call failed" not in outcome.error)
        ):
            self._cache_put(
                key,
                prompt.prompt_hash,
                {
                    "text": resp.text,
                    "logprobs": [t.to_json() for t in resp.logprobs] if resp.logprobs else None,
                    "attempts": outcome.calls,
                    "valid": outcome.valid,
                    "error": outcome.error,
                },
                outcome,
            )
        return outcome


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))
