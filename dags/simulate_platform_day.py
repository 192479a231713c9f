"""Simulated platform: one more day of search logs per run (stands in for production log delivery).

Each run advances the simulator to its day (`growthgr.airflow_local.run_ds`; idempotent: a
day already simulated is left as it is) and updates the `growthgr://lake/raw`
Asset, which the daily pipeline consumes. On a real platform this DAG is
replaced by the log export that lands `raw/<table>/ds=.../`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from growthgr.airflow_local import daily_dag_args, raw_logs_asset, run_ds
from growthgr.core.config import load_settings

RAW_LOGS = raw_logs_asset()


@dag(
    dag_id="simulate_platform_day",
    tags=["growthgr", "simulator"],
    **daily_dag_args(),
    doc_md=__doc__,
)
def simulate_platform_day():
    @task(outlets=[RAW_LOGS])
    def simulate(logical_date=None, data_interval_start=None):
        from growthgr import pipeline

        return pipeline.timed(pipeline.simulate_day, load_settings(), run_ds(logical_date, data_interval_start))

    simulate()


simulate_platform_day()
