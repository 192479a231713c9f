"""The ground truth is a real counterfactual of the simulator's own dynamics.

Closed form (engine docstring): the label-window rate is (1 + B) e^G - 1, so
log(1 + expected mean daily orders, days 30..36) = log(1 + B) + G and a click's
true uplift is its growth increment delta. Checked three ways:
1. Monte Carlo of the engine's label-window order draws: log(1 + mean orders)
   moves by exactly delta between G and G + delta;
2. the tiny world's realised label-window orders match the closed-form rate;
3. re-simulation with common random numbers: the whole world re-run with a
   sample of exposures' clicks flipped leaves every day before the treated
   items' day 30 byte-identical, moves G by exactly the truth, and moves the
   label-window orders by the closed-form amount.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sim_fixtures import SEED, START, final_world, read_all, tiny_config

from simulator.engine import label_rate, label_window_orders, poisson_icdf, simulate_day
from simulator.run import default_channels
from simulator.world import create_world, day_index


def test_poisson_icdf_is_a_poisson_sampler():
    rng = np.random.default_rng(0)
    for lam in (0.05, 1.0, 7.5, 60.0):
        k = poisson_icdf(rng.random(200_000), np.full(200_000, lam))
        assert k.mean() == pytest.approx(lam, rel=0.02, abs=0.003)
        assert k.var() == pytest.approx(lam, rel=0.05, abs=0.003)


def test_monte_carlo_label_window_agrees_with_closed_form():
    w = final_world()
    effects = read_all("click_effects", "truth").sample(100, random_state=0)
    rows = effects["item_id"].to_numpy() - 1
    base, growth, delta = w.items["base_demand"][rows], w.items["growth"][rows], effects["true_uplift"].to_numpy()
    u = np.random.default_rng(1).random((len(rows), 7 * 2_000))    # common random numbers for both arms
    with_click = label_window_orders(base, growth + delta, u).mean(1)
    without = label_window_orders(base, growth, u).mean(1)
    mc = np.log1p(with_click) - np.log1p(without)
    assert np.abs(mc - delta).max() < 0.02
    assert np.corrcoef(mc, delta)[0, 1] > 0.95


def test_realised_label_window_orders_match_the_closed_form_rate():
    w = final_world()
    listing = w.items["listing_day"]
    first = day_index(START)
    cohort = np.flatnonzero((listing >= first) & (listing <= w.last_day - 36))
    assert len(cohort) >= 50
    orders = pd.concat([read_all("purchases")[["item_id", "ds"]], read_all("site_orders")[["item_id", "ds"]]])
    orders["age"] = (pd.to_datetime(orders["ds"]) - pd.Timestamp("1970-01-01")).dt.days - orders["item_id"].map(
        pd.Series(listing, index=w.items["item_id"]))
    label = orders[orders["age"].between(30, 36) & orders["item_id"].isin(w.items["item_id"][cohort])]
    expected = 7 * label_rate(w.items["base_demand"][cohort], w.items["growth"][cohort]).sum()
    assert abs(len(label) - expected) < 4 * np.sqrt(expected)


def raw_rows(out, table: str) -> pa.Table:
    return out.raw[table]


def test_resimulation_with_common_random_numbers_agrees_with_the_truth():
    cfg, channels, first = tiny_config(), default_channels(tiny_config()), day_index(START)
    last = first + 44
    base_world = create_world(cfg, SEED, first)
    base = [simulate_day(base_world, d, channels) for d in range(first, last + 1)]
    effects = pd.concat([o.truth["click_effects"].to_pandas() for o in base])
    listing = pd.Series(base_world.items["listing_day"], index=base_world.items["item_id"])
    effects["listing_day"] = effects["item_id"].map(listing)
    # one cohort (listed on the first day), so no treated item matures while another is still new:
    # after day 29 G enters the ranker, which would change the other treated items' own clicks
    flip = effects[effects["listing_day"] == first]
    assert flip["item_id"].nunique() >= 8 and len(flip) >= 100 and (~flip["clicked"]).sum() > 0.5 * len(flip)
    pairs = flip[["request_id", "item_id"]].to_numpy()

    world = create_world(cfg, SEED, first)
    alt = [simulate_day(world, d, channels, intervention=pairs) for d in range(first, last + 1)]

    # the growth state moved by exactly the truth of the flipped exposures (+delta if added, -delta if removed)
    sign = np.where(flip["clicked"], -1.0, 1.0)
    expected_dg = pd.Series(sign * flip["true_uplift"].to_numpy()).groupby(flip["item_id"].to_numpy()).sum()
    rows = expected_dg.index.to_numpy() - 1
    np.testing.assert_allclose(world.items["growth"][rows] - base_world.items["growth"][rows], expected_dg.to_numpy(),
                               rtol=1e-9, atol=1e-12)
    # ... and therefore log(1 + expected label-window rate) by exactly the summed truth
    B = base_world.items["base_demand"][rows]
    dy = np.log1p(label_rate(B, world.items["growth"][rows])) - np.log1p(label_rate(B, base_world.items["growth"][rows]))
    np.testing.assert_allclose(dy, expected_dg.to_numpy(), rtol=1e-9, atol=1e-12)

    # nothing changes before the first treated item reaches day 30: G never feeds the new-item period
    quiet_until = first + 30
    for d in range(first, quiet_until):
        for name in base[d - first].raw:
            assert base[d - first].raw[name].equals(alt[d - first].raw[name]), (d, name)

    # label-window orders (days 30..36) of the treated items moved by the closed-form amount (CRN: same U_i)
    def label_orders(outs, items: np.ndarray) -> pd.Series:
        counts = pd.Series(0, index=items, dtype=np.int64)
        for out in outs:
            day = day_index(out.raw["search_requests"].column("ts")[0].as_py().date()) if out.raw["search_requests"].num_rows else None
            for table in ("purchases", "site_orders"):
                ids = out.raw[table].column("item_id").to_numpy()
                age = day - listing.reindex(ids).to_numpy()
                ok = np.isin(ids, items) & (age >= 30) & (age <= 36)
                counts = counts.add(pd.Series(ids[ok]).value_counts(), fill_value=0)
        return counts.reindex(items, fill_value=0)

    items = expected_dg.index.to_numpy()
    realised = label_orders(alt, items) - label_orders(base, items)
    closed = 7 * (label_rate(B, world.items["growth"][rows]) - label_rate(B, base_world.items["growth"][rows]))
    assert realised.sum() > 0 and closed.sum() > 0
    se = np.sqrt(7 * (label_rate(B, world.items["growth"][rows])).sum())
    assert abs(realised.sum() - closed.sum()) < 3 * se
    assert np.corrcoef(realised.to_numpy(), closed)[0, 1] > 0.5


# -- the evaluation-only truth function (`simulator.truth`) -----------------------------------------

def test_click_truth_reproduces_the_logged_truth_and_click_rates():
    from sim_fixtures import tiny_lake

    from simulator.truth import click_truth

    lake, cfg = tiny_lake(), tiny_config()
    days = lake.list_partitions("raw", "exposures")[-3:]
    expected_clicks, clicks = 0.0, 0
    for ds in days:
        truth = click_truth(lake, cfg, ds)
        exp = lake.read_partition("raw", "exposures", ds, ["request_id", "item_id", "position"]).to_pandas()
        effects = lake.read_partition("truth", "click_effects", ds).to_pandas().merge(exp, on=["request_id", "item_id"])
        p, up = truth.evaluate(effects["request_id"], effects["item_id"], effects["position"])
        np.testing.assert_allclose(up, effects["true_uplift"], atol=1e-6)        # exactly the logged delta
        p_all, up_all = truth.evaluate(exp["request_id"], exp["item_id"], exp["position"])
        assert ((p_all > 0) & (p_all < 1)).all() and (up_all >= 0).all()
        seen = cfg.scroll_continue ** exp["position"].to_numpy()
        expected_clicks += float((p_all / seen).sum())                           # P(click | the slot was seen)
        clicks += lake.read_partition("raw", "clicks", ds).num_rows
    assert abs(clicks - expected_clicks) < 4 * np.sqrt(expected_clicks)
    # any slate: a lower slot is clicked less; an item past its new-item period causes no growth
    r, i = int(exp["request_id"].iloc[0]), int(exp["item_id"].iloc[0])
    p_top, _ = truth.evaluate(r, i, 0)
    p_low, _ = truth.evaluate(r, i, 5)
    assert p_top > p_low > 0 and truth.evaluate(r, i, cfg.n_exposed)[0] == 0
    old = truth.item_id[truth.age >= 30][:5]
    assert (truth.evaluate(np.full(len(old), r), old, 0)[1] == 0).all()
    with pytest.raises(KeyError, match="item"):
        truth.evaluate(r, 10**12, 0)


def test_null_world_clicks_cause_nothing(tmp_path):
    from foundation.lake import Lake
    from simulator.run import simulate
    from simulator.truth import click_truth

    lake = Lake.open(str(tmp_path))
    cfg = tiny_config(growth_kappa=0.0)
    simulate(lake, cfg, seed=SEED, start=START, days=5, progress=False)
    ds = lake.list_partitions("truth", "click_effects")[-1]
    effects = lake.read_partition("truth", "click_effects", ds).to_pandas()
    assert len(effects) > 0 and (effects["true_uplift"] == 0).all()
    truth = click_truth(lake, cfg, ds)
    assert (truth.evaluate(effects["request_id"], effects["item_id"], 0)[1] == 0).all()
