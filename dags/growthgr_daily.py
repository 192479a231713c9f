"""GrowthGR daily pipeline: one task per step of `growthgr.steps.DAILY`, one edge per dependency.

The registry is the one declaration of the day (names, order, pools, gates, datasets read and
written); this file only wires it. Every run processes the partition `growthgr.airflow_local.run_ds`
names: the run's logical date (scheduled and backfill runs of the daily `CronDataIntervalTimetable`:
the interval start, so the run for [D, D+1) builds `ds=D`; a manual run with a logical date: that
date), or the latest complete interval for a manual run without one. Single-writer stores are
serialised with one-slot pools: `duckdb` (dbt's DuckDB file) and `feast_registry` (Feast's file
registry and SQLite online store). Each task is killed past its step's timeout
(`growthgr.airflow_local.step_timeout`); a task failed after its last retry, and a run not
successful by its deadline, send an alert (`growthgr.alerts`, through `daily_dag_args`). A
failing gate fails its task; everything downstream is skipped as `upstream_failed`, so nothing
is published and the previous release stays current.
Configuration comes from the usual GrowthGR environment (`GROWTHGR_PROFILE`, `GROWTHGR_LAKE_ROOT`, ...).
"""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import Asset, dag

from growthgr.airflow_local import daily_dag_args, run_step, step_timeout
from growthgr.steps import DAILY


@dag(dag_id="growthgr_daily", tags=["growthgr", "daily", "itemltv", "multigr", "dense"], **daily_dag_args(),
     doc_md=__doc__)
def growthgr_daily():
    tasks = {
        s.name: PythonOperator(task_id=s.name, python_callable=run_step, op_args=[s.name],
                               inlets=[Asset(u) for u in s.inlets], outlets=[Asset(u) for u in s.outlets],
                               execution_timeout=step_timeout(s.name),
                               **({"pool": s.pool} if s.pool else {}), doc_md=s.run.__doc__)
        for s in DAILY
    }
    for s in DAILY:
        for upstream in s.after:
            tasks[upstream] >> tasks[s.name]


growthgr_daily()
