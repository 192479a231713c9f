"""GrowthGR daily pipeline (thin: every task calls one function of `growthgr.pipeline`).

Partitions are keyed on `data_interval_start` of a daily
`CronDataIntervalTimetable` (the run for interval [D, D+1) builds `ds=D`).
Single-writer stores are serialised with one-slot pools: `duckdb` (dbt's
DuckDB file) and `feast_registry` (Feast's file registry and SQLite online
store). A failing gate fails its task; everything downstream is skipped as
`upstream_failed`, so nothing is published and the previous release stays
current. Configuration comes from the usual GrowthGR environment
(`GROWTHGR_PROFILE`, `GROWTHGR_LAKE_ROOT`, ...).
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, task

from growthgr.airflow_local import daily_dag_args, raw_logs_asset
from growthgr.core.config import load_settings

RAW_LOGS = raw_logs_asset()
RELEASE = Asset("growthgr://releases/current")


def _ds(data_interval_start) -> str:
    return data_interval_start.date().isoformat()


def _run(step_name: str, data_interval_start) -> dict:
    """Run `growthgr.pipeline.<step_name>` for the run's ds with the environment's settings."""
    from growthgr import pipeline
    from growthgr.core.logs import setup_logging

    setup_logging()
    return pipeline.timed(getattr(pipeline, step_name), load_settings(), _ds(data_interval_start))


def _gate(dataset: str, data_interval_start) -> dict:
    from growthgr import pipeline

    return pipeline.gate(load_settings(), dataset, _ds(data_interval_start))


@dag(
    dag_id="growthgr_daily",
    tags=["growthgr", "daily", "itemltv", "multigr"],
    **daily_dag_args(),
    doc_md=__doc__,
)
def growthgr_daily():
    @task(inlets=[RAW_LOGS])
    def gate_raw(data_interval_start=None):
        return _gate("raw", data_interval_start)

    @task
    def spark_jobs(data_interval_start=None):
        return _run("spark", data_interval_start)

    @task(pool="duckdb")
    def dbt_build(data_interval_start=None):
        return _run("dbt", data_interval_start)

    @task
    def gate_features(data_interval_start=None):
        return _gate("features", data_interval_start)

    @task
    def gate_labels(data_interval_start=None):
        return _run("gate_labels", data_interval_start)

    @task(pool="feast_registry")
    def feast_materialize(data_interval_start=None):
        return _run("materialize", data_interval_start)

    @task(pool="feast_registry")
    def training_set(data_interval_start=None):
        return _run("training_set", data_interval_start)

    @task
    def tokenize(data_interval_start=None):
        return _run("tokenize", data_interval_start)

    @task
    def gate_sids(data_interval_start=None):
        return _gate("sids", data_interval_start)

    @task
    def itemltv(data_interval_start=None):
        return _run("itemltv", data_interval_start)

    @task
    def pool(data_interval_start=None):
        return _run("pool", data_interval_start)

    @task
    def gate_pool(data_interval_start=None):
        return _gate("pool", data_interval_start)

    @task(outlets=[RELEASE])
    def publish(data_interval_start=None):
        return _run("publish", data_interval_start)

    raw, jobs, tok = gate_raw(), spark_jobs(), tokenize()
    feats, labels, dbt = gate_features(), gate_labels(), dbt_build()
    sid_gate, mat, tset, model, release = gate_sids(), feast_materialize(), training_set(), itemltv(), publish()
    raw >> [jobs, tok]
    jobs >> [dbt, feats, labels]
    feats >> mat >> tset
    tok >> sid_gate
    labels >> tset
    [tset, sid_gate] >> model
    model >> pool() >> gate_pool() >> release
    dbt >> release

growthgr_daily()
