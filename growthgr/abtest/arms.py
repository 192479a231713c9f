"""Running one arm: a private copy of the world continued day by day with the arm's channels,
its search logs aggregated per (user, item).

Arms and common random numbers. Every arm (the design's run, fully treated, fully untreated)
continues a private copy of the same world state with the same seed: each day draws from
`day_rng(seed, day, stream)`, arrivals and requests first (identical in every arm), the
channels from their own stream (10 + k). Every arm carries the same channel slots (the control
arm's channel proposes nothing), so slates have the same width and the funnel's uniforms are
paired by (request, position). Draws whose count depends on the outcomes (site-wide buyers,
order quantities, timestamps) are not paired once the arms differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.calendar import LABEL_WINDOW, NEW_ITEM_DAYS
from growthgr.abtest.channel import CHANNEL, Retriever
from simulator.channels import ChannelSlot
from simulator.engine import simulate_day
from simulator.run import default_channels
from simulator.world import World


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
