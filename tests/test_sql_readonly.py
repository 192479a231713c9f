"""`growthgr sql`: one read-only SELECT over the analysts' DuckDB file, with DuckDB's external
access restricted to the lake (the staging views read its Parquet). Everything else exits 1
with a clear message. A small hand-made warehouse stands in for `dbt build` (fast)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from foundation.lake import Lake
from growthgr.cli import app
from warehouse.runner import DbtError, duckdb_path, query


@pytest.fixture
def lake_root(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    Lake.open(str(root)).write_partition("raw", "items", "2026-01-01", pa.table({"item_id": [1, 2, 3]}))
    path = duckdb_path(str(root))
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:   # what dbt leaves: views over the lake's Parquet, marts
        con.execute("create schema staging")
        con.execute(f"create view staging.stg_items as select * from read_parquet("
                    f"'{root.resolve()}/raw/items/ds=*/_w*/*.parquet', hive_partitioning = true)")
        con.execute("create table dim_items as select item_id from staging.stg_items")
    (tmp_path / "secret.txt").write_text("not for analysts\n")
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root))
    return root


def sql(statement: str):
    return CliRunner().invoke(app, ["--profile", "tiny", "sql", statement])


def test_select_over_marts_and_lake_views_works(lake_root):
    out = sql("select count(*) as n from staging.stg_items")
    assert out.exit_code == 0, out.output
    assert "3" in out.output
    assert query(str(lake_root), "select sum(item_id) as s from dim_items;").s[0] == 6


@pytest.mark.parametrize("statement", [
    "copy dim_items to '{root}/raw/out.csv'",               # a write, even into the lake
    "copy (select 1) to '{tmp}/out.parquet'",
    "select 1; select 2",                                   # several statements
    "select 1; drop table dim_items",
    "create table t as select 1",
    "attach '{tmp}/other.duckdb' as other",
    "install httpfs",
    "set enable_external_access = true",
    "pragma show_tables",
    "",
])
def test_forbidden_statements_exit_1(lake_root, statement):
    out = sql(statement.format(root=lake_root, tmp=lake_root.parent))
    assert out.exit_code == 1, out.output
    assert "only one read-only SELECT statement is allowed" in out.output
    assert not (lake_root / "raw" / "out.csv").exists() and not (lake_root.parent / "out.parquet").exists()


@pytest.mark.parametrize("statement", [
    "select * from read_text('/etc/passwd')",
    "select * from read_csv('{tmp}/secret.txt')",
    "select * from read_text('{root}/../secret.txt')",
    "select * from read_parquet('/usr/**/*.parquet')",
])
def test_files_outside_the_lake_are_not_readable(lake_root, statement):
    out = sql(statement.format(root=lake_root, tmp=lake_root.parent))
    assert out.exit_code == 1, out.output
    assert "query failed" in out.output and "Permission Error" in out.output
    assert "not for analysts" not in out.output and "root:" not in out.output


def test_errors_are_clear(lake_root, tmp_path):
    with pytest.raises(DbtError, match="invalid SQL"):
        query(str(lake_root), "selec 1")
    with pytest.raises(DbtError, match="does not exist"):
        query(str(tmp_path / "nowhere"), "select 1")
