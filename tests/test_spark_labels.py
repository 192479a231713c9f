"""ItemLTV labels and samples on the hand-built world of `spark_fixtures` (expected
values computed by hand; see that module's docstring for the day boundaries)."""

from __future__ import annotations

import math
from datetime import date

import pyarrow as pa
import pytest
from pyspark.testing import assertDataFrameEqual
from spark_fixtures import DS, L, at

from foundation.catalog import query_id
from spark_jobs import itemltv_labels
from spark_jobs.common import InputError
from spark_jobs.itemltv_labels import LabelParams

pytest_plugins = ("spark_fixtures",)
COHORT = date(2026, 2, 2)


def _transform(raw, params=LabelParams()):
    orders = itemltv_labels._orders(raw["purchases"], raw["site_orders"], params)
    return itemltv_labels.transform(
        raw["items"], raw["search_requests"], raw["exposures"], raw["clicks"], orders, DS, params
    )


def test_cohort_is_listed_on_ds_minus_36():
    assert L == COHORT and (DS - COHORT).days == 36


def test_labels_match_hand_computed(spark, raw_dfs):
    labels = _transform(raw_dfs).labels
    # item 1: orders on day 30 00:00, day 33 (site), day 36 23:59:59 count; day 29 and day 37 do not.
    # item 2: no orders at all -> label 0. Items 3 (listed ds-35) and 4 (ds-37) are not in the cohort.
    expected = spark.createDataFrame(
        [
            (1, COHORT, 3, 10.0, date(2026, 3, 4), date(2026, 3, 10), 3, 30.0, 3 / 7, math.log1p(3 / 7), 3, 1),
            (2, COHORT, 5, 20.0, date(2026, 3, 4), date(2026, 3, 10), 0, 0.0, 0.0, 0.0, 3, 1),
        ],
        labels.schema,
    )
    assertDataFrameEqual(labels, expected)
    assert labels.columns == [
        "item_id", "listing_date", "category_id", "price", "label_window_start", "label_window_end",
        "label_orders", "label_gmv", "label", "y", "new_period_exposures", "new_period_clicks",
    ]


def test_search_only_label_excludes_site_orders(raw_dfs):
    labels = _transform(raw_dfs, LabelParams(include_site_orders=False)).labels
    got = {r.item_id: r.label_orders for r in labels.collect()}
    assert got == {1: 2, 2: 0}


def test_samples_match_hand_computed(spark, raw_dfs):
    samples = _transform(raw_dfs).samples
    red, blue = query_id("red shoes"), query_id("blue hat")
    y1 = math.log1p(3 / 7)
    # Exposures on days 0..29 only: request 14 (day 30, 00:00:00) is excluded, request 13
    # (day 29, 23:59:59.999999) is included. Treatment = clicked in the same request.
    rows = [
        (1, COHORT, 10, 100, "red shoes", red, 3, at(0, 0), 0, 0, 1, 3 / 7, y1),
        (2, COHORT, 10, 100, "red shoes", red, 3, at(0, 0), 0, 1, 0, 0.0, 0.0),
        (1, COHORT, 11, 101, "red shoes", red, 3, at(5), 5, 0, 0, 3 / 7, y1),
        (2, COHORT, 12, 101, "red shoes", red, 3, at(5, 13), 5, 0, 1, 0.0, 0.0),
        (1, COHORT, 12, 101, "red shoes", red, 3, at(5, 13), 5, 1, 0, 3 / 7, y1),
        (2, COHORT, 13, 102, "blue hat", blue, 5, at(29, 23, 59, 59, 999_999), 29, 0, 0, 0.0, 0.0),
    ]
    assertDataFrameEqual(samples, spark.createDataFrame(rows, samples.schema))


def test_label_job_is_idempotent(spark, hand_lake):
    first = itemltv_labels.run(spark, hand_lake, DS)
    a = {t: hand_lake.read_partition("samples", t, DS) for t in first}
    second = itemltv_labels.run(spark, hand_lake, DS)
    b = {t: hand_lake.read_partition("samples", t, DS) for t in second}
    assert first == second == {"itemltv_labels": 2, "itemltv_samples": 6}
    assert all(a[t].equals(b[t]) for t in a)
    assert pa.types.is_timestamp(b["itemltv_samples"].schema.field("ts").type)
    assert b["itemltv_samples"].schema.field("ts").type.tz == "UTC"
    assert len({f.split("/")[0] for f in hand_lake.commit_info("samples", "itemltv_labels", DS).files}) == 1


def test_missing_raw_partition_stops_before_writing(spark, hand_lake):
    hand_lake.store.delete("raw/exposures/ds=2026-02-20/_SUCCESS")
    with pytest.raises(InputError, match=r"raw/exposures/ds=2026-02-20: partition is missing"):
        itemltv_labels.run(spark, hand_lake, DS)
    assert hand_lake.list_partitions("samples", "itemltv_labels") == []
    assert hand_lake.list_partitions("samples", "itemltv_samples") == []


def test_malformed_raw_partition_names_table_partition_and_column(spark, hand_lake):
    bad = pa.table({"request_id": pa.array([1], pa.int64()), "user_id": pa.array(["x"]),
                    "item_id": pa.array([1], pa.int64()), "ts": pa.array([at(3)], pa.timestamp("us", tz="UTC"))})
    hand_lake.write_partition("raw", "clicks", "2026-02-05", bad)
    with pytest.raises(InputError, match=r"raw/clicks/ds=2026-02-05: malformed partition: missing columns \['position'\]"):
        itemltv_labels.run(spark, hand_lake, DS)
    hand_lake.write_partition("raw", "clicks", "2026-02-05", bad.append_column("position", pa.array([0], pa.int32())))
    with pytest.raises(InputError, match=r"wrong column types \['user_id: string \(expected int64\)'\]"):
        itemltv_labels.run(spark, hand_lake, DS)
    assert not hand_lake.exists("samples", "itemltv_labels", DS)
