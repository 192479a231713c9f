"""`item_daily_stats` (zone `curated`): the funnel of every item on one UTC day.

Output `curated/item_daily_stats/ds=D`, one row per item with any funnel event on D:

| column | type | meaning |
|---|---|---|
| item_id | int64 | key |
| day | date | = D (the UTC day of the events) |
| rank_candidates | int64 | rows in `rank_candidates` of requests made on D |
| exposures | int64 | exposures on D |
| clicks | int64 | clicks on D |
| search_orders | int64 | `purchases` rows on D (orders through search) |
| search_gmv | float64 | their GMV |
| site_orders | int64 | `site_orders` rows on D (orders outside search) |
| site_gmv | float64 | their GMV |
| orders | int64 | search_orders + site_orders (an order is one order row, not quantity) |
| gmv | float64 | search_gmv + site_gmv |

Rank candidates carry no timestamp: they take the day of their request.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from foundation.catalog import ITEM_DAILY_STATS
from foundation.lake import Lake
from spark_jobs.common import read_table, ts_day, write_output

FUNNEL_TABLES = ("search_requests", "rank_candidates", "exposures", "clicks", "purchases", "site_orders")
COUNTS = ("rank_candidates", "exposures", "clicks", "search_orders", "site_orders")
AMOUNTS = ("search_gmv", "site_gmv")


def _events(df: DataFrame, name: str, amount: str | None = None) -> DataFrame:
    cols = [F.col("item_id"), ts_day("ts").alias("day"), F.lit(1).alias(name)]
    if amount:
        cols.append(F.col("gmv").alias(amount))
    return df.select(*cols)


def transform(
    search_requests: DataFrame, rank_candidates: DataFrame | None, exposures: DataFrame, clicks: DataFrame,
    purchases: DataFrame, site_orders: DataFrame,
) -> DataFrame:
    """Per item and UTC day: the funnel counts and GMV (every day present in the inputs).

    Without `rank_candidates` (None) their count is 0 and items with candidates only are absent.
    """
    parts = [
        _events(exposures, "exposures"),
        _events(clicks, "clicks"),
        _events(purchases, "search_orders", "search_gmv"),
        _events(site_orders, "site_orders", "site_gmv"),
    ]
    if rank_candidates is not None:
        candidates = rank_candidates.join(search_requests.select("request_id", "ts"), "request_id")
        parts.insert(0, _events(candidates, "rank_candidates"))
    stacked = parts[0]
    for part in parts[1:]:
        stacked = stacked.unionByName(part, allowMissingColumns=True)
    if rank_candidates is None:
        stacked = stacked.withColumn("rank_candidates", F.lit(None).cast("int"))
    sums = [F.coalesce(F.sum(c), F.lit(0)).cast("long").alias(c) for c in COUNTS]
    sums += [F.coalesce(F.sum(c), F.lit(0.0)).cast("double").alias(c) for c in AMOUNTS]
    return stacked.groupBy(*ITEM_DAILY_STATS.keys).agg(*sums).select(
        *ITEM_DAILY_STATS.keys, *COUNTS[:4], "search_gmv", "site_orders", "site_gmv",
        (F.col("search_orders") + F.col("site_orders")).alias("orders"),
        (F.col("search_gmv") + F.col("site_gmv")).alias("gmv"),
    )


def extract(spark, lake: Lake, ds_list: list[date]) -> dict[str, DataFrame]:
    return {t: read_table(spark, lake, t, ds_list) for t in FUNNEL_TABLES}


def run(spark, lake: Lake, ds: date) -> dict[str, int]:
    out = transform(**extract(spark, lake, [ds])).where(F.col("day") == F.lit(ds).cast("date"))
    return {ITEM_DAILY_STATS.table: write_output(lake, *ITEM_DAILY_STATS, ds, out, ITEM_DAILY_STATS.keys)}
