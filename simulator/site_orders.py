"""Site-wide orders of one simulated day (outside search): each item's orders of the day beyond
its search purchases go to buyers from its category, and each order is linked to the buyer's most
relevant search request of the last `LINK_LOOKBACK_DAYS` days (if any)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.text import N_CATEGORIES
from simulator.world import US_PER_DAY, World

LINK_LOOKBACK_DAYS = 7


@dataclass(frozen=True)
class SiteOrders:
    item: np.ndarray          # int64 (S,) catalog row
    buyer: np.ndarray         # int64 (S,) user row
    linked: np.ndarray        # int64 (S,) request_id, -1 = none
    link_score: np.ndarray    # float64 (S,) nan where none
    ts: np.ndarray            # int64 (S,) us


def site_orders(w: World, day: int, site_n: np.ndarray, rng: np.random.Generator) -> SiteOrders:
    """Buyers from the item's category; each order linked to the buyer's most relevant recent query."""
    it, users = w.items, w.users
    item = np.repeat(np.arange(w.n_items), site_n)
    cat = it["category"][item]
    by_home = np.argsort(users["home_cat"], kind="stable")
    bounds = np.searchsorted(users["home_cat"][by_home], np.arange(N_CATEGORIES + 1))
    count = (bounds[1:] - bounds[:-1])[cat]
    u = rng.random(len(item))
    in_cat = by_home[np.minimum(bounds[cat] + (u * count).astype(np.int64), w.n_users - 1)]
    buyer = np.where(count > 0, in_cat, (u * w.n_users).astype(np.int64))
    recent_ok = (users["recent_req"][buyer] >= 0) & (users["recent_day"][buyer] >= day - LINK_LOOKBACK_DAYS)
    dist2 = ((users["recent_qoff"][buyer] - it["offset"][item][:, None, :]) ** 2).sum(-1)     # (S, 3)
    score = np.exp(-0.5 * dist2) * np.where(users["recent_cat"][buyer] == cat[:, None], 1.0, 0.1)
    score = np.where(recent_ok, score, -1.0)
    best = score.argmax(1)
    has = score.max(1, initial=-1.0) >= 0
    linked = np.where(has, users["recent_req"][buyer, best], -1)
    ts = day * US_PER_DAY + rng.integers(0, US_PER_DAY, len(item))
    return SiteOrders(item, buyer, linked, np.where(has, score[np.arange(len(item)), best], np.nan), ts)
