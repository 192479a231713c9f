"""`itemltv_labels` (zone `samples`): the retrospective 7-day-after-30-day ItemLTV label
and the exposure samples of one listing cohort.

Day numbering (DESIGN.md section 1): an item's listing day (`items.listing_date`)
is day 0. The run for logical date `ds` builds the cohort listed on L = ds - 36,
whose label window closes on `ds`. With every day a UTC calendar day
[00:00:00, 24:00:00):

- new-item period: days 0..29 = UTC days L .. L+29 = ds-36 .. ds-7,
  i.e. timestamps in [ds-36 00:00 UTC, ds-6 00:00 UTC);
- label window: days 30..36 = UTC days L+30 .. L+36 = ds-6 .. ds,
  i.e. timestamps in [ds-6 00:00 UTC, ds+1 00:00 UTC).

An event belongs to the day of its own timestamp in UTC, not to the partition
it was logged in. Items listed on any other day (ds-35 is still in its
new-item period) are not in this cohort.

One run may build several cohorts at once (`run_range`, used by backfills): every
rule above is relative to each item's own listing day, so a range run writes the
same partitions as one run per day, in one Spark job instead of many.

Outputs, both partitioned by `ds` (= the last day of the label window):

`samples/itemltv_labels`, one row per cohort item (key `item_id`):
  item_id, listing_date, category_id, price,
  label_window_start, label_window_end (dates, = ds-6 and ds),
  label_orders (int64: orders on days 30..36; an order is one order row of
  `purchases` and, with `include_site_orders`, of `site_orders`),
  label_gmv, label (= label_orders / 7: mean daily orders, 0 when none),
  y (= log1p(label)), new_period_exposures, new_period_clicks (days 0..29).

`samples/itemltv_samples`, one row per exposure of a cohort item on days 0..29
(key `request_id, item_id, ts`):
  item_id, listing_date, request_id, user_id, query_text, query_id,
  intent_category_id, ts (exposure time), item_age_days (0..29), position,
  treatment (1 when the same user clicked the item in the same request, else 0),
  label, y (the item's label, repeated for convenience).
Features are joined later, point in time, by the trainer.

Departure from the paper: the paper counts the item's orders; here both search
purchases and site-wide orders count by default (`include_site_orders`), since
both are the item's sales.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from foundation.calendar import LABEL_DAYS, NEW_ITEM_DAYS
from foundation.catalog import ITEMLTV_LABELS, ITEMLTV_SAMPLES
from foundation.lake import Lake
from spark_jobs.common import catalog_days, day, days, query_id_col, read_table, ts_day

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelParams:
    new_period_days: int = NEW_ITEM_DAYS   # days 0..29
    label_days: int = LABEL_DAYS           # days 30..36
    include_site_orders: bool = True

    @property
    def horizon(self) -> int:
        """Days from listing to the last label day (`calendar.COHORT_OFFSET` = 36 by default)."""
        return self.new_period_days + self.label_days - 1


class LabelOutputs(NamedTuple):
    labels: DataFrame
    samples: DataFrame


def _as_list(ds: date | Sequence[date]) -> list[date]:
    return [ds] if isinstance(ds, date) else sorted(set(ds))


def cohort(items: DataFrame, ds: date | Sequence[date], params: LabelParams) -> DataFrame:
    """The items listed on ds - 36, for each ds given (one row each)."""
    listed = [day(d, -params.horizon) for d in _as_list(ds)]
    return (
        items.where(F.col("listing_date").isin(listed))
        .select("item_id", "listing_date", "category_id", "price")
        .dropDuplicates(["item_id"])
    )


def _with_age(df: DataFrame, items: DataFrame) -> DataFrame:
    return df.join(items.select("item_id", "listing_date"), "item_id").withColumn(
        "item_age_days", F.datediff(ts_day("ts"), F.col("listing_date"))
    )


def label_orders(orders: DataFrame, items: DataFrame, params: LabelParams) -> DataFrame:
    """Per cohort item: order count and GMV over days 30..36 (items without orders absent)."""
    aged = _with_age(orders.select("item_id", "ts", "gmv"), items)
    window = aged.where(F.col("item_age_days").between(params.new_period_days, params.horizon))
    return window.groupBy("item_id").agg(
        F.count(F.lit(1)).cast("long").alias("label_orders"), F.sum("gmv").alias("label_gmv")
    )


def new_period_exposures(exposures: DataFrame, clicks: DataFrame, items: DataFrame, params: LabelParams) -> DataFrame:
    """Exposures of cohort items on days 0..29 with `treatment` (clicked in the same request on days 0..29)."""
    new_period = F.col("item_age_days").between(0, params.new_period_days - 1)
    clicked = (
        _with_age(clicks.select("request_id", "user_id", "item_id", "ts"), items).where(new_period)
        .select("request_id", "user_id", "item_id").distinct().withColumn("treatment", F.lit(1))
    )
    aged = _with_age(exposures, items).where(new_period)
    return aged.join(clicked, ["request_id", "user_id", "item_id"], "left").withColumn(
        "treatment", F.coalesce("treatment", F.lit(0)).cast("int")
    )


def transform(
    items: DataFrame, search_requests: DataFrame, exposures: DataFrame, clicks: DataFrame,
    orders: DataFrame, ds: date | Sequence[date], params: LabelParams = LabelParams(),
) -> LabelOutputs:
    """Labels and samples of the cohort listed on ds - 36, for each ds (see the module docstring).

    `orders` holds (item_id, ts, gmv) rows: purchases, plus site orders when wanted.
    """
    members = cohort(items, ds, params)
    counts = label_orders(orders, members, params)
    exposed = new_period_exposures(exposures, clicks, members, params)
    per_item = exposed.groupBy("item_id").agg(
        F.count(F.lit(1)).cast("long").alias("new_period_exposures"),
        F.sum("treatment").cast("long").alias("new_period_clicks"),
    )
    labels = (
        members.join(counts, "item_id", "left").join(per_item, "item_id", "left")
        .fillna(0, ["label_orders", "new_period_exposures", "new_period_clicks"]).fillna(0.0, ["label_gmv"])
        .withColumn("label_window_start", F.date_add("listing_date", params.new_period_days))
        .withColumn("label_window_end", F.date_add("listing_date", params.horizon))
        .withColumn("label", F.col("label_orders") / F.lit(float(params.label_days)))
        .withColumn("y", F.log1p("label"))
    ).select(
        "item_id", "listing_date", "category_id", "price", "label_window_start", "label_window_end",
        "label_orders", "label_gmv", "label", "y", "new_period_exposures", "new_period_clicks",
    )
    requests = search_requests.select(
        "request_id", "query_text", query_id_col(F.col("query_text")).alias("query_id"), "intent_category_id"
    )
    samples = exposed.join(requests, "request_id", "left").join(labels.select("item_id", "label", "y"), "item_id")
    samples = samples.select(
        "item_id", "listing_date", "request_id", "user_id", "query_text", "query_id", "intent_category_id",
        "ts", "item_age_days", "position", "treatment", "label", "y",
    )
    return LabelOutputs(labels, samples)


def _orders(purchases: DataFrame, site_orders: DataFrame, params: LabelParams) -> DataFrame:
    cols = ["item_id", "ts", "gmv"]
    both = purchases.select(*cols)
    return both.unionByName(site_orders.select(*cols)) if params.include_site_orders else both


def extract(spark, lake: Lake, ds: date | Sequence[date], params: LabelParams) -> dict:
    """Raw inputs of each cohort: new-item period ds-36..ds-7 (requests, exposures, clicks),
    label window ds-6..ds (purchases, site orders); a range reads the union of the days."""
    ds_list = _as_list(ds)

    def union(first: int, last: int) -> list[date]:
        return sorted({d for x in ds_list for d in days(x, first, last)})

    new_period = union(-params.horizon, -params.label_days)
    label_window = union(-(params.label_days - 1), 0)
    purchases = read_table(spark, lake, "purchases", label_window)
    site_orders = read_table(spark, lake, "site_orders", label_window)
    return {
        "items": read_table(spark, lake, "items", catalog_days(lake, "items", ds_list[-1])),
        "search_requests": read_table(spark, lake, "search_requests", new_period),
        "exposures": read_table(spark, lake, "exposures", new_period),
        "clicks": read_table(spark, lake, "clicks", new_period),
        "orders": _orders(purchases, site_orders, params),
    }


def _split(table: pa.Table, column: str, values: dict[date, object]) -> dict[date, pa.Table]:
    """One slice of `table` per ds: the rows whose `column` equals `values[ds]` (order kept)."""
    return {ds: table.filter(pc.equal(table[column], pa.scalar(v, table.schema.field(column).type)))
            for ds, v in values.items()}


def run_range(spark, lake: Lake, ds: Sequence[date], params: LabelParams = LabelParams()) -> dict[date, dict[str, int]]:
    """Build the cohorts closing on each of `ds` in one Spark job; replace each day's two
    partitions (every input is checked before anything is written). Returns rows per day and table."""
    ds_list = _as_list(ds)
    out = transform(**extract(spark, lake, ds_list, params), ds=ds_list, params=params)
    cached = out.labels.cache()      # the samples join the labels: computed once
    try:
        labels = cached.orderBy("label_window_end", *ITEMLTV_LABELS.keys).toArrow()
        samples = out.samples.orderBy("listing_date", *ITEMLTV_SAMPLES.keys).toArrow()
    finally:
        cached.unpersist()
    per_day = ((ITEMLTV_LABELS, _split(labels, "label_window_end", {d: day(d) for d in ds_list})),
               (ITEMLTV_SAMPLES, _split(samples, "listing_date", {d: day(d, -params.horizon) for d in ds_list})))
    rows: dict[date, dict[str, int]] = {d: {} for d in ds_list}
    for dataset, parts in per_day:
        for d, part in parts.items():
            lake.write_partition(*dataset, d, part)
            log.info("wrote %s: %d rows", dataset.key(d), part.num_rows)
            rows[d][dataset.table] = part.num_rows
    return rows


def run(spark, lake: Lake, ds: date, params: LabelParams = LabelParams()) -> dict[str, int]:
    """The cohort closing on `ds` (a range of one day)."""
    return run_range(spark, lake, [ds], params)[ds]
