"""Simulated platform: one more day of search logs per run (stands in for production log delivery).

Each run advances the simulator to its `data_interval_start` (idempotent: a
day already simulated is left as it is) and updates the `growthgr://lake/raw`
Asset, which the daily pipeline consumes. On a real platform this DAG is
replaced by the log export that lands `raw/<table>/ds=.../`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from growthgr.config import load_settings

RAW_LOGS = Asset("growthgr://lake/raw")
_ORCH = load_settings().orchestration


@dag(
    dag_id="simulate_platform_day",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["growthgr", "simulator"],
    default_args={"retries": _ORCH.retries, "retry_delay": timedelta(minutes=_ORCH.retry_delay_minutes)},
    doc_md=__doc__,
)
def simulate_platform_day():
    @task(outlets=[RAW_LOGS])
    def simulate(data_interval_start=None):
        from growthgr import pipeline

        return pipeline.simulate_day(load_settings(), data_interval_start.date().isoformat())

    simulate()


simulate_platform_day()
