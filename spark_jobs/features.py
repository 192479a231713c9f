"""Feature tables for the feature store (zone `features`), one partition per `ds`.

Every row is keyed by its entity id plus `event_timestamp` = the last
microsecond of UTC day `ds` (`ds 23:59:59.999999+00:00`, timestamp[us, UTC]):
the features summarise data up to and including day `ds`, so a point-in-time
join gives a request on day ds+1 the features of ds. Rolling windows of `w`
days cover UTC days ds-w+1 .. ds (clipped at the first day of data). Ratios
are 0 when their denominator is 0. An order is one order row.

`features/user_features` (key `user_id`; every user signed up by `ds`):
  user_id, event_timestamp, region, age_band (the declared profile fields of
  raw/users), tenure_days (ds - signup_date),
  requests_1d, requests_7d, requests_30d, active_days_30d (distinct UTC days
  of ds-29 .. ds with a search request), clicks_7d, clicks_30d,
  orders_30d (search purchases + site orders),
  category_affinity (array<double>, length 16: share of the user's clicks and
  orders of the last 30 days per item category 0..15; all 0 when none),
  price_level_30d (mean price of items clicked or ordered in 30 days, 0 when none),
  recent_item_ids (array<int64>: the last `sequence_len` distinct items clicked
  or ordered in 30 days, most recent last).
  Every user feature is declared by the user or derived from logged behaviour;
  the simulator's latent user parameters (truth/users) are never read.

`features/item_features` (key `item_id`; every item listed on or before `ds`):
  item_id, event_timestamp, category_id, brand, price, listing_date,
  age_days (ds - listing_date), is_new (age_days <= 29), and for w in 1, 7, 30:
  exposures_{w}d, clicks_{w}d, orders_{w}d (search + site), gmv_{w}d,
  ctr_{w}d (clicks / exposures), cvr_{w}d (search orders / clicks).

`features/query_features` (key `query_id` = `catalog.query_id(query_text)`,
int64; every query searched in the last 30 days):
  query_id, event_timestamp, query_text, intent_category_id (the most frequent,
  ties to the smallest id), requests_1d, requests_7d, requests_30d,
  exposures_30d, clicks_30d, orders_30d (search purchases), ctr_30d, cvr_30d,
  new_item_exposure_share_30d (share of exposures on items aged 0..29 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from foundation.calendar import NEW_ITEM_DAYS
from foundation.catalog import FEATURE_TABLES
from foundation.lake import Lake
from spark_jobs import item_daily_stats
from spark_jobs.common import (
    catalog_days,
    day,
    end_of_day,
    history_days,
    query_id_col,
    read_table,
    ts_day,
    write_output,
)

N_CATEGORIES = 16


@dataclass(frozen=True)
class FeatureParams:
    windows: tuple[int, ...] = (1, 7, 30)
    sequence_len: int = 20
    new_item_days: int = NEW_ITEM_DAYS


class FeatureOutputs(NamedTuple):
    user_features: DataFrame
    item_features: DataFrame
    query_features: DataFrame


def _ratio(num: str, den: str) -> Column:
    return F.when(F.col(den) > 0, F.col(num) / F.col(den)).otherwise(F.lit(0.0))


def _since(col: str, ds: date, w: int) -> Column:
    """True when day column `col` is within the w days ending on ds."""
    return F.col(col) >= F.lit(day(ds, -(w - 1)))


def _window(events: DataFrame, ds: date, w: int) -> DataFrame:
    """The rows of `events` whose timestamp falls on UTC days ds-w+1 .. ds."""
    return events.where(ts_day("ts").between(F.lit(day(ds, -(w - 1))), F.lit(day(ds))))


def _in_window_sum(value: str, ds: date, w: int) -> Column:
    return F.coalesce(F.sum(F.when(_since("day", ds, w), F.col(value))), F.lit(0)).alias(f"{value}_{w}d")


def item_features(items: DataFrame, daily: DataFrame, ds: date, params: FeatureParams) -> DataFrame:
    """Static attributes, age and rolling funnel counts per item (`daily` = item_daily_stats rows)."""
    sums = [
        _in_window_sum(v, ds, w) for w in params.windows for v in ("exposures", "clicks", "search_orders", "orders", "gmv")
    ]
    rolled = daily.groupBy("item_id").agg(*sums)
    catalog = items.where(F.col("listing_date") <= F.lit(day(ds))).select(
        "item_id", "category_id", "brand", "price", "listing_date"
    ).dropDuplicates(["item_id"])
    out = catalog.join(rolled, "item_id", "left").fillna(0).withColumn(
        "age_days", F.datediff(F.lit(day(ds)), F.col("listing_date"))
    ).withColumn("is_new", F.col("age_days") <= params.new_item_days - 1)
    cols = ["item_id", F.lit(end_of_day(ds)).alias("event_timestamp"), F.col("category_id").cast("long"), "brand",
            "price", "listing_date", F.col("age_days").cast("long"), "is_new"]
    for w in params.windows:
        cols += [F.col(f"{v}_{w}d").cast("long") for v in ("exposures", "clicks", "orders")]
        cols += [F.col(f"gmv_{w}d").cast("double"), _ratio(f"clicks_{w}d", f"exposures_{w}d").alias(f"ctr_{w}d"),
                 _ratio(f"search_orders_{w}d", f"clicks_{w}d").alias(f"cvr_{w}d")]
    return out.select(*cols)


def _recent_items(events: DataFrame, n: int) -> DataFrame:
    """Per user: the last n distinct item ids of `events` (user_id, item_id, ts), most recent last."""
    ordered = F.array_sort(F.collect_list(F.struct(F.col("ts"), F.col("item_id"))))
    newest_first = F.reverse(F.transform(ordered, lambda e: e["item_id"]))
    return events.groupBy("user_id").agg(F.reverse(F.slice(F.array_distinct(newest_first), 1, n)).alias("seq"))


def _category_affinity(events: DataFrame) -> DataFrame:
    """Per user: share of events per category 0..15, and the mean price of the items."""
    per_cat = events.groupBy("user_id", "category_id").agg(F.count(F.lit(1)).alias("n"))
    shares = per_cat.groupBy("user_id").agg(F.map_from_entries(F.collect_list(F.struct("category_id", "n"))).alias("m"),
                                            F.sum("n").alias("total"))
    affinity = F.array(*[F.coalesce(F.col("m")[c], F.lit(0)) / F.col("total") for c in range(N_CATEGORIES)])
    prices = events.groupBy("user_id").agg(F.avg("price").alias("price_level_30d"))
    return shares.select("user_id", affinity.alias("category_affinity")).join(prices, "user_id")


def user_features(
    users: DataFrame, items: DataFrame, search_requests: DataFrame, clicks: DataFrame, orders: DataFrame,
    ds: date, params: FeatureParams,
) -> DataFrame:
    """Declared profile, activity counts, category affinity, price level and behaviour sequence per user."""
    acts = clicks.select("user_id", "item_id", "ts", F.lit("click").alias("kind")).unionByName(
        orders.select("user_id", "item_id", "ts", F.lit("order").alias("kind"))
    ).withColumn("day", ts_day("ts"))
    acts = acts.join(items.select("item_id", "category_id", "price").dropDuplicates(["item_id"]), "item_id", "left")
    reqs = search_requests.withColumn("day", ts_day("ts")).groupBy("user_id").agg(
        *[F.count(F.when(_since("day", ds, w), 1)).alias(f"requests_{w}d") for w in (1, 7, 30)],
        F.countDistinct(F.when(_since("day", ds, 30), F.col("day"))).alias("active_days_30d"),
    )
    counts = acts.groupBy("user_id").agg(
        *[F.count(F.when(_since("day", ds, w) & (F.col("kind") == "click"), 1)).alias(f"clicks_{w}d") for w in (7, 30)],
        F.count(F.when(F.col("kind") == "order", 1)).alias("orders_30d"),
    )
    zeros = F.array_repeat(F.lit(0.0), N_CATEGORIES)
    return (
        users.where(F.col("signup_date") <= F.lit(day(ds))).dropDuplicates(["user_id"])
        .join(reqs, "user_id", "left").join(counts, "user_id", "left")
        .join(_category_affinity(acts), "user_id", "left").join(_recent_items(acts, params.sequence_len), "user_id", "left")
        .fillna(0).fillna(0.0)
        .select(
            "user_id", F.lit(end_of_day(ds)).alias("event_timestamp"), "region", "age_band",
            F.datediff(F.lit(day(ds)), F.col("signup_date")).cast("long").alias("tenure_days"),
            *[F.col(f"requests_{w}d").cast("long") for w in (1, 7, 30)], F.col("active_days_30d").cast("long"),
            F.col("clicks_7d").cast("long"), F.col("clicks_30d").cast("long"), F.col("orders_30d").cast("long"),
            F.coalesce("category_affinity", zeros).alias("category_affinity"),
            F.col("price_level_30d").cast("double"),
            F.coalesce("seq", F.array().cast("array<long>")).alias("recent_item_ids"),
        )
    )


def query_features(
    items: DataFrame, search_requests: DataFrame, exposures: DataFrame, clicks: DataFrame, purchases: DataFrame,
    ds: date, params: FeatureParams,
) -> DataFrame:
    """Frequency, intent and funnel rates per query text (30 days)."""
    reqs = search_requests.select(
        "request_id", "query_text", "intent_category_id", ts_day("ts").alias("day"),
        query_id_col(F.col("query_text")).alias("query_id"),
    )
    ages = items.select("item_id", "listing_date").dropDuplicates(["item_id"])
    exp = exposures.join(ages, "item_id", "left").select(
        "request_id", (F.datediff(ts_day("ts"), F.col("listing_date")) < params.new_item_days).cast("int").alias("new")
    )
    funnel = (
        exp.groupBy("request_id").agg(F.count(F.lit(1)).alias("e"), F.sum("new").alias("e_new"))
        .join(clicks.groupBy("request_id").agg(F.count(F.lit(1)).alias("c")), "request_id", "full")
        .join(purchases.groupBy("request_id").agg(F.count(F.lit(1)).alias("o")), "request_id", "full")
    )
    per_req = reqs.join(funnel, "request_id", "left").fillna(0)
    intent = per_req.groupBy("query_id", "intent_category_id").agg(F.count(F.lit(1)).alias("n")).groupBy(
        "query_id").agg(F.min_by("intent_category_id", F.struct(-F.col("n"), F.col("intent_category_id"))).alias("intent"))
    agg = per_req.groupBy("query_id").agg(
        F.min("query_text").alias("query_text"),
        *[F.count(F.when(_since("day", ds, w), 1)).cast("long").alias(f"requests_{w}d") for w in (1, 7, 30)],
        F.sum("e").cast("long").alias("exposures_30d"), F.sum("c").cast("long").alias("clicks_30d"),
        F.sum("o").cast("long").alias("orders_30d"), F.sum("e_new").cast("long").alias("new_exposures"),
    )
    return agg.join(intent, "query_id").select(
        "query_id", F.lit(end_of_day(ds)).alias("event_timestamp"), "query_text",
        F.col("intent").cast("long").alias("intent_category_id"), "requests_1d", "requests_7d", "requests_30d",
        "exposures_30d", "clicks_30d", "orders_30d", _ratio("clicks_30d", "exposures_30d").alias("ctr_30d"),
        _ratio("orders_30d", "clicks_30d").alias("cvr_30d"),
        _ratio("new_exposures", "exposures_30d").alias("new_item_exposure_share_30d"),
    )


# Raw tables the feature job reads over its window (rank candidates are not a feature input:
# reading them cost about a third of the job).
WINDOW_TABLES = ("search_requests", "exposures", "clicks", "purchases", "site_orders")


def transform(
    users: DataFrame, items: DataFrame, search_requests: DataFrame,
    exposures: DataFrame, clicks: DataFrame, purchases: DataFrame, site_orders: DataFrame,
    ds: date, params: FeatureParams = FeatureParams(),
) -> FeatureOutputs:
    """The three feature tables of `ds` from the last 30 days of raw data (plus the catalogs).

    Events outside UTC days ds-29 .. ds are ignored, whatever the inputs hold.
    """
    search_requests, exposures, clicks, purchases, site_orders = (
        _window(df, ds, max(params.windows)) for df in (search_requests, exposures, clicks, purchases, site_orders)
    )
    daily = item_daily_stats.transform(search_requests, None, exposures, clicks, purchases, site_orders)
    orders = purchases.select("user_id", "item_id", "ts").unionByName(site_orders.select("user_id", "item_id", "ts"))
    return FeatureOutputs(
        user_features(users, items, search_requests, clicks, orders, ds, params),
        item_features(items, daily, ds, params),
        query_features(items, search_requests, exposures, clicks, purchases, ds, params),
    )


def extract(spark, lake: Lake, ds: date, params: FeatureParams) -> dict[str, DataFrame]:
    window = history_days(lake, "search_requests", ds, max(params.windows))
    funnel = {t: read_table(spark, lake, t, window) for t in WINDOW_TABLES}
    catalogs = {t: read_table(spark, lake, t, catalog_days(lake, t, ds)) for t in ("users", "items")}
    return {**catalogs, **funnel}


def run(spark, lake: Lake, ds: date, params: FeatureParams = FeatureParams()) -> dict[str, int]:
    """Write the three feature tables of `ds`. The inputs are read once and cached for the three
    outputs, each of which would otherwise re-read the 30-day window (through the lake reader
    on an `s3://` lake that doubled the job's time)."""
    inputs = {name: df.cache() for name, df in extract(spark, lake, ds, params).items()}
    try:
        out = transform(**inputs, ds=ds, params=params)
        return {name: write_output(lake, *FEATURE_TABLES[name], ds, df, FEATURE_TABLES[name].keys)
                for name, df in out._asdict().items()}
    finally:
        for df in inputs.values():
            df.unpersist()
