"""`growthgr sql`: one read-only SELECT over the analysts' DuckDB file, with DuckDB's external
access restricted to the lake's committed files of the analyst zones. Everything else exits 1
with a clear message. A small hand-made warehouse stands in for `dbt build` (fast)."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from foundation.lake import Lake
from foundation.sections.warehouse import WarehouseConfig
from growthgr.cli import app
from warehouse.runner import DbtError, duckdb_path, query


@pytest.fixture
def lake_root(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    lake = Lake.open(str(root))
    lake.write_partition("raw", "items", "2026-01-01", pa.table({"item_id": [1, 2, 3]}))
    lake.write_partition("truth", "item_outcomes", "2026-01-01", pa.table({"item_id": [1], "y0": [0.5]}))
    path = duckdb_path(str(root))
    path.parent.mkdir(parents=True)
    files = ", ".join(f"'{f}'" for f in lake.committed_files("raw", "items"))
    with duckdb.connect(str(path)) as con:   # what dbt leaves: staging and mart tables built from committed files
        con.execute("create schema staging")
        con.execute(f"create table staging.stg_items as select * from read_parquet([{files}], hive_partitioning = true)")
        con.execute("create table dim_items as select item_id from staging.stg_items")
    (tmp_path / "secret.txt").write_text("not for analysts\n")
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root))
    return root


def sql(statement: str):
    return CliRunner().invoke(app, ["--profile", "tiny", "sql", statement])


def test_select_over_marts_and_staging_tables_works(lake_root):
    out = sql("select count(*) as n from staging.stg_items")
    assert out.exit_code == 0, out.output
    assert "3" in out.output
    assert query(str(lake_root), "select sum(item_id) as s from dim_items;").frame.s[0] == 6


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


def test_only_committed_files_of_the_marts_tables_are_readable(lake_root):
    lake = Lake.open(str(lake_root))
    committed = lake.committed_files("raw", "items")
    assert query(str(lake_root), f"select count(*) as n from read_parquet('{committed[0]}')").frame.n[0] == 3
    stray = lake_root / "raw" / "items" / "ds=2026-01-02" / "_wunfinished" / "part-0.parquet"   # a write in progress
    stray.parent.mkdir(parents=True)
    stray.write_bytes(Path(committed[0].removeprefix("file://")).read_bytes())
    for path in [stray, *lake.committed_files("truth", "item_outcomes")]:     # the truth zone is never readable
        with pytest.raises(DbtError, match="Permission Error"):
            query(str(lake_root), f"select * from read_parquet('{path}')")


def test_an_analyst_query_stays_within_its_budget(lake_root):
    fast = WarehouseConfig(sql_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(DbtError, match=r"stopped after 1 s \(warehouse.sql_timeout_s\)"):
        query(str(lake_root), "select sum(a.range * b.range) from range(1000000) a, range(1000000) b", fast)
    assert time.monotonic() - started < 30
    small = WarehouseConfig(sql_memory_limit="64MB")
    with pytest.raises(DbtError, match="never spill"):
        query(str(lake_root), "select list(range order by random()) from range(200000000)", small)
    assert not list(lake_root.rglob("*.tmp")) and not list(lake_root.parent.rglob("duckdb_temp*"))   # nothing spilled
    res = query(str(lake_root), "select range as i from range(5000) order by i", limit=1000)
    assert len(res.frame) == 1000 and res.truncated and res.frame.i.iloc[-1] == 999
    assert len(query(str(lake_root), "select * from range(5000)").frame) == 5000       # no limit asked: all rows
    assert not query(str(lake_root), "select * from dim_items").truncated


def test_sql_prints_the_default_row_limit_and_takes_another(lake_root):
    out = sql("select range as i from range(5000)")
    assert out.exit_code == 0 and "(first 1000 rows; --limit N for more)" in out.output
    out = CliRunner().invoke(app, ["--profile", "tiny", "sql", "--limit", "3", "select range as i from range(5000) order by i"])
    assert out.exit_code == 0 and out.output.split()[:4] == ["i", "0", "1", "2"] and "first 3 rows" in out.output
