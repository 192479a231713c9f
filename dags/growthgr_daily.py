"""GrowthGR daily pipeline (thin: every task calls one function of `growthgr.pipeline`).

Every run processes the partition `growthgr.airflow_local.run_ds` names: the run's
logical date (scheduled and backfill runs of the daily `CronDataIntervalTimetable`: the
interval start, so the run for [D, D+1) builds `ds=D`; a manual run with a logical date:
that date), or the latest complete interval for a manual run without one.
Single-writer stores are serialised with one-slot pools: `duckdb` (dbt's
DuckDB file) and `feast_registry` (Feast's file registry and SQLite online
store). A failing gate fails its task; everything downstream is skipped as
`upstream_failed`, so nothing is published and the previous release stays
current. MultiGR (train -> evaluate -> gate) runs after the pool step, whose ItemLTV scores
(`curated/item_uplift`) give MoPO its long-term reward. The dense retriever (train -> gate)
runs once the day's SIDs passed their gate and its `gr_samples` exist (the Spark jobs). Configuration comes from the usual GrowthGR environment
(`GROWTHGR_PROFILE`, `GROWTHGR_LAKE_ROOT`, ...).
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, task

from growthgr.airflow_local import daily_dag_args, raw_logs_asset, run_ds
from growthgr.core.config import load_settings

RAW_LOGS = raw_logs_asset()
RELEASE = Asset("growthgr://releases/current")


def _ds() -> str:
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return run_ds(ctx.get("logical_date"), ctx.get("data_interval_start"))


def _run(step_name: str) -> dict:
    """Run `growthgr.pipeline.<step_name>` for the run's ds with the environment's settings."""
    from growthgr import pipeline
    from growthgr.core.logs import setup_logging

    setup_logging()
    return pipeline.timed(getattr(pipeline, step_name), load_settings(), _ds())


def _gate(dataset: str) -> dict:
    from growthgr import pipeline

    return pipeline.timed(lambda settings, ds: pipeline.gate(settings, dataset, ds), load_settings(), _ds(),
                          name=f"gate_{dataset}")


@dag(
    dag_id="growthgr_daily",
    tags=["growthgr", "daily", "itemltv", "multigr", "dense"],
    **daily_dag_args(),
    doc_md=__doc__,
)
def growthgr_daily():
    @task(inlets=[RAW_LOGS])
    def gate_raw():
        return _gate("raw")

    @task
    def spark_jobs():
        return _run("spark")

    @task(pool="duckdb")
    def dbt_build():
        return _run("dbt")

    @task
    def gate_features():
        return _gate("features")

    @task
    def gate_labels():
        return _run("gate_labels")

    @task(pool="feast_registry")
    def feast_materialize():
        return _run("materialize")

    @task(pool="feast_registry")
    def training_set():
        return _run("training_set")

    @task
    def tokenize():
        return _run("tokenize")

    @task
    def gate_sids():
        return _gate("sids")

    @task
    def itemltv():
        return _run("itemltv")

    @task
    def pool():
        return _run("pool")

    @task
    def gate_pool():
        return _gate("pool")

    @task
    def multigr_train():
        return _run("multigr_train")

    @task
    def multigr_evaluate():
        return _run("multigr_evaluate")

    @task
    def gate_multigr():
        return _run("gate_multigr")

    @task
    def dense_train():
        return _run("dense_train")

    @task
    def gate_dense():
        return _run("gate_dense")

    @task(outlets=[RELEASE])
    def publish():
        return _run("publish")

    raw, jobs, tok = gate_raw(), spark_jobs(), tokenize()
    feats, labels, dbt = gate_features(), gate_labels(), dbt_build()
    sid_gate, mat, tset, model, release = gate_sids(), feast_materialize(), training_set(), itemltv(), publish()
    raw >> [jobs, tok]
    jobs >> [dbt, feats, labels]
    feats >> mat >> tset
    tok >> sid_gate
    labels >> tset
    [tset, sid_gate] >> model
    scored = pool()
    model >> scored >> gate_pool() >> release
    scored >> multigr_train() >> multigr_evaluate() >> gate_multigr() >> release   # MoPO reads the day's item_uplift
    [jobs, sid_gate] >> dense_train() >> gate_dense() >> release       # DR reads gr_samples and the SIDs
    dbt >> release

growthgr_daily()
