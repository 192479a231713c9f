"""Run the `dbt/` project programmatically (dbt-core's `dbtRunner`), and query its DuckDB file.

The project's sources are DuckDB tables `<zone>.<table>` that its `on-run-start` hook fills with
the lake's committed Parquet files (the list passed as the var `lake_files`; see `dbt/README.md`)
at the start of every build and freshness check: the DuckDB file holds a snapshot of the committed
data at build time and no relation in it names a lake file (an overwrite deletes the files it
replaced after the lake's grace period); a partition written or rewritten later appears at the next
build. `freshness` runs `dbt source freshness` measured from the run's day (var `as_of`), with the
thresholds of the warehouse section. Everything
run-specific lives in the lake's local state directory (`Lake.state_dir`: the lake root of a
local lake), never in the repository:
  `<state>/warehouse/growthgr.duckdb`    the DuckDB file analysts query
  `<state>/warehouse/dbt_target/`        dbt's target dir (manifest, docs: index.html)
  `<state>/warehouse/dbt_logs/`          dbt's logs
The profiles dir is the project dir (`dbt/profiles.yml`, target `duckdb`; a
documented `spark` target is the production one). Telemetry is off.

An `s3://` lake: DuckDB's httpfs extension is not bundled with the pinned wheel (and cannot be
downloaded here), so before each build the committed files of every table the staging models
read are copied into the source tables by `mirror_lake` (read with pyarrow through
`Lake.read_files`; var `lake_mirror` tells the hook they are loaded). Same committed files, same
build-time snapshot as a local lake.

Functions take a `Lake` (or a local lake root, opened as `Lake.open(root)`).
DuckDB allows one writer per file: callers must not run two builds on one lake
at once (the Airflow DAG runs dbt in a single-slot pool).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from foundation import calendar
from foundation.lake import Lake
from foundation.sections.warehouse import WarehouseConfig

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt"
# Tables the staging models read: (zone, table); dbt source `zone`, table `table`, relation `zone.table`.
LAKE_TABLES = (
    ("raw", "items"), ("raw", "search_requests"), ("curated", "item_daily_stats"), ("samples", "itemltv_labels"),
)


class DbtError(RuntimeError):
    """`dbt build` (or docs) failed; the message lists every failed node and why."""


@dataclass
class DbtResult:
    command: str
    success: bool
    nodes: int = 0
    failures: list[str] = field(default_factory=list)
    warehouse: str = ""
    warnings: list[str] = field(default_factory=list)   # e.g. a source past its warn threshold


def _lake(lake: Lake | str) -> Lake:
    return lake if isinstance(lake, Lake) else Lake.open(lake)


def warehouse_dir(lake: Lake | str) -> Path:
    """`<state>/warehouse`: the local directory of dbt's DuckDB file, target and logs."""
    return _lake(lake).state_dir / "warehouse"


def duckdb_path(lake: Lake | str) -> Path:
    """The DuckDB file of the lake (created by the first build)."""
    return warehouse_dir(lake) / "growthgr.duckdb"


def is_remote(lake: Lake) -> bool:
    return lake.store.uri.startswith("s3://")


def lake_files(lake: Lake) -> dict[str, list[str]]:
    """`zone/table` -> the committed files of each lake table the staging models read."""
    return {f"{z}/{t}": lake.committed_files(z, t) for z, t in LAKE_TABLES}


def source_table(key: str) -> str:
    """The DuckDB table of the dbt source of lake table `zone/table` (schema = zone)."""
    zone, table = key.split("/")
    return f'{zone}."{table}"'


def dbt_vars(lake: Lake | str, files: dict[str, list[str]] | None = None,
             config: WarehouseConfig | None = None, as_of: date | None = None) -> dict:
    """`lake_root`, the DuckDB file, the committed files of each lake table the staging models
    read (`lake_files`: the lake's list, never a glob; a table without files gives an empty
    source table), whether the source tables are already loaded (`lake_mirror`: an `s3://` lake),
    the freshness reference day (`as_of`, None outside a freshness check) and thresholds (`config`,
    `WarehouseConfig` defaults), and the label calendar (`foundation.calendar`)."""
    lake, config = _lake(lake), config or WarehouseConfig()
    remote = is_remote(lake)
    return {"lake_root": lake.store.uri if remote else str(Path(lake.store.uri).resolve()),
            "lake_files": lake_files(lake) if files is None else files,
            "lake_mirror": remote, "as_of": as_of.isoformat() if as_of else None,
            "freshness_warn_after_days": config.freshness_warn_after_days,
            "freshness_error_after_days": config.freshness_error_after_days,
            "duckdb_path": str(duckdb_path(lake)), **calendar.dbt_vars()}


def mirror_lake(lake: Lake, files: dict[str, list[str]], path: Path) -> dict[str, int]:
    """Replace each source table with exactly `files[key]` (read by pyarrow, `ds` from the path);
    a table with no files is left to the on-run-start hook (an empty table of the source's types).
    Returns rows per table."""
    import duckdb

    rows = {}
    with duckdb.connect(str(path)) as con:
        for key, urls in files.items():
            if not urls:
                continue
            table = lake.read_files(urls)
            con.execute(f"create schema if not exists {key.split('/')[0]}")
            con.register("growthgr_mirror_src", table)
            con.execute(f"create or replace table {source_table(key)} as select * from growthgr_mirror_src")
            con.unregister("growthgr_mirror_src")
            rows[key] = table.num_rows
    log.info("dbt: mirrored %s into %s", rows, path)
    return rows


def _args(lake: Lake, command: str, select: str | None, files: dict[str, list[str]],
          config: WarehouseConfig | None, as_of: date | None) -> list[str]:
    wh = warehouse_dir(lake)
    args = [*command.split(), "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(wh / "dbt_target"), "--log-path", str(wh / "dbt_logs"),
            "--vars", json.dumps(dbt_vars(lake, files, config, as_of)), "--quiet"]
    return args + (["--select", select] if select else [])


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a run, so the
    file is free for other connections (analysts, `query`, a later build with other settings)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager as Manager

    with Manager._LOCK:
        if Manager._ENV is not None:
            Manager._ENV.close()
            Manager._ENV = None


def _status(r) -> str:
    """A dbt result's status as a string ("pass", "warn", "error", "fail", "runtime error"...)."""
    return str(getattr(r.status, "value", r.status))


def _stale(r) -> str:
    """One source freshness result: the source, its newest partition and its age from `as_of`."""
    node, status = r.node, _status(r)
    threshold = node.freshness.error_after if status == "error" else node.freshness.warn_after
    age = ("no partition as of" if r.max_loaded_at.year == 1 else
           f"newest partition {r.max_loaded_at.date()} is {r.age / 86400:g} days before")
    return (f"source {node.source_name}.{node.name}: {status}: stale, {age} ds {r.snapshotted_at.date()} "
            f"({status} after {threshold.count} days)")


def _failures(res) -> list[str]:
    out = []
    for r in getattr(res.result, "results", None) or []:
        if _status(r) in ("error", "fail", "runtime error"):
            out.append(_stale(r) if getattr(r, "max_loaded_at", None) else
                       f"{r.node.resource_type} {r.node.name}: {_status(r)}: {(r.message or '').strip()}")
    skipped = [r.node.name for r in getattr(res.result, "results", None) or [] if str(r.status) in ("skip", "skipped")]
    if out and skipped:
        out.append(f"{len(skipped)} downstream nodes skipped: {', '.join(sorted(skipped)[:10])}")
    if res.exception is not None:
        out.append(f"dbt raised: {res.exception}")
    return out


def invoke(lake: Lake | str, command: str, select: str | None = None,
           config: WarehouseConfig | None = None, as_of: date | None = None) -> DbtResult:
    """Run one dbt command on `lake` (an `s3://` lake is mirrored first) with the vars of
    `dbt_vars`; raises DbtError naming what failed."""
    from dbt.cli.main import dbtRunner

    lake = _lake(lake)
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    warehouse_dir(lake).mkdir(parents=True, exist_ok=True)
    files = lake_files(lake)
    if is_remote(lake):
        mirror_lake(lake, files, duckdb_path(lake))
    try:
        res = dbtRunner().invoke(_args(lake, command, select, files, config, as_of))
    finally:
        _release_duckdb()
    results = getattr(res.result, "results", None) or []
    out = DbtResult(command, bool(res.success), sum(1 for _ in results), _failures(res), str(duckdb_path(lake)),
                    [_stale(r) for r in results if _status(r) == "warn" and getattr(r, "max_loaded_at", None)])
    for warning in out.warnings:
        log.warning("dbt %s: %s", command, warning)
    if not res.success:
        raise DbtError(f"dbt {command} failed:\n  " + "\n  ".join(out.failures or ["(no details)"]))
    log.info("dbt %s: %d nodes ok -> %s", command, out.nodes, out.warehouse)
    return out


def build(lake: Lake | str, select: str | None = None) -> DbtResult:
    """`dbt build` (seeds, models, tests, unit tests) over the lake."""
    return invoke(lake, "build", select)


def freshness(lake: Lake | str, as_of: date, config: WarehouseConfig | None = None) -> DbtResult:
    """`dbt source freshness` of every lake source, the age measured from `as_of` (the run's day)
    with the thresholds of `config`: raises DbtError naming each source past `error_after`; a
    source past `warn_after` is in the result's `warnings`."""
    return invoke(lake, "source freshness", config=config, as_of=as_of)


def docs(lake: Lake | str) -> Path:
    """`dbt docs generate`; returns the path of the generated `index.html`."""
    invoke(lake, "docs generate")
    return warehouse_dir(lake) / "dbt_target" / "index.html"


@dataclass
class QueryResult:
    frame: pd.DataFrame
    truncated: bool             # the statement had more rows than `limit`
    limit: int | None


def query(lake: Lake | str, sql_text: str, budget: WarehouseConfig | None = None,
          limit: int | None = None) -> QueryResult:
    """Run ONE read-only SELECT on the lake's DuckDB file, within the budget of an analyst query.

    The statement is parsed first: anything but exactly one SELECT (COPY, ATTACH, SET, PRAGMA,
    INSTALL, several statements...) is rejected. The connection is read-only, with extensions off
    and the configuration locked. The source tables, staging views and marts are inside the file. Files:
    DuckDB's external access is off except for the committed files, at query time, of the tables
    the staging models read (`LAKE_TABLES`, the lake's own list, so neither `truth/` nor the files
    of an unfinished write are readable; none for an `s3://` lake). Budget (`budget`,
    `WarehouseConfig` defaults): stopped after `sql_timeout_s`, `sql_memory_limit` of memory and
    `sql_threads` threads, no spilling to disk (a query that needs more memory fails), at most
    `limit` rows returned (None: all; `growthgr sql` passes `sql_row_limit` unless told `--limit`).
    Raises DbtError with DuckDB's message on any refusal, error or exceeded budget."""
    import duckdb

    budget = budget or WarehouseConfig()
    lake = _lake(lake)
    path = duckdb_path(lake)
    if not path.exists():
        raise DbtError(f"{path} does not exist: run `growthgr dbt build` first")
    try:
        with duckdb.connect() as parser:
            statements = parser.extract_statements(sql_text)
    except duckdb.Error as err:
        raise DbtError(f"invalid SQL: {err}") from None
    kinds = [s.type.name for s in statements]
    if kinds != ["SELECT"]:
        raise DbtError(f"only one read-only SELECT statement is allowed, got {', '.join(kinds) or 'none'}")
    readable = [] if is_remote(lake) else [f for files in lake_files(lake).values() for f in files]
    config = {**_NO_EXTENSIONS, "memory_limit": budget.sql_memory_limit, "threads": budget.sql_threads,
              "max_temp_directory_size": "0B"}
    with duckdb.connect(str(path), read_only=True, config=config) as con:
        con.execute("set allowed_paths = $1", [readable])
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        timer = threading.Timer(budget.sql_timeout_s, con.interrupt)
        timer.start()
        try:
            relation = con.sql(statements[0].query)
            frame = (relation if limit is None else relation.limit(limit + 1)).df()
        except duckdb.InterruptException:
            raise DbtError(f"query stopped after {budget.sql_timeout_s:g} s (warehouse.sql_timeout_s)") from None
        except duckdb.OutOfMemoryException as err:
            raise DbtError(f"query needs more than warehouse.sql_memory_limit={budget.sql_memory_limit} "
                           f"(analyst queries never spill to disk): {err}") from None
        except duckdb.Error as err:
            raise DbtError(f"query failed: {err}") from None
        finally:
            timer.cancel()
    if limit is None:
        return QueryResult(frame, False, None)
    return QueryResult(frame.head(limit), len(frame) > limit, limit)


_NO_EXTENSIONS = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
