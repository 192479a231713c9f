"""Retrieval channels: plug-in slot placement, share, user-side and item-side A/B buckets; the
platform's new-item channels (propensities that match their placement frequencies, the uniform
exploration bucket, disjoint request buckets) and the traffic-support experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sim_fixtures import final_world, read_all, tiny_config

from simulator.channels import (
    ITEM_SALT,
    USER_SALT,
    CatalogView,
    ChannelSlot,
    ExploreChannel,
    NewItemChannel,
    RequestBatch,
    SupportChannel,
    bucket,
    request_uniform,
)
from simulator.engine import catalog_view, make_requests, simulate_day
from simulator.run import default_channels
from simulator.world import day_rng


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
    spec = ChannelSlot(ExploreChannel(), slot=2, share=0.5, n_buckets=4, item_buckets=(0, 1))
    w, cands, _, reqs = run(spec)
    mine = cands[cands["channel"] == "explore"]
    assert 0.1 * len(reqs) < len(mine) < 0.5 * len(reqs)          # ~share x item-bucket share, less duplicates
    assert set(bucket(mine["item_id"].to_numpy(), ITEM_SALT, 4)) <= {0, 1}
    age = w.last_day - pd.Series(w.items["listing_day"], index=w.items["item_id"]).loc[mine["item_id"]].to_numpy()
    assert (age < 30).all()


# -- the platform's new-item channels ---------------------------------------------------------------

def day_inputs():
    """The requests and catalog view the channels see on the day after the tiny world's end."""
    w = final_world()
    day = w.last_day + 1
    req, _, _ = make_requests(w, day, day_rng(w.seed, day))
    return req, catalog_view(w, day)


def policy(channel, req, view, r):
    """The channel's full distribution over the eligible items of request position r: (rows, probs)."""
    rows = channel.eligible(view)
    rows = rows[view.category[rows] == req.category[r]]
    if isinstance(channel, ExploreChannel):
        return rows, np.full(len(rows), 1 / len(rows))
    w = channel.weights(req, view, np.array([r]), rows)[0].astype(np.float64)
    return rows, w / w.sum()


def binned(observed: np.ndarray, expected: np.ndarray, least: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Pool cells, smallest expected first, into bins of >= `least` expected (the last bin may be merged back)."""
    obs, exp, o, e = [], [], 0.0, 0.0
    for k in np.argsort(expected):
        o, e = o + observed[k], e + expected[k]
        if e >= least:
            obs.append(o), exp.append(e)
            o, e = 0.0, 0.0
    if e > 0:
        obs[-1], exp[-1] = obs[-1] + o, exp[-1] + e
    return np.array(obs), np.array(exp)


@pytest.mark.parametrize("channel", [NewItemChannel(0.5, 0.5), NewItemChannel(0.25, 1.0), ExploreChannel()],
                         ids=["new_item", "new_item_cold", "explore"])
def test_logged_propensities_match_placement_frequencies(channel):
    """Each request's policy sums to 1, the propensity a proposal carries is its policy probability, and
    over many draws the placements follow the policy (chi-square per request, binned to >= 5 expected)."""
    req, view = day_inputs()
    picks = [r for r in range(len(req.request_id)) if len(policy(channel, req, view, r)[0]) >= 5][:4]
    assert len(picks) == 4
    n = 4000
    batch = req.take(np.repeat(np.array(picks), n))
    out, prop = channel.propose(batch, view, np.random.default_rng(0))
    for k, r in enumerate(picks):
        rows, p = policy(channel, req, view, r)
        assert p.sum() == pytest.approx(1.0, abs=1e-9) and (p > 0).all()
        got, got_p = out[k * n:(k + 1) * n], prop[k * n:(k + 1) * n]
        assert np.isin(got, rows).all()
        np.testing.assert_allclose(got_p, p[np.searchsorted(rows, got)], rtol=1e-5)
        counts, expected = np.bincount(np.searchsorted(rows, got), minlength=len(rows)), n * p
        obs_b, exp_b = binned(counts, expected)
        assert len(obs_b) >= 2 and stats.chisquare(obs_b, exp_b).pvalue > 1e-3


def test_new_item_channel_prefers_items_matching_the_query_words():
    req, view = day_inputs()
    ch = NewItemChannel(0.25, 0.5)
    with_attr = [r for r in range(len(req.request_id)) if req.query_attr[r] >= 0][:30]
    lift = []
    for r in with_attr:
        rows, p = policy(ch, req, view, r)
        match = (view.attrs[rows] == req.query_attr[r]).any(1)
        if match.any() and (~match).any():
            lift.append(p[match].mean() / p[~match].mean())
    assert len(lift) >= 5 and min(lift) > 1.0


def test_every_placement_logs_its_channel_and_propensity_and_buckets_are_disjoint():
    cands = read_all("rank_candidates")
    exps = read_all("exposures")
    assert set(cands["channel"]) == {"main", "new_item", "explore", "support"}
    assert (cands.loc[cands["channel"] == "main", "propensity"] == 1.0).all()
    assert cands["propensity"].between(0, 1, inclusive="right").all()
    assert exps["propensity"].notna().all() and set(exps["channel"]) <= set(cands["channel"])
    shown = exps.merge(cands, on=["request_id", "item_id"], suffixes=("", "_cand"))
    assert len(shown) == len(exps)
    assert (shown["channel"] == shown["channel_cand"]).all() and (shown["propensity"] == shown["propensity_cand"]).all()
    cfg = tiny_config()
    for name, lo, hi in (("explore", 0, cfg.explore_share),
                         ("new_item", cfg.explore_share, cfg.explore_share + cfg.new_item_share)):
        u = request_uniform(cands.loc[cands["channel"] == name, "request_id"].to_numpy())
        assert ((u >= lo) & (u < hi)).all()
    # explore: 1/N, N the new items of the request's category that day
    ex = cands[cands["channel"] == "explore"]
    assert (1 / ex["propensity"]).round(6).eq((1 / ex["propensity"]).round()).all()


def test_support_arm_is_randomised_at_listing_and_gets_its_impressions():
    cfg = tiny_config()
    arms = read_all("item_experiments")
    items = read_all("items")
    assert set(arms["experiment"]) == {"traffic_support"} and set(arms["arm"]) == {"control", "support"}
    first = arms["assigned_date"].min()
    assert set(arms["item_id"]) == set(items.loc[items["listing_date"] >= first, "item_id"])   # every new item once
    assert arms["item_id"].is_unique and abs((arms["arm"] == "support").mean() - cfg.support_share) < 0.1
    exps = read_all("exposures")
    shown = exps[exps["channel"] == "support"].groupby("item_id").size()
    last = exps["ts"].max().date()
    done = arms[arms["assigned_date"] <= last - pd.Timedelta(days=cfg.support_days)]
    assert shown.reindex(done.loc[done["arm"] == "control", "item_id"]).isna().all()
    assert shown.reindex(done.loc[done["arm"] == "support", "item_id"], fill_value=0).mean() >= 0.7 * cfg.support_impressions
    assert shown.max() <= cfg.support_impressions + 3


def test_default_channels_follow_the_config():
    cfg = tiny_config()
    names = [(s.channel.name, s.slot, s.share, s.share_from) for s in default_channels(cfg)]
    assert names == [("support", cfg.support_slot, 1.0, 0.0), ("explore", cfg.new_item_slot, cfg.explore_share, 0.0),
                     ("new_item", cfg.new_item_slot, cfg.new_item_share, cfg.explore_share)]
    assert isinstance(default_channels(cfg)[0].channel, SupportChannel)
    assert default_channels(tiny_config(support_share=0.0, explore_share=0.0, new_item_share=0.0)) == []
