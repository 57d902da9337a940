"""Prometheus metrics of the filter service (``GET /metrics``, text exposition format 0.0.4).

One :class:`FilterMetrics` per app, on its own registry (never the process-global one, so two
apps in one process -- tests -- do not collide):

* ``labelloop_filter_request_seconds`` (histogram, by ``status``): time of ``POST /v1/decisions``
  from the body read to the answer, queueing included;
* ``labelloop_filter_batch_records`` (histogram): records per engine call of the micro-batcher
  (how well it fills its batches under load) and ``labelloop_filter_batch_requests`` (requests
  coalesced per call);
* ``labelloop_filter_queue_records`` / ``labelloop_filter_queue_requests`` (gauges): records and
  requests waiting for the engine, sampled at scrape time;
* ``labelloop_filter_rejected_total`` (counter, by ``reason``): requests answered 429
  (``queue_full``);
* ``labelloop_filter_decisions_total`` (counter, by ``reason``: ``eligible`` or the exclusion
  reason) -- aggregate counts only, never a conversation id or a sensitive category;
* ``labelloop_filter_model_info`` (gauge = 1, labels ``name``, ``version``, ``policy_version``):
  the serving model (no series while none is loaded); ``labelloop_filter_model_loaded`` (0/1);
* ``labelloop_filter_embed_cache_hits_total`` / ``..._misses_total`` / ``..._entries``: the
  serving model's segment-embedding LRU (absent when it has none).

Each worker process has its own metrics: scrape every worker (or run one worker, the default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _LiveCollector(Collector):
    """Gauges read at scrape time from the service's state (queue, model, embedding cache)."""

    def __init__(
        self,
        queue: Callable[[], tuple[int, int]],
        model: Callable[[], dict[str, str | None] | None],
        cache: Callable[[], dict[str, int] | None],
    ) -> None:
        self.queue, self.model, self.cache = queue, model, cache

    def collect(self) -> Iterator[Metric]:
        records, requests = self.queue()
        yield GaugeMetricFamily(
            "labelloop_filter_queue_records", "records waiting for the engine", value=records
        )
        yield GaugeMetricFamily(
            "labelloop_filter_queue_requests", "requests waiting for the engine", value=requests
        )
        info = self.model()
        loaded = GaugeMetricFamily(
            "labelloop_filter_model_loaded", "1 while a model serves, 0 while failing closed"
        )
        loaded.add_metric([], 1.0 if info is not None else 0.0)
        yield loaded
        fam = GaugeMetricFamily(
            "labelloop_filter_model_info",
            "the serving model (always 1)",
            labels=["name", "version", "policy_version"],
        )
        if info is not None:
            fam.add_metric(
                [
                    info.get("name") or "",
                    info.get("version") or "",
                    info.get("policy_version") or "",
                ],
                1.0,
            )
        yield fam
        stats = self.cache()
        if stats is not None:
            yield CounterMetricFamily(
                "labelloop_filter_embed_cache_hits",
                "segment embeddings served from the LRU cache",
                value=stats["hits"],
            )
            yield CounterMetricFamily(
                "labelloop_filter_embed_cache_misses",
                "segment embeddings computed by the encoder",
                value=stats["misses"],
            )
            yield GaugeMetricFamily(
                "labelloop_filter_embed_cache_entries",
                "vectors held by the LRU cache",
                value=stats["entries"],
            )


class FilterMetrics:
    """The service's metrics; ``render()`` is the ``/metrics`` body."""

    def __init__(
        self,
        *,
        queue: Callable[[], tuple[int, int]] = lambda: (0, 0),
        model: Callable[[], dict[str, str | None] | None] = lambda: None,
        cache: Callable[[], dict[str, int] | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "labelloop_filter_request_seconds",
            "POST /v1/decisions latency (queueing included)",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_records = Histogram(
            "labelloop_filter_batch_records",
            "records per engine call (micro-batch size)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "labelloop_filter_batch_requests",
            "requests coalesced per engine call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "labelloop_filter_decisions",
            "decisions answered, by outcome (eligible or the exclusion reason)",
            ["reason"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "labelloop_filter_rejected",
            "requests refused with 429 (back-pressure)",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(queue, model, cache))

    def observe_batch(self, records: int, requests: int) -> None:
        self.batch_records.observe(records)
        self.batch_requests.observe(requests)

    def count_decisions(self, reasons: Iterable[str | None]) -> None:
        counts: dict[str, int] = {}
        for r in reasons:
            key = r or "eligible"
            counts[key] = counts.get(key, 0) + 1
        for k, n in counts.items():
            self.decisions.labels(reason=k).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def model_labels(loaded: Any) -> dict[str, str | None] | None:
    """The ``model_info`` labels of a :class:`~targeting.holder.LoadedModel` (None: no model)."""
    if loaded is None:
        return None
    return {
        "name": loaded.name,
        "version": loaded.version,
        "policy_version": loaded.policy_version,
    }


def embed_cache_stats(loaded: Any) -> dict[str, int] | None:
    """The serving model's embedding-cache counters, if it has such a cache."""
    if loaded is None:
        return None
    inner = getattr(loaded.model, "python_model", loaded.model)
    stats = getattr(inner, "embed_cache_stats", None)
    if not callable(stats):
        return None
    out = stats()
    return out if isinstance(out, dict) else None
