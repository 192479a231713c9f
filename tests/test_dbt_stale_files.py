"""The warehouse never names a lake file that can go away: after `growthgr dbt build`, a partition
of every lake table the staging models read is overwritten and the replaced files are deleted (the
lake's own sweep, with a zero grace period); every staging relation and mart still answers, with
the data of the build (a snapshot of the committed files at build time), and the next build shows
the new data. On a local and on an `s3://` lake. A small hand-made lake written through the Lake
API stands in for the simulator and the Spark jobs (fast)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import pyarrow as pa
import pytest
from dag_scenarios import MARTS

from foundation.lake import Lake
from foundation.schemas import RAW_SCHEMAS
from warehouse.runner import LAKE_TABLES, PROJECT_DIR, DbtError, build, query

pytestmark = pytest.mark.slow

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
COHORT = D1 - timedelta(days=36)          # the cohort whose label window closes on D1


def _items(rows: list[tuple[int, date, int, float]]) -> pa.Table:
    return pa.Table.from_pylist([dict(
        item_id=i, listing_date=listed, listed_at=datetime.combine(listed, time(8), UTC),
        title=f"item {i}", category_id=cat, category=f"c{cat}", brand="b", attributes="a", price=price)
        for i, listed, cat, price in rows], schema=RAW_SCHEMAS["items"])


def _requests(ids: list[int], day: date) -> pa.Table:
    noon = datetime.combine(day, time(12), UTC)
    return pa.Table.from_pylist([dict(request_id=r, user_id=100 + r, ts=noon, query_text="red shoes",
                                      intent_category_id=3) for r in ids],
                                schema=RAW_SCHEMAS["search_requests"])


def _stats(rows: list[tuple[int, int]], day: date) -> pa.Table:
    return pa.Table.from_pylist([dict(
        item_id=i, day=day, rank_candidates=2 * e, exposures=e, clicks=e // 2, search_orders=e // 4,
        search_gmv=10.0 * (e // 4), site_orders=1, site_gmv=5.0, orders=e // 4 + 1, gmv=10.0 * (e // 4) + 5.0)
        for i, e in rows])


def _labels(rows: list[tuple[int, int]]) -> pa.Table:
    return pa.Table.from_pylist([dict(
        item_id=i, listing_date=COHORT, category_id=3, price=10.0,
        label_window_start=COHORT + timedelta(days=30), label_window_end=D1, label_orders=n,
        label_gmv=10.0 * n, label=n / 7, y=math.log1p(n / 7), new_period_exposures=10, new_period_clicks=2)
        for i, n in rows])


def write_small_lake(lake: Lake) -> None:
    """Two days of the four tables the staging models read (`LAKE_TABLES`)."""
    lake.write_partition("raw", "items", D1, _items([(1, COHORT, 3, 10.0), (2, COHORT, 5, 20.0)]))
    lake.write_partition("raw", "items", D2, _items([(3, D2, 3, 30.0)]))
    lake.write_partition("raw", "search_requests", D1, _requests([1, 2], D1))
    lake.write_partition("raw", "search_requests", D2, _requests([3], D2))
    lake.write_partition("curated", "item_daily_stats", D1, _stats([(1, 8), (2, 4)], D1))
    lake.write_partition("curated", "item_daily_stats", D2, _stats([(1, 4), (3, 8)], D2))
    lake.write_partition("samples", "itemltv_labels", D1, _labels([(1, 3), (2, 0)]))


# One overwrite per lake table: (zone, table, ds, the new version of the partition).
OVERWRITES = [
    ("raw", "items", D2, _items([(3, D2, 3, 35.0), (4, D2, 7, 40.0)])),
    ("raw", "search_requests", D2, _requests([3, 4, 5], D2)),
    ("curated", "item_daily_stats", D2, _stats([(1, 6), (3, 12), (4, 4)], D2)),
    ("samples", "itemltv_labels", D1, _labels([(1, 5), (2, 1)])),
]


def snapshot(lake: Lake) -> dict[str, pd.DataFrame]:
    """Every staging relation and mart, rows in a fixed order."""
    return {rel: query(lake, f"select * from {rel} order by all").frame for rel in MARTS}


@pytest.fixture(params=["local", "s3"])
def open_lake(request, tmp_path) -> Callable[..., Lake]:
    """`open_lake(**kwargs)`: the test's lake (a local directory, or an `s3://` lake on the S3 API
    server with a local state directory), opened with `kwargs` (e.g. `grace`); the small lake is
    written to it first."""
    if request.param == "local":
        def open_lake(**kwargs) -> Lake:
            return Lake.open(str(tmp_path / "lake"), **kwargs)
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")

        def open_lake(**kwargs) -> Lake:
            return Lake.open(f"{bucket}/lake", endpoint, state_dir=tmp_path / "state", **kwargs)
    write_small_lake(open_lake())
    return open_lake


def test_relations_outlive_deleted_lake_files_until_the_next_build(open_lake):
    lake = open_lake()
    # every lake table the staging models read is overwritten; every model of the project is checked
    assert {f"{z}/{t}" for z, t, _, _ in OVERWRITES} == {f"{z}/{t}" for z, t in LAKE_TABLES}
    assert {r.split(".")[-1] for r in MARTS} == {p.stem for p in (PROJECT_DIR / "models").rglob("*.sql")}
    build(lake)
    before = snapshot(lake)
    assert all(len(frame) for frame in before.values())

    sweeping = open_lake(grace=timedelta(0))          # the lake's sweep deletes replaced files at once
    for zone, table, ds, data in OVERWRITES:
        part, old = lake.partition_key(zone, table, ds), lake.commit_info(zone, table, ds).write_id
        sweeping.write_partition(zone, table, ds, data)
        assert not [k for k in lake.store.list(part + "/") if f"/_w{old}/" in k], f"{part}: old files kept"

    after = snapshot(lake)                            # no file-not-found, and the build's data
    for rel in MARTS:
        pd.testing.assert_frame_equal(after[rel], before[rel], obj=rel)

    build(lake)                                       # the next build takes the new versions
    rebuilt = snapshot(lake)
    assert set(rebuilt["staging.stg_items"].item_id) == {1, 2, 3, 4}
    assert rebuilt["staging.stg_items"].set_index("item_id").price[3] == 35.0
    assert sorted(rebuilt["staging.stg_search_requests"].request_id) == [1, 2, 3, 4, 5]
    stats = rebuilt["staging.stg_item_daily_stats"]
    assert stats[stats.day == pd.Timestamp(D2)].exposures.sum() == 22
    assert rebuilt["staging.stg_itemltv_labels"].set_index("item_id").label_orders.to_dict() == {1: 5, 2: 1}
    assert rebuilt["new_item_cohorts"].label_orders.tolist() == [6]
    assert len(rebuilt["dim_items"]) == 4
    for rel in MARTS:
        assert not rebuilt[rel].equals(before[rel]), f"{rel} does not show the new data"
    # No relation of the warehouse reads files, so none can name a file the lake deletes.
    views = query(lake, "select sql from duckdb_views() where not internal").frame
    assert not [sql for sql in views.sql if "parquet" in sql.lower()]


def test_a_build_without_the_lakes_file_list_is_refused(tmp_path):
    """The source tables are filled only from the lake's list of committed files (never a glob): a
    plain `dbt build` without the var `lake_files` fails in the on-run-start hook, naming why."""
    import json

    from dbt.cli.main import dbtRunner

    import warehouse.runner as runner

    lake = Lake.open(str(tmp_path / "lake"))
    write_small_lake(lake)
    runner.warehouse_dir(lake).mkdir(parents=True)
    variables = {k: v for k, v in runner.dbt_vars(lake).items() if k != "lake_files"}
    try:
        res = dbtRunner().invoke(["build", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
                                  "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
                                  "--vars", json.dumps(variables), "--quiet"])
    finally:
        runner._release_duckdb()
    assert not res.success
    assert "var 'lake_files' is not set" in str(res.exception) + str(res.result)
    with pytest.raises(DbtError, match="dim_items"):
        query(lake, "select * from dim_items")
