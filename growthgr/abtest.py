"""Closed-loop A/B tests of a GrowthGR release inside the simulated platform (issue 21).

    world state of the lake (a copy) --N days--> arm logs --> per-design estimates
                                                          --> true global effect
                                                          --> reports/abtest/ds=<ds>/<design>.json|.md

The channel. `GrowthGRChannel` is a simulator `RetrievalChannel`: for each request a
`Retriever` returns candidate items (today: `PoolRetriever`, the release's ItemLTV new-item pool
in the request's intent category, items still in their new-item period); the channel keeps
the pairs the experiment's `Assignment` allows, re-ranks them by z(pool score) + w *
z(query-item relevance) (the platform's own relevance, -|query offset - item offset|^2 / 2,
which `RequestBatch` / `CatalogView` expose) and proposes the best for its result slot. The
simulator drops a proposal that is already in the organic slate (a channel cannot see the
slate), so such requests get no channel item. With `abtest.channel: multigr` the channel retrieves
from the release's MultiGR instead (`MultiGRRetriever`: the retrieval service's beam search over the
pool's SID trie; the pool for users the release does not know, or a release without MultiGR).
Only the requests of users the assignment treats are retrieved for.

The pool is refreshed daily the way the daily pipeline would with a frozen model: after each
simulated day `Retriever.observe` gets the day's raw tables; `PoolRetriever` scores the day's
new items with the release's ItemLTV base tower (`ItemLTVScorer`) and serves them from the
next day (the pool of ds serves ds + 1); the active pool is the top `pool_size` scored items
in their new-item period.

The closed loop (`--retrain`, `ClosedLoop`) plugs in at the same place: each retraining arm (the
design's and the fully treated one; the untreated arm serves nothing, so retraining could not change
it) gets a copy of the lake and of the release store under the A/B working directory; its `observe`
writes the day's raw and truth tables there, runs the daily pipeline for the day in-process (the
daily pipeline's steps in their dependency order, from the registry the DAG is made of
(`growthgr.steps`), each through `pipeline.timed`) and serves the day's release from the next day, or keeps the last good one when
a step fails (a gate refuses). No pipeline runs after the last test day (its release would serve
no test day).

Designs (buckets are the simulator's stable hashes, `channels.bucket`, USER_SALT / ITEM_SALT):
  user       users of the treated buckets get the channel (every pool item)
  item       new items hashed into buckets; the treated item buckets are served only to their
             coupled user buckets (the same bucket numbers on the user hash), control items
             never: an item sees one policy. `coupling_groups` > 1 splits the coupled market
             into exclusive groups (user bucket b serves item buckets b' with b' = b mod g).
  two-sided  a pair is treated only when user and item are both treated; estimated on the
             treated-user x treated-item cell vs the control x control cell (the naive
             two-sided-randomisation estimator of the marketplace-experiment literature).
With `coupling_groups` = 1 and equal shares the item and two-sided designs serve the same
pairs; they differ in the estimator (all items vs the 2x2 cells).

Arms and common random numbers. Every arm (the design's run, fully treated, fully untreated)
continues a private copy of the same world state with the same seed: each day draws from
`day_rng(seed, day, stream)`, arrivals and requests first (identical in every arm), the
channels from their own stream (10 + k). Every arm carries the same channel slots (the control
arm's channel proposes nothing), so slates have the same width and the funnel's uniforms are
paired by (request, position). Draws whose count depends on the outcomes (site-wide buyers,
order quantities, timestamps) are not paired once the arms differ.

Metrics (search logs of the test days; "new" = listing age 0..29 on the day):
  new_item_gmv  search GMV of items in their new-item period
  search_gmv    overall search GMV
  pvr           page-view ratio of new items: share of exposures going to new items
                (item and cell estimators: new-item exposures per unit; the total number of
                exposures is fixed by the scroll depth, which is paired across arms)
  ti30          per item, mean daily GMV (search + site-wide) over listing ages 30..36, for the
                cohort launched during the test (needs >= 37 days) and, reported apart, the
                cohort already in its new-item period when the test starts
  category      new-item PV and GMV per category (the paper's Table 6 shape)
  gini          Gini of exposure counts over the arm's items (point values, no interval)
  trajectory    per test day, the cumulative estimate of new_item_gmv, search_gmv and pvr with its
                interval, for the design and the global truth (`<design>_trajectory.png`)
Each estimate is rate_treated / rate_control - 1 (rate = total per unit of the arm) with a 95%
percentile bootstrap interval: users resampled for user-side metrics, items for item-side
ones, users and items independently for two-sided cells. The true global effect compares the
fully treated with the fully untreated world, resampling the same units in both (paired).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation import catalog
from foundation.calendar import COHORT_OFFSET, LABEL_WINDOW, NEW_ITEM_DAYS
from foundation.lake import Lake
from foundation.releases import ReleaseStore, release_ds
from foundation.sections.abtest import ABTestConfig
from simulator.channels import ITEM_SALT, USER_SALT, CatalogView, ChannelSlot, RequestBatch, bucket
from simulator.engine import simulate_day
from simulator.run import default_channels, load_world, saved_states
from simulator.stats import gini
from simulator.text import N_CATEGORIES
from simulator.world import World, day_ds, from_bytes, to_bytes

if TYPE_CHECKING:
    from foundation.config import Settings

log = logging.getLogger(__name__)

DESIGNS = ("user", "item", "two-sided")
TREATED, CONTROL = "global-treated", "global-control"
CHANNEL = "growthgr"
REPORT = "abtest"
MIN_TI30_DAYS = COHORT_OFFSET + 1            # 37: the launch day's cohort reaches age 36


# -- assignment -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assignment:
    """Which (user, item) pairs the GrowthGR channel may serve."""

    n_buckets: int
    user_buckets: tuple[int, ...] | None     # treated user buckets; None = every user
    item_buckets: tuple[int, ...] | None     # treated item buckets; None = every item
    groups: int = 1                          # coupling groups (see the module docstring)

    def treated_users(self, user_id: np.ndarray) -> np.ndarray:
        """bool, same shape as `user_id`."""
        return _in_buckets(user_id, USER_SALT, self.n_buckets, self.user_buckets)

    def treated_items(self, item_id: np.ndarray) -> np.ndarray:
        """bool, same shape as `item_id`."""
        return _in_buckets(item_id, ITEM_SALT, self.n_buckets, self.item_buckets)

    def pairs(self, user_id: np.ndarray, item_id: np.ndarray) -> np.ndarray:
        """Treated (request, candidate) pairs: user_id (R,), item_id (R, K) -> bool (R, K)."""
        ok = self.treated_users(user_id)[:, None] & self.treated_items(item_id)
        if self.groups > 1:
            ug = bucket(user_id, USER_SALT, self.n_buckets) % self.groups
            ig = bucket(item_id.ravel(), ITEM_SALT, self.n_buckets).reshape(item_id.shape) % self.groups
            ok &= ug[:, None] == ig
        return ok


def _in_buckets(ids: np.ndarray, salt: int, n_buckets: int, buckets: tuple[int, ...] | None) -> np.ndarray:
    if buckets is None:
        return np.ones(ids.shape, dtype=bool)
    flat = bucket(np.asarray(ids).ravel(), salt, n_buckets)
    return np.isin(flat, np.asarray(buckets, dtype=np.int64)).reshape(np.shape(ids))


def design_assignment(design: str, cfg: ABTestConfig) -> Assignment:
    """The assignment of a design, or of the two global arms (`TREATED`, `CONTROL`)."""
    treated = tuple(range(max(1, round(cfg.treated_share * cfg.n_buckets))))
    match design:
        case "user":
            return Assignment(cfg.n_buckets, treated, None)
        case "item":
            return Assignment(cfg.n_buckets, treated, treated, cfg.coupling_groups)
        case "two-sided":
            return Assignment(cfg.n_buckets, treated, treated)
        case "global-treated":
            return Assignment(cfg.n_buckets, None, None)
        case "global-control":
            return Assignment(cfg.n_buckets, (), ())
    raise ValueError(f"unknown design {design!r}: expected one of {', '.join(DESIGNS)}")


# -- retrieval --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidates:
    """A retriever's answer for the day's requests: K candidates each, best first."""

    item: np.ndarray      # int64 (R, K) catalog rows, -1 padded
    score: np.ndarray     # float64 (R, K) retriever score, -inf where padded


class Retriever(Protocol):
    """What the GrowthGR channel serves from (the ItemLTV pool today, MultiGR beam search later)."""

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


class ItemLTVScorer:
    """The release's frozen ItemLTV base tower on new items' listing-time content
    (title words, brand, category, price): the pool score of the daily pipeline.

    Departure: the pipeline reads the same inputs through Feast (point-in-time item features);
    the base tower only uses listing-time features, so the raw items table gives the same
    inputs (missing feature columns are filled with the training mean, as at scoring time)."""

    def __init__(self, checkpoint: bytes):
        from models.itemltv.train import checkpoint_from_bytes

        self.trained = checkpoint_from_bytes(checkpoint)

    def __call__(self, items: pd.DataFrame) -> np.ndarray:
        from models.itemltv.data import Inputs, encode
        from models.itemltv.evaluate import predict

        listing = pd.to_datetime(items["listing_date"], utc=True)
        samples = pd.DataFrame({"user_id": -1, "item_id": items["item_id"].to_numpy(np.int64),
                                "ts": (listing + pd.Timedelta(hours=23)).astype("datetime64[us, UTC]"),
                                "treatment": np.float32(0.0), "listing_date": listing.dt.date})
        users = pd.DataFrame({"user_id": [-1], "age_band": [None]})
        inputs = Inputs(samples, items, users, pd.DataFrame({"user_id": pd.Series(dtype="int64"),
                                                             "item_id": pd.Series(dtype="int64"),
                                                             "ts": pd.Series(dtype="datetime64[us, UTC]")}))
        exposures = predict(self.trained, encode(inputs, self.trained.pre)).exposures
        by_item = exposures.set_index("item_id")["base"]
        return by_item.reindex(items["item_id"].to_numpy()).to_numpy(np.float64)


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
    if keep.all():
        return requests
    idx = np.flatnonzero(keep)
    return replace(requests, request_id=requests.request_id[idx], user_id=requests.user_id[idx],
                   category=requests.category[idx], query_offset=requests.query_offset[idx],
                   query_text=[requests.query_text[i] for i in idx])


def channel_slots(cfg: ABTestConfig, retriever: Retriever, assignment: Assignment) -> list[ChannelSlot]:
    """One slot per configured result position; the k-th slot serves the k-th best item."""
    return [ChannelSlot(GrowthGRChannel(retriever, assignment, cfg.affinity_weight, rank=k), slot=slot, share=cfg.share,
                        n_buckets=cfg.n_buckets) for k, slot in enumerate(cfg.slots)]


# -- running the arms -------------------------------------------------------------------------------

@dataclass
class ArmLog:
    """What one arm's test days logged, aggregated."""

    pairs: pd.DataFrame       # user_id, item_id, exposures, new_exposures, gmv, new_gmv (search)
    label_gmv: pd.DataFrame   # item_id, gmv: GMV (search + site-wide) at listing ages 30..36
    served: int = 0           # channel placements (rank candidates of the channel)
    requests: int = 0
    daily: pd.DataFrame | None = None   # `pairs` per test day (+ `day`, the simulator's day index)
    retrain: list[dict] | None = None   # the closed loop's per-day log (`ClosedLoop.history`), if it retrained
    retriever: str = ""                 # what the arm's channel retrieved from (its first day)


@dataclass(frozen=True)
class Population:
    """The units of the test (identical in every arm: arrivals do not depend on the channel)."""

    user_id: np.ndarray       # (U,) every user at the end of the test
    item_id: np.ndarray       # (I,) every item at the end of the test
    listing_day: np.ndarray   # (I,)
    category: np.ndarray      # (I,)
    start: int                # first test day
    end: int                  # last test day


def day_records(raw: Mapping[str, pa.Table], item_id: np.ndarray, listing_day: np.ndarray,
                day: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """One day's (user, item) search aggregates, label-window GMV per item, channel placements."""
    exp = raw["exposures"].select(["user_id", "item_id"]).to_pandas().assign(exposures=1.0, gmv=0.0)
    buy = raw["purchases"].select(["user_id", "item_id", "gmv"]).to_pandas().assign(exposures=0.0)
    pairs = pd.concat([exp, buy], ignore_index=True).groupby(["user_id", "item_id"], sort=False).sum().reset_index()
    age = day - listing_day[np.searchsorted(item_id, pairs["item_id"].to_numpy())]
    new = (age < NEW_ITEM_DAYS).astype(float)
    pairs = pairs.assign(new_exposures=pairs["exposures"] * new, new_gmv=pairs["gmv"] * new)
    site = raw["site_orders"].select(["item_id", "gmv"]).to_pandas()
    sold = pd.concat([buy[["item_id", "gmv"]], site], ignore_index=True)
    sold_age = day - listing_day[np.searchsorted(item_id, sold["item_id"].to_numpy())]
    label = sold[np.isin(sold_age, LABEL_WINDOW)].groupby("item_id", sort=False)["gmv"].sum().reset_index()
    channel = raw["rank_candidates"].column("channel").to_numpy(zero_copy_only=False)
    return pairs, label, int((channel == CHANNEL).sum())


def run_arm(world: World, days: int, channels: Sequence[ChannelSlot], retriever: Retriever,
            tick: Callable[[], None] = lambda: None) -> ArmLog:
    """Continue `world` (a private copy) for `days` days with `channels`; aggregate the logs."""
    pairs, labels, served, requests = [], [], 0, 0
    every = [*default_channels(world.config), *channels]
    for day in range(world.last_day + 1, world.last_day + 1 + days):
        out = simulate_day(world, day, every)
        p, lab, n = day_records(out.raw, world.items["item_id"], world.items["listing_day"], day)
        pairs.append(p.assign(day=np.int32(day)))
        labels.append(lab)
        served, requests = served + n, requests + out.raw["search_requests"].num_rows
        retriever.observe(day, out.raw, out.truth)
        tick()
    daily = pd.concat(pairs, ignore_index=True)
    return ArmLog(daily.drop(columns="day").groupby(["user_id", "item_id"]).sum().reset_index(),
                  pd.concat(labels, ignore_index=True).groupby("item_id")["gmv"].sum().reset_index(),
                  served, requests, daily)


def population(world: World, start: int) -> Population:
    """The units of a world at the end of the test."""
    it = world.items
    return Population(world.users["user_id"].copy(), it["item_id"].copy(), it["listing_day"].copy(),
                      it["category"].copy(), start, world.last_day)


# -- bootstrap estimates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """One resampled side of a panel: each row's unit, and which units count in each arm."""

    unit: np.ndarray          # int64 (P,) unit index of each row
    in_treated: np.ndarray    # bool (n,) units counted in the treated arm
    in_control: np.ndarray    # bool (n,) units counted in the control arm
    name: str                 # "users" / "items"


@dataclass(frozen=True)
class Panel:
    """Rows of one comparison: arm (1 treated, 0 control, -1 out), group (category), values."""

    arm: np.ndarray
    group: np.ndarray
    values: dict[str, np.ndarray]
    sides: tuple[Side, ...]


def resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """Row 0: all ones (the point estimate); rows 1..b: multinomial resample counts. float64 (b+1, n)."""
    out = np.ones((b + 1, n))
    for i in range(1, b + 1):
        out[i] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def panel_totals(panel: Panel, weights: Sequence[np.ndarray], n_groups: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weighted totals per (resample, arm, group) of each value, and the unit count per (resample, arm).

    weights[s]: (B+1, n_s) unit weights of side s. Returns {value: (B+1, 2, G)}, (B+1, 2)."""
    keep = panel.arm >= 0
    cell = panel.arm[keep].astype(np.int64) * n_groups + panel.group[keep]
    n_b = weights[0].shape[0]
    totals = {k: np.zeros((n_b, 2, n_groups)) for k in panel.values}
    counts = np.ones((n_b, 2))
    for side, w in zip(panel.sides, weights, strict=True):
        counts[:, 1] *= w[:, side.in_treated].sum(1)
        counts[:, 0] *= w[:, side.in_control].sum(1)
    for b in range(n_b):
        row_w = np.ones(int(keep.sum()))
        for side, w in zip(panel.sides, weights, strict=True):
            row_w = row_w * w[b, side.unit[keep]]
        for k, v in panel.values.items():
            totals[k][b] = np.bincount(cell, weights=row_w * v[keep], minlength=2 * n_groups).reshape(2, n_groups)
    return totals, counts


def effect(treated: np.ndarray, control: np.ndarray) -> dict:
    """Point (index 0) and 95% percentile interval (indices 1..) of treated / control - 1, in %."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * (treated / control - 1.0)
    point, boot = float(rel[0]), rel[1:][np.isfinite(rel[1:])]
    lo, hi = (np.percentile(boot, [2.5, 97.5]).tolist() if len(boot) else [float("nan")] * 2)
    return {"treated": float(treated[0]), "control": float(control[0]), "rel_pct": point,
            "ci95_pct": [lo, hi], "significant": bool(len(boot) and (lo > 0 or hi < 0))}


def estimates(panel: Panel, cfg: ABTestConfig, seed_offset: int, ratio: bool) -> dict:
    """new_item_gmv, search_gmv, pvr and category-wise new-item PV / GMV of one panel.

    `ratio`: PVR as new-item exposures / exposures of the arm (user-side panels); otherwise
    new-item exposures per unit."""
    rng = np.random.default_rng([cfg.seed, seed_offset])
    weights = [resample_counts(rng, len(s.in_treated), cfg.bootstrap) for s in panel.sides]
    tot, n = panel_totals(panel, weights, N_CATEGORIES)
    per = {k: v.sum(2) / n for k, v in tot.items()}                    # (B+1, 2) rate per unit
    pvr_t = tot["new_exposures"].sum(2) / (tot["exposures"].sum(2) if ratio else n)
    categories: dict[str, dict] = {}
    for c in range(N_CATEGORIES):
        pv = tot["new_exposures"][:, :, c] / n
        gmv = tot["new_gmv"][:, :, c] / n
        categories[str(c)] = {"pv": effect(pv[:, 1], pv[:, 0]), "gmv": effect(gmv[:, 1], gmv[:, 0])}
    units = " x ".join(s.name for s in panel.sides)
    return {"new_item_gmv": effect(per["new_gmv"][:, 1], per["new_gmv"][:, 0]) | {"units": units},
            "search_gmv": effect(per["gmv"][:, 1], per["gmv"][:, 0]) | {"units": units},
            "pvr": effect(pvr_t[:, 1], pvr_t[:, 0]) | {"units": units},
            "category": categories, "units": units}


def trajectory(panel: Panel, day: np.ndarray, n_days: int, cfg: ABTestConfig, seed_offset: int, ratio: bool,
               metrics: Sequence[str] = ("new_item_gmv", "search_gmv", "pvr")) -> dict[str, dict[str, list[float]]]:
    """The cumulative estimate of each headline metric after each test day, with its 95% interval:
    {metric: {rel_pct, lo, hi}: lists of `n_days`}. `day` (P,) is each row's test-day index 0..n-1.

    The same units, denominators and bootstrap weights as `estimates` with the same `seed_offset`
    (units: the test's population at its end, so a unit that arrives later counts with zeros on the
    earlier days), so the last day's point and interval are the final estimate's."""
    rng = np.random.default_rng([cfg.seed, seed_offset])
    weights = [resample_counts(rng, len(s.in_treated), cfg.bootstrap) for s in panel.sides]
    tot, n = panel_totals(replace(panel, group=day.astype(np.int64)), weights, n_days)
    cum = {k: np.cumsum(v, axis=2) for k, v in tot.items()}              # (B+1, 2, D)
    out: dict[str, dict[str, list[float]]] = {m: {"rel_pct": [], "lo": [], "hi": []} for m in metrics}
    for d in range(n_days):
        rates = {"new_item_gmv": cum["new_gmv"][:, :, d] / n, "search_gmv": cum["gmv"][:, :, d] / n,
                 "pvr": cum["new_exposures"][:, :, d] / (cum["exposures"][:, :, d] if ratio else n)}
        for m in metrics:
            e = effect(rates[m][:, 1], rates[m][:, 0])
            out[m]["rel_pct"].append(e["rel_pct"])
            out[m]["lo"].append(e["ci95_pct"][0])
            out[m]["hi"].append(e["ci95_pct"][1])
    return out


# -- panels of the designs --------------------------------------------------------------------------

def unit_index(ids: np.ndarray, all_ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(all_ids, ids)


def pair_columns(pairs: pd.DataFrame) -> dict[str, np.ndarray]:
    return {k: pairs[k].to_numpy(np.float64) for k in ("exposures", "new_exposures", "gmv", "new_gmv")}


def in_scope(pop: Population) -> np.ndarray:
    """Items in their new-item period on at least one test day."""
    return (pop.listing_day >= pop.start - NEW_ITEM_DAYS + 1) & (pop.listing_day <= pop.end)


def user_side(pairs: pd.DataFrame, pop: Population, treated_users: np.ndarray) -> Panel:
    """Rows assigned by their user's arm."""
    u = unit_index(pairs["user_id"].to_numpy(), pop.user_id)
    cat = pop.category[unit_index(pairs["item_id"].to_numpy(), pop.item_id)]
    side = Side(u, treated_users, ~treated_users, "users")
    return Panel(treated_users[u].astype(np.int8), cat, pair_columns(pairs), (side,))


def item_side(pairs: pd.DataFrame, pop: Population, treated_items: np.ndarray) -> Panel:
    """Rows of items in scope assigned by their item's arm; other rows out."""
    i = unit_index(pairs["item_id"].to_numpy(), pop.item_id)
    scope = in_scope(pop)
    arm = np.where(scope[i], treated_items[i].astype(np.int8), -1).astype(np.int8)
    side = Side(i, scope & treated_items, scope & ~treated_items, "items")
    return Panel(arm, pop.category[i], pair_columns(pairs), (side,))


def cell_side(pairs: pd.DataFrame, pop: Population, treated_users: np.ndarray, treated_items: np.ndarray) -> Panel:
    """Two-sided cells: treated x treated (1) vs control x control (0); mixed cells out."""
    up, ip = user_side(pairs, pop, treated_users), item_side(pairs, pop, treated_items)
    arm = np.where((up.arm == ip.arm) & (ip.arm >= 0), up.arm, -1).astype(np.int8)
    return Panel(arm, ip.group, ip.values, (up.sides[0], ip.sides[0]))


def global_side(treated: pd.DataFrame, control: pd.DataFrame, pop: Population, by: str) -> Panel:
    """Both worlds' rows (arm = world); the same units resampled in both (paired)."""
    both = pd.concat([treated.assign(_arm=1), control.assign(_arm=0)], ignore_index=True)
    i = unit_index(both["item_id"].to_numpy(), pop.item_id)
    if by == "users":
        unit, every = unit_index(both["user_id"].to_numpy(), pop.user_id), np.ones(len(pop.user_id), bool)
        arm = both["_arm"].to_numpy(np.int8)
    else:
        unit, every = i, in_scope(pop)
        arm = np.where(every[i], both["_arm"].to_numpy(np.int8), -1).astype(np.int8)
    return Panel(arm, pop.category[i], pair_columns(both), (Side(unit, every, every, by),))


def ti30_cohorts(pop: Population) -> dict[str, np.ndarray]:
    """Items whose ages 30..36 all fall in the test, by cohort: launched during the test, or
    already in their new-item period at its start. bool (I,) each."""
    complete = pop.listing_day + COHORT_OFFSET <= pop.end
    return {"launched_during_test": complete & (pop.listing_day >= pop.start),
            "new_at_start": complete & in_scope(pop) & (pop.listing_day < pop.start)}


def ti30_values(label_gmv: pd.DataFrame, pop: Population) -> np.ndarray:
    """Mean daily GMV over ages 30..36 per item of the population: float64 (I,)."""
    out = np.zeros(len(pop.item_id))
    out[unit_index(label_gmv["item_id"].to_numpy(), pop.item_id)] = label_gmv["gmv"].to_numpy(np.float64)
    return out / len(LABEL_WINDOW)


def ti30_estimate(values_t: np.ndarray, values_c: np.ndarray, arm_t: np.ndarray, arm_c: np.ndarray,
                  cohort: np.ndarray, cfg: ABTestConfig, seed_offset: int) -> dict:
    """Mean TI@30 of the cohort's treated vs control items (items resampled).

    Designs: values_t = values_c (one world), arm_t / arm_c the item arms. Global: the two
    worlds' values, arm_t = arm_c = the whole cohort (paired)."""
    n = int(cohort.sum())
    if n == 0:
        return {"available": False, "reason": "no item of this cohort reached listing age 36 inside the test"}
    rng = np.random.default_rng([cfg.seed, seed_offset])
    w = resample_counts(rng, n, cfg.bootstrap)
    vt, vc, at, ac = values_t[cohort], values_c[cohort], arm_t[cohort], arm_c[cohort]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t, mean_c = (w[:, at] @ vt[at]) / w[:, at].sum(1), (w[:, ac] @ vc[ac]) / w[:, ac].sum(1)
    out = effect(mean_t, mean_c)
    return out | {"available": True, "n_items": n, "n_treated": int(at.sum()), "n_control": int(ac.sum()),
                  "units": "items"}


def ti30_block(values_t: np.ndarray, values_c: np.ndarray, arm_t: np.ndarray, arm_c: np.ndarray,
               pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """TI@30 of both cohorts; the launch cohort is unavailable below `MIN_TI30_DAYS` days."""
    out = {}
    for k, (name, cohort) in enumerate(ti30_cohorts(pop).items()):
        if name == "launched_during_test" and days < MIN_TI30_DAYS:
            out[name] = {"available": False, "reason": f"needs --days >= {MIN_TI30_DAYS} (a cohort launched on the "
                         f"first test day reaches listing age 36 on day {MIN_TI30_DAYS}); ran {days}"}
        else:
            out[name] = ti30_estimate(values_t, values_c, arm_t, arm_c, cohort, cfg, 100 + k)
    return out


def exposure_gini(pairs: pd.DataFrame, item_rows: np.ndarray, pop: Population) -> float:
    """Gini of exposure counts over the given population item rows (zeros included)."""
    counts = np.bincount(unit_index(pairs["item_id"].to_numpy(), pop.item_id), weights=pairs["exposures"].to_numpy(),
                         minlength=len(pop.item_id))
    return gini(counts[item_rows])


# -- the experiment ---------------------------------------------------------------------------------

@dataclass
class Experiment:
    """Inputs of one test: the world at its start, the release's pool, the design."""

    world_bytes: bytes                      # the serialised start state (every arm gets a copy)
    design: str
    days: int
    cfg: ABTestConfig
    make_retriever: Callable[[], Retriever]
    release_id: str = ""
    seed: int | None = None                 # None: the world's own seed (the lake's continuation)
    # --retrain: the retriever of each arm by arm name (`closed_loop_factory`); None: `make_retriever`
    make_arm_retriever: Callable[[str], Retriever] | None = None

    def world(self) -> World:
        w = from_bytes(self.world_bytes)
        if self.seed is not None:
            w.seed = self.seed
        return w


def run_arms(exp: Experiment, progress: bool = True) -> tuple[dict[str, ArmLog], Population]:
    """The design's arm and the two global arms, each on a private copy of the start world."""
    from tqdm import tqdm

    arms = (exp.design, TREATED, CONTROL)
    bar = tqdm(total=exp.days * len(arms), desc="abtest", unit="day", disable=not progress)
    logs: dict[str, ArmLog] = {}
    pops: list[Population] = []
    for arm in arms:
        w = exp.world()
        start = w.last_day + 1
        bar.set_postfix_str(arm)
        retriever = exp.make_arm_retriever(arm) if exp.make_arm_retriever else exp.make_retriever()
        logs[arm] = run_arm(w, exp.days, channel_slots(exp.cfg, retriever, design_assignment(arm, exp.cfg)),
                            retriever, lambda: bar.update(1))
        logs[arm].retrain = getattr(retriever, "history", None)
        logs[arm].retriever = retriever.name
        pops.append(population(w, start))
    bar.close()
    return logs, pops[-1]


def design_estimates(design: str, log_: ArmLog, pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """The design's estimate of every metric (see the module docstring for the sides)."""
    a = design_assignment(design, cfg)
    t_users, t_items = a.treated_users(pop.user_id), a.treated_items(pop.item_id)
    users = estimates(user_side(log_.pairs, pop, t_users), cfg, 1, ratio=True)
    scope = in_scope(pop)
    if design == "user":
        out = users
        out["ti30"] = {k: {"available": False, "reason": "user-side design: every item is served to both arms"}
                       for k in ti30_cohorts(pop)}
        out["gini"] = {"treated": exposure_gini(log_.pairs[_rows_of(log_.pairs, pop, t_users, "user_id")],
                                                np.arange(len(pop.item_id)), pop),
                       "control": exposure_gini(log_.pairs[_rows_of(log_.pairs, pop, ~t_users, "user_id")],
                                                np.arange(len(pop.item_id)), pop)}
        return out
    side = (item_side(log_.pairs, pop, t_items) if design == "item"
            else cell_side(log_.pairs, pop, t_users, t_items))
    out = estimates(side, cfg, 2, ratio=False)
    out["search_gmv"] = users["search_gmv"] | {"units": "users (coupled buckets)"}
    ti = ti30_values(log_.label_gmv, pop)
    out["ti30"] = ti30_block(ti, ti, t_items, ~t_items, pop, cfg, days)
    out["gini"] = {"treated": exposure_gini(log_.pairs, np.flatnonzero(scope & t_items), pop),
                   "control": exposure_gini(log_.pairs, np.flatnonzero(scope & ~t_items), pop)}
    return out


def _rows_of(pairs: pd.DataFrame, pop: Population, mask: np.ndarray, col: str) -> np.ndarray:
    ids = pop.user_id if col == "user_id" else pop.item_id
    return mask[unit_index(pairs[col].to_numpy(), ids)]


def global_estimates(treated: ArmLog, control: ArmLog, pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """The true global effect: fully treated vs fully untreated world (paired units)."""
    out = estimates(global_side(treated.pairs, control.pairs, pop, "users"), cfg, 3, ratio=True)
    every = np.ones(len(pop.item_id), bool)
    out["ti30"] = ti30_block(ti30_values(treated.label_gmv, pop), ti30_values(control.label_gmv, pop),
                             every, every, pop, cfg, days)
    rows = np.arange(len(pop.item_id))
    out["gini"] = {"treated": exposure_gini(treated.pairs, rows, pop), "control": exposure_gini(control.pairs, rows, pop)}
    return out


HEADLINE = ("new_item_gmv", "search_gmv", "pvr")


def _test_day(daily: pd.DataFrame, pop: Population) -> np.ndarray:
    return daily["day"].to_numpy(np.int64) - pop.start


def design_trajectory(design: str, log_: ArmLog, pop: Population, cfg: ABTestConfig) -> dict:
    """Per test day, the design's cumulative estimates (the panels and seeds of `design_estimates`)."""
    a = design_assignment(design, cfg)
    t_users, t_items = a.treated_users(pop.user_id), a.treated_items(pop.item_id)
    daily, n_days = log_.daily, pop.end - pop.start + 1
    users = trajectory(user_side(daily, pop, t_users), _test_day(daily, pop), n_days, cfg, 1, ratio=True)
    if design == "user":
        return users
    side = (item_side(daily, pop, t_items) if design == "item" else cell_side(daily, pop, t_users, t_items))
    return trajectory(side, _test_day(daily, pop), n_days, cfg, 2, ratio=False,
                      metrics=("new_item_gmv", "pvr")) | {"search_gmv": users["search_gmv"]}


def global_trajectory(treated: ArmLog, control: ArmLog, pop: Population, cfg: ABTestConfig) -> dict:
    """Per test day, the true global effect's cumulative estimates (the panel and seed of `global_estimates`)."""
    day = np.concatenate([_test_day(treated.daily, pop), _test_day(control.daily, pop)])
    return trajectory(global_side(treated.daily, control.daily, pop, "users"), day, pop.end - pop.start + 1, cfg, 3,
                      ratio=True)


def bias_table(est: dict, truth: dict) -> dict:
    """Design estimate, true global effect and bias (estimate - truth, percentage points) per metric."""
    rows = {}
    for k in HEADLINE:
        rows[k] = {"estimate_pct": est[k]["rel_pct"], "true_pct": truth[k]["rel_pct"],
                   "bias_pp": est[k]["rel_pct"] - truth[k]["rel_pct"]}
    for cohort, e in est["ti30"].items():
        t = truth["ti30"][cohort]
        if e.get("available") and t.get("available"):
            rows[f"ti30_{cohort}"] = {"estimate_pct": e["rel_pct"], "true_pct": t["rel_pct"],
                                      "bias_pp": e["rel_pct"] - t["rel_pct"]}
    return rows


def analyse(exp: Experiment, logs: Mapping[str, ArmLog], pop: Population) -> dict:
    """The report's content: design estimates, the global truth, their bias, run facts."""
    est = design_estimates(exp.design, logs[exp.design], pop, exp.cfg, exp.days)
    truth = global_estimates(logs[TREATED], logs[CONTROL], pop, exp.cfg, exp.days)
    a = design_assignment(exp.design, exp.cfg)
    return {
        "design": exp.design, "release": exp.release_id, "days": exp.days,
        "start": day_ds(pop.start), "end": day_ds(pop.end),
        "seed": exp.seed, "config": exp.cfg.model_dump(mode="json"),
        "treated_users": float(a.treated_users(pop.user_id).mean()),
        "treated_new_items": float(a.treated_items(pop.item_id[in_scope(pop)]).mean()),
        "served": {arm: {"placements": lg.served, "requests": lg.requests, "retriever": lg.retriever}
                   for arm, lg in logs.items()},
        "estimate": est, "global": truth, "bias": bias_table(est, truth),
        "trajectory": {"days": [day_ds(d) for d in range(pop.start, pop.end + 1)],
                       "estimate": design_trajectory(exp.design, logs[exp.design], pop, exp.cfg),
                       "global": global_trajectory(logs[TREATED], logs[CONTROL], pop, exp.cfg)},
        "retrain": {arm: lg.retrain for arm, lg in logs.items() if lg.retrain is not None} or None,
        "notes": NOTES,
    }


NOTES = ("Intervals: 95% percentile bootstrap; user-side metrics resample users, item-side metrics items, "
         "two-sided cells users and items independently; the global effect resamples the same units in both "
         "worlds (paired). Gini values are points (no interval).")


def run_experiment(exp: Experiment, progress: bool = True) -> dict:
    logs, pop = run_arms(exp, progress)
    return analyse(exp, logs, pop)


# -- inputs from the lake and the release store -----------------------------------------------------

def start_state(lake: Lake, ds: str | None = None) -> tuple[str, bytes]:
    """(ds, serialised world) of the lake's last stored end-of-day state (or of `ds`). Read only."""
    states = saved_states(lake)
    if not states:
        raise FileNotFoundError(f"no simulator state in {lake.store.uri}: simulate first")
    ds = ds or states[-1]
    if ds not in states:
        raise FileNotFoundError(f"no simulator state for {ds}; stored: {states[0]}..{states[-1]}")
    return ds, to_bytes(load_world(lake, ds))


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
        scorer = _cached(ItemLTVScorer(store.read(rel.release_id, "itemltv.safetensors")))
    ids, scores = pool["item_id"].to_numpy(np.int64), pool["score"].to_numpy(np.float64)
    order = np.argsort(ids)
    log.info("release %s (ds=%s): pool of %d items", rel.release_id, release_ds(rel), len(pool))
    return rel.release_id, lambda: PoolRetriever(ids[order], scores[order], pool_size, k, scorer)


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


def write_report(lake: Lake, ds: str, result: dict) -> list[str]:
    """`reports/abtest/ds=<ds>/<design>.json`, `.md` and `<design>_trajectory.png` (the only writes
    into the lake)."""
    design = report_name(result)
    keys = [catalog.report_key(REPORT, ds, f"{design}.{ext}") for ext in ("json", "md")]
    lake.store.put_bytes(keys[0], json.dumps(result, indent=2, default=float).encode())
    lake.store.put_bytes(keys[1], markdown(result).encode())
    if "trajectory" in result:
        keys.append(catalog.report_key(REPORT, ds, f"{design}_trajectory.png"))
        lake.store.put_bytes(keys[2], trajectory_png(result))
    return keys


def report_name(r: dict) -> str:
    """`<design>`, or `<design>_retrain` for a closed-loop test (both reports can sit side by side)."""
    return f"{r['design']}_retrain" if r.get("retrain") else r["design"]


# -- the trajectory plot ----------------------------------------------------------------------------

METRIC_TITLES = {"new_item_gmv": "new-item GMV", "search_gmv": "overall search GMV",
                 "pvr": "page-view ratio of new items"}


def trajectory_png(r: dict) -> bytes:
    """One panel per headline metric: the cumulative relative effect (%) after each test day, the
    design's estimate and the true global effect, each with its 95% bootstrap band; zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    traj = r["trajectory"]
    x = np.arange(1, len(traj["days"]) + 1)
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(13, 4.6), layout="constrained")
    for ax, metric in zip(axes, HEADLINE, strict=True):
        for block, label, colour in (("estimate", f"{r['design']}-side design estimate", "tab:blue"),
                                     ("global", "true global effect (fully treated vs untreated)", "tab:orange")):
            t = traj[block][metric]
            ax.fill_between(x, t["lo"], t["hi"], color=colour, alpha=0.2, linewidth=0,
                            label=f"{label}: 95% interval")
            ax.plot(x, t["rel_pct"], color=colour, marker="o", markersize=3, label=label)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{METRIC_TITLES[metric]} (paper: {PAPER_PCT[metric]:+.2f}%)", fontsize=10)
        ax.set_xlabel(f"test day (cumulative from {traj['days'][0]})")
        ax.set_ylabel("treated vs control (%)")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    loop = ", retrained daily" if r.get("retrain") else ""
    fig.suptitle(f"A/B `{r['design']}` of release {r['release']}{loop}: cumulative estimates, 95% bootstrap intervals",
                 fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# -- the closed loop (--retrain) --------------------------------------------------------------------

Step = tuple[str, Callable[["Settings", str], dict]]


def daily_steps() -> list[Step]:
    """(name, step function `(settings, ds) -> dict`) of the daily pipeline in its dependency order
    (`growthgr.steps`, the registry the DAG is made from): what Airflow runs, in-process."""
    from growthgr.steps import in_order

    return [(step.name, step.run) for step in in_order()]


def run_pipeline_day(settings: Settings, ds: str, steps: Sequence[Step]) -> dict:
    """Run the steps for `ds` in order, in-process (each through `pipeline.timed`, which records its
    duration in the lake); stop at the first failure. Returns ok, failed step and error, seconds."""
    from growthgr.pipeline import timed

    out: dict = {"ok": True, "failed_step": None, "error": None, "seconds": {}}
    for name, step in steps:
        started = time.perf_counter()
        try:
            timed(step, settings, ds, name=name)
        except Exception as exc:            # a refusing gate, a failed job: the day publishes nothing
            log.warning("closed loop ds=%s: step %s failed: %s", ds, name, exc)
            out.update(ok=False, failed_step=name, error=f"{type(exc).__name__}: {exc}"[:1000])
            return out
        finally:
            out["seconds"][name] = round(time.perf_counter() - started, 3)
    return out


class ClosedLoop:
    """The retriever of one retraining arm (`--retrain`): it serves its arm's current release (the
    pool, refreshed with the release's frozen ItemLTV like a plain `PoolRetriever`); after each day
    it writes the day's raw and truth tables into the arm's lake copy, runs the daily pipeline for
    the day on it (the arm's own release store) and, when the day published a release, serves that
    one from the next day. A day whose pipeline fails (a gate refuses) keeps the last good release;
    `history` records every day (served release, channel placements, pipeline outcome, next release)."""

    name = "closed_loop"

    def __init__(self, settings: Settings, steps: Sequence[Step], pool_size: int, k: int, refresh: bool = True,
                 channel: str = "pool", last_ds: str | None = None):
        self.settings, self.steps, self.channel, self.last_ds = settings, list(steps), channel, last_ds
        self.pool_size, self.k, self.refresh = pool_size, k, refresh
        self.lake, self.store = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
        self.history: list[dict] = []
        self._load(self.store.current_id())

    def _load(self, release_id: str) -> None:
        self.release_id, make = release_retriever(self.store, release_id, self.pool_size, self.k, self.refresh,
                                                  self.channel, self.settings)
        self.pool: PoolRetriever | MultiGRRetriever = make()          # type: ignore[assignment]

    def retrieve(self, requests: RequestBatch, catalog: CatalogView) -> Candidates:
        return self.pool.retrieve(requests, catalog)

    def observe(self, day: int, raw: Mapping[str, pa.Table], truth: Mapping[str, pa.Table] | None = None) -> None:
        ds = day_ds(day)
        placed = _placed_items(raw)
        entry = {"ds": ds, "served_release": self.release_id, "retriever": self.pool.name,
                 "placements": int(len(placed)),
                 "placed_in_pool": float(np.isin(placed, self.pool.item_id).mean()) if len(placed) else None}
        for zone, tables in (("raw", raw), ("truth", truth or {})):
            for name, t in tables.items():
                self.lake.write_partition(zone, name, ds, t)
        self.pool.observe(day, raw, truth)           # tomorrow's fallback: the frozen model's refresh
        if ds == self.last_ds:                       # its release would serve no test day
            entry.update(pipeline={"ok": True, "skipped": "last test day", "failed_step": None, "seconds": {}},
                         published=False, next_release=self.release_id, next_pool_size=int(len(self.pool.item_id)))
            self.history.append(entry)
            return
        entry["pipeline"] = run_pipeline_day(self.settings, ds, self.steps)
        current = self.store.current_id()
        entry["published"] = entry["pipeline"]["ok"] and current != self.release_id
        if entry["published"]:
            self._load(current)
        elif entry["pipeline"]["ok"]:
            entry["pipeline"]["note"] = f"no new release became current (current: {current})"
        entry["next_release"], entry["next_pool_size"] = self.release_id, int(len(self.pool.item_id))
        log.info("closed loop %s: served %s, pipeline %s, serving %s from tomorrow", ds, entry["served_release"],
                 "ok" if entry["pipeline"]["ok"] else f"failed at {entry['pipeline']['failed_step']}", self.release_id)
        self.history.append(entry)


def _placed_items(raw: Mapping[str, pa.Table]) -> np.ndarray:
    cand = raw["rank_candidates"]
    channel = cand.column("channel").to_numpy(zero_copy_only=False)
    return cand.column("item_id").to_numpy(zero_copy_only=False)[channel == CHANNEL].astype(np.int64)


MARKER = ".growthgr-abtest"


def prepare_workdir(workdir: Path) -> Path:
    """An empty A/B working directory (one this command made before is cleared; anything else refused)."""
    import shutil

    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise FileExistsError(f"{workdir} is not empty and is not an A/B working directory: choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("A/B closed-loop working directory (lake and release store copies per arm)\n")
    return workdir


def closed_loop_factory(settings: Settings, workdir: Path, release: str, steps: Sequence[Step] | None = None,
                        refresh: bool = True, retrain_arms: Sequence[str] | None = None, last_ds: str | None = None,
                        ) -> Callable[[str], Retriever]:
    """The `Experiment.make_arm_retriever` of `--retrain`: each retraining arm gets a copy of the
    source lake and release store under `workdir/<arm>/` (the sources are only read), serving
    `release` first; the fully untreated arm does not retrain (its channel serves nothing, so its
    models could not change what it serves) and gets a plain `PoolRetriever`. `steps`: default the
    daily pipeline's (`daily_steps`); `last_ds`: the last test day, after which no pipeline runs."""
    import shutil

    for root in (settings.lake_root, settings.releases_root):
        if "://" in root:
            raise ValueError(f"--retrain copies the lake and the release store locally; {root} is not local")
    steps = daily_steps() if steps is None else steps
    log.info("closed loop: after each test day %s", " -> ".join(name for name, _ in steps))
    source = ReleaseStore.from_settings(settings)
    release_id, plain = release_retriever(source, release, settings.itemltv.pool_size, settings.abtest.candidates,
                                          refresh)      # the untreated arm's: it never retrieves
    arms = set(retrain_arms) if retrain_arms is not None else None

    def make(arm: str) -> Retriever:
        if arm == CONTROL or (arms is not None and arm not in arms):
            return plain()
        home = Path(workdir) / arm
        shutil.copytree(settings.lake_root, home / "lake", ignore=shutil.ignore_patterns("*.lock"))
        if Path(settings.releases_root).exists():
            shutil.copytree(settings.releases_root, home / "releases")
        arm_settings = settings.model_copy(update={
            "lake_root": str(home / "lake"), "releases_root": str(home / "releases"),
            "storage": settings.storage.model_copy(update={"state_dir": None})})
        store = ReleaseStore.from_settings(arm_settings)
        if store.current_id() != release_id:
            store.set_current(release_id)
        return ClosedLoop(arm_settings, steps, settings.itemltv.pool_size, settings.abtest.candidates, refresh,
                          settings.abtest.channel, last_ds)
    return make


# -- text -------------------------------------------------------------------------------------------

def _fmt(e: dict) -> str:
    if not e.get("available", True):
        return "n/a"
    lo, hi = e["ci95_pct"]
    return f"{e['rel_pct']:+.2f}% [{lo:+.2f}, {hi:+.2f}]"


# The paper's online A/B results (GrowthGR vs production, user-side test; TI@30 for items launched
# under the treatment), shown next to the simulated ones: the same metric names, a different platform.
PAPER_PCT = {"new_item_gmv": 5.39, "search_gmv": 0.31, "pvr": 1.54, "ti30": 20.0}


def markdown(r: dict) -> str:
    """The report as Markdown: headline table (design vs global truth), TI@30, categories, Gini."""
    est, truth = r["estimate"], r["global"]
    loop = " (closed loop: retrained daily)" if r.get("retrain") else ""
    lines = [f"# A/B test `{r['design']}` of release {r['release']}{loop}", "",
             f"{r['days']} simulated days {r['start']}..{r['end']}; treated users {r['treated_users']:.1%}, "
             f"treated new items {r['treated_new_items']:.1%}.", "",
             "| metric | design estimate (95% CI) | units | true global effect (95% CI) | bias (pp) | paper |",
             "|---|---|---|---|---|---|"]
    for k in HEADLINE:
        b = r["bias"][k]["bias_pp"]
        lines.append(f"| {k} | {_fmt(est[k])} | {est[k].get('units', '')} | {_fmt(truth[k])} | {b:+.2f} | "
                     f"{PAPER_PCT[k]:+.2f}% |")
    for cohort in truth["ti30"]:
        e, t = est["ti30"][cohort], truth["ti30"][cohort]
        b = r["bias"].get(f"ti30_{cohort}", {}).get("bias_pp")
        why = e.get("reason") or t.get("reason") or ""
        lines.append(f"| ti30 ({cohort}) | {_fmt(e)} | items | {_fmt(t)} | "
                     f"{'' if b is None else f'{b:+.2f}'} {'' if b is not None else why} | "
                     f"{PAPER_PCT['ti30']:+.2f}% (launched under treatment) |")
    g, tg = est["gini"], truth["gini"]
    lines += [f"| exposure Gini | {g['treated']:.4f} vs {g['control']:.4f} | | {tg['treated']:.4f} vs "
              f"{tg['control']:.4f} | | |", "",
              "## New-item PV and GMV by category (design estimate / true global effect)", "",
              "| category | PV | PV (global) | GMV | GMV (global) |", "|---|---|---|---|---|"]
    for c, e in est["category"].items():
        t = truth["category"][c]
        lines.append(f"| {c} | {_fmt(e['pv'])} | {_fmt(t['pv'])} | {_fmt(e['gmv'])} | {_fmt(t['gmv'])} |")
    lines += trajectory_lines(r)
    lines += retrain_lines(r)
    lines += ["", r["notes"], ""]
    return "\n".join(lines)


def retrain_lines(r: dict) -> list[str]:
    """The closed loop's days per retraining arm: served release, pipeline outcome, next release."""
    if not r.get("retrain"):
        return []
    out = ["", "## Closed loop (`--retrain`): the daily pipeline after every test day, on each arm's lake copy", "",
           "| arm | ds | served release | channel placements (in its pool) | pipeline | seconds | serving next day |",
           "|---|---|---|---|---|---|---|"]
    for arm, days in r["retrain"].items():
        for e in days:
            p = e["pipeline"]
            outcome = ("published" if e["published"] else "ok, nothing new") if p["ok"] else \
                f"FAILED at {p['failed_step']}: keeps the last good release"
            if p.get("skipped"):
                outcome = f"not run ({p['skipped']})"
            share = "" if e["placed_in_pool"] is None else f" ({e['placed_in_pool']:.0%})"
            out.append(f"| {arm} | {e['ds']} | {e['served_release']} | {e['placements']}{share} | {outcome} | "
                       f"{sum(p['seconds'].values()):.0f} | {e['next_release']} |")
    ran = [(arm, e) for arm, days in r["retrain"].items() for e in days if e["pipeline"]["seconds"]]
    if ran:
        steps = list(dict.fromkeys(k for _, e in ran for k in e["pipeline"]["seconds"]))
        out += ["", "Seconds per pipeline step (the daily DAG's tasks, in the order they ran):", "",
                "| step | " + " | ".join(f"{arm} {e['ds']}" for arm, e in ran) + " |", "|---|" + "---|" * len(ran)]
        for step in steps + ["total"]:
            cells = [e["pipeline"]["seconds"].get(step) if step != "total" else sum(e["pipeline"]["seconds"].values())
                     for _, e in ran]
            out.append(f"| {step} | " + " | ".join("" if c is None else f"{c:.1f}" for c in cells) + " |")
    return out


def trajectory_lines(r: dict) -> list[str]:
    """The trajectory at days 1, 7, 14, ... and the last day (the plot has every day)."""
    if "trajectory" not in r:
        return []
    traj, n = r["trajectory"], len(r["trajectory"]["days"])
    shown = sorted({0, n - 1, *range(6, n, 7)})
    out = ["", f"## Trajectory: cumulative estimate after each test day (design / true global effect; plot: "
           f"`{report_name(r)}_trajectory.png`)", "",
           "| day | ds | " + " | ".join(f"{k} | {k} (global)" for k in HEADLINE) + " |",
           "|---|---|" + "---|---|" * len(HEADLINE)]
    for d in shown:
        cells = []
        for k in HEADLINE:
            for block in ("estimate", "global"):
                t = traj[block][k]
                cells.append(_fmt({"rel_pct": t["rel_pct"][d], "ci95_pct": [t["lo"][d], t["hi"][d]]}))
        out.append(f"| {d + 1} | {traj['days'][d]} | " + " | ".join(cells) + " |")
    return out


def summary_lines(r: dict) -> list[str]:
    """A few lines for the terminal."""
    out = [f"abtest {r['design']} {r['start']}..{r['end']} ({r['days']} days), release {r['release']}"]
    for k in HEADLINE:
        out.append(f"  {k:<14} estimate {_fmt(r['estimate'][k]):<34} global {_fmt(r['global'][k]):<34} "
                   f"bias {r['bias'][k]['bias_pp']:+.2f} pp")
    for cohort, e in r["estimate"]["ti30"].items():
        out.append(f"  ti30 {cohort:<22} estimate {_fmt(e):<34} global {_fmt(r['global']['ti30'][cohort])}"
                   + (f"  ({e['reason']})" if not e.get("available", True) else ""))
    for arm, days in (r.get("retrain") or {}).items():
        ok = sum(e["published"] for e in days)
        out.append(f"  closed loop {arm}: {ok}/{len(days)} days published a release; serving "
                   f"{days[-1]['next_release'] if days else '-'} at the end")
    return out


__all__ = ["DESIGNS", "Assignment", "design_assignment", "Candidates", "Retriever", "PoolRetriever", "ItemLTVScorer",
           "GrowthGRChannel", "channel_slots", "ArmLog", "Population", "run_arm", "Experiment", "run_experiment",
           "run_arms", "analyse", "start_state", "release_retriever", "write_report", "markdown", "summary_lines",
           "trajectory", "trajectory_png", "ClosedLoop", "closed_loop_factory", "daily_steps", "run_pipeline_day",
           "prepare_workdir"]
