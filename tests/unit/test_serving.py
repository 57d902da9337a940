"""Serving under load, without servers: back-pressure (429 + Retry-After), the Prometheus
metrics (format and content) and the segment-embedding LRU cache. No timing assertions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from labeling.embedding_cache import LRUEmbedder
from labelloop.runtime import service_config
from labelloop.settings import Settings
from targeting.engine import FilterEngine
from targeting.metrics import FilterMetrics
from targeting.model import TargetingFilterModel
from targeting.service import MicroBatcher, QueueFullError, create_app
from tests.conftest import make_record
from tests.unit.test_filter_service import (
    ADMIN,
    API,
    POLICY,
    holder_with,
    loaded_of,
    reference_loaded,
)


class CountingEmbedder:
    """Deterministic vectors; records every text it was asked to embed."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []
        self.intra_op_num_threads = 2

    def use_threads(self, n: int) -> None:
        self.intra_op_num_threads = n

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % self.dim] = 1.0
            out[i, (sum(map(ord, t)) // 7) % self.dim] += 0.5
        return out

    @property
    def embedded(self) -> list[str]:
        return [t for c in self.calls for t in c]


# ---------------------------------------------------------------- embedding cache


def test_lru_embeds_each_text_once_and_returns_the_same_vectors() -> None:
    inner = CountingEmbedder()
    reference = CountingEmbedder()
    lru = LRUEmbedder(inner, max_entries=100)
    texts = ["user: hi", "assistant: How can I help?", "user: hi", "user: boots"]
    first = lru.embed(texts)
    # repeated within one call: embedded once; vectors in input order
    assert inner.embedded == ["user: hi", "assistant: How can I help?", "user: boots"]
    np.testing.assert_array_equal(first, reference.embed(texts))
    second = lru.embed(["assistant: How can I help?", "user: tents"])
    assert inner.calls[-1] == ["user: tents"]  # the template turn came from the cache
    np.testing.assert_array_equal(second[0], first[1])
    assert (lru.hits, lru.misses, len(lru)) == (2, 4, 4)


def test_lru_evicts_the_least_recently_used() -> None:
    inner = CountingEmbedder()
    lru = LRUEmbedder(inner, max_entries=2)
    lru.embed(["a"])
    lru.embed(["b"])
    lru.embed(["a"])  # a is now the most recent
    lru.embed(["c"])  # evicts b
    assert len(lru) == 2
    inner.calls.clear()
    lru.embed(["a", "b", "c"])
    assert inner.embedded == ["b"]


def test_lru_of_size_zero_caches_nothing_and_empty_input_is_fine() -> None:
    inner = CountingEmbedder()
    lru = LRUEmbedder(inner, max_entries=0)
    lru.embed(["x"])
    lru.embed(["x"])
    assert inner.embedded == ["x", "x"] and len(lru) == 0
    assert lru.embed([]).shape[0] == 0
    with pytest.raises(TypeError):
        lru.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LRUEmbedder(inner, max_entries=-1)


def test_lru_stored_vectors_do_not_change_with_the_callers_array() -> None:
    lru = LRUEmbedder(CountingEmbedder(), max_entries=10)
    out = lru.embed(["q"])
    expected = out.copy()
    out[:] = 99.0
    np.testing.assert_array_equal(lru.embed(["q"]), expected)


def test_configure_serving_sets_threads_and_wraps_the_encoder_once() -> None:
    m = TargetingFilterModel()
    enc = CountingEmbedder()
    m.embedder = enc
    assert m.embed_cache_stats() is None
    m.configure_serving(onnx_threads=1, embed_cache=10)
    assert isinstance(m.embedder, LRUEmbedder) and m.embedder.inner is enc
    assert enc.intra_op_num_threads == 1
    m.configure_serving(onnx_threads=None, embed_cache=5)  # a reconfigure does not stack caches
    assert isinstance(m.embedder, LRUEmbedder) and m.embedder.inner is enc
    assert m.embedder.max_entries == 5
    m.embedder.embed(["a", "a"])
    assert m.embed_cache_stats() == {"hits": 1, "misses": 1, "entries": 1}
    m.configure_serving(embed_cache=0)
    assert m.embedder is enc


# ---------------------------------------------------------------- back-pressure


class BlockingModel:
    """The reference model, but each predict waits until released."""

    def __init__(self) -> None:
        self.inner = reference_loaded().model
        self.release = threading.Event()
        self.started = 0

    def predict(self, data: Any) -> Any:
        self.started += 1
        assert self.release.wait(30), "test never released the model"
        return self.inner.predict(data)


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "_env_file": None,
        "env": "test",
        "state_dir": tmp_path / "state",
        "filter_api_key": SecretStr(API["X-API-Key"]),
        "filter_admin_key": SecretStr(ADMIN["X-API-Key"]),
        "filter_poll_s": 0,
    }
    base.update(kw)
    return Settings(**base)


async def _until(cond: Any, what: str) -> None:
    for _ in range(3000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_full_queue_answers_429_with_retry_after_and_the_queued_requests_still_finish(
    tmp_path: Path,
) -> None:
    model = BlockingModel()
    s = _settings(tmp_path, filter_max_batch=2, filter_max_queue=2)
    app = create_app(service_config(s), holder=holder_with(loaded_of(model)), start_holder=False)
    batcher: MicroBatcher = app.state.batcher

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:

            def post(n: int, tag: str) -> Any:
                recs = [make_record(conversation_id=f"{tag}-{i}") for i in range(n)]
                return c.post("/v1/decisions", json={"records": recs}, headers=API)

            a = asyncio.create_task(post(1, "a"))
            await _until(lambda: model.started == 1, "first batch reached the model")
            b = asyncio.create_task(post(2, "b"))
            await _until(lambda: batcher.queued_records == 2, "second request queued")
            refused = await post(1, "c")  # 2 waiting + 1 > filter_max_queue
            model.release.set()
            done = [await a, await b]
            text = (await c.get("/metrics")).text
            return done, refused, text

    done, refused, text = asyncio.run(scenario())
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert body["fail_closed"] is True and body["eligible"] is False
    assert "filter_max_queue" in body["detail"]
    assert [r.status_code for r in done] == [200, 200]
    assert [len(r.json()["decisions"]) for r in done] == [1, 2]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    rejected = {s.labels["reason"]: s.value for s in fams["labelloop_filter_rejected"].samples
                if s.name.endswith("_total")}  # fmt: skip
    assert rejected == {"queue_full": 1.0}
    counts = {s.labels["status"]: s.value for s in fams["labelloop_filter_request_seconds"].samples
              if s.name.endswith("_count")}  # fmt: skip
    assert counts == {"200": 2.0, "429": 1.0}


def test_retry_after_follows_the_measured_rate() -> None:
    engine = FilterEngine(holder_with(None), POLICY, None)
    b = MicroBatcher(engine, max_records=10, max_queue=100)
    assert b.retry_after() == 1  # nothing measured yet
    b.rate, b.queued_records = 20.0, 95
    assert b.retry_after(5) == 5  # (95 + 5) / 20 records/s
    b.rate = 0.5
    assert b.retry_after() == 60  # capped
    # the queue can always hold at least one full batch
    assert MicroBatcher(engine, max_records=10, max_queue=3).max_queue == 10


def test_submit_refuses_past_the_queue_limit_without_queueing() -> None:
    engine = FilterEngine(holder_with(None), POLICY, None)
    b = MicroBatcher(engine, max_records=4, max_queue=4)
    b.queued_records = 3

    async def go() -> None:
        await b.submit([make_record(), make_record()], "r")

    with pytest.raises(QueueFullError) as err:
        asyncio.run(go())
    assert err.value.limit == 4 and err.value.queued == 3
    assert b.queued_requests == 0 and b.queued_records == 3


# ---------------------------------------------------------------- metrics


def test_metrics_endpoint_is_prometheus_text_with_every_family(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    s = _settings(tmp_path, filter_max_batch=8)
    app = create_app(
        service_config(s), holder=holder_with(reference_loaded("7")), start_holder=False
    )
    sens = make_record(
        conversation_id="c-sens",
        turns=[{"role": "user", "text": "Which hiking boots are good after my knee surgery?"}],
    )
    with TestClient(app) as c:
        r = c.post(
            "/v1/decisions",
            json={"records": [make_record(), sens, make_record(country="FR"), {"x": 1}]},
            headers=API,
        )
        assert r.status_code == 200
        m = c.get("/metrics")  # no key needed
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(m.text)}
    for name in (
        "labelloop_filter_request_seconds",
        "labelloop_filter_batch_records",
        "labelloop_filter_batch_requests",
        "labelloop_filter_queue_records",
        "labelloop_filter_queue_requests",
        "labelloop_filter_decisions",
        "labelloop_filter_rejected",
        "labelloop_filter_model_info",
        "labelloop_filter_model_loaded",
    ):
        assert name in fams, name
    decisions = {s.labels["reason"]: s.value for s in fams["labelloop_filter_decisions"].samples
                 if s.name.endswith("_total")}  # fmt: skip
    assert decisions == {
        "eligible": 1.0,
        "sensitive_topic": 1.0,
        "region": 1.0,
        "invalid_record": 1.0,
    }
    batch = {s.name: s.value for s in fams["labelloop_filter_batch_records"].samples}
    assert batch["labelloop_filter_batch_records_count"] == 1.0
    assert batch["labelloop_filter_batch_records_sum"] == 4.0
    (info,) = fams["labelloop_filter_model_info"].samples
    assert info.labels["version"] == "7" and info.value == 1.0
    assert info.labels["policy_version"] == POLICY.version
    (loaded,) = fams["labelloop_filter_model_loaded"].samples
    assert loaded.value == 1.0
    (q,) = fams["labelloop_filter_queue_records"].samples
    assert q.value == 0.0
    # no conversation id or sensitive category is ever a label
    assert "c-sens" not in m.text and "health" not in m.text


def test_metrics_without_a_model_and_with_an_embedding_cache() -> None:
    state = {"loaded": None}
    m = FilterMetrics(
        queue=lambda: (5, 2),
        model=lambda: state["loaded"],
        cache=lambda: {"hits": 3, "misses": 4, "entries": 4},
    )
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert fams["labelloop_filter_model_loaded"].samples[0].value == 0.0
    assert fams["labelloop_filter_model_info"].samples == []
    assert fams["labelloop_filter_queue_records"].samples[0].value == 5.0
    assert fams["labelloop_filter_queue_requests"].samples[0].value == 2.0
    hits = list(fams["labelloop_filter_embed_cache_hits"].samples)
    assert hits[0].value == 3.0
    assert fams["labelloop_filter_embed_cache_entries"].samples[0].value == 4.0
    m.observe_batch(3, 2)
    m.count_decisions(["region", None, None])
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    dec = {s.labels["reason"]: s.value for s in fams["labelloop_filter_decisions"].samples
           if s.name.endswith("_total")}  # fmt: skip
    assert dec == {"region": 1.0, "eligible": 2.0}


def test_serving_threads_go_where_the_encoder_spends_them(tmp_path: Path) -> None:
    """A batching encoder gets onnxruntime threads per call; a one-text-per-call encoder (int8
    products) gets that many concurrent calls, each on one thread."""
    from labeling.embeddings import MiniLMEmbedder

    files = (tmp_path / "m.onnx", tmp_path / "t.json")
    batching = MiniLMEmbedder(*files, intra_op_num_threads=2)
    per_text = MiniLMEmbedder(*files, batch_size=1, workers=2, intra_op_num_threads=1)
    concurrent = MiniLMEmbedder(*files, batch_size=16, workers=2, intra_op_num_threads=1)
    from labeling.e5_onnx import E5Embedder

    e5 = E5Embedder(*files, intra_op_num_threads=2)
    for enc in (batching, per_text, concurrent, e5):
        m = TargetingFilterModel()
        m.embedder = enc
        m.configure_serving(onnx_threads=3)
    assert e5.intra_op_num_threads == 3
    assert (batching.intra_op_num_threads, batching.workers) == (3, 1)
    assert (per_text.intra_op_num_threads, per_text.workers) == (1, 3)
    assert (concurrent.intra_op_num_threads, concurrent.workers) == (1, 3)
    concurrent.use_threads(1)  # one thread, and it stays a concurrent-calls embedder
    concurrent.use_threads(2)
    assert (concurrent.intra_op_num_threads, concurrent.workers) == (1, 2)
    with pytest.raises(ValueError, match="threads"):
        per_text.use_threads(0)
