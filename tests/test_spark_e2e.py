"""End to end on the tiny simulator: 45 days of raw logs, every Spark job for the last
day, and the label recomputed independently with pandas from the raw tables."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from spark_fixtures import TINY_LAST

pytest_plugins = ("spark_fixtures",)
pytestmark = pytest.mark.slow
COHORT = TINY_LAST - timedelta(days=36)


def shift(day: date, days: int) -> date:
    return day + timedelta(days=days)


def _raw(lake, table, first, last):
    return lake.read_range("raw", table, first, last).to_pandas()


def _utc_day(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("UTC").dt.date


def test_every_job_writes_its_tables(tiny_lake):
    _, lake, rows = tiny_lake
    assert set(rows) == {"item_daily_stats", "user_features", "item_features", "query_features", "gr_samples",
                         "itemltv_labels", "itemltv_samples"}
    assert all(n > 0 for n in rows.values()), rows
    requests = lake.read_partition("raw", "search_requests", TINY_LAST).num_rows
    assert rows["gr_samples"] == requests
    users = _raw(lake, "users", "2026-01-01", TINY_LAST)
    assert rows["user_features"] == users.user_id.nunique()


def test_run_all_catches_up_every_closable_label_day(tiny_lake):
    """The fixture ran `run_all` for the last day only: the earlier closable days (raw data back to
    their cohort's listing day, 2026-01-01 + 36 = 2026-02-06) were labelled too, so a young lake's
    first daily run has every cohort closed so far."""
    from foundation.lake import ds_range
    from spark_jobs.jobs import label_days

    _, lake, _ = tiny_lake
    closable = ds_range("2026-02-06", TINY_LAST)
    assert set(closable) <= set(lake.list_partitions("samples", "itemltv_labels"))
    assert label_days(lake, TINY_LAST) == [TINY_LAST]          # only the day itself is (re)built now
    assert label_days(lake, date(2026, 2, 5)) == []                 # no cohort can close yet


def test_labels_match_an_independent_pandas_computation(tiny_lake):
    _, lake, _ = tiny_lake
    items = _raw(lake, "items", "2026-01-01", TINY_LAST)
    cohort = set(items.loc[items.listing_date == COHORT, "item_id"])
    labels = lake.read_partition("samples", "itemltv_labels", TINY_LAST).to_pandas()
    assert set(labels.item_id) == cohort and len(labels) == len(cohort)
    first, last = COHORT + timedelta(days=30), COHORT + timedelta(days=36)
    orders = pd.concat([_raw(lake, t, first, last)[["item_id", "ts"]] for t in ("purchases", "site_orders")])
    orders = orders[orders.item_id.isin(cohort) & _utc_day(orders.ts).between(first, last)]
    expected = orders.groupby("item_id").size().reindex(sorted(cohort), fill_value=0) / 7.0
    got = labels.set_index("item_id").sort_index()
    np.testing.assert_allclose(got.label.to_numpy(), expected.to_numpy())
    np.testing.assert_allclose(got.y.to_numpy(), np.log1p(expected.to_numpy()))


def test_samples_are_the_cohort_exposures_of_days_0_to_29(tiny_lake):
    _, lake, _ = tiny_lake
    samples = lake.read_partition("samples", "itemltv_samples", TINY_LAST).to_pandas()
    labels = lake.read_partition("samples", "itemltv_labels", TINY_LAST).to_pandas()
    exp = _raw(lake, "exposures", COHORT, COHORT + timedelta(days=29))
    exp = exp[exp.item_id.isin(set(labels.item_id))]
    assert len(samples) == len(exp)
    assert samples.item_age_days.between(0, 29).all()
    clicks = _raw(lake, "clicks", COHORT, COHORT + timedelta(days=29))
    clicked = set(zip(clicks.request_id, clicks.item_id, strict=True))
    expected_t = [int((r, i) in clicked) for r, i in zip(samples.request_id, samples.item_id, strict=True)]
    assert samples.treatment.tolist() == expected_t
    assert samples.treatment.sum() > 0
    assert str(samples.ts.dtype) == "datetime64[us, UTC]"


def test_funnel_sets_agree_with_the_raw_day(tiny_lake):
    _, lake, _ = tiny_lake
    gr = lake.read_partition("samples", "gr_samples", TINY_LAST).to_pandas()
    exposures = lake.read_partition("raw", "exposures", TINY_LAST).num_rows
    clicks = lake.read_partition("raw", "clicks", TINY_LAST).num_rows
    assert gr.exposure_ids.map(len).sum() == exposures
    assert gr.click_ids.map(len).sum() == clicks
    assert (gr.history_item_ids.map(len) > 0).mean() > 0.5   # most users have a history after 44 days


def test_demo_feature_backfill_fills_the_history_training_sets(tiny_lake, tmp_path):
    """`growthgr.demo --feature-days N` runs the feature job for N history days and rebuilds the
    training sets already built, whose exposures on the following days then carry features."""
    import shutil

    from features.store import training_set
    from foundation.lake import Lake
    from growthgr.demo import backfill_features
    from models.itemltv.data import SERVICE, TRAINING_TABLE

    settings, _, _ = tiny_lake
    shutil.copytree(settings.lake_root, tmp_path / "lake")
    settings = settings.model_copy(update={"lake_root": str(tmp_path / "lake")})
    lake = Lake.from_settings(settings)
    training_set(settings.feast, lake, SERVICE, TINY_LAST, settings.spark.master)
    served = {shift(TINY_LAST, d) for d in (-9, -8)}   # see the snapshots of -10 and -9

    def coverage() -> float:
        ts = lake.read_partition(*TRAINING_TABLE, TINY_LAST).to_pandas()
        return ts.loc[ts["event_timestamp"].dt.date.isin(served), "item_features__exposures_7d"].notna().mean()

    assert coverage() == 0
    backfill_features(settings, shift(TINY_LAST, -9), 2)
    assert lake.list_partitions("features", "item_features") == [shift(TINY_LAST, -10), shift(TINY_LAST, -9), TINY_LAST]
    assert coverage() > 0.9


def test_label_range_job_writes_what_one_run_per_day_writes(tiny_lake, spark, tmp_path):
    """A backfill builds several cohorts per Spark job (`run_range`); each day's partitions
    are the ones the single-day job writes, row for row."""
    import shutil
    from pathlib import Path

    from foundation.lake import Lake
    from spark_jobs import itemltv_labels
    from spark_jobs.jobs import run_days

    settings, lake, _ = tiny_lake
    tables = ("itemltv_labels", "itemltv_samples")
    days = [shift(TINY_LAST, -k) for k in (3, 2, 0)]          # not contiguous: the range reads the union
    single = {}
    for ds in days:
        itemltv_labels.run(spark, lake, ds)
        single[ds] = {t: lake.read_partition("samples", t, ds) for t in tables}
    shutil.copytree(Path(settings.lake_root) / "raw", tmp_path / "raw")   # raw logs only
    spark_cfg = settings.spark.model_copy(update={"backfill_days_per_job": 2})    # two jobs: 2 days + 1
    other = Lake.open(str(tmp_path))
    rows = run_days(other, spark_cfg, settings.storage, "itemltv_labels", days)
    assert list(rows) == days
    for ds in days:
        for table in tables:
            got, expected = other.read_partition("samples", table, ds), single[ds][table]
            assert rows[ds][table] == got.num_rows == expected.num_rows > 0
            assert got.equals(expected), (table, ds)
