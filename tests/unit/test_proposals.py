"""Unit tests of label proposals: prompt, LLM parsing/repair/cache, kNN, few-shot, cascade, store.

No real models: LangChain fake chat models and a deterministic hashing embedding function.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from labeling import prompts as prompts_mod
from labeling.llm import (
    ChatLLM,
    LLMConfig,
    LLMError,
    LLMLabeler,
    LLMOutcome,
    TokenLogprob,
    build_chat_llm,
    label_confidences,
    p_list_nonempty,
    parse_answer,
    parse_llm_spec,
)
from labeling.policy import load_policy
from labeling.prompts import PromptError, label_prompt_variables, load_prompt, offered_interests
from labeling.proposals import (
    FLAG_DISAGREE,
    FLAG_INVALID,
    FLAG_POSSIBLE_SENSITIVE,
    PROPOSAL_SOURCES,
    CascadeConfig,
    LLMBudget,
    ProposalInput,
    Proposer,
    ProposeStats,
    combine,
    needs_llm,
    split_budget,
    write_proposals,
)
from labeling.taxonomy import load_taxonomy
from labeling.vectorstore import (
    GoldIndex,
    IndexedExample,
    KnnVote,
    Neighbor,
    knn_vote,
    load_seed_examples,
    select_few_shot,
)
from labelloop.settings import Settings
from labelloop.store import LabelStore
from labelloop.store.models import Base, ConversationRow, LLMCacheRow, ProposalRow

POLICY = load_policy()
TAXONOMY = load_taxonomy(categories=POLICY.categories)
OFFERED = dict(offered_interests(TAXONOMY))
TRAVEL = TAXONOMY.name_to_id("Travel")
SPORTS = TAXONOMY.name_to_id("Sports")
SHOPPING = TAXONOMY.name_to_id("Shopping")


def answer(sensitive: list[str], interests: list[str], rationale: str = "r") -> str:
    return json.dumps({"sensitive": sensitive, "interests": interests, "rationale": rationale})


# --------------------------------------------------------------------------- prompts


def _system_offers(system: str) -> tuple[set[str], set[str]]:
    cats = set(re.findall(r"^- ([a-z_]+): ", system, re.MULTILINE))
    line = next(ln for ln in system.splitlines() if ln.startswith("Interest list: "))
    names = {n.strip() for n in line.removeprefix("Interest list: ").split(";")}
    return cats, names


def test_prompt_loads_with_name_version_hash() -> None:
    p = load_prompt()
    assert p.name == "propose_labels"
    assert p.version
    raw = (prompts_mod.PROMPTS_DIR / "propose_labels.yaml").read_bytes()
    assert p.sha256 == hashlib.sha256(raw).hexdigest()
    assert p.variables == {"categories", "interests", "examples", "conversation"}


def test_drift_guard_prompt_offers_exactly_taxonomy_and_policy() -> None:
    r = load_prompt().render(**label_prompt_variables(POLICY, TAXONOMY, conversation="user: hi"))
    cats, names = _system_offers(r.system)
    assert cats == set(POLICY.categories)
    assert names == {i.name for i in TAXONOMY.tier1()}
    assert {TAXONOMY.name_to_id(n) for n in names} == {i.id for i in TAXONOMY.tier1()}


def test_drift_guard_follows_an_eighth_policy_category(tmp_path: Path) -> None:
    doc = yaml.safe_load(POLICY.path.read_text())
    doc["sensitive_categories"]["criminal_record"] = {
        "label": "Criminal record",
        "description": "Criminal convictions or offences of anyone, arrests, prison time.",
    }
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(doc))
    pol = load_policy(p)
    r = load_prompt().render(**label_prompt_variables(pol, TAXONOMY, conversation="user: hi"))
    cats, _ = _system_offers(r.system)
    assert cats == set(pol.categories)
    assert "criminal_record" in cats


def test_render_rejects_missing_and_unknown_variables() -> None:
    p = load_prompt()
    good = label_prompt_variables(POLICY, TAXONOMY, conversation="user: hi")
    with pytest.raises(PromptError, match="missing variables \\['conversation'\\]"):
        p.render(**{k: v for k, v in good.items() if k != "conversation"})
    with pytest.raises(PromptError, match="unknown variables \\['extra'\\]"):
        p.render(**good, extra=1)
    with pytest.raises(PromptError, match="answer"):
        p.render(**{**good, "examples": [{"text": "t"}]})  # StrictUndefined attribute


def _write_prompt(tmp_path: Path, **over: Any) -> Path:
    doc: dict[str, Any] = {
        "name": "t",
        "version": 1,
        "variables": ["a"],
        "system": "S {{ a }}",
        "user": "U",
    }
    doc.update(over)
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_loader_is_strict(tmp_path: Path) -> None:
    assert load_prompt(_write_prompt(tmp_path)).render(a=1).system == "S 1"
    with pytest.raises(PromptError, match="undeclared: \\['b'\\]"):
        load_prompt(_write_prompt(tmp_path, user="{{ b }}"))
    with pytest.raises(PromptError, match="unused: \\['c'\\]"):
        load_prompt(_write_prompt(tmp_path, variables=["a", "c"]))
    with pytest.raises(PromptError, match="invalid prompt file"):
        load_prompt(_write_prompt(tmp_path, colour="red"))
    with pytest.raises(PromptError, match="template"):
        load_prompt(_write_prompt(tmp_path, system="{% if %}"))
    with pytest.raises(PromptError, match="cannot read"):
        load_prompt(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- parsing


def parse(text: str) -> Any:
    return parse_answer(text, interests=OFFERED, categories=POLICY.categories)


def test_parse_valid_names_ids_fences_and_dedupe() -> None:
    r = parse("```json\n" + answer(["health", "health"], ["travel", TRAVEL, "Sports"]) + "\n```")
    assert not isinstance(r, str)
    assert r.sensitive == ["health"]
    assert [i for i, _ in r.interests] == [TRAVEL, SPORTS]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no json here", "no JSON object"),
        ('{"sensitive": [}', "invalid JSON"),
        ('{"interests": []}', "missing keys"),
        (answer(["gambling"], []), "unknown sensitive categories"),
        (answer([], ["Medical Health"]), "interests not in the list"),
        (answer([], ["Music"]), "interests not in the list"),  # tier 2 is not offered
        ('{"sensitive": "health", "interests": []}', "field sensitive"),
    ],
)
def test_parse_rejects(text: str, error: str) -> None:
    r = parse(text)
    assert isinstance(r, str)
    assert error in r


# --------------------------------------------------------------------------- confidence


def toks(
    *pairs: tuple[str, float], tops: dict[int, dict[str, float]] | None = None
) -> list[TokenLogprob]:
    tops = tops or {}
    return [TokenLogprob(t, lp, tops.get(i, {})) for i, (t, lp) in enumerate(pairs)]


def test_label_confidence_is_product_of_label_token_probs() -> None:
    text = '{"sensitive": ["health"], "interests": ["Travel", "Sports"]}'
    t = toks(
        ('{"sensitive": ', 0.0),
        ('["', math.log(0.8)),
        ("health", math.log(0.9)),
        ('"],', 0.0),
        (' "interests": ', 0.0),
        ('["', math.log(0.95)),
        ("Tra", math.log(0.5)),
        ("vel", 0.0),
        ('",', math.log(0.6)),
        (' "', 0.0),
        ("Sports", math.log(0.3)),
        ('"]}', 0.0),
    )
    s = label_confidences(text, t, "sensitive")
    assert s == pytest.approx({"health": 0.8 * 0.9})
    i = label_confidences(text, t, "interests")
    assert i is not None
    assert i["Travel"] == pytest.approx(0.95 * 0.5)
    # the closing-quote token '",' is not part of the label; the next opening quote is
    assert i["Sports"] == pytest.approx(0.6 * 1.0 * 0.3)
    assert label_confidences(text, None, "interests") is None
    assert label_confidences("different text", t, "interests") is None


def test_p_nonempty_from_alternatives() -> None:
    text = '{"sensitive": [], "interests": []}'
    t = toks(
        ('{"sensitive": ', 0.0),
        ("[]", math.log(0.7)),
        (', "interests": [', 0.0),
        ("]}", 0.0),
        tops={1: {"[]": math.log(0.7), '["': math.log(0.2), "[": math.log(0.05)}},
    )
    assert p_list_nonempty(text, t, "sensitive") == pytest.approx(0.2 / 0.9)
    text2 = '{"sensitive": ["religion"]}'
    t2 = toks(
        ('{"sensitive": [', 0.0),
        ('"', math.log(0.4)),
        ("religion", 0.0),
        ('"]}', 0.0),
        tops={1: {'"': math.log(0.4), "]": math.log(0.4)}},
    )
    assert p_list_nonempty(text2, t2, "sensitive") == pytest.approx(0.5)


# --------------------------------------------------------------------------- labeler


class FlakyChat(BaseChatModel):
    """Raises ``fail`` times, then answers."""

    fail: int = 1
    reply: str = ""
    invoked: int = 0

    @property
    def _llm_type(self) -> str:
        return "flaky"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.invoked += 1
        if self.invoked <= self.fail:
            raise TimeoutError("timed out")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply))])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LabelStore]:
    st = LabelStore(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(st.engine)
    yield st
    st.dispose()


def labeler(chat: BaseChatModel, store: LabelStore | None = None, **kw: Any) -> LLMLabeler:
    sleeps: list[float] = kw.pop("sleeps", [])
    llm = ChatLLM(chat, model_id="fake", params={"t": 0}, sleep=sleeps.append, **kw)
    return LLMLabeler(llm, interests=OFFERED, categories=POLICY.categories, store=store)


def rendered(conv: str = "user: trip to Rome") -> Any:
    return load_prompt().render(**label_prompt_variables(POLICY, TAXONOMY, conversation=conv))


def test_valid_answer_without_logprobs_gets_default_conf() -> None:
    lab = labeler(FakeListChatModel(responses=[answer([], ["Travel"])]))
    o = lab.label(rendered(), "user: trip to Rome")
    assert o.valid
    assert o.interests == {TRAVEL: 0.7}
    assert o.calls == 1
    assert o.input_tokens > 0


def test_repair_once_then_valid() -> None:
    chat = FakeListChatModel(responses=["Sure! Travel.", answer([], ["Travel"])])
    o = labeler(chat).label(rendered(), "x")
    assert o.valid
    assert o.calls == 2


def test_off_taxonomy_twice_is_flagged_invalid() -> None:
    bad = answer([], ["Medical Health"])
    o = labeler(FakeListChatModel(responses=[bad, bad])).label(rendered(), "x")
    assert not o.valid
    assert o.calls == 2
    assert o.error and "not in the list" in o.error


def test_timeouts_retried_with_backoff() -> None:
    sleeps: list[float] = []
    chat = FlakyChat(fail=2, reply=answer(["health"], []))
    o = labeler(chat, max_retries=2, backoff_s=0.5, sleeps=sleeps).label(rendered(), "x")
    assert o.valid
    assert o.sensitive == {"health": 0.7}
    assert sleeps == [0.5, 1.0]


def test_persistent_failure_gives_invalid_not_exception() -> None:
    chat = FlakyChat(fail=99)
    o = labeler(chat, max_retries=1).label(rendered(), "x")
    assert not o.valid
    assert o.error and "TimeoutError" in o.error


def test_cache_second_run_makes_no_call(store: LabelStore) -> None:
    chat = GenericFakeChatModel(messages=iter([AIMessage(answer([], ["Travel"]))]))
    lab = labeler(chat, store)
    first = lab.label(rendered(), "user: trip to Rome")
    assert first.valid and not first.cached
    again = labeler(chat, store)  # a fresh labeler: the iterator is exhausted, a call would fail
    second = again.label(rendered(), "user: trip to Rome")
    assert second.cached and second.valid
    assert second.interests == first.interests
    assert again.llm.calls == 0
    with store.session() as s:
        rows = s.query(LLMCacheRow).all()
        assert len(rows) == 1 and rows[0].model_id == "fake"
    # another text, model or prompt is another key
    assert lab.cache_key("p", "a") != lab.cache_key("p", "b")
    assert lab.cache_key("p", "a") != lab.cache_key("q", "a")


# --------------------------------------------------------------------------- specs / providers


def test_parse_llm_spec() -> None:
    assert parse_llm_spec("llamacpp:default").provider == "llamacpp"
    assert parse_llm_spec("llamacpp:/m/x.gguf").target == "/m/x.gguf"
    assert parse_llm_spec("hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/q4.gguf").provider == "hf"
    assert parse_llm_spec("openai:gpt-4o-mini").target == "gpt-4o-mini"
    assert parse_llm_spec("ollama:qwen2.5:7b").target == "qwen2.5:7b"
    for bad in ("gpt-4o", "llamacpp:nope", "hf:repo/only", "vertex:x", "openai:"):
        with pytest.raises(LLMError):
            parse_llm_spec(bad)


def _settings(tmp_path: Path, **kw: Any) -> LLMConfig:
    from labelloop.runtime import llm_config

    return llm_config(Settings(state_dir=tmp_path / "state", **kw))


def test_openai_provider_builds_with_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_openai import ChatOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = _settings(tmp_path, llm="openai:my-model", llm_base_url="http://127.0.0.1:9/v1")
    c = build_chat_llm(s, interest_names=list(OFFERED.values()), categories=POLICY.categories)
    assert isinstance(c.chat_model, ChatOpenAI)
    assert c.chat_model.model_name == "my-model"
    assert str(c.chat_model.openai_api_base) == "http://127.0.0.1:9/v1"
    assert c.chat_model.logprobs is True
    assert c.model_id == "openai:my-model@http://127.0.0.1:9/v1"
    # the answer is constrained by the label JSON schema (strict), not only "some JSON"
    rf = c.invoke_kwargs["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    props = rf["json_schema"]["schema"]["properties"]
    assert props["sensitive"]["items"]["enum"] == list(POLICY.categories)
    assert props["interests"]["items"]["enum"] == list(OFFERED.values())
    assert rf["json_schema"]["schema"]["additionalProperties"] is False
    plain = _settings(tmp_path, llm="openai:m", llm_structured_output="json_object")
    c2 = build_chat_llm(plain, interest_names=["Travel"], categories=["health"])
    assert c2.invoke_kwargs["response_format"] == {"type": "json_object"}
    assert c2.params["structured_output"] == "json_object"


def test_ollama_provider_builds(tmp_path: Path) -> None:
    from langchain_ollama import ChatOllama

    s = _settings(tmp_path, llm="ollama:qwen2.5:7b", llm_base_url="http://127.0.0.1:9")
    c = build_chat_llm(s, interest_names=list(OFFERED.values()), categories=POLICY.categories)
    assert isinstance(c.chat_model, ChatOllama)
    assert c.chat_model.model == "qwen2.5:7b"
    fmt = c.chat_model.format
    assert isinstance(fmt, dict) and fmt["required"] == ["sensitive", "interests", "rationale"]
    assert fmt["properties"]["interests"]["items"]["enum"] == list(OFFERED.values())
    assert c.model_id.startswith("ollama:qwen2.5:7b")
    s2 = _settings(tmp_path, llm="ollama:m", llm_structured_output="json_object")
    c2 = build_chat_llm(s2, interest_names=["Travel"], categories=["health"])
    assert c2.chat_model.format == "json"


def test_local_gguf_uses_the_stack_server_when_it_serves_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default runtime: a local GGUF is called through llama.cpp's OpenAI-compatible server,
    the stack's llm service when it serves that file, else one embedded in the process."""
    from langchain_openai import ChatOpenAI

    from labeling import llm as llm_mod
    from labeling import llm_server

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(llm_mod, "ensure_llm_model", lambda _d, _t: gguf)
    started: list[Path] = []

    class Embedded:
        base_url = "http://127.0.0.1:1234/v1"

    def embedded(path: Path, **_: Any) -> Embedded:
        started.append(path)
        return Embedded()

    monkeypatch.setattr(llm_server, "embedded_server", embedded)
    s = _settings(tmp_path, llm=f"llamacpp:{gguf}", llm_port=8765)
    monkeypatch.setattr(llm_server, "serves_model", lambda url, p: url == s.server_url)
    c = build_chat_llm(s, interest_names=["Travel"], categories=["health"])
    assert isinstance(c.chat_model, ChatOpenAI)
    assert str(c.chat_model.openai_api_base) == "http://127.0.0.1:8765/v1" and not started
    assert c.invoke_kwargs["response_format"]["type"] == "json_schema"
    assert c.model_id.startswith("llamacpp:m.gguf")
    monkeypatch.setattr(llm_server, "serves_model", lambda _url, _p: False)
    c = build_chat_llm(s, interest_names=["Travel"], categories=["health"])
    assert str(c.chat_model.openai_api_base) == Embedded.base_url and started == [gguf]


def test_serves_model_checks_the_file_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from labeling.llm_server import serves_model

    body = {"data": [{"id": "/models/qwen.gguf", "object": "model"}]}

    def get(url: str, **_: Any) -> httpx.Response:
        assert url == "http://h:1/v1/models"
        return httpx.Response(200, json=body, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)
    assert serves_model("http://h:1/v1", Path("/elsewhere/qwen.gguf"))
    assert not serves_model("http://h:1/v1", Path("/x/other.gguf"))

    def down(url: str, **_: Any) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "get", down)
    assert not serves_model("http://h:1/v1", Path("/elsewhere/qwen.gguf"))


def test_inprocess_runtime_without_llama_cpp_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    from labeling import llm as llm_mod

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(llm_mod, "ensure_llm_model", lambda _d, _t: gguf)
    real_import = builtins.__import__

    def no_llama(name: str, *a: Any, **kw: Any) -> Any:
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    s = _settings(tmp_path, llm=f"llamacpp:{gguf}", llm_runtime="inprocess")
    with pytest.raises(LLMError, match="uv sync --extra inprocess"):
        build_chat_llm(s, interest_names=["Travel"], categories=["health"])


def test_inprocess_runtime_without_langchain_community_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """langchain-community comes with the inprocess extra only: llama-cpp-python alone is not
    enough, and the error says what is missing."""
    import builtins
    import sys
    import types

    from labeling import llm as llm_mod

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(llm_mod, "ensure_llm_model", lambda _d, _t: gguf)
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    real_import = builtins.__import__

    def no_community(name: str, *a: Any, **kw: Any) -> Any:
        if name.startswith("langchain_community"):
            raise ModuleNotFoundError("No module named 'langchain_community'", name=name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_community)
    s = _settings(tmp_path, llm=f"llamacpp:{gguf}", llm_runtime="inprocess")
    with pytest.raises(LLMError, match=r"extra inprocess.*missing: langchain_community"):
        build_chat_llm(s, interest_names=["Travel"], categories=["health"])


def test_openai_logprobs_metadata_is_used() -> None:
    text = answer([], ["Travel"])
    content = [{"token": text, "logprob": math.log(0.5), "top_logprobs": []}]
    msg = AIMessage(text, response_metadata={"logprobs": {"content": content}})
    o = labeler(GenericFakeChatModel(messages=iter([msg]))).label(rendered(), "x")
    assert o.valid and o.has_logprobs
    assert o.interests[TRAVEL] == pytest.approx(0.5)


def test_hf_and_missing_gguf_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labeling import assets

    def offline(**_: Any) -> str:
        raise OSError("network unreachable")

    monkeypatch.setattr(assets, "_hf_hub_download", lambda: offline)
    s = _settings(tmp_path, llm="hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/q4.gguf")
    with pytest.raises(assets.AssetError, match="offline"):
        build_chat_llm(s, interest_names=["Travel"], categories=["health"])
    s2 = _settings(tmp_path, llm=f"llamacpp:{tmp_path / 'missing.gguf'}")
    with pytest.raises(assets.AssetError, match="not found"):
        build_chat_llm(s2, interest_names=["Travel"], categories=["health"])


# --------------------------------------------------------------------------- kNN and few-shot


def nb(
    id_: str,
    sim: float,
    interests: tuple[str, ...] | None = (),
    sensitive: tuple[str, ...] = (),
    origin: str = "human",
    text: str = "t",
) -> Neighbor:
    return Neighbor(id_, text, sim, interests, sensitive, origin)


def test_knn_vote_distance_weighted() -> None:
    ns = [
        nb("a", 0.9, (TRAVEL,), ("health",)),
        nb("b", 0.8, (SPORTS,)),
        nb("c", 0.8, None, ("health",)),  # interests unknown: votes on sensitive only
    ]
    v = knn_vote(ns, temperature=0.1, seed_weight=1.0)
    wa, wb = 1.0, math.exp(-1.0)
    assert v.sensitive["health"] == pytest.approx((wa + wb) / (wa + 2 * wb))
    assert v.interests[TRAVEL] == pytest.approx(wa / (wa + wb))
    assert v.interests[SPORTS] == pytest.approx(wb / (wa + wb))
    assert v.max_similarity == pytest.approx(0.9)
    assert v.n == 3 and v.n_interest_known == 2
    seeded = knn_vote(
        [nb("s", 0.9, (TRAVEL,), origin="seed"), nb("h", 0.9, (SPORTS,))], seed_weight=0.5
    )
    assert seeded.interests[SPORTS] == pytest.approx(2 / 3)
    assert knn_vote([]).interests == {} and knn_vote([]).max_similarity == 0.0


def test_knn_vote_maps_to_tier1() -> None:
    music = TAXONOMY.name_to_id("Music and Audio")
    v = knn_vote([nb("a", 0.9, (music,))], interest_map=lambda i: TAXONOMY.tier1_of(i).id)
    assert v.interests == {TAXONOMY.tier1_of(music).id: 1.0}


def test_few_shot_covers_every_neighbour_label_within_budget() -> None:
    ns = [nb(f"t{i}", 0.9 - i * 0.01, (TRAVEL,)) for i in range(6)]
    ns.append(nb("rare", 0.5, (SPORTS,), ("union_membership",)))
    chosen = select_few_shot(ns, k=3, token_budget=1000, count_tokens=len)
    assert "rare" in [c.id for c in chosen]
    assert "t0" in [c.id for c in chosen]
    assert len(chosen) == 3
    tight = select_few_shot(
        [nb("a", 0.9, text="x" * 50), nb("b", 0.8, text="y" * 50)],
        k=5,
        token_budget=60,
        count_tokens=len,
    )
    assert [c.id for c in tight] == ["a"]


def test_seed_examples_cover_every_interest_and_category() -> None:
    seeds, lexicon = load_seed_examples(TAXONOMY, POLICY.categories)
    covered = {TAXONOMY.tier1_of(i).id for s in seeds for i in (s.interests or ())}
    assert covered >= {i.id for i in TAXONOMY.tier1()}
    assert {c for s in seeds for c in s.sensitive} == set(POLICY.categories)
    assert all(s.origin == "seed" for s in seeds)
    assert "union_membership" in lexicon.match("our union rep called a strike vote")
    assert lexicon.match("who won the rugby union final?") == {}


# --------------------------------------------------------------------------- cascade / combine


def vote(
    interests: dict[str, float], sensitive: dict[str, float] | None = None, sim: float = 0.9
) -> KnnVote:
    return KnnVote(interests, sensitive or {}, sim, 5, 5)


CFG = CascadeConfig()


def test_cascade_decisions() -> None:
    assert needs_llm(vote({TRAVEL: 0.95}), None, {}, CFG) == (False, "confident")
    assert needs_llm(vote({TRAVEL: 0.95}, {"health": 0.2}), None, {}, CFG)[1] == "sensitive_suspect"
    assert (
        needs_llm(vote({TRAVEL: 0.95}), None, {"religion": ["church"]}, CFG)[1]
        == "sensitive_suspect"
    )
    assert needs_llm(vote({TRAVEL: 0.6}), None, {}, CFG)[1] == "knn_unsure"
    assert needs_llm(vote({TRAVEL: 0.95}, sim=0.3), None, {}, CFG)[1] == "far_from_gold"
    assert needs_llm(None, None, {}, CFG)[1] == "no_neighbours"
    agree = ({TRAVEL: 0.9}, {"health": 0.01})
    assert needs_llm(vote({TRAVEL: 0.95}), agree, {}, CFG) == (False, "confident")
    assert (
        needs_llm(vote({TRAVEL: 0.95}), ({SPORTS: 0.9}, {}), {}, CFG)[1]
        == "knn_classifier_disagree"
    )
    assert needs_llm(vote({TRAVEL: 0.95}), ({TRAVEL: 0.6}, {}), {}, CFG)[1] == "classifier_unsure"
    assert (
        needs_llm(vote({TRAVEL: 0.95}), ({TRAVEL: 0.9}, {"health": 0.3}), {}, CFG)[1]
        == "sensitive_suspect"
    )
    assert (
        needs_llm(vote({TRAVEL: 0.95}), None, {}, CascadeConfig(enabled=False))[1] == "cascade_off"
    )


def test_combine_weights_and_flags() -> None:
    llm = LLMOutcome(valid=True, interests={TRAVEL: 0.9}, sensitive={}, p_any_sensitive=0.05)
    i, s, u, flags = combine(
        llm=llm, vote=vote({TRAVEL: 1.0}), clf=None, lexicon_hits={}, sensitive_flag=0.15
    )
    assert i[TRAVEL] == pytest.approx((0.5 * 0.9 + 0.3 * 1.0) / 0.8, abs=1e-4)
    assert s == {} and flags == []
    assert 0 <= u < 0.5
    llm2 = LLMOutcome(
        valid=True, interests={SPORTS: 0.8}, sensitive={"health": 0.6}, p_any_sensitive=0.7
    )
    i, s, u, flags = combine(
        llm=llm2, vote=vote({TRAVEL: 1.0}), clf=None, lexicon_hits={}, sensitive_flag=0.15
    )
    assert FLAG_DISAGREE in flags and FLAG_POSSIBLE_SENSITIVE in flags
    assert s["health"] == pytest.approx(0.45)  # 0.75 * strongest beats the mean 0.375
    assert u >= 0.6
    _, _, u, flags = combine(
        llm=LLMOutcome(valid=False, error="x"),
        vote=vote({TRAVEL: 1.0}),
        clf=None,
        lexicon_hits={},
        sensitive_flag=0.15,
    )
    assert FLAG_INVALID in flags and u == 1.0
    _, s, _, flags = combine(
        llm=None,
        vote=vote({}),
        clf=None,
        lexicon_hits={"union_membership": ["x"]},
        sensitive_flag=0.15,
    )
    assert FLAG_POSSIBLE_SENSITIVE in flags and s["union_membership"] > 0


# --------------------------------------------------------------------------- proposer end to end


class HashEmbedding(EmbeddingFunction[Documents]):
    """Deterministic bag-of-words hashing embedding (unit tests only)."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        out = []
        for text in input:
            v = np.zeros(64, dtype=np.float32)
            for w in re.findall(r"[a-z]+", text.lower()):
                v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
            out.append(v / max(float(np.linalg.norm(v)), 1e-9))
        return out

    @staticmethod
    def name() -> str:
        return "test-hash"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashEmbedding:
        return HashEmbedding()


@pytest.fixture
def index(tmp_path: Path) -> GoldIndex:
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    idx = GoldIndex(client, HashEmbedding(), "gold")
    seeds, _ = load_seed_examples(TAXONOMY, POLICY.categories)
    assert idx.ensure_seeded(seeds) == len(seeds)
    assert idx.ensure_seeded(seeds) == 0  # idempotent
    return idx


def test_index_upsert_is_idempotent_and_queryable(index: GoldIndex) -> None:
    n0 = index.count()
    ex = IndexedExample("c-1", "user: flights to Rome in May", (TRAVEL,), (), "human")
    index.upsert([ex])
    index.upsert([ex])
    assert index.count() == n0 + 1
    [hits] = index.query(["user: flights to Rome in May"], 3)
    assert hits[0].id == "c-1" and hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert hits[0].interests == (TRAVEL,)


def _proposer(
    index: GoldIndex, chat: BaseChatModel, store: LabelStore, cascade: bool = False
) -> Proposer:
    return Proposer(
        policy=POLICY,
        taxonomy=TAXONOMY,
        prompt=load_prompt(),
        index=index,
        labeler=labeler(chat, store),
        lexicon=load_seed_examples(TAXONOMY, POLICY.categories)[1],
        embedding_model_id="test-hash",
        cascade=CascadeConfig(enabled=cascade),
    )


def _add_conversations(store: LabelStore, ids: list[str]) -> None:
    with store.session() as s:
        for cid in ids:
            s.add(
                ConversationRow(
                    conversation_id=cid,
                    account_hash="h",
                    surface="assistant_chat",
                    country="US",
                    account_linked=True,
                    eligible=True,
                    content_hash="x",
                    source="t",
                    policy_version="p",
                )
            )


def test_proposer_writes_idempotently_and_rerun_uses_cache(
    index: GoldIndex, store: LabelStore
) -> None:
    items = [
        ProposalInput("c-1", "user: Book a hotel in Rome for three nights."),
        ProposalInput("c-2", "user: My union rep says we strike Monday, can I still fly to Spain?"),
        ProposalInput("c-3", "user: garbage answer please"),
    ]
    _add_conversations(store, [i.conversation_id for i in items])
    chat = FakeListChatModel(
        responses=[
            answer([], ["Travel"]),
            answer(["union_membership"], ["Travel"]),
            "not json",
            "still not json",
        ]
    )
    stats = ProposeStats()
    props = _proposer(index, chat, store).propose(items, stats=stats)
    assert [p.llm_called for p in props] == [True, True, True]
    assert props[0].interests[TRAVEL] > 0.5
    assert props[1].sensitive["union_membership"] > 0.5
    assert FLAG_POSSIBLE_SENSITIVE in props[1].flags
    assert FLAG_INVALID in props[2].flags and props[2].uncertainty == 1.0
    assert all(p.prompt_hash == load_prompt().sha256 and p.model_id == "fake" for p in props)
    assert stats.llm_calls == 4 and stats.invalid == 1
    assert write_proposals(store, props, "run-1") == (3, 0)
    # re-run: every answer comes from the cache (the fake has no answers left), rows are updated
    stats2 = ProposeStats()
    again = _proposer(index, FakeListChatModel(responses=["x"]), store).propose(items, stats=stats2)
    assert stats2.cache_hits == 3 and stats2.llm_calls == 0
    assert [p.interests for p in again] == [p.interests for p in props]
    assert write_proposals(store, again, "run-2") == (0, 3)
    with store.session() as s:
        assert s.query(ProposalRow).count() == 3


def test_cascade_skips_llm_for_confident_neighbours(index: GoldIndex, store: LabelStore) -> None:
    text = "user: Book a hotel in Lisbon for three nights near the old town."
    index.upsert([IndexedExample(f"g{i}", text, (TRAVEL,), ()) for i in range(3)])
    chat = FakeListChatModel(responses=[answer([], ["Travel"])])
    stats = ProposeStats()
    [p] = _proposer(index, chat, store, cascade=True).propose(
        [ProposalInput("c", text)], stats=stats
    )
    assert not p.llm_called
    assert p.interests[TRAVEL] > 0.9
    assert stats.as_dict()["llm_call_rate"] == 0.0
    [q] = _proposer(index, chat, store, cascade=True).propose(
        [ProposalInput("d", text + " I'm going to pray at the cathedral.")]
    )
    assert q.llm_called and q.sources["cascade"] == "sensitive_suspect"


# --------------------------------------------------------------------------- LLM budget per run


def test_llm_budget_counts_and_refuses_when_spent() -> None:
    b = LLMBudget(2)
    assert [b.take(), b.take(), b.take(), b.take()] == [True, True, False, False]
    assert b.used == 2
    assert LLMBudget(0).take() is False
    unlimited = LLMBudget()
    assert all(unlimited.take() for _ in range(1000))
    with pytest.raises(ValueError, match="negative"):
        LLMBudget(-1)


def test_split_budget_over_batches() -> None:
    assert split_budget(None, [64, 18]) == [None, None]
    assert split_budget(24, [64, 18]) == [19, 5]  # 18.73 + 5.27: the larger remainder first
    assert sum(split_budget(24, [64, 18])) == 24
    assert split_budget(100, [64, 18]) == [64, 18]  # never more than a batch holds
    assert split_budget(0, [5, 5]) == [0, 0]
    assert split_budget(3, [2, 2, 2]) == [1, 1, 1]
    assert split_budget(1, [2, 2]) == [1, 0]  # ties go to the earlier batch
    assert split_budget(5, []) == []
    with pytest.raises(ValueError):
        split_budget(-1, [1])


def test_over_budget_items_get_knn_proposals_that_go_to_review(
    index: GoldIndex, store: LabelStore
) -> None:
    from labeling.routing import ProposalView, Reason, RoutingConfig, review_reasons

    sure = "user: Book a hotel in Lisbon for three nights near the old town."
    index.upsert([IndexedExample(f"g{i}", sure, (TRAVEL,), ()) for i in range(3)])
    items = [
        ProposalInput("c-1", "user: which trail running shoes for muddy winter hills?"),
        ProposalInput("c-2", sure),  # kNN is sure: no LLM, no budget used
        ProposalInput("c-3", "user: quick pasta recipe with tomatoes and basil tonight"),
        ProposalInput("c-4", "user: best budget laptop for photo editing this year"),
    ]
    _add_conversations(store, [i.conversation_id for i in items])
    chat = FakeListChatModel(responses=[answer([], ["Sports"]), answer([], ["Food & Drink"])])
    proposer = _proposer(index, chat, store, cascade=True)
    budget = LLMBudget(1)
    stats = ProposeStats()
    first = proposer.propose(items[:2], stats=stats, budget=budget)
    rest = proposer.propose(items[2:], stats=stats, budget=budget)  # the same run's budget
    props = {p.conversation_id: p for p in first + rest}
    assert {cid: p.source for cid, p in props.items()} == {
        "c-1": "llm", "c-2": "knn", "c-3": "knn_over_budget", "c-4": "knn_over_budget",
    }  # fmt: skip
    assert set(PROPOSAL_SOURCES) >= {p.source for p in props.values()}
    assert [props[c].llm_called for c in ("c-1", "c-2", "c-3", "c-4")] == [
        True,
        False,
        False,
        False,
    ]
    assert budget.used == 1
    assert stats.llm_called == 1 and stats.llm_calls == 1 and stats.cache_hits == 0
    assert stats.as_dict()["by_source"] == {"llm": 1, "knn": 1, "knn_over_budget": 2}
    # the LLM was needed for c-3 / c-4: they are never auto-accepted
    cfg = RoutingConfig()
    for cid in ("c-3", "c-4"):
        p = props[cid]
        assert p.sources["cascade"] not in ("confident", "skipped_confident")
        assert p.uncertainty == 1.0
        assert Reason.HIGH_UNCERTAINTY in review_reasons(ProposalView.from_row(p), cfg)
    assert props["c-2"].uncertainty < 1.0
    # the source is stored with the proposal
    write_proposals(store, list(props.values()), "run-b")
    with store.session() as s:
        stored = {r.conversation_id: r.detail["source"] for r in s.query(ProposalRow)}
    assert stored == {cid: p.source for cid, p in props.items()}


def test_no_budget_means_every_item_that_needs_it_gets_the_llm(
    index: GoldIndex, store: LabelStore
) -> None:
    items = [
        ProposalInput(f"c-{i}", f"user: plan a {w} trip") for i, w in enumerate(("ski", "beach"))
    ]
    _add_conversations(store, [i.conversation_id for i in items])
    chat = FakeListChatModel(responses=[answer([], ["Travel"]), answer([], ["Travel"])])
    stats = ProposeStats()
    props = _proposer(index, chat, store, cascade=True).propose(items, stats=stats)
    assert [p.source for p in props] == ["llm", "llm"]
    assert stats.by_source == {"llm": 2}
    zero = ProposeStats()
    [p] = _proposer(index, chat, store, cascade=True).propose(
        [ProposalInput("c-9", "user: plan a city trip")], stats=zero, budget=LLMBudget(0)
    )
    assert p.source == "knn_over_budget" and not p.llm_called and zero.llm_calls == 0
