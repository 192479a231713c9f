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
slate), so such requests get no channel item. A MultiGR-backed retriever (beam search over the
release's SID trie) replaces the pool by implementing `Retriever`.

The pool is refreshed daily the way the daily pipeline would with a frozen model: after each
simulated day `Retriever.observe` gets the day's raw tables; `PoolRetriever` scores the day's
new items with the release's ItemLTV base tower (`ItemLTVScorer`) and serves them from the
next day (the pool of ds serves ds + 1); the active pool is the top `pool_size` scored items
in their new-item period. `--retrain` (the closed loop through the full pipeline) plugs in at
the same place: an `observe` that writes the day to a scratch lake, runs the pipeline and
reloads its retriever. Not built yet.

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
Each estimate is rate_treated / rate_control - 1 (rate = total per unit of the arm) with a 95%
percentile bootstrap interval: users resampled for user-side metrics, items for item-side
ones, users and items independently for two-sided cells. The true global effect compares the
fully treated with the fully untreated world, resampling the same units in both (paired).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from growthgr.core import catalog
from growthgr.core.calendar import COHORT_OFFSET, LABEL_WINDOW, NEW_ITEM_DAYS
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore, release_ds
from growthgr.core.sections.abtest import ABTestConfig
from growthgr.simulator.channels import ITEM_SALT, USER_SALT, CatalogView, ChannelSlot, RequestBatch, bucket
from growthgr.simulator.engine import simulate_day
from growthgr.simulator.run import default_channels, load_world, saved_states
from growthgr.simulator.stats import gini
from growthgr.simulator.text import N_CATEGORIES
from growthgr.simulator.world import World, day_ds, from_bytes, to_bytes

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

    def observe(self, day: int, raw: Mapping[str, pa.Table]) -> None:
        """The day's raw logs, after the day: refresh the pool / model for tomorrow."""
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

    def observe(self, day: int, raw: Mapping[str, pa.Table]) -> None:
        if self.scorer is None or "items" not in raw or raw["items"].num_rows == 0:
            return
        items = raw["items"].to_pandas()
        self.item_id = np.concatenate([self.item_id, items["item_id"].to_numpy(np.int64)])
        self.score = np.concatenate([self.score, self.scorer(items)])
        order = np.argsort(self.item_id, kind="stable")
        self.item_id, self.score = self.item_id[order], self.score[order]


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
        cand = self.retriever.retrieve(requests, catalog)
        valid = cand.item >= 0
        if valid.any():
            valid &= self.assignment.pairs(requests.user_id, catalog.item_id[np.maximum(cand.item, 0)])
        rel = query_relevance(requests.query_offset, catalog.offset, cand.item)
        score = zscore(cand.score, valid) + self.affinity_weight * zscore(rel, valid)
        return pick(cand.item, score, valid, self.rank)


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
        pairs.append(p)
        labels.append(lab)
        served, requests = served + n, requests + out.raw["search_requests"].num_rows
        retriever.observe(day, out.raw)
        tick()
    return ArmLog(pd.concat(pairs, ignore_index=True).groupby(["user_id", "item_id"]).sum().reset_index(),
                  pd.concat(labels, ignore_index=True).groupby("item_id")["gmv"].sum().reset_index(),
                  served, requests)


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
        retriever = exp.make_retriever()
        logs[arm] = run_arm(w, exp.days, channel_slots(exp.cfg, retriever, design_assignment(arm, exp.cfg)),
                            retriever, lambda: bar.update(1))
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
        "served": {arm: {"placements": lg.served, "requests": lg.requests} for arm, lg in logs.items()},
        "estimate": est, "global": truth, "bias": bias_table(est, truth),
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
                      refresh: bool = True) -> tuple[str, Callable[[], Retriever]]:
    """(release id, a factory of fresh `PoolRetriever`s) from a release's pool (+ its ItemLTV
    checkpoint for the daily refresh, shared by every arm: new items get the same scores)."""
    rel = store.get(release)
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
    """`reports/abtest/ds=<ds>/<design>.json` and `.md` (the only writes into the lake)."""
    keys = [catalog.report_key(REPORT, ds, f"{result['design']}.{ext}") for ext in ("json", "md")]
    lake.store.put_bytes(keys[0], json.dumps(result, indent=2, default=float).encode())
    lake.store.put_bytes(keys[1], markdown(result).encode())
    return keys


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
    lines = [f"# A/B test `{r['design']}` of release {r['release']}", "",
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
    lines += ["", r["notes"], ""]
    return "\n".join(lines)


def summary_lines(r: dict) -> list[str]:
    """A few lines for the terminal."""
    out = [f"abtest {r['design']} {r['start']}..{r['end']} ({r['days']} days), release {r['release']}"]
    for k in HEADLINE:
        out.append(f"  {k:<14} estimate {_fmt(r['estimate'][k]):<34} global {_fmt(r['global'][k]):<34} "
                   f"bias {r['bias'][k]['bias_pp']:+.2f} pp")
    for cohort, e in r["estimate"]["ti30"].items():
        out.append(f"  ti30 {cohort:<22} estimate {_fmt(e):<34} global {_fmt(r['global']['ti30'][cohort])}"
                   + (f"  ({e['reason']})" if not e.get("available", True) else ""))
    return out


__all__ = ["DESIGNS", "Assignment", "design_assignment", "Candidates", "Retriever", "PoolRetriever", "ItemLTVScorer",
           "GrowthGRChannel", "channel_slots", "ArmLog", "Population", "run_arm", "Experiment", "run_experiment",
           "run_arms", "analyse", "start_state", "release_retriever", "write_report", "markdown", "summary_lines"]
