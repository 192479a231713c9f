"""Retrieval-channel plug-ins: slot placement, share, user-side and item-side A/B buckets."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sim_fixtures import final_world

from simulator.channels import (
    ITEM_SALT,
    USER_SALT,
    CatalogView,
    ChannelSlot,
    FreshItemsChannel,
    RequestBatch,
    bucket,
)
from simulator.engine import simulate_day


class CheapestInCategory:
    """A toy plug-in: the cheapest item of the intent category listed in the last 60 days."""

    name = "cheap"

    def propose(self, requests: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> np.ndarray:
        out = np.full(len(requests.request_id), -1, dtype=np.int64)
        for c in np.unique(requests.category):
            rows = np.flatnonzero((catalog.category == c) & (catalog.age_days < 60))
            if len(rows):
                out[requests.category == c] = rows[np.argmin(catalog.price[rows])]
        return out


def run(*slots: ChannelSlot):
    w = final_world()
    out = simulate_day(w, w.last_day + 1, slots)
    return w, out.raw["rank_candidates"].to_pandas(), out.raw["exposures"].to_pandas(), out.raw["search_requests"].to_pandas()


def test_bucket_is_stable_and_balanced():
    ids = np.arange(1, 100_001)
    b = bucket(ids, USER_SALT, 10)
    assert (b == bucket(ids, USER_SALT, 10)).all()
    assert np.bincount(b, minlength=10).min() > 9_000
    assert (b != bucket(ids, ITEM_SALT, 10)).mean() > 0.8


def test_plugin_channel_fills_its_slot_for_the_user_bucket_only():
    spec = ChannelSlot(CheapestInCategory(), slot=1, share=1.0, n_buckets=2, user_buckets=(1,))
    w, cands, exps, reqs = run(spec)
    mine = cands[cands["channel"] == "cheap"]
    assert len(mine) > 0 and (mine["rank"] == 1).all()
    served_users = reqs.set_index("request_id").loc[mine["request_id"], "user_id"].to_numpy()
    assert (bucket(served_users, USER_SALT, 2) == 1).all()
    in_bucket = reqs[bucket(reqs["user_id"].to_numpy(), USER_SALT, 2) == 1]
    assert len(mine) > 0.5 * len(in_bucket)        # served unless the organic ranking already had the item
    assert set(cands["channel"]) == {"main", "cheap"}
    shown = exps.merge(mine[["request_id", "item_id"]], on=["request_id", "item_id"])
    assert len(shown) > 0 and (shown["position"] == 1).all()


def test_item_buckets_restrict_what_the_channel_places_and_share_thins_requests():
    spec = ChannelSlot(FreshItemsChannel(), slot=2, share=0.5, n_buckets=4, item_buckets=(0, 1))
    w, cands, _, reqs = run(spec)
    mine = cands[cands["channel"] == "fresh"]
    assert 0.2 * len(reqs) < len(mine) < 0.5 * len(reqs)
    assert set(bucket(mine["item_id"].to_numpy(), ITEM_SALT, 4)) <= {0, 1}
    age = w.last_day - pd.Series(w.items["listing_day"], index=w.items["item_id"]).loc[mine["item_id"]].to_numpy()
    assert (age < 30).all()
