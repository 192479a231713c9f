"""The Airflow task of one registry step (`growthgr.steps.Step`), for the DAG files.

A `StepOperator` runs `growthgr.airflow_local.run_step(name)` like a `PythonOperator`, with the
step's pool, timeout, Asset inlets/outlets and doc. For Airflow's OpenLineage provider it names the
lake datasets the step reads and writes (`growthgr.lineage.step_datasets`: the registry's `reads`
and `writes` on the lake of the task's settings), so every task's START and COMPLETE/FAIL events
carry its inputs and outputs.
"""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import Asset

from growthgr.airflow_local import run_step, step_timeout
from growthgr.steps import Step


class StepOperator(PythonOperator):
    """The task of registry step `step` (see the module doc); its task id is the step's name
    unless `task_id` is given."""

    def __init__(self, *, step: Step, task_id: str | None = None, **kwargs):
        super().__init__(task_id=task_id or step.name, python_callable=run_step, op_args=[step.name],
                         inlets=[Asset(u) for u in step.inlets], outlets=[Asset(u) for u in step.outlets],
                         execution_timeout=step_timeout(step.name), doc_md=step.run.__doc__,
                         **({"pool": step.pool} if step.pool else {}), **kwargs)
        self.step_name = step.name

    def get_openlineage_facets_on_start(self):
        return self._lineage()

    def get_openlineage_facets_on_complete(self, task_instance):
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance):
        return self._lineage()

    def _lineage(self):
        from airflow.providers.openlineage.extractors import OperatorLineage

        from foundation.config import load_settings
        from growthgr.lineage import step_datasets
        from growthgr.steps import step

        s = step(self.step_name)
        inputs, outputs = step_datasets(load_settings(), s.reads, s.writes)
        return OperatorLineage(inputs=inputs, outputs=outputs)
