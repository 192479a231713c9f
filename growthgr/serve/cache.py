"""The answer cache: Redis (`serve.cache = "redis"`) or an in-process `cachetools.TTLCache`."""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

from cachetools import TTLCache

from foundation.sections.serve import ServeConfig
from growthgr.serve.context import Query


class Cache(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str) -> None: ...
    async def close(self) -> None: ...


ENTRY_OVERHEAD = 200      # bytes an entry costs besides its answer: key (a 64-char hash + prefix), dict slot


class MemoryCache:
    """In-process LRU with a time-to-live (`cachetools.TTLCache`: at most `max_bytes` of entries, each
    counted as its answer's length plus `ENTRY_OVERHEAD`; least recently used evicted first; each
    expiring `ttl_s` after it was set)."""

    def __init__(self, max_bytes: int, ttl_s: float):
        self.entries: TTLCache[str, str] = TTLCache(maxsize=max_bytes, ttl=ttl_s,
                                                    getsizeof=lambda value: len(value) + ENTRY_OVERHEAD)

    async def get(self, key: str) -> str | None:
        return self.entries.get(key)

    async def set(self, key: str, value: str) -> None:
        if len(value) + ENTRY_OVERHEAD <= self.entries.maxsize:     # a larger answer is not cached
            self.entries[key] = value

    async def close(self) -> None:
        self.entries.clear()


class RedisCache:
    """Redis (`redis.asyncio`), entries expiring after the TTL; connecting and each reply wait at most
    `timeout_s` (a Redis that accepts connections but never answers costs a request that long)."""

    def __init__(self, url: str, ttl_s: float, timeout_s: float):
        import redis.asyncio as redis

        self.client = redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_s,
                                     socket_timeout=timeout_s)
        self.ttl_ms = max(int(ttl_s * 1000), 1)

    async def get(self, key: str) -> str | None:
        return await self.client.get(key)

    async def set(self, key: str, value: str) -> None:
        await self.client.set(key, value, px=self.ttl_ms)

    async def close(self) -> None:
        await self.client.aclose()


def open_cache(cfg: ServeConfig) -> Cache:
    if cfg.cache == "redis":
        return RedisCache(cfg.redis_url, cfg.cache_ttl_s, cfg.cache_timeout_ms / 1000)
    return MemoryCache(int(cfg.cache_max_mb * 2**20), cfg.cache_ttl_s)


def cache_key(release_id: str, q: Query) -> str:
    blob = json.dumps([release_id, q.user_id, q.query, q.k]).encode()
    return "growthgr:serve:" + hashlib.sha256(blob).hexdigest()
