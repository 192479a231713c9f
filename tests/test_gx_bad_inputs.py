"""Bad inputs on a copy of a small clean hand-made lake (`test_gx_handmade.make_raw_day`): each one
makes `growthgr validate` exit 1 with a line naming its table, partition, column and rule; the
clean lake passes (exit 0). Derived tables' bad inputs: `test_gx_products.py`."""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from test_gx_handmade import DAYS, make_raw_day
from typer.testing import CliRunner

from foundation.lake import Lake
from growthgr.cli import app

D0, D1 = DAYS[0], DAYS[1]


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    lake = Lake.open(str(root))
    for i, ds in enumerate(DAYS[:2]):
        lake.write_many("raw", ds, make_raw_day(ds, i, n_requests=120))
    return root


@pytest.fixture
def lake_root(clean_lake, tmp_path, monkeypatch):
    root = tmp_path / "lake"
    shutil.copytree(clean_lake, root)
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root))
    return root


def validate(dataset: str, ds: str):
    return CliRunner().invoke(app, ["--profile", "tiny", "validate", dataset, "--ds", ds, "--no-docs"])


def assert_fails(out, table: str, ds: str, column: str, rule: str) -> None:
    assert out.exit_code == 1, out.output
    assert f"FAIL raw.{table} [ds={ds}] column={column} rule={rule}:" in out.output, out.output


def rewrite(root, table: str, ds: str, change) -> None:
    lake = Lake.open(str(root))
    lake.write_partition("raw", table, ds, change(lake.read_partition("raw", table, ds)))


def set_value(t: pa.Table, column: str, row: int, value) -> pa.Table:
    values = t.column(column).to_pylist()
    values[row] = value
    i = t.column_names.index(column)
    return t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def damage_file(root, table: str, ds: str, damage) -> None:
    lake = Lake.open(str(root))
    key = f"raw/{table}/ds={ds}/{lake.commit_info('raw', table, ds).files[0]}"
    lake.store.put_bytes(key, damage(lake.store.get_bytes(key)))


def test_clean_lake_passes_both_days(lake_root):
    for ds in (D0, D1):
        out = validate("raw", ds)
        assert out.exit_code == 0, out.output
        assert f"gate raw ds={ds}: PASSED" in out.output


# -- unreadable files -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not parquet at all" * 10,
                                    lambda b: b[:4] + bytes(len(b) - 8) + b[-4:]],
                         ids=["truncated", "garbage", "zeroed"])
def test_unreadable_parquet_is_named(lake_root, damage):
    damage_file(lake_root, "clicks", D1, damage)
    out = validate("raw", D1)
    assert_fails(out, "clicks", D1, "*", "readable")
    assert f"cannot read raw/clicks/ds={D1}" in out.output
    assert "gate raw ds=2026-01-02: FAILED" in out.output          # the other tables were still checked


def test_unreadable_partition_a_check_looks_up_is_named(lake_root):
    damage_file(lake_root, "items", D0, lambda b: b[:100])
    out = validate("exposures", D1)                                   # exposures' item ids: items up to D1
    assert_fails(out, "exposures", D1, "*", "readable")
    assert f"cannot read raw/items/ds={D0}" in out.output


# -- zero rows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", ["items", "users", "search_requests", "rank_candidates", "exposures",
                                   "clicks", "purchases", "site_orders"])
def test_zero_row_partition_first_day_included(lake_root, table):
    rewrite(lake_root, table, D0, lambda t: t.slice(0, 0))
    assert_fails(validate(table, D0), table, D0, "*", "row_count")


def test_zero_row_event_partition_later_day(lake_root):
    rewrite(lake_root, "purchases", D1, lambda t: t.slice(0, 0))
    assert_fails(validate("raw", D1), "purchases", D1, "*", "row_count")


def test_a_day_without_signups_is_not_an_alarm(lake_root):
    # users after the first day may be empty (Poisson arrivals); the first day holds the initial users
    rewrite(lake_root, "users", D1, lambda t: t.slice(0, 0))
    out = validate("users", D1)
    assert out.exit_code == 0, out.output


# -- referential integrity ------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "column", "rule"), [
    ("exposures", "item_id", "ref_items"), ("rank_candidates", "item_id", "ref_items"),
    ("site_orders", "item_id", "ref_items"), ("clicks", "user_id", "ref_users"),
    ("search_requests", "user_id", "ref_users"), ("purchases", "user_id", "ref_users"),
    ("site_orders", "linked_request_id", "ref_search_requests"),
])
def test_unknown_id_is_named(lake_root, table, column, rule):
    rewrite(lake_root, table, D1, lambda t: set_value(t, column, 1, 987_654_321))
    assert_fails(validate(table, D1), table, D1, column, rule)


def test_item_listed_later_is_unknown_today(lake_root):
    day2_item = int(make_raw_day(DAYS[2], 2)["items"]["item_id"][0].as_py())   # listed on DAYS[2] (not in lake)
    rewrite(lake_root, "exposures", D1, lambda t: set_value(t, "item_id", 0, day2_item))
    assert_fails(validate("exposures", D1), "exposures", D1, "item_id", "ref_items")


# -- text -----------------------------------------------------------------------------------------
def _invalid_utf8(t: pa.Table, column: str) -> pa.Table:
    values = [v.encode() for v in t.column(column).to_pylist()]
    values[2] = b"red \xff\xfe shoe"
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    arr = pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()),
                                                           pa.py_buffer(b"".join(values))])
    return t.set_column(t.column_names.index(column), column, arr)


@pytest.mark.parametrize(("table", "column", "change", "rule"), [
    ("items", "title", lambda t: set_value(t, "title", 0, "x" * 501), "text_length"),
    ("items", "title", lambda t: set_value(t, "title", 0, ""), "text_length"),
    ("items", "brand", lambda t: set_value(t, "brand", 0, "b" * 200), "text_length"),
    ("items", "title", lambda t: set_value(t, "title", 3, "red\x00shoe"), "text_control_chars"),
    ("items", "title", lambda t: set_value(t, "title", 3, "red\nshoe"), "text_control_chars"),
    ("search_requests", "query_text", lambda t: set_value(t, "query_text", 0, "shoe\x1b[31m"), "text_control_chars"),
    ("search_requests", "query_text", lambda t: _invalid_utf8(t, "query_text"), "text_control_chars"),
    ("items", "title", lambda t: _invalid_utf8(t, "title"), "text_control_chars"),
])
def test_unbounded_text_is_named(lake_root, table, column, change, rule):
    rewrite(lake_root, table, D1, change)
    assert_fails(validate(table, D1), table, D1, column, rule)


# -- keys unique across days ----------------------------------------------------------------------
def test_request_id_reused_from_an_earlier_day(lake_root):
    old = Lake.open(str(lake_root)).read_partition("raw", "search_requests", D0)["request_id"][5].as_py()
    rewrite(lake_root, "search_requests", D1, lambda t: set_value(t, "request_id", 0, old))
    assert_fails(validate("raw", D1), "search_requests", D1, "request_id", "unique_across_days")


def test_item_id_listed_again_on_a_later_day(lake_root):
    rewrite(lake_root, "items", D1, lambda t: set_value(t, "item_id", 0, 7))   # item 7 is listed on D0
    assert_fails(validate("items", D1), "items", D1, "item_id", "unique_across_days")


# -- finite numbers -------------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "column"), [("items", "price"), ("purchases", "price"),
                                               ("rank_candidates", "score"), ("site_orders", "gmv"),
                                               ("site_orders", "link_score")])
def test_infinite_number_fails_finite(lake_root, table, column):
    rewrite(lake_root, table, D1, lambda t: set_value(t, column, 1, float("inf")))
    assert_fails(validate(table, D1), table, D1, column, "finite")


# -- declared profile fields ----------------------------------------------------------------------
@pytest.mark.parametrize(("column", "value", "rule"), [("region", "region_8", "region_values"),
                                                       ("age_band", "17-", "age_band_values")])
def test_unknown_profile_value_is_named(lake_root, column, value, rule):
    rewrite(lake_root, "users", D1, lambda t: set_value(t, column, 0, value))
    assert_fails(validate("users", D1), "users", D1, column, rule)


# -- event date vs partition ----------------------------------------------------------------------
def test_rank_candidates_shifted_by_a_day(lake_root):
    lake = Lake.open(str(lake_root))
    lake.write_partition("raw", "rank_candidates", D1, lake.read_partition("raw", "rank_candidates", D0))
    assert_fails(validate("raw", D1), "rank_candidates", D1, "request_id", "event_date_matches_partition")


@pytest.mark.parametrize(("table", "column"), [("items", "listing_date"), ("items", "listed_at"),
                                               ("users", "signup_date")])
def test_catalog_rows_of_another_day(lake_root, table, column):
    # after the first day, catalog rows are written on their listing / signup day
    rewrite(lake_root, table, D1, lambda t: set_value(t, column, 0, t[column][0].as_py() - timedelta(days=1)))
    assert_fails(validate(table, D1), table, D1, column, "event_date_matches_partition")


def test_event_ts_of_another_day(lake_root):
    rewrite(lake_root, "exposures", D1, lambda t: set_value(t, "ts", 0, t["ts"][0].as_py().replace(day=3)))
    assert_fails(validate("raw", D1), "exposures", D1, "ts", "ts_in_partition_day")


def test_usage_errors_exit_2(lake_root):
    assert validate("no_such_table", D1).exit_code == 2
    assert validate("raw", "2026-13-45").exit_code == 2
