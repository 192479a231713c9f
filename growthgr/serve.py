"""The retrieval service over the current release: user + query -> top-K new items with scores and SIDs.

    retriever = Retriever.load(settings, "current")            # one release, loaded once
    retriever.retrieve([Query(user_id=7, query="red shoes", k=20)])
    app = create_app(settings)                                 # FastAPI; `growthgr serve` runs it in uvicorn

A `Retriever` is built from one release (`foundation.releases`): its MultiGR checkpoint
(`multigr.safetensors` + `multigr_config.json`, the format of `models.multigr.train.save_checkpoint`),
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

User context: read from the lake, not from Feast. Feast's online store offers
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

Service (`create_app`): the release is loaded in the lifespan start-up; a background task polls
`CURRENT` every `serve.reload_poll_s` and, when it moved, builds the new `Retriever` completely
(in a worker thread) before swapping the reference, so in-flight requests finish on the one they
started with; a release that fails to load is logged, counted and skipped (the old one keeps
serving) until `CURRENT` moves again. Concurrent requests are batched into one beam search
(`Batcher`). Answers are cached by (release, user, query, k) in Redis (`serve.cache = "redis"`,
`redis.asyncio`) or an in-process LRU; a cache failure counts as a miss. Malformed requests get a
4xx with a message (`RequestError`): unknown user 404; empty or oversized query, k out of range 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import faiss
import numpy as np
import pandas as pd
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from foundation.catalog import GR_SAMPLES, ITEM_SIDS, RAW
from foundation.config import Settings
from foundation.lake import Lake
from foundation.releases import Release, ReleaseError, ReleaseStore, release_ds
from foundation.sections.serve import ServeConfig
from models.dense import train as dense_train
from models.dense.data import ItemTable
from models.dense.index import index_from_bytes, index_vectors
from models.dense.model import DenseRetriever
from models.dense.platform import item_table
from models.dense.rerank import ItemVectors, dr_reranker, two_stage
from models.multigr import train as multigr_train
from models.multigr.beam import SidItems, beam_search, trie_table
from models.multigr.data import left_pad
from models.multigr.model import MultiGR
from models.multigr.platform import SidLookup, code_columns, request_prompt
from models.tokenizer.trie import SidTrie

log = logging.getLogger(__name__)

MULTIGR_FILES = ("multigr.safetensors", "multigr_config.json")
DENSE_FILES = ("dense.safetensors", "dense_config.json", "dense_index.faiss")
POOL_FILES = ("sid_trie.npz", "item_sids.parquet")
CONTEXT_COLUMNS = ["user_id", "ts", "query_text", "intent_category_id", "history_item_ids", "click_ids",
                   "purchase_ids"]


class RequestError(ValueError):
    """A request the service refuses: `status` is its HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Query(NamedTuple):
    user_id: int
    query: str
    k: int


def check_request(cfg: ServeConfig, user_id: int, query: str | None, k: int | None) -> Query:
    """The request as a `Query` (query stripped, k defaulted), or a 422 `RequestError` saying what is wrong."""
    text = (query or "").strip()
    if not text:
        raise RequestError(422, "query is empty: pass a non-empty `query`")
    if len(text) > cfg.max_query_chars:
        raise RequestError(422, f"query is {len(text)} characters long, at most {cfg.max_query_chars} are accepted")
    k = cfg.top_k_default if k is None else k
    if not 1 <= k <= cfg.top_k_max:
        raise RequestError(422, f"k must be between 1 and {cfg.top_k_max}, got {k}")
    return Query(int(user_id), text, int(k))


def normalise_query(text: str) -> str:
    return " ".join(str(text).lower().split())


# -- user context ----------------------------------------------------------------------------------
class ContextRow(NamedTuple):
    """One request as the platform's prompt builders read it (`request_prompt`, DR's `query_vectors`)."""

    user_id: int
    query_text: str
    intent_category_id: int
    history_item_ids: list[int]


@dataclass(frozen=True)
class UserContext:
    """Registered users, their histories and the intent category of known query texts (module docstring)."""

    users: frozenset[int]
    histories: dict[int, list[int]]
    intents: dict[str, int]
    days: list[str]

    def row(self, q: Query) -> ContextRow:
        """The context of one request; 404 for an unregistered user."""
        if q.user_id not in self.users:
            raise RequestError(404, f"unknown user {q.user_id}: not a registered user of the platform "
                                    f"(raw/users up to {self.days[-1] if self.days else 'the release'})")
        intent = self.intents.get(normalise_query(q.query), -1)
        return ContextRow(q.user_id, q.query, intent, self.histories.get(q.user_id, []))


def latest_history(history: Sequence[int], clicks: Sequence[int], purchases: Sequence[int]) -> list[int]:
    """A request's history then its clicks and purchases: distinct items, most recent last."""
    seq = [int(x) for x in (*history, *clicks, *purchases)]
    return list(dict.fromkeys(reversed(seq)))[::-1]


def read_user_context(lake: Lake, ds: str, days: int) -> UserContext:
    """The user context as of `ds` (module docstring): `raw/users` up to ds, the newest `days`
    `samples/gr_samples` partitions up to ds, each user's latest request."""
    user_parts = lake.list_partitions(*RAW["users"], end=ds)
    users = frozenset(
        int(u) for d in user_parts for u in lake.read_partition(*RAW["users"], d, ["user_id"]).column(0).to_pylist()
    )
    sample_days = lake.list_partitions(*GR_SAMPLES, end=ds)[-days:]
    histories: dict[int, list[int]] = {}
    counts: dict[tuple[str, int], int] = {}
    for day in reversed(sample_days):
        frame = lake.read_partition(*GR_SAMPLES, day, CONTEXT_COLUMNS).to_pandas()
        for (text, intent), n in frame.groupby([frame["query_text"].map(normalise_query),
                                                "intent_category_id"]).size().items():
            counts[(text, int(intent))] = counts.get((text, int(intent)), 0) + int(n)
        latest = frame.sort_values(["user_id", "ts"], kind="stable").drop_duplicates("user_id", keep="last")
        for r in latest[~latest["user_id"].isin(list(histories))].itertuples(index=False):
            histories[int(r.user_id)] = latest_history(r.history_item_ids, r.click_ids, r.purchase_ids)
    intents: dict[str, int] = {}
    for (text, intent), _ in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        intents.setdefault(text, intent)
    return UserContext(users, histories, intents, sample_days)


# -- models of a release ---------------------------------------------------------------------------
def _checkpoint(load: Callable[[Path], Any], weights: bytes, config: bytes) -> Any:
    """A `save_checkpoint` pair (weights + config.json) from release bytes, through the model's loader;
    a `sha256` in the config must match the weights."""
    expected = json.loads(config).get("sha256")
    if expected and hashlib.sha256(weights).hexdigest() != expected:
        raise ReleaseError("checkpoint weights do not match the sha256 of their config")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.safetensors").write_bytes(weights)
        (Path(tmp) / "config.json").write_bytes(config)
        return load(Path(tmp))


@dataclass(frozen=True)
class DenseStage:
    """The release's dense retriever: query tower, item features (for histories), item vectors."""

    model: DenseRetriever
    table: ItemTable           # the catalog's features as of the release's ds (history items)
    vectors: ItemVectors       # item vectors of the release's FAISS index
    top_n: int                 # MultiGR items re-ranked per request (at least)

    def query_vectors(self, rows: Sequence[ContextRow]) -> np.ndarray:
        return dense_train.query_vectors(self.model, self.table, pd.DataFrame(rows, columns=ContextRow._fields))


def load_dense(store: ReleaseStore, release: Release, lake: Lake, ds: str) -> DenseStage | None:
    """The release's DR stage, or None when the release has no DR."""
    if not all(name in release.files for name in DENSE_FILES):
        return None
    weights, config, index = (store.read(release.release_id, name) for name in DENSE_FILES)
    model = _checkpoint(dense_train.load_checkpoint, weights, config)
    table, _, _ = item_table(lake, ds)
    return DenseStage(model, table, ItemVectors(*index_vectors(index_from_bytes(index))),
                      model.cfg.two_stage_top_n)


# -- the retriever of one release ------------------------------------------------------------------
@dataclass(frozen=True)
class Retriever:
    """Everything one release answers with, loaded once (see the module docstring)."""

    release_id: str
    ds: str
    model: MultiGR
    trie_next: torch.Tensor    # (num_nodes, K) transition table of the pool's SIDs
    pool: SidLookup            # pool item -> SID
    items: SidItems            # pool SID -> items
    history_sids: SidLookup    # the catalog snapshot's SIDs (history items)
    context: UserContext
    dense: DenseStage | None
    depth: int                 # items returned at most (serve.top_k_max)
    candidates: int            # SIDs decoded and first-stage items (>= depth; >= DR's top_n with DR)
    beam_widths: list[int]
    loaded_at: str

    @classmethod
    def load(cls, settings: Settings, release_id: str = "current") -> Retriever:
        """Build the retriever of a release (`current` or an id) from the release store and the lake."""
        store, lake = ReleaseStore.from_settings(settings), Lake.from_settings(settings)
        release = store.get(release_id)
        missing = [n for n in (*MULTIGR_FILES, *POOL_FILES) if n not in release.files]
        if missing:
            raise ReleaseError(f"release {release.release_id} cannot be served: it has no {missing}")
        ds = release_ds(release)
        if ds is None:
            raise ReleaseError(f"release {release.release_id} has no ds: cannot tell which lake data it serves")
        model = _checkpoint(multigr_train.load_checkpoint, *(store.read(release.release_id, n) for n in MULTIGR_FILES))
        trie = SidTrie.load(io.BytesIO(store.read(release.release_id, "sid_trie.npz")))
        cfg = model.cfg
        if (trie.codebook_size, trie.depth) != (cfg.codebook_size, cfg.sid_levels):
            raise ReleaseError(f"release {release.release_id}: SID trie (K={trie.codebook_size}, L={trie.depth}) does "
                               f"not fit its MultiGR (K={cfg.codebook_size}, L={cfg.sid_levels})")
        pool_sids = pd.read_parquet(io.BytesIO(store.read(release.release_id, "item_sids.parquet")))
        pool = SidLookup(pool_sids, code_columns(pool_sids)[: cfg.sid_levels])
        snapshot = lake.list_partitions(*ITEM_SIDS, end=ds)
        if not snapshot:
            raise ReleaseError(f"no {ITEM_SIDS.key(ds)} or earlier in the lake: history SIDs unknown")
        catalog = lake.read_partition(*ITEM_SIDS, snapshot[-1]).to_pandas()
        dense = load_dense(store, release, lake, ds)
        depth = settings.serve.top_k_max
        candidates = max(depth, dense.top_n if dense else 0)
        widths = list(cfg.beam_widths[:-1]) + [max(cfg.beam_widths[-1], candidates)]
        log.info("loaded release %s (ds=%s): %d pool items, DR %s", release.release_id, ds, len(pool.ids),
                 "present" if dense else "absent (beam order)")
        return cls(release.release_id, ds, model.eval(), trie_table(trie), pool, pool.index(cfg.codebook_size),
                   SidLookup(catalog, code_columns(catalog)[: cfg.sid_levels]),
                   read_user_context(lake, ds, settings.serve.history_days), dense, depth, candidates, widths,
                   datetime.now(UTC).isoformat(timespec="seconds"))

    def warm_up(self) -> Retriever:
        """Run one retrieval (a registered user, a fixed query) so that no request pays torch's
        first-call costs; returns self."""
        user = min(self.context.users, default=None)
        if user is not None:
            self.retrieve([Query(user, "warm up", 1)])
        return self

    def describe(self) -> dict[str, Any]:
        """What `/healthz` says about the serving release."""
        cfg = self.model.cfg
        dense = self.dense and {"params": self.dense.model.num_params(), "items_with_vectors": len(self.dense.vectors.ids),
                                "two_stage_top_n": self.dense.top_n}
        return {
            "release_id": self.release_id, "ds": self.ds, "loaded_at": self.loaded_at,
            "models": {"multigr": {"params": self.model.num_params(), "sid_levels": cfg.sid_levels,
                                   "codebook_size": cfg.codebook_size, "beam_widths": self.beam_widths},
                       "dense": dense},
            "reranker": "dense retriever (two-stage)" if self.dense else "none: beam order (no DR in this release)",
            "pool_items": int(len(self.pool.ids)), "registered_users": len(self.context.users),
            "users_with_history": len(self.context.histories), "context_days": self.context.days,
        }

    def retrieve(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """Per query, its top-k pool items (best first): item id, SID, score (DR score with DR, else
        the SID's beam log-probability) and beam score. Raises 404 `RequestError` for unknown users.

        With DR: the first `candidates` items (items sharing a SID by DR score) re-ranked by DR."""
        rows = [self.context.row(q) for q in queries]
        cfg = self.model.cfg
        prompts = [request_prompt(self.model.vocab, r, self.history_sids, cfg.max_history, cfg.max_query_words)
                   for r in rows]
        with torch.inference_mode():
            result = beam_search(self.model, left_pad(prompts), self.beam_widths, self.candidates, self.trie_next)
        if self.dense is None:
            ranked = self.items.expand(result, self.depth)
            return [self._answer(items, beam, beam, q.k) for items, beam, q in zip(*ranked, queries, strict=True)]
        qv = self.dense.query_vectors(rows)
        first = self.items.expand(result, self.candidates, dr_reranker(qv, self.dense.vectors))
        second = two_stage(first.items, qv, self.dense.vectors, self.depth)
        out = []
        for i, q in enumerate(queries):
            beam = dict(zip(first.items[i].tolist(), first.scores[i].tolist(), strict=True))
            out.append(self._answer(second.items[i], second.scores[i],
                                    np.array([beam.get(int(x), -np.inf) for x in second.items[i]]), q.k))
        return out

    def _answer(self, items: np.ndarray, scores: np.ndarray, beam: np.ndarray, k: int) -> list[dict[str, Any]]:
        keep = items >= 0
        items, scores, beam = items[keep][:k], scores[keep][:k], beam[keep][:k]
        sids = self.pool.sids(items)
        return [{"item_id": int(i), "sid": s.tolist(), "score": _finite(sc), "beam_score": _finite(b)}
                for i, s, sc, b in zip(items, sids, scores, beam, strict=True)]


def load_warm(settings: Settings, release_id: str) -> Retriever:
    """`Retriever.load` then `warm_up`: what the service starts with and swaps to."""
    return Retriever.load(settings, release_id).warm_up()


def _finite(x: float) -> float | None:
    """JSON-safe score: None for -inf (an item the DR has no vector for)."""
    return round(float(x), 6) if np.isfinite(x) else None


def set_threads(cfg: ServeConfig) -> None:
    """Torch and FAISS intra-op threads of this process (`serve.torch_threads`, `serve.faiss_threads`)."""
    torch.set_num_threads(cfg.torch_threads)
    faiss.omp_set_num_threads(cfg.faiss_threads)


# -- cache -----------------------------------------------------------------------------------------
class Cache(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with a time-to-live."""

    def __init__(self, size: int, ttl_s: float):
        self.size, self.ttl_s = size, ttl_s
        self.entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, key: str) -> str | None:
        hit = self.entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            self.entries.pop(key, None)
            return None
        self.entries.move_to_end(key)
        return hit[1]

    async def set(self, key: str, value: str) -> None:
        self.entries[key] = (time.monotonic() + self.ttl_s, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    async def close(self) -> None:
        self.entries.clear()


class RedisCache:
    """Redis (`redis.asyncio`), entries expiring after the TTL."""

    def __init__(self, url: str, ttl_s: float):
        import redis.asyncio as redis

        self.client = redis.from_url(url, decode_responses=True)
        self.ttl_ms = max(int(ttl_s * 1000), 1)

    async def get(self, key: str) -> str | None:
        return await self.client.get(key)

    async def set(self, key: str, value: str) -> None:
        await self.client.set(key, value, px=self.ttl_ms)

    async def close(self) -> None:
        await self.client.aclose()


def open_cache(cfg: ServeConfig) -> Cache:
    return RedisCache(cfg.redis_url, cfg.cache_ttl_s) if cfg.cache == "redis" else MemoryCache(cfg.cache_size,
                                                                                                cfg.cache_ttl_s)


def cache_key(release_id: str, q: Query) -> str:
    blob = json.dumps([release_id, q.user_id, q.query, q.k]).encode()
    return "growthgr:serve:" + hashlib.sha256(blob).hexdigest()


# -- metrics ---------------------------------------------------------------------------------------
class Metrics:
    """Counters and a sliding window of request latencies (`/metrics`)."""

    def __init__(self, window: int):
        self.started = time.monotonic()
        self.latencies: deque[float] = deque(maxlen=window)
        self.counts = {"requests": 0, "errors_4xx": 0, "errors_5xx": 0, "cache_hits": 0, "cache_misses": 0,
                       "cache_errors": 0, "batches": 0, "batched_requests": 0, "reloads": 0, "reload_failures": 0}

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def request(self, status: int, seconds: float) -> None:
        self.add("requests")
        if status >= 500:
            self.add("errors_5xx")
        elif status >= 400:
            self.add("errors_4xx")
        self.latencies.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        c = self.counts
        lookups = c["cache_hits"] + c["cache_misses"]
        lat = np.asarray(self.latencies) * 1000
        quantiles = {f"p{q}": round(float(np.percentile(lat, q)), 3) if len(lat) else None for q in (50, 95, 99)}
        return {**c, "uptime_s": round(time.monotonic() - self.started, 1),
                "cache_hit_rate": round(c["cache_hits"] / lookups, 4) if lookups else None,
                "mean_batch": round(c["batched_requests"] / c["batches"], 2) if c["batches"] else None,
                "latency_ms": {**quantiles, "window": len(lat)}}


# -- batching and hot reload -----------------------------------------------------------------------
class Batcher:
    """Runs queued queries in batches on one worker thread, each batch on the retriever serving then."""

    def __init__(self, current: Callable[[], Retriever], cfg: ServeConfig, metrics: Metrics):
        self.current, self.cfg, self.metrics = current, cfg, metrics
        self.queue: asyncio.Queue[tuple[Query, asyncio.Future]] = asyncio.Queue()

    async def submit(self, q: Query) -> tuple[str, list[dict[str, Any]]]:
        """(release id that answered, items)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((q, future))
        return await future

    async def _collect(self) -> list[tuple[Query, asyncio.Future]]:
        """The next batch: the first queued query, then whatever else is queued or arrives within
        `batch_wait_ms`, up to `max_batch`."""
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.cfg.batch_wait_ms / 1000
        while len(batch) < self.cfg.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return [(q, f) for q, f in batch if not f.done()]      # a cancelled request needs no answer

    async def run(self) -> None:
        while True:
            batch, retriever = await self._collect(), self.current()
            ok = []
            for q, future in batch:
                try:
                    retriever.context.row(q)
                    ok.append((q, future))
                except RequestError as err:
                    future.set_exception(err)
            if ok:
                await self._run_batch(retriever, ok)

    async def _run_batch(self, retriever: Retriever, batch: list[tuple[Query, asyncio.Future]]) -> None:
        self.metrics.add("batches")
        self.metrics.add("batched_requests", len(batch))
        try:
            answers = await asyncio.to_thread(retriever.retrieve, [q for q, _ in batch])
        except Exception as err:  # noqa: BLE001 -- each waiting request gets the error (a 500)
            answers = [err] * len(batch)
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result((retriever.release_id, answer))


class ServiceState:
    """The serving retriever (swapped by the reload task), cache, metrics and batcher of one app."""

    def __init__(self, settings: Settings, retriever: Retriever):
        self.settings, self.retriever = settings, retriever
        self.metrics = Metrics(settings.serve.latency_window)
        self.cache = open_cache(settings.serve)
        self.batcher = Batcher(lambda: self.retriever, settings.serve, self.metrics)
        self.failed_release: str | None = None

    async def reload_once(self, store: ReleaseStore) -> bool:
        """Swap to the release `CURRENT` names when it moved (built fully first); whether it swapped."""
        current = await asyncio.to_thread(store.current_id)
        if current is None or current in (self.retriever.release_id, self.failed_release):
            return False
        try:
            new = await asyncio.to_thread(load_warm, self.settings, current)
        except Exception:  # noqa: BLE001 -- a release that cannot be served must not stop the service
            log.exception("release %s could not be loaded; still serving %s", current, self.retriever.release_id)
            self.metrics.add("reload_failures")
            self.failed_release = current
            return False
        self.retriever, self.failed_release = new, None
        self.metrics.add("reloads")
        log.info("now serving release %s", new.release_id)
        return True

    async def watch(self) -> None:
        store = ReleaseStore.from_settings(self.settings)
        while True:
            await asyncio.sleep(self.settings.serve.reload_poll_s)
            try:
                await self.reload_once(store)
            except Exception:  # noqa: BLE001 -- e.g. the store unreachable for a moment: poll again
                log.exception("polling CURRENT failed")

    async def answer(self, q: Query) -> dict[str, Any]:
        """The answer of one checked query: from the cache when there, else from a batch."""
        release_id = self.retriever.release_id
        key = cache_key(release_id, q)
        cached = await self._cache_get(key)
        if cached is not None:
            return {**json.loads(cached), "cached": True}
        release_id, items = await self.batcher.submit(q)
        body = {"release_id": release_id, "user_id": q.user_id, "query": q.query, "k": q.k, "items": items}
        await self._cache_set(cache_key(release_id, q), json.dumps(body))
        return {**body, "cached": False}

    async def _cache_get(self, key: str) -> str | None:
        try:
            value = await self.cache.get(key)
        except Exception:  # noqa: BLE001 -- the cache is an optimisation: a failure is a miss
            log.warning("cache get failed", exc_info=True)
            self.metrics.add("cache_errors")
            value = None
        self.metrics.add("cache_misses" if value is None else "cache_hits")
        return value

    async def _cache_set(self, key: str, value: str) -> None:
        try:
            await self.cache.set(key, value)
        except Exception:  # noqa: BLE001
            log.warning("cache set failed", exc_info=True)
            self.metrics.add("cache_errors")


# -- the FastAPI application -----------------------------------------------------------------------
class RetrieveBody(BaseModel):
    """The JSON body of `POST /retrieve` (k: default `serve.top_k_default`)."""

    user_id: int
    query: str
    k: int | None = None


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app: `GET|POST /retrieve`, `/healthz`, `/metrics`, OpenAPI docs at `/docs`."""
    cfg = settings.serve

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        set_threads(cfg)
        state = ServiceState(settings, await asyncio.to_thread(load_warm, settings, "current"))
        app.state.service = state
        tasks = [asyncio.create_task(state.batcher.run()), asyncio.create_task(state.watch())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.cache.close()

    app = FastAPI(title="GrowthGR retrieval", lifespan=lifespan,
                  description="New items for a user and query from the current GrowthGR release.")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        if not request.url.path.startswith("/retrieve"):
            return await call_next(request)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            request.app.state.service.metrics.request(500, time.perf_counter() - started)
            raise
        request.app.state.service.metrics.request(response.status_code, time.perf_counter() - started)
        return response

    @app.get("/retrieve", summary="Top-k new items for a user and a query")
    async def retrieve_get(request: Request, user_id: int, query: str = "", k: int | None = None) -> dict:
        return await request.app.state.service.answer(check_request(cfg, user_id, query, k))

    @app.post("/retrieve", summary="Top-k new items for a user and a query (JSON body)")
    async def retrieve_post(request: Request, body: RetrieveBody) -> dict:
        return await request.app.state.service.answer(check_request(cfg, body.user_id, body.query, body.k))

    @app.get("/healthz", summary="The serving release and the models loaded")
    async def healthz(request: Request) -> dict:
        state = request.app.state.service
        return {"status": "ok", **state.retriever.describe(), "cache": cfg.cache,
                "threads": {"torch": cfg.torch_threads, "faiss": cfg.faiss_threads}}

    @app.get("/metrics", summary="Requests, errors, latency quantiles, cache hit rate, reloads")
    async def metrics(request: Request) -> dict:
        state = request.app.state.service
        return {"release_id": state.retriever.release_id, **state.metrics.snapshot()}

    return app
