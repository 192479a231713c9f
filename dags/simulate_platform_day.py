"""Simulated platform: one more day of search logs per run (stands in for production log delivery).

Each run advances the simulator to its day (`growthgr.steps.SIMULATE_DAY`, for the day
`growthgr.airflow_local.run_ds` names; idempotent: a day already simulated is left as it is) and
updates the `growthgr://lake/raw` Asset, which the daily pipeline consumes. On a real platform this
DAG is replaced by the log export that lands `raw/<table>/ds=.../`.
"""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import Asset, dag

from growthgr.airflow_local import daily_dag_args, run_step, step_timeout
from growthgr.steps import SIMULATE_DAY


@dag(dag_id="simulate_platform_day", tags=["growthgr", "simulator"], **daily_dag_args(), doc_md=__doc__)
def simulate_platform_day():
    PythonOperator(task_id="simulate", python_callable=run_step, op_args=[SIMULATE_DAY.name],
                   outlets=[Asset(u) for u in SIMULATE_DAY.outlets], execution_timeout=step_timeout(SIMULATE_DAY.name))


simulate_platform_day()
