"""Pure statistics of the simulated world (used by tests, `growthgr simulate --report`, benchmarks).

The report reads the raw and truth zones plus the last stored state (for the
latent affinity of each exposure); nothing here is meant for training code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from foundation.calendar import NEW_ITEM_DAYS
from foundation.lake import Lake
from simulator.engine import affinity
from simulator.world import World, day_index

AGE_BUCKETS = (0, 5, 10, 15, 20, 25, 30)
AFFINE = 0.4   # an exposure is "niche-affine" when the user's affinity to the item is at least this


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, -> 1 = concentrated)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) == 0 or v.sum() == 0:
        return 0.0
    n = len(v)
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))


def exposure_gini(exposed_item_ids: np.ndarray, catalog_item_ids: np.ndarray) -> float:
    """Gini of exposure counts across the whole catalog (items never exposed count as 0)."""
    counts = pd.Series(exposed_item_ids).value_counts()
    return gini(counts.reindex(catalog_item_ids, fill_value=0).to_numpy())


def new_item_shares(exp_day: np.ndarray, exp_listing_day: np.ndarray, listing_days: np.ndarray) -> tuple[float, float]:
    """(new items' share of exposures, their mean share of the catalog over the exposure days).
    Days are integer day indices; "new" = age 0..29."""
    age = exp_day - exp_listing_day
    exposure_share = float(np.mean(age < NEW_ITEM_DAYS)) if len(age) else 0.0
    days = np.unique(exp_day)
    listed = np.sort(listing_days)
    n_listed = np.searchsorted(listed, days, side="right")
    n_new = n_listed - np.searchsorted(listed, days - NEW_ITEM_DAYS, side="right")
    catalog_share = float(np.mean(n_new / n_listed)) if len(days) else 0.0
    return exposure_share, catalog_share


def uplift_by_age(age: np.ndarray, uplift: np.ndarray, edges: tuple[int, ...] = AGE_BUCKETS) -> dict[str, float]:
    """Mean true uplift per age bucket, e.g. {"0-4": 0.05, ...}."""
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (age >= lo) & (age < hi)
        out[f"{lo}-{hi - 1}"] = float(uplift[sel].mean()) if sel.any() else float("nan")
    return out


def exposure_affinity(w: World, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """The latent affinity of each (user, item) pair, as the growth mechanism uses it."""
    u, i = user_ids - w.users["user_id"][0], item_ids - w.items["item_id"][0]
    home = w.users["home_cat"][u] == w.items["category"][i]
    return affinity(w.users["offset"][u] * home[:, None], w.items["offset"][i], w.config.affinity_scale)


def uplift_summary(effects: pd.DataFrame, aff: np.ndarray) -> dict:
    """Mean true uplift overall, for niche-affine vs other exposures, and by age bucket."""
    up, age = effects["true_uplift"].to_numpy(), effects["item_age_days"].to_numpy()
    affine = aff >= AFFINE
    return {
        "mean": float(up.mean()),
        "mean_clicked": float(up[effects["clicked"].to_numpy()].mean()),
        "niche_affine": float(up[affine].mean()) if affine.any() else float("nan"),
        "not_affine": float(up[~affine].mean()) if (~affine).any() else float("nan"),
        "affine_share": float(affine.mean()),
        "by_age": uplift_by_age(age, up),
    }


def mechanism_report(lake: Lake) -> dict:
    """The headline figures of a simulated lake (see the README of issue 3)."""
    from simulator.run import load_world, saved_states

    states = saved_states(lake)
    if not states:
        raise FileNotFoundError("no simulator state in this lake: run `growthgr simulate` first")
    w = load_world(lake, states[-1])
    parts = lake.list_partitions("raw", "search_requests")
    exp = lake.read_range("raw", "exposures", parts[0], parts[-1], columns=["item_id", "user_id"]).to_pandas()
    items = lake.read_range("raw", "items", parts[0], parts[-1], columns=["item_id", "listing_date"]).to_pandas()
    effects = lake.read_range("truth", "click_effects", parts[0], parts[-1]).to_pandas()
    listing = (pd.to_datetime(items["listing_date"]) - pd.Timestamp("1970-01-01")).dt.days.to_numpy()
    exp_day = np.array([day_index(d) for d in exp["ds"]])
    lookup = pd.Series(listing, index=items["item_id"])
    shares = new_item_shares(exp_day, lookup.reindex(exp["item_id"]).to_numpy(), listing)
    rows = {t: sum(lake.commit_info("raw", t, d).rows for d in lake.list_partitions("raw", t))
            for t in ("search_requests", "rank_candidates", "exposures", "clicks", "purchases", "site_orders")}
    aff = exposure_affinity(w, effects["user_id"].to_numpy(), effects["item_id"].to_numpy())
    return {
        "days": len(parts), "first_day": f"{parts[0]}", "last_day": f"{parts[-1]}", "rows": rows,
        "items": int(len(items)),
        "exposure_gini": exposure_gini(exp["item_id"].to_numpy(), items["item_id"].to_numpy()),
        "new_item_exposure_share": shares[0], "new_item_catalog_share": shares[1],
        "true_uplift": uplift_summary(effects, aff),
        "new_item_channels": experiment_report(lake),
    }


def ols_first_stage(y: np.ndarray, z: np.ndarray) -> dict:
    """OLS of y on 1 + z (z binary): the difference in means, its conventional standard error and F."""
    y, z = np.asarray(y, np.float64), np.asarray(z, bool)
    n1, n0 = int(z.sum()), int((~z).sum())
    if min(n1, n0) < 2:
        return {"n_support": n1, "n_control": n0}
    diff = y[z].mean() - y[~z].mean()
    resid = np.where(z, y - y[z].mean(), y - y[~z].mean())
    s2 = (resid**2).sum() / (len(y) - 2)
    se = np.sqrt(s2 * (1 / n1 + 1 / n0))
    return {"n_support": n1, "n_control": n0, "diff": float(diff), "se": float(se), "F": float((diff / se) ** 2)}


def welch_ci(a: np.ndarray, b: np.ndarray) -> dict:
    """mean(a) - mean(b) with a Welch 95% interval (normal approximation)."""
    if min(len(a), len(b)) < 2:
        return {}
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    return {"diff": diff, "ci95": [diff - 1.96 * se, diff + 1.96 * se]}


def experiment_report(lake: Lake) -> dict:
    """What the new-item channels and the traffic-support experiment did in a simulated lake.

    Items: those with a traffic-support arm whose 30-day new-item period lies inside the lake.
    * first stage: OLS of new-period clicks on the support arm (F >= 100: a strong instrument), on
      the click count and on log(1 + clicks) (the scale of the log-space label), with the largest
      count (a new item that snowballs through the ranker's popularity feedback dominates the
      count's variance);
    * truth: mean growth state (the sum of the true uplift of its new-period clicks) of supported
      minus control items, Welch 95% interval;
    * channels: exposure share, click-through rate and new-item click share per channel, and the
      share per channel of the true long-term label (clicks on new items whose true uplift is above
      the mean of all new-item clicks)."""
    parts = lake.list_partitions("raw", "search_requests")
    first, last = parts[0], parts[-1]
    arms = lake.read_range("raw", "item_experiments", first, last, ["item_id", "arm", "assigned_date"]).to_pandas()
    arms = arms[(last - pd.to_datetime(arms["assigned_date"]).dt.date).apply(lambda d: d.days) >= NEW_ITEM_DAYS - 1]
    exp = lake.read_range("raw", "exposures", first, last, ["request_id", "item_id", "channel"]).to_pandas()
    clicks = lake.read_range("raw", "clicks", first, last, ["request_id", "item_id"]).to_pandas()
    effects = lake.read_range("truth", "click_effects", first, last,
                              ["request_id", "item_id", "clicked", "true_uplift"]).to_pandas()
    new_clicks = effects[effects["clicked"]]
    per_item = new_clicks.groupby("item_id").agg(clicks=("true_uplift", "size"), growth=("true_uplift", "sum"))
    items = arms.join(per_item, on="item_id").fillna({"clicks": 0, "growth": 0.0})
    support = (items["arm"] == "support").to_numpy()
    clicks_n = items["clicks"].to_numpy(np.float64)
    shown = exp[exp["channel"] == "support"].groupby("item_id").size()
    clicked = clicks.merge(exp, on=["request_id", "item_id"], how="left")
    new_ch = new_clicks.merge(exp, on=["request_id", "item_id"], how="left")
    high = new_ch[new_ch["true_uplift"] > new_ch["true_uplift"].mean()]
    n_exp = exp["channel"].value_counts()
    return {
        "days": len(parts), "items_in_experiment": int(len(items)),
        "support_impressions_per_item": float(shown.reindex(items["item_id"][support], fill_value=0).mean())
        if support.any() else None,
        "first_stage_new_period_clicks": ols_first_stage(clicks_n, support),
        "first_stage_log1p_new_period_clicks": ols_first_stage(np.log1p(clicks_n), support),
        "max_new_period_clicks": int(clicks_n.max(initial=0)),
        "truth_growth_support_minus_control": welch_ci(items["growth"].to_numpy()[support],
                                                       items["growth"].to_numpy()[~support]),
        "channels": {
            str(c): {"exposure_share": float(n / len(exp)),
                     "ctr": float((clicked["channel"] == c).sum() / n),
                     "new_item_click_share": float((new_ch["channel"] == c).mean()),
                     "true_long_term_label_share": float((high["channel"] == c).mean())}
            for c, n in n_exp.items()},
    }
