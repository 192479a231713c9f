"""Run the DAGs under a local Airflow 3 (SQLite metadata DB): for `make demo`, tests and backfills.

`airflow_env(home)` gives the environment of a self-contained Airflow home
(DAGs folder = this repo's `dags/`, no examples, SQLite DB in `home`);
`prepare(home)` migrates the DB and creates the single-slot pools;
`run_day(dag_id, ds)` runs one DAG run in-process with `dag.test()` and
returns its final state (dag.test logs task failures instead of raising, so
callers must look at the state). Production uses a real scheduler with
PostgreSQL and the Celery or Kubernetes executor (see README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pendulum

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"
POOLS = {"duckdb": "dbt-duckdb: one writer per DuckDB file", "feast_registry": "Feast file registry / SQLite online store"}


def daily_dag_args() -> dict:
    """What every GrowthGR DAG shares: a daily data-interval timetable (ds = interval start),
    no catch-up, one active run, and retries from `settings.orchestration`."""
    from datetime import timedelta

    from airflow.timetables.interval import CronDataIntervalTimetable

    from growthgr.core.config import load_settings

    orch = load_settings().orchestration
    return {
        "schedule": CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "retries": orch.retries,
            "retry_delay": timedelta(minutes=orch.retry_delay_minutes),
            "owner": "growthgr",
        },
    }


def run_ds(logical_date=None, data_interval_start=None) -> str:
    """The partition (`ds`) a DAG run processes - the one rule shared by the DAG tasks, the CLI and
    the tests, however the run was created.

    The run's logical date when it has one: scheduled and backfill runs (where it equals the data
    interval start), a manual run triggered with `--logical-date`, and any of them cleared and
    re-run. A manual run without a logical date processes the latest complete interval, whose
    start Airflow infers from the trigger time. (Airflow 3 infers `data_interval_start` of a
    manual run from the trigger time even when a logical date is given, so keying on it wrote
    the wrong day's partitions.)
    """
    when = logical_date if logical_date is not None else data_interval_start
    if when is None:
        raise ValueError("a DAG run has neither a logical date nor a data interval")
    return pendulum.instance(when).in_timezone("UTC").date().isoformat()


def raw_logs_asset():
    """The Asset a day's raw logs update (simulator DAG or a real export) and the daily DAG reads."""
    from airflow.sdk import Asset

    return Asset("growthgr://lake/raw")


def airflow_env(home: str | Path) -> dict[str, str]:
    home = Path(home).absolute()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "SCARF_ANALYTICS": "false",
    }


def prepare(home: str | Path) -> dict[str, str]:
    """Migrate the metadata DB and create the pools (idempotent). Sets the env in this process."""
    env = airflow_env(home)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env={**os.environ}, check=True, capture_output=True)
    for name, description in POOLS.items():
        subprocess.run([airflow, "pools", "set", name, "1", description], env={**os.environ}, check=True,
                       capture_output=True)
    return env


@dataclass
class RunOutcome:
    state: str
    tasks: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.state == "success"


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def run_day(dag_id: str, ds: str) -> RunOutcome:
    """One run for `ds`: its logical date is ds 00:00 UTC (see `run_ds`)."""
    dag = load_dag(dag_id)
    run = dag.test(logical_date=pendulum.parse(ds, tz="UTC"))
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return RunOutcome(str(run.state), tasks)
