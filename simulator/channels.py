"""Retrieval-channel plug-ins of the simulated search engine.

The engine retrieves organic candidates itself (relevance + popularity prior,
channel name "main"). A plug-in channel proposes at most one extra item per
request, which the engine places in a fixed result slot (`ChannelSlot.slot`),
shifting the organic results below it down. This is how a published GrowthGR
release can be served inside the simulator: implement `RetrievalChannel`
(e.g. beam search over the release's SID trie for the request's user and
query) and pass it in a `ChannelSlot`.

A/B tests: `ChannelSlot.user_buckets` restricts the channel to requests of
users in those buckets (user-side test); `item_buckets` restricts the items it
may place (item-side test; combine both for item-side buckets with coupled
user buckets). Buckets are a stable hash of the id (`bucket`), so the same
user or item stays in its bucket across days and runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from foundation.calendar import NEW_ITEM_DAYS


@dataclass(frozen=True)
class RequestBatch:
    """The search requests of one day (R rows)."""

    request_id: np.ndarray      # int64 (R,)
    user_id: np.ndarray         # int64 (R,)
    category: np.ndarray        # int32 (R,) intent category
    query_offset: np.ndarray    # float32 (R, D) query position inside the intent category
    query_text: list[str]       # (R,)


@dataclass(frozen=True)
class CatalogView:
    """The items listed up to and including the day (N rows); read-only for channels."""

    item_id: np.ndarray         # int64 (N,)
    category: np.ndarray        # int32 (N,)
    age_days: np.ndarray        # int32 (N,) 0 = listed today
    pop: np.ndarray             # float64 (N,) the platform's popularity signal
    price: np.ndarray           # float64 (N,)
    offset: np.ndarray          # float32 (N, D) item position inside its category (platform's item embedding)


class RetrievalChannel(Protocol):
    name: str

    def propose(self, requests: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> np.ndarray:
        """One catalog row index per request, or -1 for none: int64 (R,)."""
        ...


@dataclass(frozen=True)
class ChannelSlot:
    channel: RetrievalChannel
    slot: int = 3                              # result position the proposed item takes (0 = top)
    share: float = 1.0                         # share of eligible requests served
    n_buckets: int = 100
    user_buckets: tuple[int, ...] | None = None  # None: every user
    item_buckets: tuple[int, ...] | None = None  # None: every item


def bucket(ids: np.ndarray, salt: int, n_buckets: int) -> np.ndarray:
    """Stable bucket of each id (splitmix64 of id ^ salt, modulo n_buckets)."""
    x = (ids.astype(np.uint64) ^ np.uint64(salt)) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n_buckets)).astype(np.int64)


USER_SALT, ITEM_SALT = 0x5EED_0001, 0x5EED_0002


def serve(spec: ChannelSlot, requests: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> np.ndarray:
    """The item (catalog row) the channel places for each request after buckets and share, or -1."""
    n = len(requests.request_id)
    served = rng.random(n) < spec.share
    if spec.user_buckets is not None:
        served &= np.isin(bucket(requests.user_id, USER_SALT, spec.n_buckets), spec.user_buckets)
    proposed = spec.channel.propose(requests, catalog, rng)
    if spec.item_buckets is not None:
        ok = proposed >= 0
        ok[ok] = np.isin(bucket(catalog.item_id[proposed[ok]], ITEM_SALT, spec.n_buckets), spec.item_buckets)
        proposed = np.where(ok, proposed, -1)
    return np.where(served, proposed, -1)


class FreshItemsChannel:
    """Baseline: a uniformly random item of the intent category still in its new-item period."""

    name = "fresh"

    def __init__(self, max_age_days: int = NEW_ITEM_DAYS - 1):
        self.max_age_days = max_age_days

    def propose(self, requests: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> np.ndarray:
        fresh = np.flatnonzero(catalog.age_days <= self.max_age_days)
        fresh = fresh[np.argsort(catalog.category[fresh], kind="stable")]
        counts = np.bincount(catalog.category[fresh], minlength=int(requests.category.max(initial=0)) + 1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        u = rng.random(len(requests.request_id))
        have = counts[requests.category]
        pick = starts[requests.category] + np.floor(u * have).astype(np.int64)
        return np.where(have > 0, fresh[np.minimum(pick, len(fresh) - 1)] if len(fresh) else -1, -1)
