"""The retrieval service over the current release: user + query -> top-K new items with scores and SIDs.

    retriever = Retriever.load(settings, "current")            # one release, loaded once
    retriever.retrieve([Query(user_id=7, query="red shoes", k=20)])
    app = create_app(settings)                                 # FastAPI; `growthgr serve` runs it in uvicorn

A `Retriever` (`retriever.py`) is built from one release (`foundation.releases`): its MultiGR checkpoint
(`multigr.safetensors` + `multigr_config.json`, the format of `models.checkpoint`),
the SID trie of its new-item pool (`sid_trie.npz`) and the pool's SIDs (`item_sids.parquet`). A
request's prompt is the platform's (`models.multigr.platform.request_prompt`: hashed user id and
intent category, the SIDs of the user's history, the query words); MultiGR's trie-constrained beam
search (`models.multigr.beam.beam_search`) decodes pool SIDs, `SidItems.expand` turns them into
items. When the release also holds the dense retriever (`dense.safetensors` + `dense_config.json` +
`dense_index.faiss`, `models.dense`), the items sharing a SID are ordered by DR score and the first
max(`two_stage_top_n`, `serve.top_k_max`) items are re-ranked by DR (GrowthGR-twoStage,
`models.dense.rerank.two_stage`; item vectors from the release's index, query vectors from DR's
query tower over the same user context);
without it, items come in beam order (items sharing a SID by item id). `/healthz` says which.

User context (`context.py`): read from the lake, not from Feast. Feast's online store offers
`user_features.recent_item_ids` (the last distinct *clicked* items) and query features keyed by
`query_id`, but MultiGR learnt from `gr_samples.history_item_ids` (the items clicked *or ordered*)
and the request's intent category, so the service rebuilds exactly that: at load it reads the
`samples/gr_samples` of the newest `serve.history_days` days up to the release's ds, newest first,
and keeps per user the history of their latest request followed by that request's clicks and
purchases (distinct, most recent last), and per query text its most frequent intent category. The
users it serves are the registered ones (`raw/users` up to the ds): a registered user without a
request in those days gets an empty history (cold start); any other user id is refused (404). A
query text never seen gets the prompt's unknown-intent feature (intent category -1). History SIDs
come from the `curated/item_sids` snapshot as of the release's ds. The context is rebuilt with
every release (hot reload), so it never mixes two releases.

Service (`app.py`, `create_app`): the release is loaded in the lifespan start-up; a background task polls
`CURRENT` every `serve.reload_poll_s` and, when it moved, builds the new `Retriever` completely
(in a worker thread) before swapping the reference, so in-flight requests finish on the one they
started with; a release that fails to load is logged, counted and skipped (the old one keeps
serving) until `CURRENT` moves again. Concurrent requests are batched into one beam search
(`Batcher`). Answers are cached by (release, user, query, k) in Redis (`serve.cache = "redis"`,
`redis.asyncio`) or an in-process `cachetools.TTLCache` (`cache.py`); a cache failure counts as a miss.
Malformed requests get a 4xx with a message (`RequestError`): unknown user 404; empty or oversized
query, k out of range 422. `/metrics` is Prometheus text (`metrics.py`): request counts and latencies
per handler from `prometheus-fastapi-instrumentator`, plus the service's own counters (cache, batches,
reloads, the serving release).
"""

from growthgr.serve.app import Batcher, ServiceState, create_app, retrieve_body
from growthgr.serve.cache import Cache, MemoryCache, RedisCache, cache_key, open_cache
from growthgr.serve.context import (
    CONTEXT_COLUMNS,
    ContextRow,
    Query,
    RequestError,
    UserContext,
    check_request,
    latest_history,
    normalise_query,
    read_user_context,
)
from growthgr.serve.metrics import ServiceMetrics, instrument, summary
from growthgr.serve.retriever import (
    DENSE_FILES,
    MULTIGR_FILES,
    POOL_FILES,
    DenseStage,
    Retriever,
    load_dense,
    load_warm,
    set_threads,
)

__all__ = [
    "CONTEXT_COLUMNS", "DENSE_FILES", "MULTIGR_FILES", "POOL_FILES", "Batcher", "Cache", "ContextRow", "DenseStage",
    "MemoryCache", "Query", "RedisCache", "RequestError", "Retriever", "retrieve_body", "ServiceMetrics",
    "ServiceState", "UserContext", "cache_key", "check_request", "create_app", "instrument",
    "latest_history", "load_dense", "load_warm", "normalise_query", "open_cache", "read_user_context",
    "set_threads", "summary",
]
