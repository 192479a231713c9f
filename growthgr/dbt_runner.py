"""Run the `dbt/` project programmatically (dbt-core's `dbtRunner`), and query its DuckDB file.

The project reads the lake's Parquet directly (see `dbt/README.md`). Everything
run-specific lives under the lake, never in the repository:
  `<lake>/warehouse/growthgr.duckdb`    the DuckDB file analysts query
  `<lake>/warehouse/dbt_target/`        dbt's target dir (manifest, docs: index.html)
  `<lake>/warehouse/dbt_logs/`          dbt's logs
The profiles dir is the project dir (`dbt/profiles.yml`, target `duckdb`; a
documented `spark` target is the production one). Telemetry is off.

DuckDB allows one writer per file: callers must not run two builds on one lake
at once (the Airflow DAG runs dbt in a single-slot pool).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from growthgr.core import calendar
from growthgr.core.lake import Lake

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt"
# Tables the staging models read: (zone, table).
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


def warehouse_dir(lake_root: str) -> Path:
    if lake_root.startswith("s3://"):
        raise DbtError("dbt-duckdb reads a local lake; for an s3:// lake use the documented `spark` target")
    return Path(lake_root).resolve() / "warehouse"


def duckdb_path(lake_root: str) -> Path:
    """The DuckDB file of the lake (created by the first build)."""
    return warehouse_dir(lake_root) / "growthgr.duckdb"


def dbt_vars(lake_root: str) -> dict:
    """`lake_root`, the DuckDB file, the committed files of each lake table the staging models
    read (`lake_files`: the lake's list, never a glob; a table without files gives an empty
    view), and the label calendar (`growthgr.core.calendar`)."""
    lake = Lake.open(lake_root)
    files = {f"{z}/{t}": lake.committed_files(z, t) for z, t in LAKE_TABLES}
    return {"lake_root": str(Path(lake_root).resolve()), "lake_files": files,
            "duckdb_path": str(duckdb_path(lake_root)), **calendar.dbt_vars()}


def _args(lake_root: str, command: str, select: str | None) -> list[str]:
    wh = warehouse_dir(lake_root)
    args = [*command.split(), "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(wh / "dbt_target"), "--log-path", str(wh / "dbt_logs"),
            "--vars", json.dumps(dbt_vars(lake_root)), "--quiet"]
    return args + (["--select", select] if select else [])


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a run, so the
    file is free for other connections (analysts, `query`, a later build with other settings)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager as Manager

    with Manager._LOCK:
        if Manager._ENV is not None:
            Manager._ENV.close()
            Manager._ENV = None


def _failures(res) -> list[str]:
    out = []
    for r in getattr(res.result, "results", None) or []:
        status = str(getattr(r.status, "value", r.status))
        if status in ("error", "fail", "runtime error"):
            out.append(f"{r.node.resource_type} {r.node.name}: {status}: {(r.message or '').strip()}")
    skipped = [r.node.name for r in getattr(res.result, "results", None) or [] if str(r.status) in ("skip", "skipped")]
    if out and skipped:
        out.append(f"{len(skipped)} downstream nodes skipped: {', '.join(sorted(skipped)[:10])}")
    if res.exception is not None:
        out.append(f"dbt raised: {res.exception}")
    return out


def invoke(lake_root: str, command: str, select: str | None = None) -> DbtResult:
    """Run one dbt command on the lake at `lake_root`; raises DbtError naming what failed."""
    from dbt.cli.main import dbtRunner

    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    warehouse_dir(lake_root).mkdir(parents=True, exist_ok=True)
    try:
        res = dbtRunner().invoke(_args(lake_root, command, select))
    finally:
        _release_duckdb()
    results = getattr(res.result, "results", None) or []
    out = DbtResult(command, bool(res.success), sum(1 for _ in results), _failures(res), str(duckdb_path(lake_root)))
    if not res.success:
        raise DbtError(f"dbt {command} failed:\n  " + "\n  ".join(out.failures or ["(no details)"]))
    log.info("dbt %s: %d nodes ok -> %s", command, out.nodes, out.warehouse)
    return out


def build(lake_root: str, select: str | None = None) -> DbtResult:
    """`dbt build` (seeds, models, tests, unit tests) over the lake."""
    return invoke(lake_root, "build", select)


def docs(lake_root: str) -> Path:
    """`dbt docs generate`; returns the path of the generated `index.html`."""
    invoke(lake_root, "docs generate")
    return warehouse_dir(lake_root) / "dbt_target" / "index.html"


def query(lake_root: str, sql_text: str):
    """Run ONE read-only SELECT on the lake's DuckDB file; returns a pandas DataFrame.

    The statement is parsed first: anything but exactly one SELECT (COPY, ATTACH, SET, PRAGMA,
    INSTALL, several statements...) is rejected. The connection is read-only, and DuckDB's
    external access is off except for the lake directory (the staging views read its Parquet),
    with the configuration locked, so `read_text('/etc/passwd')` or extensions fail.
    Raises DbtError with DuckDB's message on any refusal or error."""
    import duckdb

    path = duckdb_path(lake_root)
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
    with duckdb.connect(str(path), read_only=True, config=_NO_EXTENSIONS) as con:
        con.execute("set allowed_directories = $1", [[f"{warehouse_dir(lake_root).parent}/"]])
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        try:
            return con.execute(sql_text).df()
        except duckdb.Error as err:
            raise DbtError(f"query failed: {err}") from None


_NO_EXTENSIONS = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
