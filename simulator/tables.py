"""The raw and truth tables of one simulated day (`foundation.schemas`): the catalog announced that
day (items, users with their declared profile fields), the funnel logs (requests, rank candidates,
exposures, clicks, purchases, site orders) and the ground truth (item outcomes, user latents, click
effects), built from the day's state and draws in `simulator.engine`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from foundation.calendar import NEW_ITEM_DAYS
from foundation.schemas import AGE_BANDS, CHANNELS, EXPERIMENT_ARMS, RAW_SCHEMAS, REGIONS, TRUTH_SCHEMAS
from simulator.text import CATEGORIES, NOUNS, attribute_strings, titles
from simulator.world import US, US_PER_DAY, World, day_rng

if TYPE_CHECKING:
    from simulator.channels import RequestBatch
    from simulator.site_orders import SiteOrders


@dataclass(frozen=True)
class Slate:
    """Ranked candidates of the day's requests: W columns per request, -1 padded at the end."""

    item: np.ndarray       # int64 (R, W) catalog row
    score: np.ndarray      # float64 (R, W)
    channel: np.ndarray    # int16 (R, W) 0 = main, k = channels[k - 1]
    relevance: np.ndarray  # float64 (R, W)
    propensity: np.ndarray  # float64 (R, W) of the channel's placement (1 for main)


@dataclass(frozen=True)
class Funnel:
    """What the day's requests did with their slates (`simulator.engine.funnel`)."""

    exposed: np.ndarray    # bool (R, W)
    clicked: np.ndarray    # bool (R, W)
    bought: np.ndarray     # bool (R, W) search purchases
    site_n: np.ndarray     # int64 (N,) site-wide orders per item
    age: np.ndarray        # int32 (R, W) item age in days


MAIN, SUPPORT = CHANNELS[0], CHANNELS[3]
SUPPORT_EXPERIMENT = "traffic_support"
PROFILE_STREAM = 4          # day_rng stream of the declared profile fields (raw/users)
# P(age band) for niche enthusiasts and mass consumers (overlapping; niche skews younger).
AGE_BAND_P_NICHE = (0.32, 0.30, 0.18, 0.12, 0.08)
AGE_BAND_P_MASS = (0.16, 0.24, 0.24, 0.20, 0.16)


def ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), pa.timestamp("us", tz="UTC"))


def date_array(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32())


def table(name: str, columns: dict, truth: bool = False) -> pa.Table:
    schema = (TRUTH_SCHEMAS if truth else RAW_SCHEMAS)[name]
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


def catalog_tables(w: World, day: int) -> dict[str, pa.Table]:
    """Raw items and users first announced on `day` (the first day also carries the initial population)."""
    it, us, s = w.items, w.users, w.structure
    rows = np.flatnonzero(it["announce_day"] == day)
    cat = it["category"][rows]
    brands = [str(b) for b in s.brand_names[it["brand"][rows]]]
    nouns = [NOUNS[c][n] for c, n in zip(cat.tolist(), it["noun"][rows].tolist(), strict=True)]
    listed_at = it["listing_day"][rows].astype(np.int64) * US_PER_DAY + (it["item_id"][rows] * 7919 % 86_400) * US
    items = table("items", {
        "item_id": it["item_id"][rows], "listing_date": date_array(it["listing_day"][rows]),
        "listed_at": ts_array(listed_at), "title": titles(brands, it["attrs"][rows, :2], nouns),
        "category_id": cat, "category": [CATEGORIES[c] for c in cat.tolist()], "brand": brands,
        "attributes": attribute_strings(it["attrs"][rows]), "price": it["price"][rows],
    })
    u = np.flatnonzero(us["announce_day"] == day)
    region, age_band = declared_profile(us["home_cat"][u], us["niche"][u] >= 0, day_rng(w.seed, day, PROFILE_STREAM))
    users = table("users", {
        "user_id": us["user_id"][u], "signup_date": date_array(us["signup_day"][u]),
        "region": region, "age_band": age_band,
    })
    new = rows[it["arm"][rows] >= 0]
    arms = table("item_experiments", {
        "item_id": it["item_id"][new], "experiment": [SUPPORT_EXPERIMENT] * len(new),
        "arm": np.array(EXPERIMENT_ARMS[SUPPORT_EXPERIMENT])[it["arm"][new]].tolist(),
        "assigned_date": date_array(it["listing_day"][new])})
    return {"items": items, "users": users, "item_experiments": arms}


def labels(names: np.ndarray, codes: np.ndarray) -> pa.Array:
    """names[codes] as a string column, built in Arrow (no Python strings per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names.tolist())).cast(pa.string())


def vectors(a: np.ndarray) -> pa.Array:
    """(n, D) float32 -> list<float32> column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float32).ravel()), a.shape[1]).cast(
        pa.list_(pa.float32()))


def declared_profile(home_cat: np.ndarray, is_niche: np.ndarray, rng: np.random.Generator) -> tuple[list, list]:
    """The profile fields users declare (region, age band): correlated with the latent traits,
    never revealing them. Region = home category mod 8 with probability 1/2, else uniform over
    the 8 regions; the age band skews younger for niche enthusiasts than for mass consumers.
    Drawn from their own stream (`PROFILE_STREAM`), so no other draw of the day changes."""
    n = len(home_cat)
    region = np.where(rng.random(n) < 0.5, home_cat % len(REGIONS), rng.integers(0, len(REGIONS), n))
    cdf = np.cumsum(np.where(is_niche[:, None], AGE_BAND_P_NICHE, AGE_BAND_P_MASS), axis=1)
    band = np.minimum((rng.random(n)[:, None] >= cdf).sum(axis=1), len(AGE_BANDS) - 1)
    return [REGIONS[r] for r in region.tolist()], [AGE_BANDS[b] for b in band.tolist()]


def catalog_truth(w: World, day: int) -> dict[str, pa.Table]:
    """Truth rows of the items and users first announced on `day`: item outcomes, user latents."""
    it, us = w.items, w.users
    rows = np.flatnonzero(it["announce_day"] == day)
    outcomes = table("item_outcomes", {
        "item_id": it["item_id"][rows], "listing_date": date_array(it["listing_day"][rows]),
        "y0": np.log1p(it["base_demand"][rows]), "category_id": it["category"][rows], "quality": it["quality"][rows],
        "offset": vectors(it["offset"][rows]),
    }, truth=True)
    u = np.flatnonzero(us["announce_day"] == day)
    users = table("users", {
        "user_id": us["user_id"][u], "signup_date": date_array(us["signup_day"][u]),
        "segment": np.where(us["niche"][u] >= 0, "niche", "mass").tolist(), "home_category_id": us["home_cat"][u],
        "niche_id": us["niche"][u], "activity": us["activity"][u], "price_sensitivity": us["price_sens"][u],
        "taste": vectors(us["offset"][u]),
    }, truth=True)
    return {"item_outcomes": outcomes, "users": users}


def day_truth(req: RequestBatch, req_ts: np.ndarray) -> dict[str, pa.Table]:
    """The day's latent query positions (`simulator.truth` scores any slate from these)."""
    return {"requests": table("requests", {"request_id": req.request_id, "user_id": req.user_id,
                                           "ts": ts_array(req_ts), "query_offset": vectors(req.query_offset)}, truth=True)}


def order_columns(first_id: int, price: np.ndarray, rng: np.random.Generator) -> dict:
    n = len(price)
    quantity = (1 + (rng.random(n) < 0.2) + (rng.random(n) < 0.05)).astype(np.int32)
    return {"order_id": np.arange(first_id, first_id + n, dtype=np.int64), "price": price,
            "quantity": quantity, "gmv": np.round(price * quantity, 2)}


def funnel_tables(w: World, req: RequestBatch, user_row: np.ndarray, req_ts: np.ndarray, slate: Slate,
                  fun: Funnel, site: SiteOrders, channel_names: Sequence[str],
                  rng: np.random.Generator) -> dict[str, pa.Table]:
    it = w.items
    names = np.array([MAIN, *channel_names])
    r_c, j_c = np.nonzero(slate.item >= 0)
    r_e, j_e = np.nonzero(fun.exposed)
    r_k, j_k = np.nonzero(fun.clicked)
    click_ts = req_ts[r_k] + rng.integers(1, 120, len(r_k)) * US
    bought = fun.bought[r_k, j_k]
    r_b, j_b, buy_ts = r_k[bought], j_k[bought], click_ts[bought] + rng.integers(30, 1800, int(bought.sum())) * US
    buy = order_columns(w.next_order_id, it["price"][slate.item[r_b, j_b]], rng)
    site_cols = order_columns(w.next_order_id + len(r_b), it["price"][site.item], rng)
    iid = lambda r, j: it["item_id"][slate.item[r, j]]  # noqa: E731
    uid = w.users["user_id"]
    return {
        "search_requests": table("search_requests", {
            "request_id": req.request_id, "user_id": req.user_id, "ts": ts_array(req_ts),
            "query_text": req.query_text, "intent_category_id": req.category}),
        "rank_candidates": table("rank_candidates", {
            "request_id": req.request_id[r_c], "item_id": iid(r_c, j_c), "rank": j_c.astype(np.int32),
            "score": slate.score[r_c, j_c], "channel": labels(names, slate.channel[r_c, j_c]),
            "propensity": slate.propensity[r_c, j_c]}),
        "exposures": table("exposures", {
            "request_id": req.request_id[r_e], "user_id": req.user_id[r_e], "item_id": iid(r_e, j_e),
            "position": j_e.astype(np.int32), "ts": ts_array(req_ts[r_e]),
            "channel": labels(names, slate.channel[r_e, j_e]), "propensity": slate.propensity[r_e, j_e]}),
        "clicks": table("clicks", {
            "request_id": req.request_id[r_k], "user_id": req.user_id[r_k], "item_id": iid(r_k, j_k),
            "position": j_k.astype(np.int32), "ts": ts_array(click_ts)}),
        "purchases": table("purchases", buy | {
            "request_id": req.request_id[r_b], "user_id": req.user_id[r_b], "item_id": iid(r_b, j_b),
            "ts": ts_array(buy_ts)}),
        "site_orders": table("site_orders", site_cols | {
            "user_id": uid[site.buyer], "item_id": it["item_id"][site.item], "ts": ts_array(site.ts),
            "linked_request_id": pa.array(site.linked, mask=site.linked < 0),
            "link_score": pa.array(site.link_score, mask=np.isnan(site.link_score))}),
    }


def click_effects_table(w: World, req: RequestBatch, req_ts: np.ndarray, slate: Slate, fun: Funnel,
                        delta: np.ndarray) -> pa.Table:
    r, j = np.nonzero(fun.exposed & (fun.age < NEW_ITEM_DAYS))
    return table("click_effects", {
        "request_id": req.request_id[r], "user_id": req.user_id[r], "item_id": w.items["item_id"][slate.item[r, j]],
        "ts": ts_array(req_ts[r]), "item_age_days": fun.age[r, j], "clicked": fun.clicked[r, j],
        "true_uplift": delta[r, j]}, truth=True)

