"""Shared pieces of the Spark and dbt tests: one SparkSession per test session and a
small hand-built raw dataset that follows `foundation.schemas` exactly.

The hand-built world (all times UTC). Logical date DS = 2026-03-10, so the
cohort closing on DS was listed on L = DS - 36 = 2026-02-02: new-item period
2026-02-02 .. 2026-03-03 (days 0..29), label window 2026-03-04 .. 2026-03-10
(days 30..36).

items: 1 and 2 listed on L (the cohort), 3 listed on L+1 (not yet closed),
4 listed on L-1 (closed the day before). Item 1 has orders on day 29 at
23:59:59.999999 (out), day 30 at 00:00:00 (in), day 33 as a site order (in),
day 36 at 23:59:59 (in) and day 37 at 00:00:00 (out): 3 label orders. Item 2
has none. Item 3 has a label-window-looking order that must not count.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from foundation.config import load_settings
from foundation.lake import Lake, ds_range
from foundation.schemas import RAW_SCHEMAS

DS = date(2026, 3, 10)
L = date(2026, 2, 2)
FIRST_DAY = "2026-02-01"


def at(day_offset: int, hh: int = 12, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    """A UTC time on day `day_offset` of the cohort (day 0 = L)."""
    return datetime(L.year, L.month, L.day, hh, mm, ss, us, tzinfo=UTC) + timedelta(days=day_offset)


def _item(item_id, listed: date, category_id=3, price=10.0):
    return dict(item_id=item_id, listing_date=listed, listed_at=datetime(listed.year, listed.month, listed.day, 8,
                tzinfo=UTC), title=f"item {item_id}", category_id=category_id, category=f"c{category_id}",
                brand="b", attributes="a", price=price)


def _order(order_id, item_id, ts, request_id=None, user_id=100, gmv=10.0):
    return dict(order_id=order_id, request_id=request_id, user_id=user_id, item_id=item_id, ts=ts, price=gmv,
                quantity=1, gmv=gmv)


def _site(order_id, item_id, ts, linked=None, user_id=100, gmv=10.0):
    return dict(order_id=order_id, user_id=user_id, item_id=item_id, ts=ts, price=gmv, quantity=1, gmv=gmv,
                linked_request_id=linked, link_score=0.5 if linked else None)


def _req(request_id, user_id, ts, query="red shoes", intent=3):
    return dict(request_id=request_id, user_id=user_id, ts=ts, query_text=query, intent_category_id=intent)


def _ev(request_id, user_id, item_id, ts, position=0):
    return dict(request_id=request_id, user_id=user_id, item_id=item_id, position=position, ts=ts)


def hand_built_rows() -> dict[str, list[dict]]:
    """The raw rows of the hand-built world (see the module docstring)."""
    requests = [
        _req(10, 100, at(0, 0, 0, 0)),         # day 0 at midnight: inside the new-item period
        _req(11, 101, at(5)),
        _req(12, 101, at(5, 13)),
        _req(13, 102, at(29, 23, 59, 59, 999_999), query="blue hat", intent=5),  # last microsecond of day 29
        _req(14, 102, at(30, 0, 0, 0), query="blue hat", intent=5),              # day 30: out of the samples
        _req(15, 100, at(36, 10)),
    ]
    exposures = [
        _ev(10, 100, 1, at(0, 0, 0, 0), 0), _ev(10, 100, 2, at(0, 0, 0, 0), 1),
        _ev(11, 101, 1, at(5), 0),
        _ev(12, 101, 2, at(5, 13), 0), _ev(12, 101, 1, at(5, 13), 1),
        _ev(13, 102, 2, at(29, 23, 59, 59, 999_999), 0),
        _ev(14, 102, 2, at(30, 0, 0, 0), 0), _ev(14, 102, 1, at(30, 0, 0, 0), 1),
        _ev(15, 100, 3, at(36, 10), 0), _ev(15, 100, 1, at(36, 10), 1),
    ]
    clicks = [
        _ev(10, 100, 1, at(0, 0, 0, 5), 0),    # clicked in the same request: treatment 1
        _ev(12, 101, 2, at(5, 13, 1), 0),      # user 101 clicked item 2 in request 12, not item 1
        _ev(14, 102, 2, at(30, 0, 1), 0),
        _ev(15, 100, 1, at(36, 10, 1), 1),
    ]
    purchases = [
        _order(1, 1, at(29, 23, 59, 59, 999_999), 10),  # day 29: out
        _order(2, 1, at(30, 0, 0, 0), 14, 102),         # day 30 at midnight: in
        _order(3, 1, at(36, 23, 59, 59), 15),           # day 36: in
        _order(4, 1, at(37, 0, 0, 0), None),            # day 37 (after DS): out
        _order(5, 3, at(31), None, 101),                # item 3 is not in the cohort
    ]
    site_orders = [
        _site(6, 1, at(33, 9)),                    # day 33: in
        _site(7, 4, at(33, 9)),                    # item 4 closed the day before
        _site(8, 3, at(36, 11), linked=15),        # linked to request 15, item 3 not in the cohort
    ]
    items = [_item(1, L), _item(2, L, category_id=5, price=20.0), _item(3, L + timedelta(days=1)),
             _item(4, L - timedelta(days=1))]
    users = [dict(user_id=u, signup_date=date(2026, 1, 1), region="region_3", age_band="25-34") for u in (100, 101, 102)]
    candidates = [dict(request_id=e["request_id"], item_id=e["item_id"], rank=e["position"], score=1.0 - e["position"],
                       channel="prod") for e in exposures]
    candidates.append(dict(request_id=10, item_id=3, rank=2, score=0.1, channel="prod"))
    return dict(items=items, users=users, search_requests=requests, rank_candidates=candidates,
                exposures=exposures, clicks=clicks, purchases=purchases, site_orders=site_orders)


def _row_day(table: str, row: dict, request_days: dict[int, str]) -> str:
    if table == "items":
        return max(row["listing_date"].isoformat(), FIRST_DAY)
    if table == "users":
        return max(row["signup_date"].isoformat(), FIRST_DAY)
    if table == "rank_candidates":
        return request_days[row["request_id"]]
    return row["ts"].date().isoformat()


def write_raw_lake(lake: Lake, rows: dict[str, list[dict]], first: str, last: str) -> None:
    """Write every raw table for every day first..last (empty partitions where no rows)."""
    request_days = {r["request_id"]: r["ts"].date().isoformat() for r in rows["search_requests"]}
    for table, schema in RAW_SCHEMAS.items():
        for ds in ds_range(first, last):
            day_rows = [r for r in rows.get(table, []) if _row_day(table, r, request_days) == ds.isoformat()]
            lake.write_partition("raw", table, ds, pa.Table.from_pylist(day_rows, schema=schema))


def to_spark(spark, table: str, rows: list[dict]):
    """A Spark DataFrame of raw `table` rows with the contract's schema."""
    from spark_jobs.common import spark_schema

    arrow = pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[table])
    return spark.createDataFrame(arrow.to_pylist(), spark_schema(RAW_SCHEMAS[table]))


# Small-data Spark settings for tests: no adaptive execution, no whole-stage code generation
# (compiling code dominates on a few rows) and no distributed listing of the few input files.
TEST_SPARK_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false",
                   "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000"}


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_lake")
    overrides = {"lake_root": str(root), "spark": {"shuffle_partitions": 1, "extra_conf": TEST_SPARK_CONF}}
    return load_settings("tiny", env={}, overrides=overrides)


@pytest.fixture(scope="session")
def spark(spark_settings):
    from spark_jobs.session import get_spark

    return get_spark(spark_settings.spark, spark_settings.storage, spark_settings.lake_root)


@pytest.fixture(scope="session")
def raw_dfs(spark):
    """The hand-built raw tables as Spark DataFrames."""
    return {t: to_spark(spark, t, rows) for t, rows in hand_built_rows().items()}


@pytest.fixture(scope="session")
def _hand_lake_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_lake_template")
    write_raw_lake(Lake.open(str(root)), hand_built_rows(), FIRST_DAY, "2026-03-12")
    return root


@pytest.fixture
def hand_lake(tmp_path, _hand_lake_template):
    """A fresh lake holding the hand-built world, every raw table, days 2026-02-01 .. 2026-03-12."""
    shutil.copytree(_hand_lake_template, tmp_path / "lake")
    return Lake.open(str(tmp_path / "lake"))


TINY_LAST = date(2026, 2, 14)   # day 44: the cohort listed on 2026-01-09 closes on it


@pytest.fixture(scope="session")
def tiny_lake(tmp_path_factory, spark_settings, copy_world):
    """The tiny world (conftest: 45 days, seed 1) plus every Spark job for its last day: (settings, lake)."""
    from spark_jobs.jobs import run_all

    root = copy_world(tmp_path_factory.mktemp("tiny_lake") / "lake")
    settings = spark_settings.model_copy(update={"lake_root": str(root)})
    lake = Lake.open(str(root))
    rows = run_all(lake, settings.spark, settings.storage, TINY_LAST)
    return settings, lake, rows
