"""GrowthGR daily pipeline: one task per step of `growthgr.steps.DAILY`, one edge per dependency.

The registry is the one declaration of the day (names, order, pools, gates, datasets read and
written); this file only wires it. The schedule is data-aware (`daily_dag_args(raw_asset=...)`): a
run starts when the raw logs' Asset is updated, or at `orchestration.raw_deadline_utc` of the next
day. Every run processes the partition `growthgr.airflow_local.run_ds` names: the run's logical
date (scheduled and backfill runs: the interval start, so the run for [D 06:00, D+1 06:00) builds
`ds=D`; a manual run with a logical date: that date), the `ds` of the raw-logs event for an
asset-triggered run, or the latest complete interval for a manual run without a logical date.
Single-writer stores are serialised with one-slot pools: `duckdb` (dbt's DuckDB file) and
`feast_registry` (Feast's file registry and SQLite online store). Each task is killed past its
step's timeout (`growthgr.airflow_local.step_timeout`); a task failed after its last retry, and a
run not successful by its deadline, send an alert (`growthgr.alerts`, through `daily_dag_args`). A
failing gate fails its task; everything downstream is skipped as `upstream_failed`, so nothing
is published and the previous release stays current. Each task is a
`growthgr.airflow_step.StepOperator`: its OpenLineage events name the datasets the step reads and
writes (`growthgr.lineage`). Configuration comes from the usual GrowthGR environment
(`GROWTHGR_PROFILE`, `GROWTHGR_LAKE_ROOT`, ...).
"""

from __future__ import annotations

from airflow.sdk import dag

from growthgr.airflow_local import daily_dag_args
from growthgr.airflow_step import StepOperator
from growthgr.steps import DAILY, RAW_LOGS


@dag(dag_id="growthgr_daily", tags=["growthgr", "daily", "itemltv", "multigr", "dense"], **daily_dag_args(raw_asset=RAW_LOGS),
     doc_md=__doc__)
def growthgr_daily():
    tasks = {s.name: StepOperator(step=s) for s in DAILY}
    for s in DAILY:
        for upstream in s.after:
            tasks[upstream] >> tasks[s.name]


growthgr_daily()
