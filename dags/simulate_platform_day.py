"""Simulated platform: one more day of search logs per run (stands in for production log delivery).

Each run advances the simulator to its day (`growthgr.steps.SIMULATE_DAY`, for the day
`growthgr.airflow_local.run_ds` names; idempotent: a day already simulated is left as it is) and
updates the `growthgr://lake/raw` Asset, which the daily pipeline consumes. On a real platform this
DAG is replaced by the log export that lands `raw/<table>/ds=.../`.
"""

from __future__ import annotations

from airflow.sdk import dag

from growthgr.airflow_local import daily_dag_args
from growthgr.airflow_step import StepOperator
from growthgr.steps import SIMULATE_DAY


@dag(dag_id="simulate_platform_day", tags=["growthgr", "simulator"], **daily_dag_args(), doc_md=__doc__)
def simulate_platform_day():
    StepOperator(step=SIMULATE_DAY, task_id="simulate")


simulate_platform_day()
