"""A small synthetic platform with a known click uplift, written to the lake in the
same column contract as the simulator + Spark jobs (for tests and benchmarks only).

Mechanism: items belong to a niche (category x sub-niche, named in the title);
users have a home niche. An exposure's true uplift is
    tau = strength * (0.2 + closeness(user, item)) * exp(-age / 12)
(closeness 1 same niche, 0.3 same category, 0 otherwise), and
    E[y] = y0(quality) + sum over the item's clicked exposures of tau,
with y = log1p(mean of 7 daily Poisson orders). Clicks are likelier for close
users and good items, so clicked items have a higher label: the confounding the
uplift model must see through.

Like the simulator, raw/users holds only declared profile fields (region, age
band: noisy correlates of the home niche and segment, drawn from their own
generator so every other draw is unchanged); the latent user parameters go to
truth/users, and the user features are behaviour-derived.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from foundation.calendar import COHORT_OFFSET, LABEL_DAYS, NEW_ITEM_DAYS
from foundation.catalog import query_id
from foundation.lake import Lake
from foundation.schemas import AGE_BANDS, REGIONS

CATS = ["shoes", "phone", "lamp", "shirt", "mug", "watch", "bag", "chair"]
QUALITY_WORDS = np.array(["basic", "standard", "premium"])


def _day_ts(day0: date, day: np.ndarray, rng: np.random.Generator) -> pd.Series:
    base = pd.Timestamp(datetime(day0.year, day0.month, day0.day, tzinfo=UTC))
    secs = rng.integers(0, 86_400, len(day))
    return pd.Series(base + pd.to_timedelta(day, "D") + pd.to_timedelta(secs, "s")).astype("datetime64[us, UTC]")


def make_items(rng: np.random.Generator, days: int, per_day: int, niches: int, day0: date) -> pd.DataFrame:
    n = days * per_day
    cat = rng.integers(0, len(CATS), n)
    sub = rng.integers(0, niches, n)
    quality = rng.normal(0, 1, n)
    qword = QUALITY_WORDS[np.digitize(quality, [-0.5, 0.5])]
    brand = np.array([f"brand{b}" for b in rng.integers(0, 20, n)])
    listing = np.repeat(np.arange(days), per_day)
    title = [f"{CATS[c]} style{c}x{s} {qw} {b}" for c, s, qw, b in zip(cat, sub, qword, brand, strict=True)]
    return pd.DataFrame({
        "item_id": np.arange(1, n + 1, dtype=np.int64), "listing_day": listing,
        "listing_date": [day0 + timedelta(days=int(d)) for d in listing], "title": title,
        "category_id": cat.astype(np.int32), "category": [CATS[c] for c in cat], "brand": brand,
        "attributes": qword, "price": np.exp(3 + 0.3 * quality + rng.normal(0, 0.2, n)),
        "niche": cat * niches + sub, "quality": quality,
    })


def make_users(rng: np.random.Generator, n: int, n_niches: int) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.arange(1, n + 1, dtype=np.int64), "home_niche": rng.integers(0, n_niches, n),
        "segment": np.where(rng.random(n) < 0.5, "niche", "mass"), "activity": rng.gamma(2.0, 1.0, n),
        "price_sensitivity": rng.random(n),
    })


def declared_profile(users: pd.DataFrame, seed: int, niches: int) -> pd.DataFrame:
    """region (home category mod 8 with probability 1/2, else uniform) and age band (younger for
    niche users), from a generator of their own: the main stream of draws is untouched."""
    rng = np.random.default_rng([seed, 4])
    n, home_cat = len(users), users["home_niche"].to_numpy() // niches
    region = np.where(rng.random(n) < 0.5, home_cat % len(REGIONS), rng.integers(0, len(REGIONS), n))
    p = np.where((users["segment"] == "niche").to_numpy()[:, None], [0.32, 0.30, 0.18, 0.12, 0.08],
                 [0.16, 0.24, 0.24, 0.20, 0.16])
    band = np.minimum((rng.random(n)[:, None] >= np.cumsum(p, axis=1)).sum(axis=1), len(AGE_BANDS) - 1)
    return pd.DataFrame({"region": np.array(REGIONS)[region], "age_band": np.array(AGE_BANDS)[band]})


def n_niches_total(users: pd.DataFrame, items: pd.DataFrame) -> int:
    return int(max(users["home_niche"].max(), items["niche"].max())) + 1


def make_exposures(rng, items, users, days: int, rate: float, niches: int) -> pd.DataFrame:
    """Every exposure of every live item (ages 0..days), with click and true uplift."""
    age = np.arange(days)[:, None] - items["listing_day"].to_numpy()[None, :]   # [D, I]
    lam = np.where(age < 0, 0.0, np.where(age < NEW_ITEM_DAYS, rate, rate / 3))
    counts = rng.poisson(lam)
    day, idx = np.nonzero(counts)
    reps = counts[day, idx]
    day, idx = np.repeat(day, reps), np.repeat(idx, reps)
    it = items.iloc[idx].reset_index(drop=True)
    order = np.argsort(users["home_niche"].to_numpy(), kind="stable")                 # users sorted by niche
    bounds = np.searchsorted(users["home_niche"].to_numpy()[order], np.arange(n_niches_total(users, it) + 1))
    lo, hi = bounds[it["niche"].to_numpy()], bounds[it["niche"].to_numpy() + 1]
    matched = (rng.random(len(idx)) < 0.5) & (hi > lo)
    in_niche = order[np.minimum(lo + (rng.random(len(idx)) * (hi - lo)).astype(np.int64), len(order) - 1)]
    pick = np.where(matched, in_niche, rng.integers(0, len(users), len(idx)))
    u = users.iloc[pick].reset_index(drop=True)
    same_niche = (u["home_niche"].to_numpy() == it["niche"].to_numpy())
    same_cat = (u["home_niche"].to_numpy() // niches == it["niche"].to_numpy() // niches)
    close = np.where(same_niche, 1.0, np.where(same_cat, 0.3, 0.0))
    p_click = 1 / (1 + np.exp(-(-1.5 + 2.0 * close + 0.5 * it["quality"].to_numpy())))
    age_e = day - it["listing_day"].to_numpy()
    return pd.DataFrame({
        "request_id": np.arange(1, len(idx) + 1, dtype=np.int64), "user_id": u["user_id"].to_numpy(),
        "item_id": it["item_id"].to_numpy(), "day": day, "age": age_e, "clicked": rng.random(len(idx)) < p_click,
        "true_uplift": 0.08 * (0.2 + close) * np.exp(-age_e / 12.0),
        "query_text": [f"{CATS[n // niches]} style{n // niches}x{n % niches}" for n in it["niche"]],
        "position": rng.integers(0, 10, len(idx)).astype(np.int32),
    })


def outcomes(rng, items: pd.DataFrame, exp: pd.DataFrame) -> pd.DataFrame:
    new = exp[exp["age"] < NEW_ITEM_DAYS]
    gain = new[new["clicked"]].groupby("item_id")["true_uplift"].sum()
    y0 = np.clip(0.4 + 0.3 * items["quality"].to_numpy(), 0.05, None)
    ey = y0 + gain.reindex(items["item_id"]).fillna(0.0).to_numpy()
    label = rng.poisson(np.repeat(np.expm1(ey)[:, None], LABEL_DAYS, 1)).mean(1)
    return pd.DataFrame({"item_id": items["item_id"], "y0": y0, "label": label, "y": np.log1p(label)})


def write_synthetic_lake(lake: Lake, *, days: int = 45, items_per_day: int = 30, n_users: int = 300,
                         niches: int = 4, rate: float = 2.0, seed: int = 0, start: date = date(2026, 1, 1)) -> None:
    """Write raw/items|users|clicks, samples/itemltv_samples|labels, features/item|user|query_features,
    truth/click_effects|item_outcomes|users for `days` simulated days starting at `start`."""
    rng = np.random.default_rng(seed)
    day0 = start
    items = make_items(rng, days, items_per_day, niches, day0)
    users = make_users(rng, n_users, len(CATS) * niches)
    users = pd.concat([users, declared_profile(users, seed, niches)], axis=1)
    exp = make_exposures(rng, items, users, days, rate, niches)
    exp["ts"] = _day_ts(day0, exp["day"].to_numpy(), rng)
    exp["query_id"] = exp["query_text"].map(query_id).astype(np.int64)
    out = outcomes(rng, items, exp)
    _write_raw(lake, day0, items, users, exp)
    _write_truth_and_samples(lake, day0, days, items, users, exp, out)
    _write_features(lake, day0, days, items, users, exp)


def _ds(day0: date, d: int) -> date:
    return day0 + timedelta(days=int(d))


def _write_raw(lake: Lake, day0: date, items, users, exp) -> None:
    raw_items = items.assign(listed_at=pd.to_datetime(items["listing_date"]).dt.tz_localize("UTC"))
    for d, g in raw_items.groupby("listing_day"):
        lake.write_partition("raw", "items", _ds(day0, d), g.drop(columns=["listing_day", "niche", "quality"]))
    lake.write_partition("raw", "users", _ds(day0, 0), users[["user_id"]].assign(
        signup_date=day0, region=users["region"], age_band=users["age_band"]))
    for d, g in exp[exp["clicked"]].groupby("day"):
        lake.write_partition("raw", "clicks", _ds(day0, d), g[["request_id", "user_id", "item_id", "position", "ts"]])


def _write_truth_and_samples(lake: Lake, day0: date, days: int, items, users, exp, out) -> None:
    lake.write_partition("truth", "users", _ds(day0, 0), users[["user_id"]].assign(
        signup_date=day0, segment=users["segment"], home_category_id=(users["home_niche"] // 4).astype(np.int32),
        niche_id=(users["home_niche"] % 4).astype(np.int32), activity=users["activity"].astype(float),
        price_sensitivity=users["price_sensitivity"].astype(float)))
    new = exp[exp["age"] < NEW_ITEM_DAYS]
    for d, g in new.groupby("day"):
        lake.write_partition("truth", "click_effects", _ds(day0, d), g.assign(item_age_days=g["age"].astype(np.int32))[
            ["request_id", "user_id", "item_id", "ts", "item_age_days", "clicked", "true_uplift"]])
    meta = items[["item_id", "listing_day", "listing_date"]].merge(out, on="item_id")
    for d, g in meta.groupby("listing_day"):
        lake.write_partition("truth", "item_outcomes", _ds(day0, d), g[["item_id", "listing_date", "y0"]])
        if d + COHORT_OFFSET >= days:
            continue
        s = new[new["item_id"].isin(g["item_id"])].merge(g[["item_id", "listing_date"]], on="item_id")
        lake.write_partition("samples", "itemltv_samples", _ds(day0, d + COHORT_OFFSET), s.assign(treatment=s["clicked"].astype(
            np.int8))[["request_id", "user_id", "query_text", "query_id", "item_id", "listing_date", "ts", "treatment"]])
        lake.write_partition("samples", "itemltv_labels", _ds(day0, d + COHORT_OFFSET), g[["item_id", "listing_date", "label", "y"]])


WINDOWS = (1, 7, 30)
N_CATEGORIES = 16     # length of `category_affinity`, as in spark_jobs.features


def _window(daily: pd.DataFrame, key: str, d: int, w: int) -> pd.DataFrame:
    """Sums of `daily` (key, day, counts...) over days d-w+1..d, indexed by key."""
    return daily[(daily["day"] > d - w) & (daily["day"] <= d)].drop(columns="day").groupby(key).sum()


def _snapshot_ts(day0: date, d: int) -> pd.Timestamp:
    """The last microsecond of day d (the feature tables' `event_timestamp`)."""
    return pd.Timestamp(datetime.combine(day0 + timedelta(days=int(d) + 1), datetime.min.time(), UTC)) \
        - pd.Timedelta(microseconds=1)


def _write_features(lake: Lake, day0: date, days: int, items: pd.DataFrame, users: pd.DataFrame,
                    exp: pd.DataFrame) -> None:
    """features/item_features|user_features|query_features in the column contract of
    `spark_jobs.features` (what Feast serves); synthetic orders are not logged, so order,
    GMV and conversion features are 0."""
    exp = exp.assign(clicks=exp["clicked"].astype(np.int64), exposures=1,
                     category_id=items.set_index("item_id").loc[exp["item_id"], "category_id"].to_numpy())
    for d in range(days):
        ts = _snapshot_ts(day0, d)
        lake.write_partition("features", "item_features", _ds(day0, d), _item_snapshot(items, exp, d).assign(
            event_timestamp=ts))
        lake.write_partition("features", "user_features", _ds(day0, d), _user_snapshot(users, items, exp, d).assign(
            event_timestamp=ts))
        lake.write_partition("features", "query_features", _ds(day0, d), _query_snapshot(exp, d).assign(
            event_timestamp=ts))


def _item_snapshot(items: pd.DataFrame, exp: pd.DataFrame, d: int) -> pd.DataFrame:
    live = items[items["listing_day"] <= d]
    age = (d - live["listing_day"]).to_numpy(np.int64)
    out = pd.DataFrame({"item_id": live["item_id"].to_numpy(), "category_id": live["category_id"].astype(np.int64),
                        "brand": live["brand"], "price": live["price"].astype(float),
                        "listing_date": live["listing_date"], "age_days": age, "is_new": age < NEW_ITEM_DAYS}).reset_index(drop=True)
    daily = exp.groupby(["item_id", "day"], as_index=False)[["exposures", "clicks"]].sum()
    for w in WINDOWS:
        win = _window(daily, "item_id", d, w).reindex(out["item_id"]).fillna(0).to_numpy(np.int64)
        out[f"exposures_{w}d"], out[f"clicks_{w}d"], out[f"orders_{w}d"] = win[:, 0], win[:, 1], 0
        out[f"gmv_{w}d"], out[f"cvr_{w}d"] = 0.0, 0.0
        out[f"ctr_{w}d"] = np.where(win[:, 0] > 0, win[:, 1] / np.maximum(win[:, 0], 1), 0.0)
    return out


def _user_snapshot(users: pd.DataFrame, items: pd.DataFrame, exp: pd.DataFrame, d: int) -> pd.DataFrame:
    out = pd.DataFrame({"user_id": users["user_id"].to_numpy(), "region": users["region"].to_numpy(),
                        "age_band": users["age_band"].to_numpy(), "tenure_days": np.int64(d)})
    daily = exp.groupby(["user_id", "day"], as_index=False)[["exposures", "clicks"]].sum()
    for w in WINDOWS:
        out[f"requests_{w}d"] = _window(daily, "user_id", d, w)["exposures"].reindex(out["user_id"]).fillna(0) \
            .to_numpy(np.int64)
    month = daily[(daily["day"] > d - 30) & (daily["day"] <= d)]
    out["active_days_30d"] = month.groupby("user_id")["day"].nunique().reindex(out["user_id"]).fillna(0) \
        .to_numpy(np.int64)
    out["clicks_7d"] = _window(daily, "user_id", d, 7)["clicks"].reindex(out["user_id"]).fillna(0).to_numpy(np.int64)
    out["clicks_30d"] = _window(daily, "user_id", d, 30)["clicks"].reindex(out["user_id"]).fillna(0).to_numpy(np.int64)
    out["orders_30d"] = np.int64(0)
    recent = exp[exp["clicked"] & (exp["day"] > d - 30) & (exp["day"] <= d)].sort_values("ts")
    shares = pd.crosstab(recent["user_id"], recent["category_id"], normalize="index")
    shares = shares.reindex(index=out["user_id"], columns=range(N_CATEGORIES), fill_value=0.0).fillna(0.0)
    out["category_affinity"] = list(shares.to_numpy(float))
    price = items.set_index("item_id")["price"]
    out["price_level_30d"] = recent.assign(p=price.loc[recent["item_id"]].to_numpy()).groupby("user_id")["p"].mean() \
        .reindex(out["user_id"]).fillna(0.0).to_numpy()
    last = {u: g.to_numpy(np.int64)[-20:] for u, g in
            recent.drop_duplicates(["user_id", "item_id"], keep="last").groupby("user_id")["item_id"]}
    out["recent_item_ids"] = [last.get(u, np.zeros(0, np.int64)) for u in out["user_id"]]
    return out


def _query_snapshot(exp: pd.DataFrame, d: int) -> pd.DataFrame:
    month = exp[(exp["day"] > d - 30) & (exp["day"] <= d)]
    g = month.groupby(["query_id", "query_text"])
    out = g.agg(intent_category_id=("category_id", "min"), exposures_30d=("exposures", "sum"),
                clicks_30d=("clicks", "sum"), new=("age", lambda a: float((a < NEW_ITEM_DAYS).mean()))).reset_index()
    daily = month.groupby(["query_id", "day"], as_index=False)["exposures"].sum()
    for w in WINDOWS:
        out[f"requests_{w}d"] = _window(daily, "query_id", d, w)["exposures"].reindex(out["query_id"]).fillna(0) \
            .to_numpy(np.int64)
    out = out.astype({"intent_category_id": np.int64, "exposures_30d": np.int64, "clicks_30d": np.int64})
    return out.rename(columns={"new": "new_item_exposure_share_30d"}).assign(
        orders_30d=np.int64(0), cvr_30d=0.0, ctr_30d=out["clicks_30d"] / np.maximum(out["exposures_30d"], 1))
