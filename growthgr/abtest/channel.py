"""The GrowthGR channel in the simulated platform and what it retrieves from.

`GrowthGRChannel` is a simulator `RetrievalChannel`: for each request a `Retriever` returns
candidate items (`PoolRetriever`: the release's ItemLTV new-item pool in the request's intent
category, items still in their new-item period); the channel keeps the pairs the experiment's
`Assignment` allows, re-ranks them by z(pool score) + w * z(query-item relevance) (the platform's
own relevance, -|query offset - item offset|^2 / 2, which `RequestBatch` / `CatalogView` expose)
and proposes the best for its result slot. The simulator drops a proposal that is already in the
organic slate (a channel cannot see the slate), so such requests get no channel item. With
`abtest.channel: multigr` the channel retrieves from the release's MultiGR instead
(`MultiGRRetriever`: the retrieval service's beam search over the pool's SID trie; the pool for
users the release does not know, or a release without MultiGR). Only the requests of users the
assignment treats are retrieved for.

The pool is refreshed daily the way the daily pipeline would with a frozen model: after each
simulated day `Retriever.observe` gets the day's raw tables; `PoolRetriever` scores the day's new
items with the release's ItemLTV base tower (`release_scorer`: `models.itemltv.score`) and serves
them from the next day (the pool of ds serves ds + 1); the active pool is the top `pool_size`
scored items in their new-item period.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.calendar import NEW_ITEM_DAYS
from foundation.releases import ReleaseStore, release_ds
from foundation.sections.abtest import ABTestConfig
from growthgr.abtest.assignment import Assignment
from simulator.channels import CatalogView, ChannelSlot, RequestBatch
from simulator.text import N_CATEGORIES

if TYPE_CHECKING:
    from foundation.config import Settings

log = logging.getLogger(__name__)

CHANNEL = "growthgr"


# -- retrieval --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidates:
    """A retriever's answer for the day's requests: K candidates each, best first."""

    item: np.ndarray      # int64 (R, K) catalog rows, -1 padded
    score: np.ndarray     # float64 (R, K) retriever score, -inf where padded


class Retriever(Protocol):
    """What the GrowthGR channel serves from (`PoolRetriever`, `MultiGRRetriever`, the closed loop's `ClosedLoop`)."""

    name: str

    def retrieve(self, requests: RequestBatch, catalog: CatalogView) -> Candidates:
        """Candidates of each request (R, K)."""
        ...

    def observe(self, day: int, raw: Mapping[str, pa.Table], truth: Mapping[str, pa.Table] | None = None) -> None:
        """The day's raw logs (and the simulator's truth tables), after the day: refresh the pool /
        model for tomorrow."""
        ...


def category_table(rows: np.ndarray, score: np.ndarray, category: np.ndarray, k: int,
                   n_categories: int = N_CATEGORIES) -> tuple[np.ndarray, np.ndarray]:
    """The top-k rows per category by score: rows (C, k) -1 padded, scores (C, k) -inf padded."""
    out_rows = np.full((n_categories, k), -1, dtype=np.int64)
    out_score = np.full((n_categories, k), -np.inf)
    order = np.lexsort((-score, category))
    rows, score, category = rows[order], score[order], category[order]
    start = np.searchsorted(category, np.arange(n_categories))
    rank = np.arange(len(rows)) - start[category]
    keep = rank < k
    out_rows[category[keep], rank[keep]] = rows[keep]
    out_score[category[keep], rank[keep]] = score[keep]
    return out_rows, out_score


class PoolRetriever:
    """The release's new-item pool: items with a known ItemLTV score in their new-item period,
    top `pool_size` by score, served per intent category (top `k`)."""

    name = "itemltv_pool"

    def __init__(self, item_id: np.ndarray, score: np.ndarray, pool_size: int, k: int,
                 scorer: Callable[[pd.DataFrame], np.ndarray] | None = None):
        self.item_id, self.score = np.asarray(item_id, np.int64), np.asarray(score, np.float64)
        self.pool_size, self.k, self.scorer = pool_size, k, scorer

    def active(self, catalog: CatalogView) -> tuple[np.ndarray, np.ndarray]:
        """Catalog rows and scores of today's pool (new-item period, top `pool_size`)."""
        pos = np.searchsorted(catalog.item_id, self.item_id)
        known = (pos < len(catalog.item_id)) & (catalog.item_id[np.minimum(pos, len(catalog.item_id) - 1)] == self.item_id)
        rows, score = pos[known], self.score[known]
        new = catalog.age_days[rows] < NEW_ITEM_DAYS
        rows, score = rows[new], score[new]
        top = np.argsort(-score, kind="stable")[:self.pool_size]
        return rows[top], score[top]

    def retrieve(self, requests: RequestBatch, catalog: CatalogView) -> Candidates:
        rows, score = self.active(catalog)
        table, table_score = category_table(rows, score, catalog.category[rows], self.k)
        return Candidates(table[requests.category], table_score[requests.category])

    def observe(self, day: int, raw: Mapping[str, pa.Table], truth: Mapping[str, pa.Table] | None = None) -> None:
        if self.scorer is None or "items" not in raw or raw["items"].num_rows == 0:
            return
        items = raw["items"].to_pandas()
        self.item_id = np.concatenate([self.item_id, items["item_id"].to_numpy(np.int64)])
        self.score = np.concatenate([self.score, self.scorer(items)])
        order = np.argsort(self.item_id, kind="stable")
        self.item_id, self.score = self.item_id[order], self.score[order]


class MultiGRRetriever:
    """The release's MultiGR through the retrieval service (`growthgr.serve.Retriever`: the prompt of
    the user's history and the query, trie-constrained beam search over the pool's SIDs, the DR
    re-rank when the release has DR): its top `k` items per request that are in today's catalog and
    new-item period, scored by the service's score. Requests of users the release does not know
    (registered after its ds) get the pool's candidates (`fallback`), as do requests MultiGR finds
    nothing for. Departure: the user context is the lake's as of the release's ds (the service's),
    not refreshed inside the test's day; items listed after the release's ds are not in its trie."""

    name = "multigr"

    def __init__(self, service, fallback: PoolRetriever, k: int, batch: int = 256):
        self.service, self.fallback, self.k, self.batch = service, fallback, k, batch
        self.users = np.fromiter(service.context.users, np.int64, len(service.context.users))
        self.memo: tuple[bytes, Candidates] | None = None

    @property
    def item_id(self) -> np.ndarray:
        return np.union1d(self.fallback.item_id, np.asarray(self.service.pool.ids, np.int64))

    def retrieve(self, requests: RequestBatch, catalog: CatalogView) -> Candidates:
        key = requests.request_id.tobytes()
        if self.memo is not None and self.memo[0] == key:         # one call per day and slot
            return self.memo[1]
        from growthgr.serve import Query

        base = self.fallback.retrieve(requests, catalog)
        items, score = base.item.copy(), base.score.copy()
        known = np.flatnonzero(np.isin(requests.user_id, self.users))
        for start in range(0, len(known), self.batch):
            idx = known[start:start + self.batch]
            answers = self.service.retrieve([Query(int(requests.user_id[i]), requests.query_text[i], self.k)
                                             for i in idx])
            for i, answer in zip(idx, answers, strict=True):
                ids = np.array([a["item_id"] for a in answer], np.int64)
                sc = np.array([-np.inf if a["score"] is None else a["score"] for a in answer], np.float64)
                rows = np.searchsorted(catalog.item_id, ids)
                ok = (rows < len(catalog.item_id)) & (catalog.item_id[np.minimum(rows, len(catalog.item_id) - 1)] == ids)
                ok[ok] &= catalog.age_days[rows[ok]] < NEW_ITEM_DAYS
                n = min(int(ok.sum()), items.shape[1])
                if n:
                    items[i], score[i] = -1, -np.inf
                    items[i, :n], score[i, :n] = rows[ok][:n], sc[ok][:n]
        out = Candidates(items, score)
        self.memo = (key, out)
        return out

    def observe(self, day: int, raw: Mapping[str, pa.Table], truth: Mapping[str, pa.Table] | None = None) -> None:
        self.fallback.observe(day, raw, truth)


# -- the channel ------------------------------------------------------------------------------------

def zscore(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standardise over the valid entries (0 where invalid or constant)."""
    if not valid.any():
        return np.zeros(x.shape)
    v = x[valid]
    sd = v.std()
    return np.where(valid, (x - v.mean()) / (sd if sd > 1e-12 else 1.0), 0.0)


def query_relevance(query_offset: np.ndarray, item_offset: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The platform's relevance -|q - o|^2 / 2 of each (request, candidate): float64 (R, K)."""
    diff = query_offset[:, None, :].astype(np.float64) - item_offset[np.maximum(rows, 0)]
    return -0.5 * np.einsum("rkd,rkd->rk", diff, diff)


def pick(rows: np.ndarray, score: np.ndarray, valid: np.ndarray, rank: int) -> np.ndarray:
    """The `rank`-th best valid candidate of each request (catalog row), -1 where none: (R,)."""
    masked = np.where(valid, score, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    if rank >= rows.shape[1]:
        return np.full(len(rows), -1, dtype=np.int64)
    col = order[:, rank]
    r = np.arange(len(rows))
    return np.where(np.isfinite(masked[r, col]), rows[r, col], -1)


class GrowthGRChannel:
    """The GrowthGR new-item channel (a simulator `RetrievalChannel`): retrieve -> keep the
    assigned pairs -> light re-rank -> the `rank`-th best item (one channel per result slot)."""

    def __init__(self, retriever: Retriever, assignment: Assignment, affinity_weight: float = 1.0, rank: int = 0):
        self.name = CHANNEL
        self.retriever, self.assignment = retriever, assignment
        self.affinity_weight, self.rank = affinity_weight, rank

    def propose(self, requests: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> np.ndarray:
        out = np.full(len(requests.user_id), -1, dtype=np.int64)
        users = self.assignment.treated_users(requests.user_id)    # only their requests can be served
        if not users.any():
            return out
        sub = subset(requests, users)
        cand = self.retriever.retrieve(sub, catalog)
        valid = cand.item >= 0
        if valid.any():
            valid &= self.assignment.pairs(sub.user_id, catalog.item_id[np.maximum(cand.item, 0)])
        rel = query_relevance(sub.query_offset, catalog.offset, cand.item)
        score = zscore(cand.score, valid) + self.affinity_weight * zscore(rel, valid)
        out[users] = pick(cand.item, score, valid, self.rank)
        return out


def subset(requests: RequestBatch, keep: np.ndarray) -> RequestBatch:
    """The requests where `keep` (bool (R,)) holds."""
    return requests if keep.all() else requests.take(np.flatnonzero(keep))


def channel_slots(cfg: ABTestConfig, retriever: Retriever, assignment: Assignment) -> list[ChannelSlot]:
    """One slot per configured result position; the k-th slot serves the k-th best item."""
    return [ChannelSlot(GrowthGRChannel(retriever, assignment, cfg.affinity_weight, rank=k), slot=slot, share=cfg.share,
                        n_buckets=cfg.n_buckets) for k, slot in enumerate(cfg.slots)]


# -- retrievers of a release -----------------------------------------------------------------------

def release_retriever(store: ReleaseStore, release: str, pool_size: int, k: int,
                      refresh: bool = True, channel: str = "pool",
                      settings: Settings | None = None) -> tuple[str, Callable[[], Retriever]]:
    """(release id, a factory of fresh `PoolRetriever`s) from a release's pool (+ its ItemLTV
    checkpoint for the daily refresh, shared by every arm: new items get the same scores). With
    `channel="multigr"` and a release that holds a MultiGR: `MultiGRRetriever`s over the retrieval
    service of the release (loaded once with `settings`, which must name `store`), the pool as fallback."""
    rel = store.get(release)
    release_id, make_pool = _pool_retriever(store, rel, pool_size, k, refresh)
    if channel != "multigr":
        return release_id, make_pool
    from growthgr.serve import MULTIGR_FILES, POOL_FILES
    from growthgr.serve import Retriever as Service

    missing = [n for n in (*MULTIGR_FILES, *POOL_FILES) if n not in rel.files]
    if missing or settings is None:
        log.warning("abtest.channel=multigr: release %s has no %s: the channel serves its pool", release_id,
                    missing or "settings")
        return release_id, make_pool
    service = Service.load(settings, release_id)
    return release_id, lambda: MultiGRRetriever(service, make_pool(), k)


def _pool_retriever(store: ReleaseStore, rel, pool_size: int, k: int,
                    refresh: bool) -> tuple[str, Callable[[], PoolRetriever]]:
    pool = pd.read_parquet(io.BytesIO(store.read(rel.release_id, "pool.parquet")))
    scorer = None
    if refresh and "itemltv.safetensors" in rel.manifest.get("files", {}):
        scorer = _cached(release_scorer(store.read(rel.release_id, "itemltv.safetensors")))
    ids, scores = pool["item_id"].to_numpy(np.int64), pool["score"].to_numpy(np.float64)
    order = np.argsort(ids)
    log.info("release %s (ds=%s): pool of %d items", rel.release_id, release_ds(rel), len(pool))
    return rel.release_id, lambda: PoolRetriever(ids[order], scores[order], pool_size, k, scorer)


def release_scorer(checkpoint: bytes) -> Callable[[pd.DataFrame], np.ndarray]:
    """The release's frozen ItemLTV base tower on new items' listing-time content (the raw items
    table): the pool score of the daily pipeline (`models.itemltv.score.listing_scores`)."""
    from models.itemltv.score import listing_scores
    from models.itemltv.train import checkpoint_from_bytes

    return partial(listing_scores, checkpoint_from_bytes(checkpoint))


def _cached(scorer: Callable[[pd.DataFrame], np.ndarray]) -> Callable[[pd.DataFrame], np.ndarray]:
    """Memoise scores by item id (every arm sees the same new items)."""
    memo: dict[int, float] = {}

    def score(items: pd.DataFrame) -> np.ndarray:
        ids = items["item_id"].to_numpy(np.int64)
        todo = ~np.isin(ids, np.fromiter(memo, np.int64, len(memo)))
        if todo.any():
            memo.update(zip(ids[todo].tolist(), scorer(items[todo]).tolist(), strict=True))
        return np.array([memo[i] for i in ids.tolist()], np.float64)
    return score

