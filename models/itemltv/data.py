"""ItemLTV inputs: the Feast training set plus lake context tables, encoded to arrays.

Tables read, from the lake only (contract of `spark_jobs`, the application step
`growthgr.pipeline.training_set`, which builds the Feast training sets, and the simulator):
  samples/training_itemltv_v1  the Feast training set of feature service `itemltv_v1`, one
                            partition per samples partition (a missing one is an error): every
                            row of samples/itemltv_samples (one exposure of a cohort item in its
                            days 0..29: user_id, item_id, query_id, event_timestamp, treatment,
                            listing_date, ...) with the item, user and query features Feast
                            joined point in time (`<view>__<feature>`, latest snapshot at or
                            before the exposure, within the view's TTL; missing otherwise)
  samples/itemltv_labels    item_id, y = log1p(mean daily orders over days 30..36)
  raw/items, raw/users      item content (title, category, price, listing date), user attributes
  raw/clicks                the users' behaviour history (clicked items before the exposure)
  raw/site_orders           orders outside search: the item's site-wide order rate in its new-item
                            period (the base tower's stand-in for base demand, see below)
  raw/item_experiments      the traffic-support arm of each new item (the uplift's calibration)

Feast columns become model inputs by view: the item's listing-time attributes
(`PRE_TREATMENT_ITEM_FEATURES`) -> `item__f_x` (base tower); every other item feature (exposures,
clicks, orders, CTR/CVR, age: the treatment and its mediators) -> `ctx__f_item_x` (uplift tower
only); `user_features__x` -> `user__f_x`, `query_features__x` -> `ctx__f_x` (uplift tower);
numeric and boolean features only, ids left out; the user's `category_affinity` vector becomes
one number, the affinity to the exposed item's category (`ctx__f_user_category_affinity`).
The base tower sees only inputs that a click cannot change, each for a stated reason:
- content (title words, category, brand words) and price: fixed at listing;
- `item__log_site_orders_per_day`, log(1 + the item's site-wide orders per day) over its new-item
  period days 0..29 as far as they lie in the data (all 30 for a closed cohort; ages 0..a for a
  pool candidate of age a): orders outside search. By the platform's logic they are a separate
  demand channel, and by the simulator's documented mechanism (`simulator.engine`, step 7) a new
  item's site orders are drawn from its base demand whatever its clicks, so they measure base demand
  without the treatment. (On a real platform a search click can lead to a later order outside
  search; there this input would need the attribution window the platform uses.)
Never a count the clicks it is asked to separate out could have moved (search orders, exposures,
clicks, rates: those go to the uplift tower's context).
User inputs are what a platform observes: declared profile fields of raw/users (`age_band`,
tenure) and behaviour (features, the click history); never a simulator latent.

Departures from the paper: items are represented by their content (hashed title words +
category), never by an id embedding, so brand-new items and history items share one encoder.
The uplift tower's context also gets the item's exposures and clicks on the days before the
exposure (from the samples themselves): the simulator's click effect saturates with exposure,
which the paper's inputs do not name.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from foundation import calendar, catalog
from foundation.lake import Lake, PartitionNotFound
from foundation.schemas import AGE_BANDS
from foundation.sections.itemltv import ItemLTVConfig

log = logging.getLogger(__name__)

SERVICE = "itemltv_v1"                          # the Feast feature service of the training set
TRAINING_TABLE = catalog.training_set(SERVICE)
VIEW_GROUP = {"item_features": "item", "user_features": "user", "query_features": "ctx"}
ID_FEATURES = {"category_id", "home_category_id", "intent_category_id"}    # numbers that are not quantities
PRE_TREATMENT_ITEM_FEATURES = {"price"}          # item features fixed at listing time (base tower)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class Inputs:
    """Lake tables as pandas frames, before encoding."""

    samples: pd.DataFrame            # user_id, item_id, ts, treatment, listing_date, y, *__f_* Feast features
    items: pd.DataFrame              # item_id, title, category_id, price, listing_date
    users: pd.DataFrame              # user_id, signup_date, age_band (declared profile)
    clicks: pd.DataFrame             # user_id, item_id, ts
    site_rates: pd.DataFrame | None = None  # item_id, site_orders, site_days (`site_order_rates`)
    arms: pd.DataFrame | None = None        # item_id, arm: the traffic-support experiment's arms


@dataclass
class Preprocess:
    """What encoding needs to be repeatable at scoring time (saved with the checkpoint)."""

    title_tokens: int
    hash_buckets: int
    history_len: int
    columns: dict[str, list[str]]    # group (item / user / ctx) -> numeric column names
    mean: dict[str, list[float]]
    std: dict[str, list[float]]

    def dims(self) -> dict[str, int]:
        return {g: len(c) for g, c in self.columns.items()}


@dataclass
class Encoded:
    """One row per exposure; item content lives in a table indexed by `*_row` (row 0 = padding)."""

    tokens: np.ndarray               # [M+1, W] hashed title words of every known item
    category: np.ndarray             # [M+1]
    item_row: np.ndarray             # [N] row of the exposed item
    hist_rows: np.ndarray            # [N, L] rows of the user's last clicked items (0 = none)
    x: dict[str, np.ndarray]         # group -> [N, F_group] standardised numerics
    treatment: np.ndarray            # [N] 0/1
    y: np.ndarray                    # [N] label of the exposed item
    group: np.ndarray                # [N] item group id (0..G-1, exposures of one item)
    meta: pd.DataFrame               # [N] user_id, item_id, ts, listing_date, age_days [, request_id]

    def subset(self, mask: np.ndarray) -> Encoded:
        """Rows where `mask`; group ids renumbered densely."""
        _, group = np.unique(self.group[mask], return_inverse=True)
        return Encoded(self.tokens, self.category, self.item_row[mask], self.hist_rows[mask],
                       {g: v[mask] for g, v in self.x.items()}, self.treatment[mask], self.y[mask],
                       group.astype(np.int64), self.meta[mask].reset_index(drop=True))

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0


# -- reading -----------------------------------------------------------------
def _read(lake: Lake, zone: str, table: str, start: date, end: date) -> pd.DataFrame | None:
    try:
        return lake.read_range(zone, table, start, end).to_pandas()
    except PartitionNotFound:
        return None


def _utc(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")


def normalise_samples(df: pd.DataFrame) -> pd.DataFrame:
    """Accept the column spellings of the samples contract; add `ts`, `treatment`."""
    df = df.rename(columns={"event_timestamp": "ts"} if "ts" not in df else {})
    if "treatment" not in df:
        df = df.assign(treatment=df["clicked"])
    df = df.assign(ts=_utc(df["ts"]), treatment=df["treatment"].astype(np.float32))
    return df.drop(columns=[c for c in ("ds", "clicked") if c in df])


def feast_features(table: pa.Table) -> pd.DataFrame:
    """A Feast frame (`<view>__<feature>` columns) with its features renamed to model inputs
    (`<group>__f_<feature>`, see the module doc); entity columns are kept as they are."""
    out, cols = {}, table.column_names
    for name in cols:
        view, sep, feat = name.partition("__")
        if not sep:
            out[name] = table[name].to_pandas()
        elif view not in VIEW_GROUP or feat in ID_FEATURES:
            continue
        elif feat == "category_affinity" and "item_features__category_id" in cols:
            out["ctx__f_user_category_affinity"] = category_affinity(table[name], table["item_features__category_id"])
        elif pa.types.is_integer(t := table[name].type) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            column = (f"ctx__f_item_{feat}" if view == "item_features" and feat not in PRE_TREATMENT_ITEM_FEATURES
                      else f"{VIEW_GROUP[view]}__f_{feat}")
            out[column] = table[name].cast(pa.float64()).to_numpy(zero_copy_only=False)
    return pd.DataFrame(out)


def category_affinity(affinity: pa.ChunkedArray, category: pa.ChunkedArray) -> np.ndarray:
    """[N] the user's affinity to each row's item category (NaN where either is missing)."""
    aff, cat = affinity.combine_chunks(), category.to_numpy(zero_copy_only=False)
    out = np.full(len(aff), np.nan)
    lengths = pc.list_value_length(aff).fill_null(0).to_numpy(zero_copy_only=False)
    width = int(lengths.max()) if len(aff) else 0
    ok = (lengths == width) & (width > 0) & ~np.isnan(cat.astype(float))
    if ok.any():
        flat = pc.list_flatten(aff.filter(pa.array(ok))).to_numpy(zero_copy_only=False).reshape(-1, width)
        c = cat[ok].astype(np.int64)
        inside = (c >= 0) & (c < width)
        out[np.flatnonzero(ok)[inside]] = flat[np.flatnonzero(inside), c[inside]]
    return out


def training_sets(lake: Lake, parts: list[date]) -> pa.Table:
    """The Feast training sets of samples partitions `parts` (consecutive), read from the lake."""
    missing = [ds for ds in parts if not lake.exists(*TRAINING_TABLE, ds)]
    if missing:
        raise PartitionNotFound(f"no training set {TRAINING_TABLE.key(missing[0])} ({len(missing)} of {len(parts)} "
                                f"missing): build it first (`growthgr pipeline step training_set`)")
    table = lake.read_range(*TRAINING_TABLE, parts[0], parts[-1])
    return table.drop_columns([c for c in ("ds", "user_features__recent_item_ids") if c in table.column_names])


def sample_partitions(lake: Lake, end_ds: date, n: int) -> list[date]:
    """The last `n` committed samples partitions with ds <= end_ds (one per cohort)."""
    return lake.list_partitions(*catalog.ITEMLTV_SAMPLES, end=end_ds)[-n:]


def load_inputs(lake: Lake, end_ds: date, n_cohorts: int, history_days: int = 60) -> Inputs:
    """Read the cohorts whose label window ended by `end_ds` (their Feast training sets), with
    what encoding them needs."""
    parts = sample_partitions(lake, end_ds, n_cohorts)
    if not parts:
        raise PartitionNotFound(f"no {catalog.ITEMLTV_SAMPLES.zone}/{catalog.ITEMLTV_SAMPLES.table} partitions "
                                f"up to {end_ds}")
    first, last = parts[0], parts[-1]
    samples = normalise_samples(feast_features(training_sets(lake, parts)))
    samples = samples.drop(columns=[c for c in ("y", "label") if c in samples])   # taken from the labels table
    labels = lake.read_range(*catalog.ITEMLTV_LABELS, first, last).to_pandas()[["item_id", "y"]]
    samples = samples.merge(labels.drop_duplicates("item_id"), on="item_id", how="inner")
    hist_start = first - timedelta(days=calendar.COHORT_OFFSET + history_days)
    return Inputs(samples=samples, **context_tables(lake, hist_start, last))


def context_tables(lake: Lake, start: date, end: date) -> dict:
    """raw items and users up to `end`, raw clicks of `start`..`end` (the behaviour history), the
    site-wide order rates of the new items (`site_order_rates`) and their traffic-support arms."""
    items = lake.read_range(*catalog.RAW["items"], date.min, end).to_pandas().drop_duplicates("item_id", keep="last")
    users = lake.read_range(*catalog.RAW["users"], date.min, end).to_pandas().drop_duplicates("user_id", keep="last")
    clicks = _read(lake, *catalog.RAW["clicks"], start, end)
    clicks = pd.DataFrame(columns=["user_id", "item_id", "ts"]) if clicks is None else clicks
    return {"items": items, "users": users, "clicks": clicks[["user_id", "item_id", "ts"]],
            "site_rates": site_order_rates(lake, items, start, end), "arms": experiment_arms(lake, start, end)}


def site_order_rates(lake: Lake, items: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """item_id, site_orders, site_days of the items listed in `start`..`end`: their raw/site_orders
    on days 0..29 after listing up to `end`, and how many of those days lie on or before `end`."""
    listing = pd.to_datetime(items["listing_date"]).dt.date
    new = items.loc[(listing >= start) & (listing <= end), ["item_id"]].assign(listing=listing)
    orders = _read(lake, *catalog.RAW["site_orders"], start, end)
    orders = (pd.DataFrame(columns=["item_id", "ts"]) if orders is None else orders[["item_id", "ts"]]).merge(
        new, on="item_id")
    age = (_utc(orders["ts"]).dt.tz_localize(None).dt.normalize() - pd.to_datetime(orders["listing"])).dt.days
    counts = orders[(age >= 0) & (age < calendar.NEW_ITEM_DAYS)].groupby("item_id").size()
    days = np.clip([(end - d).days + 1 for d in new["listing"]], 1, calendar.NEW_ITEM_DAYS)
    return pd.DataFrame({"item_id": new["item_id"].to_numpy(np.int64),
                         "site_orders": counts.reindex(new["item_id"].to_numpy(), fill_value=0).to_numpy(float),
                         "site_days": np.asarray(days, float)})


def experiment_arms(lake: Lake, start: date, end: date) -> pd.DataFrame:
    """item_id, arm of the traffic-support experiment for the items assigned in `start`..`end`."""
    arms = _read(lake, *catalog.RAW["item_experiments"], start, end)
    if arms is None:
        return pd.DataFrame({"item_id": pd.Series(dtype="int64"), "arm": pd.Series(dtype="object")})
    arms = arms[arms["experiment"] == "traffic_support"]
    return arms[["item_id", "arm"]].drop_duplicates("item_id", keep="last").reset_index(drop=True)


# -- encoding ----------------------------------------------------------------
def hash_title(title: str, width: int, buckets: int) -> list[int]:
    """Hashed word ids in 1..buckets-1 (0 pads), first `width` words (stable across processes)."""
    ids = [zlib.crc32(w.encode()) % (buckets - 1) + 1 for w in _WORD.findall(str(title).lower())][:width]
    return ids + [0] * (width - len(ids))


def item_table(items: pd.DataFrame, width: int, buckets: int) -> tuple[dict[int, int], np.ndarray, np.ndarray]:
    """item_id -> row (from 1), tokens [M+1, W], category [M+1] (row 0 is padding)."""
    text = items["title"].fillna("") + " " + items.get("brand", pd.Series("", index=items.index)).fillna("")
    tokens = np.zeros((len(items) + 1, width), np.int64)
    tokens[1:] = np.array([hash_title(t, width, buckets) for t in text], np.int64).reshape(-1, width)
    category = np.concatenate([[0], items["category_id"].to_numpy(np.int64) + 1])
    return dict(zip(items["item_id"].to_numpy(), range(1, len(items) + 1), strict=True)), tokens, category


def history_rows(samples: pd.DataFrame, clicks: pd.DataFrame, row_of: dict[int, int], length: int) -> np.ndarray:
    """[N, L] rows of each sample user's last `length` clicked items strictly before the sample time."""
    users = pd.Index(pd.unique(np.concatenate([samples["user_id"].to_numpy(np.int64), clicks["user_id"].to_numpy(np.int64)])))
    times = np.unique(np.concatenate([_utc(samples["ts"]).to_numpy(np.int64), _utc(clicks["ts"]).to_numpy(np.int64)]))
    span = len(times) + 1

    def key(df: pd.DataFrame) -> np.ndarray:
        return users.get_indexer(df["user_id"]) * span + np.searchsorted(times, _utc(df["ts"]).to_numpy(np.int64))

    ckey = key(clicks)
    order = np.argsort(ckey, kind="stable")
    ckey, citems = ckey[order], clicks["item_id"].to_numpy()[order]
    crow = np.array([row_of.get(i, 0) for i in citems], np.int64)
    skey = key(samples)
    end = np.searchsorted(ckey, skey, "left")                       # [N] clicks strictly before
    start = np.searchsorted(ckey, (skey // span) * span, "left")    # [N] the user's first click
    idx = end[:, None] - np.arange(length, 0, -1)[None, :]          # [N, L] oldest .. newest
    valid = idx >= start[:, None]
    return np.where(valid, crow[np.clip(idx, 0, max(len(crow) - 1, 0))] if len(crow) else 0, 0)


def prior_activity(s: pd.DataFrame) -> pd.DataFrame:
    """ctx__log_prior_exposures / ctx__log_prior_clicks: the item's exposures and clicks in the
    samples on the days before each exposure's day (point in time; a click's effect saturates).
    Rows that carry `prior_exposures` / `prior_clicks` (a pool candidate's counts up to the scoring
    day, see `models.itemltv.pipeline`) use those instead."""
    if {"prior_exposures", "prior_clicks"} <= set(s.columns):
        return s.assign(ctx__log_prior_exposures=np.log1p(s["prior_exposures"].astype(float)),
                        ctx__log_prior_clicks=np.log1p(s["prior_clicks"].astype(float))).drop(
            columns=["prior_exposures", "prior_clicks"])
    day = s["ts"].dt.floor("D")
    daily = s.assign(_day=day).groupby(["item_id", "_day"])["treatment"].agg(["size", "sum"])
    before = daily.groupby(level=0).cumsum() - daily                                   # exclusive of the day
    idx = pd.MultiIndex.from_arrays([s["item_id"], day])
    prior = before.reindex(idx).to_numpy()
    return s.assign(ctx__log_prior_exposures=np.log1p(prior[:, 0]), ctx__log_prior_clicks=np.log1p(prior[:, 1]))


def numeric_frame(inputs: Inputs) -> pd.DataFrame:
    """Samples with item/user/context numeric columns (`item__`, `user__`, `ctx__` prefixes)."""
    items = inputs.items[["item_id", "price", "listing_date"]].rename(columns={"listing_date": "item_listing_date"})
    s = inputs.samples.merge(items, on="item_id", how="left")
    listing = pd.to_datetime(s["listing_date"] if "listing_date" in s else s["item_listing_date"], utc=True)
    s = s.assign(listing_date=listing.dt.date, age_days=(s["ts"] - listing).dt.days.clip(lower=0),
                 item__log_price=np.log1p(s["price"].astype(float)))
    s = prior_activity(s.assign(ctx__age=s["age_days"] / 30.0))
    if inputs.site_rates is not None:
        rates = inputs.site_rates.assign(item__log_site_orders_per_day=np.log1p(
            inputs.site_rates["site_orders"] / inputs.site_rates["site_days"]))
        s = s.merge(rates[["item_id", "item__log_site_orders_per_day"]], on="item_id", how="left")
    if inputs.arms is not None:
        s = s.merge(inputs.arms.assign(support=(inputs.arms["arm"] == "support").astype(float))[
            ["item_id", "support"]], on="item_id", how="left")
    return s.merge(profile_columns(inputs.users), on="user_id", how="left")


def profile_columns(users: pd.DataFrame) -> pd.DataFrame:
    """user_id + the declared profile as numbers: `user__age_band` (ordinal 0..4, NaN unknown)."""
    band = users["age_band"] if "age_band" in users else pd.Series(np.nan, index=users.index)
    ordinal = band.map({b: float(i) for i, b in enumerate(AGE_BANDS)})
    return pd.DataFrame({"user_id": users["user_id"].to_numpy(np.int64), "user__age_band": ordinal.to_numpy(float)})


def fit_preprocess(frame: pd.DataFrame, cfg: ItemLTVConfig) -> Preprocess:
    """Feature columns per group and their standardisation (fit on training rows only).

    A column present in fewer than `min_feature_coverage` of the training rows is left out: the
    model could not learn its weight, yet scoring rows that have it would feed it through (e.g.
    Feast features of days whose feature tables were never built)."""
    covered = frame.notna().mean()
    dropped = sorted(c for c in frame.columns if c.startswith(("item__", "user__", "ctx__"))
                     and covered[c] < cfg.min_feature_coverage)
    if dropped:
        log.warning("left out %d feature column(s) present in < %.0f%% of the training rows: %s",
                    len(dropped), 100 * cfg.min_feature_coverage, ", ".join(dropped))
    columns = {g: sorted(c for c in frame.columns if c.startswith(f"{g}__") and c not in dropped)
               for g in ("item", "user", "ctx")}
    mean = {g: [float(frame[c].astype(float).mean()) if frame[c].notna().any() else 0.0 for c in cols]
            for g, cols in columns.items()}
    std = {g: [float(frame[c].astype(float).std()) if frame[c].notna().sum() > 1 else 1.0 for c in cols]
           for g, cols in columns.items()}
    std = {g: [s if np.isfinite(s) and s > 1e-8 else 1.0 for s in v] for g, v in std.items()}
    return Preprocess(cfg.title_tokens, cfg.hash_buckets, cfg.history_len, columns, mean, std)


def standardise(frame: pd.DataFrame, pre: Preprocess) -> dict[str, np.ndarray]:
    """group -> [N, F] float32, missing columns / values as the training mean (0 after scaling)."""
    out = {}
    for g, cols in pre.columns.items():
        raw = np.stack([frame[c].astype(float).to_numpy() if c in frame else np.full(len(frame), np.nan)
                        for c in cols], 1) if cols else np.zeros((len(frame), 0))
        z = (raw - np.array(pre.mean[g])) / np.array(pre.std[g])
        out[g] = np.nan_to_num(z, nan=0.0).astype(np.float32)
    return out


def encode(inputs: Inputs, pre: Preprocess, frame: pd.DataFrame | None = None) -> Encoded:
    """Encode every sample of `inputs` (or of its already built numeric `frame`)."""
    frame = numeric_frame(inputs) if frame is None else frame
    row_of, tokens, category = item_table(inputs.items, pre.title_tokens, pre.hash_buckets)
    item_row = np.array([row_of.get(i, 0) for i in frame["item_id"]], np.int64)
    hist = history_rows(frame, inputs.clicks, row_of, pre.history_len)
    _, group = np.unique(frame["item_id"].to_numpy(), return_inverse=True)
    meta_cols = [c for c in ("request_id", "user_id", "item_id", "ts", "listing_date", "age_days", "support")
                 if c in frame]
    y = frame["y"].to_numpy(np.float32) if "y" in frame else np.zeros(len(frame), np.float32)
    return Encoded(tokens, category, item_row, hist, standardise(frame, pre), frame["treatment"].to_numpy(np.float32),
                   y, group.astype(np.int64), frame[meta_cols].reset_index(drop=True))


@dataclass
class Splits:
    train: Encoded
    val: Encoded
    test: Encoded
    cohorts: dict[str, list[str]]    # split -> listing dates


def holdout_sizes(n_cohorts: int, cfg: ItemLTVConfig) -> tuple[int, int]:
    """(val, test) cohort counts: the configured ones when `n_cohorts` leaves at least one to train;
    on a young lake (a platform's first weeks) fewer, down to one each, so that three closed cohorts
    already train, select and test a model. Fewer than three is an error that says how to get more."""
    if n_cohorts >= cfg.val_cohorts + cfg.test_cohorts + 1:
        return cfg.val_cohorts, cfg.test_cohorts
    if n_cohorts < 3:
        raise ValueError(
            f"need at least 3 closed listing-day cohorts (1 to train, 1 to validate, 1 to test; "
            f"{cfg.val_cohorts + cfg.test_cohorts + 1} for itemltv.val_cohorts={cfg.val_cohorts} + "
            f"test_cohorts={cfg.test_cohorts} + 1), found {n_cohorts} in samples/itemltv_samples: a cohort closes "
            f"{calendar.COHORT_OFFSET} days after listing; backfill the label job for the closable days "
            f"(`growthgr spark itemltv-labels --start ... --end ...`)")
    test = min(cfg.test_cohorts, (n_cohorts - 1) // 2)
    return min(cfg.val_cohorts, max(1, (n_cohorts - 1 - test) // 2)), test


def cohort_split(listing_dates: pd.Series, cfg: ItemLTVConfig) -> dict[str, list[str]]:
    """Chronological split by listing-day cohort: newest `test`, the ones before `val`, then `train`
    (sizes from `holdout_sizes`)."""
    cohorts = sorted(listing_dates.astype(str).unique())
    n_val, n_test = holdout_sizes(len(cohorts), cfg)
    if (n_val, n_test) != (cfg.val_cohorts, cfg.test_cohorts):
        log.warning("only %d closed cohorts: holding out %d for validation and %d for test "
                    "(itemltv.val_cohorts=%d, test_cohorts=%d need %d)", len(cohorts), n_val, n_test,
                    cfg.val_cohorts, cfg.test_cohorts, cfg.val_cohorts + cfg.test_cohorts + 1)
    n_hold = n_val + n_test
    return {"train": cohorts[:-n_hold][-cfg.train_cohorts:], "val": cohorts[-n_hold:-n_test],
            "test": cohorts[-n_test:]}


def prepare(inputs: Inputs, cfg: ItemLTVConfig, pre: Preprocess | None = None) -> tuple[Splits, Preprocess]:
    """Split by cohort, fit the preprocessing on the training cohorts (unless given), encode all splits."""
    frame = numeric_frame(inputs)
    named = cohort_split(frame["listing_date"], cfg)
    listing = frame["listing_date"].astype(str).to_numpy()
    pre = pre or fit_preprocess(frame[np.isin(listing, named["train"])], cfg)
    enc = encode(inputs, pre, frame)
    parts = {k: enc.subset(np.isin(listing, v)) for k, v in named.items()}
    return Splits(parts["train"], parts["val"], parts["test"], named), pre
