"""`gr_samples` (zone `samples`): one row per search request of UTC day `ds`, with the
structured funnel sets the generative retriever learns from.

Output `samples/gr_samples/ds=D` (key `request_id`):

| column | type | meaning |
|---|---|---|
| request_id, user_id | int64 | |
| ts | timestamp[us, UTC] | request time |
| query_text, query_id, intent_category_id | string, int64, int32 | `query_id` = `catalog.query_id(query_text)` |
| history_item_ids | array<int64> | the last `history_len` distinct items the user clicked or ordered (search or site) strictly before `ts`, on UTC days D-`history_days` .. D; most recent last |
| history_purchase_ids | array<int64> | the same, orders only |
| rank_candidate_ids | array<int64> | rank candidates, by rank |
| exposure_ids | array<int64> | exposed items, by position |
| click_ids | array<int64> | clicked items, by click time |
| purchase_ids | array<int64> | items bought through this request, by time |
| site_order_item_ids | array<int64> | items of site-wide orders on D whose `linked_request_id` is this request, by time |

Sets are empty arrays when the funnel stopped earlier. Site orders linked to
the request but placed after day D are not included (the run for D only reads
data up to D).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from foundation.catalog import GR_SAMPLES
from foundation.lake import Lake
from spark_jobs.common import history_days, query_id_col, read_table, write_output

SETS = ("rank_candidate_ids", "exposure_ids", "click_ids", "purchase_ids", "site_order_item_ids")


@dataclass(frozen=True)
class GRParams:
    history_days: int = 30
    history_len: int = 50


def _ordered_set(df: DataFrame, key: str, order: str, name: str) -> DataFrame:
    """Per `key`: the item ids of `df` as an array sorted by `order` (ties by item id)."""
    ordered = F.array_sort(F.collect_list(F.struct(F.col(order), F.col("item_id"))))
    return df.groupBy(key).agg(F.transform(ordered, lambda e: e["item_id"]).alias(name))


def _history(requests: DataFrame, events: DataFrame, n: int, name: str) -> DataFrame:
    """Per request: the last n distinct items of the user's `events` strictly before the request."""
    per_user = events.groupBy("user_id").agg(F.collect_list(F.struct("ts", "item_id")).alias("ev"))
    joined = requests.select("request_id", "user_id", F.col("ts").alias("req_ts")).join(per_user, "user_id", "left")
    before = F.array_sort(F.filter(F.coalesce("ev", F.array()), lambda e: e["ts"] < F.col("req_ts")))
    newest_first = F.reverse(F.transform(before, lambda e: e["item_id"]))
    return joined.select("request_id", F.reverse(F.slice(F.array_distinct(newest_first), 1, n)).alias(name))


def transform(
    search_requests: DataFrame, rank_candidates: DataFrame, exposures: DataFrame, clicks: DataFrame,
    purchases: DataFrame, site_orders: DataFrame, history_clicks: DataFrame, history_orders: DataFrame,
    ds: date, params: GRParams = GRParams(),
) -> DataFrame:
    """Per request made on `ds`: query, history and funnel sets (see the module docstring).

    `history_clicks` / `history_orders` hold (user_id, item_id, ts) rows of the
    history window (search purchases and site orders together for orders).
    """
    requests = search_requests.where(F.to_date("ts") == F.lit(ds).cast("date"))
    sets = [
        _ordered_set(rank_candidates, "request_id", "rank", "rank_candidate_ids"),
        _ordered_set(exposures, "request_id", "position", "exposure_ids"),
        _ordered_set(clicks, "request_id", "ts", "click_ids"),
        _ordered_set(purchases, "request_id", "ts", "purchase_ids"),
        _ordered_set(site_orders.where(F.col("linked_request_id").isNotNull())
                     .withColumnRenamed("linked_request_id", "lrid"), "lrid", "ts", "site_order_item_ids")
        .withColumnRenamed("lrid", "request_id"),
        _history(requests, history_clicks.unionByName(history_orders), params.history_len, "history_item_ids"),
        _history(requests, history_orders, params.history_len, "history_purchase_ids"),
    ]
    out = requests.select(
        "request_id", "user_id", "ts", "query_text", query_id_col(F.col("query_text")).alias("query_id"),
        "intent_category_id",
    )
    for s in sets:
        out = out.join(s, "request_id", "left")
    empty = F.array().cast("array<long>")
    return out.select(
        "request_id", "user_id", "ts", "query_text", "query_id", "intent_category_id",
        *[F.coalesce(c, empty).alias(c) for c in ("history_item_ids", "history_purchase_ids", *SETS)],
    )


def extract(spark, lake: Lake, ds: date, params: GRParams) -> dict[str, DataFrame]:
    today = {t: read_table(spark, lake, t, [ds]) for t in
             ("search_requests", "rank_candidates", "exposures", "clicks", "purchases", "site_orders")}
    window = history_days(lake, "clicks", ds, params.history_days + 1)
    cols = ["user_id", "item_id", "ts"]
    orders = read_table(spark, lake, "purchases", window).select(*cols).unionByName(
        read_table(spark, lake, "site_orders", window).select(*cols))
    return {**today, "history_clicks": read_table(spark, lake, "clicks", window).select(*cols),
            "history_orders": orders}


def run(spark, lake: Lake, ds: date, params: GRParams = GRParams()) -> dict[str, int]:
    out = transform(**extract(spark, lake, ds, params), ds=ds, params=params)
    return {GR_SAMPLES.table: write_output(lake, *GR_SAMPLES, ds, out, GR_SAMPLES.keys)}
