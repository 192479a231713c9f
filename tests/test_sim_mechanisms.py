"""Each mechanism of the simulated platform is visible in its data (tiny world) or in a
controlled re-run of one day with common random numbers (same seed, one input changed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sim_fixtures import final_world, read_all, tiny_lake

from foundation.schemas import AGE_BANDS, REGIONS
from simulator.engine import simulate_day
from simulator.run import default_channels
from simulator.stats import (
    AGE_BUCKETS,
    exposure_affinity,
    exposure_gini,
    gini,
    new_item_shares,
    uplift_summary,
)
from simulator.text import ATTRIBUTES, CATEGORIES, NOUNS


def test_gini_helper():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10.0])) == pytest.approx(0.75)
    assert exposure_gini(np.array([1, 1, 2]), np.array([1, 2, 3, 4])) == pytest.approx(gini(np.array([2, 1, 0, 0.0])))


def test_sixteen_categories_and_titles_carry_category_brand_attributes():
    items = read_all("items")
    assert sorted(items["category_id"].unique()) == list(range(16))
    assert (items["category"] == items["category_id"].map(dict(enumerate(CATEGORIES)))).all()
    words = items["title"].str.split()
    assert (words.str[0] == items["brand"]).all()
    assert all(w[-1] in NOUNS[c] for w, c in zip(words, items["category_id"], strict=True))
    attrs = items["attributes"].str.split(",")
    assert all(set(w[1:3]) <= set(a) and set(a) <= set(ATTRIBUTES) for w, a in zip(words, attrs, strict=True))
    # each brand belongs to one category
    assert (items.groupby("brand")["category_id"].nunique() == 1).all()


def test_new_items_arrive_every_day():
    lake, items = tiny_lake(), read_all("items")
    for ds in lake.list_partitions("raw", "items")[1:]:
        day = items[items["ds"] == f"{ds}"]
        assert len(day) >= 1 and (day["listing_date"].astype(str) == f"{ds}").all()
    first = items[items["ds"] == "2026-01-01"]
    assert (pd.to_datetime(first["listing_date"]) <= pd.Timestamp("2026-01-01")).all()
    assert len(first) > 400


def test_niche_enthusiasts_and_mass_consumers():
    users, reqs = read_all("users", "truth"), read_all("search_requests")    # the latent segment: truth only
    assert set(users["segment"]) == {"niche", "mass"}
    r = reqs.merge(users[["user_id", "segment", "home_category_id"]], on="user_id")
    at_home = (r["intent_category_id"] == r["home_category_id"]).groupby(r["segment"]).mean()
    assert at_home["niche"] > at_home["mass"] + 0.1
    has_attr = r["query_text"].str.split().apply(lambda ws: any(w in ATTRIBUTES for w in ws))
    assert has_attr.groupby(r["segment"]).mean()["niche"] > has_attr.groupby(r["segment"]).mean()["mass"]


def test_declared_profile_correlates_with_latents_without_revealing_them():
    raw, latent = read_all("users"), read_all("users", "truth")
    assert raw["user_id"].tolist() == latent["user_id"].tolist()
    assert (raw["signup_date"] == latent["signup_date"]).all() and (raw["ds"] == latent["ds"]).all()
    u = raw.merge(latent, on="user_id")
    assert set(u["region"]) <= set(REGIONS) and set(u["age_band"]) <= set(AGE_BANDS)
    home_region = u["region"] == "region_" + (u["home_category_id"] % 8).astype(str)
    assert 0.45 < home_region.mean() < 0.7                        # 1/2 + 1/2 * 1/8 = 0.5625
    young = u["age_band"].isin(AGE_BANDS[:2]).groupby(u["segment"]).mean()
    assert young["niche"] > young["mass"] + 0.1                   # niche enthusiasts skew younger ...
    bands = pd.crosstab(u["segment"], u["age_band"])
    assert (bands > 0).all().all()                                # ... but every band holds both segments


def test_exposure_concentration_and_matthew_effect():
    exps, items = read_all("exposures"), read_all("items")
    assert exposure_gini(exps["item_id"].to_numpy(), items["item_id"].to_numpy()) > 0.5
    listing = items.set_index("item_id")["listing_date"].map(lambda d: (d - pd.Timestamp("1970-01-01").date()).days)
    exp_day = (pd.to_datetime(exps["ds"]) - pd.Timestamp("1970-01-01")).dt.days.to_numpy()
    exposure_share, catalog_share = new_item_shares(exp_day, exps["item_id"].map(listing).to_numpy(), listing.to_numpy())
    assert 0 < exposure_share < 0.8 * catalog_share


def test_position_bias_on_exposure_and_clicks():
    exps, clicks = read_all("exposures"), read_all("clicks")
    shown = exps["position"].value_counts().sort_index()
    assert (np.diff(shown.to_numpy()) < 0).all()                  # fewer users scroll to later slots
    ctr = clicks["position"].value_counts().sort_index() / shown
    assert ctr.iloc[0] > 1.5 * ctr.iloc[-1]
    assert ctr.iloc[:3].mean() > ctr.iloc[-3:].mean()


def rerun(change) -> tuple:
    """The day after the tiny world, simulated twice with the same seed: as is, and after `change(world)`."""
    base, changed = final_world(), final_world()
    change(changed)
    day = base.last_day + 1
    channels = default_channels(base.config)
    return simulate_day(base, day, channels), simulate_day(changed, day, channels), base


def new_item_conversion(out, w, mask_fn=None) -> float:
    clicks, buys = out.raw["clicks"].to_pandas(), out.raw["purchases"].to_pandas()
    listing = pd.Series(w.items["listing_day"], index=w.items["item_id"])
    new = clicks[(w.last_day - clicks["item_id"].map(listing)) < 30]
    if mask_fn is not None:
        new = new[mask_fn(new)]
    bought = new.set_index(["request_id", "item_id"]).index.isin(buys.set_index(["request_id", "item_id"]).index)
    return float(bought.mean())


def test_rich_get_richer_popularity_prior():
    rng = np.random.default_rng(0)
    boosted = rng.random(final_world().n_items) < 0.5

    def boost(w):
        w.items["pop"] = np.where(boosted[: w.n_items], w.items["pop"] * 4 + 0.5, w.items["pop"])

    base, more, _ = rerun(boost)
    ids = np.flatnonzero(boosted) + 1
    count = lambda out: np.isin(out.raw["exposures"].column("item_id").to_numpy(), ids).sum()  # noqa: E731
    assert count(more) > 1.2 * count(base)


def test_price_sensitivity_and_social_proof_in_conversion():
    def insensitive(w):
        w.users["price_sens"] = w.users["price_sens"] * 0.0

    def sensitive(w):
        w.users["price_sens"] = w.users["price_sens"] * 3.0

    def famous(w):
        w.items["cum_orders"] = w.items["cum_orders"] + 100

    _, low, w = rerun(insensitive)
    _, high, _ = rerun(sensitive)
    base, proof, _ = rerun(famous)
    # prices of the world after the day: it includes the items listed that day (clickable at age 0)
    pricey = pd.Series(w.items["price"] > w.structure.cat_price[w.items["category"]], index=w.items["item_id"])
    is_pricey = lambda c: c["item_id"].map(pricey).to_numpy(bool)  # noqa: E731
    assert low.raw["clicks"].equals(high.raw["clicks"])                # same clicks: only conversion changed
    assert new_item_conversion(low, w, is_pricey) > new_item_conversion(high, w, is_pricey) + 0.05
    assert new_item_conversion(proof, w) > new_item_conversion(base, w) + 0.05


def test_true_uplift_positive_larger_for_niche_affine_users_and_falling_with_age():
    effects = read_all("click_effects", "truth")
    aff = exposure_affinity(final_world(), effects["user_id"].to_numpy(), effects["item_id"].to_numpy())
    s = uplift_summary(effects, aff)
    assert s["mean"] > 0 and s["mean_clicked"] > 0
    assert s["niche_affine"] > 1.3 * s["not_affine"]
    by_age = list(s["by_age"].values())
    assert len(by_age) == len(AGE_BUCKETS) - 1
    assert all(a > b for a, b in zip(by_age[:-1], by_age[1:], strict=False))
    assert by_age[0] > 3 * by_age[-1]
    # niche enthusiasts on items of their own niche vs mass consumers on the same items
    users = read_all("users", "truth").set_index("user_id")["segment"]
    seg = effects["user_id"].map(users)
    w = final_world()
    niche_item = w.items["niche"][effects["item_id"].to_numpy() - 1] >= 0
    same = (w.users["niche"][effects["user_id"].to_numpy() - 1] == w.items["niche"][effects["item_id"].to_numpy() - 1])
    up = effects["true_uplift"].to_numpy()
    own = niche_item & same & (seg == "niche").to_numpy()
    mass = niche_item & (seg == "mass").to_numpy()
    assert own.any() and mass.any()
    assert up[own].mean() > up[mass].mean()
