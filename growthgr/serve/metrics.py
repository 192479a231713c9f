"""Prometheus metrics of the service, on one registry per app, exposed at `/metrics` as Prometheus text.

HTTP requests (count by handler, method and status class; size; latency by handler and method) come
from `prometheus-fastapi-instrumentator`:

    http_requests_total{handler, method, status}         status: 2xx, 4xx, 5xx, ...
    http_request_duration_seconds{handler, method}       histogram (buckets `LATENCY_BUCKETS`)
    http_request_duration_highr_seconds                  histogram, all handlers
    http_request_size_bytes{handler}, http_response_size_bytes{handler}

The service's own figures, which no instrumentator metric carries (`ServiceMetrics`):

    growthgr_serve_release_info{release_id}              the release serving now
    growthgr_serve_cache_hits_total, growthgr_serve_cache_misses_total, growthgr_serve_cache_errors_total
    growthgr_serve_batch_size                            histogram: queries per beam search (_count = batches)
    growthgr_serve_reloads_total, growthgr_serve_reload_failures_total

plus the process collector (`process_start_time_seconds`, CPU, memory). Hit rate, mean batch and latency
quantiles are queries over these (PromQL); `summary` computes the first two from one scrape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fastapi_instrumentator import Instrumentator

RETRIEVE = "/retrieve"                 # the handler label of GET and POST /retrieve
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's own metrics (module docstring) on `registry`."""

    def __init__(self, registry: CollectorRegistry):
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"growthgr_serve_{name}", doc, registry=registry)

        self.release = Info("growthgr_serve_release", "The release serving now.", registry=registry)
        self.cache_hits = counter("cache_hits", "Answers found in the cache.")
        self.cache_misses = counter("cache_misses", "Answers not in the cache (a failed lookup is a miss).")
        self.cache_errors = counter("cache_errors", "Cache get or set calls that failed.")
        self.batch_size = Histogram("growthgr_serve_batch_size", "Queries answered by one beam search.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.reloads = counter("reloads", "Hot reloads to the release CURRENT moved to.")
        self.reload_failures = counter("reload_failures", "Releases CURRENT moved to that could not be loaded.")
        self.shed = counter("shed", "Requests answered 503 (queue full or deadline passed) instead of waiting.")

    def serving(self, release_id: str) -> None:
        self.release.info({"release_id": release_id})


def instrument(app: FastAPI) -> ServiceMetrics:
    """Instrument `app`'s requests on a registry of its own (several apps may live in one process),
    expose that registry at `/metrics` (in the OpenAPI docs), and return the service's metrics on it.

    `/metrics` reads this registry whatever the environment says: the service is one process, and
    the `PROMETHEUS_MULTIPROC_DIR` that importing Feast sets in every process (`feast.metrics`)
    would make the instrumentator's own endpoint scrape Feast's multiprocess directory instead."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    Instrumentator(excluded_handlers=["^/metrics$"], registry=registry).instrument(
        app, latency_lowr_buckets=LATENCY_BUCKETS)

    @app.get("/metrics", include_in_schema=True, response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus text exposition of the service's metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return ServiceMetrics(registry)


def summary(text: str) -> dict[str, Any]:
    """The figures of one `/metrics` scrape (Prometheus text) as a dict: `/retrieve` requests and their
    4xx and 5xx, the service's counters (suffix `_total` dropped), batches and batched requests, the
    serving release, cache hit rate and mean batch (None before any lookup or batch)."""
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name: str, **labels: str) -> int:
        return int(sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items()))

    out: dict[str, Any] = {"release_id": next((s.labels["release_id"] for s in samples
                                               if s.name == "growthgr_serve_release_info"
                                               and "release_id" in s.labels), None),
                           "requests": total("http_requests_total", handler=RETRIEVE),
                           "errors_4xx": total("http_requests_total", handler=RETRIEVE, status="4xx"),
                           "errors_5xx": total("http_requests_total", handler=RETRIEVE, status="5xx"),
                           "batches": total("growthgr_serve_batch_size_count"),
                           "batched_requests": total("growthgr_serve_batch_size_sum")}
    for name in ("cache_hits", "cache_misses", "cache_errors", "reloads", "reload_failures", "shed"):
        out[name] = total(f"growthgr_serve_{name}_total")
    lookups = out["cache_hits"] + out["cache_misses"]
    out["cache_hit_rate"] = round(out["cache_hits"] / lookups, 4) if lookups else None
    out["mean_batch"] = round(out["batched_requests"] / out["batches"], 2) if out["batches"] else None
    return out
