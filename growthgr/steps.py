"""The daily pipeline, declared once: every step of a day, its order and what it touches.

A step's `name` is the Airflow task id of `dags/growthgr_daily.py`, the argument of `growthgr
pipeline step NAME` and the name of its timing record (`growthgr.pipeline.timed`). The DAG makes
one task per step and one edge per `after`; the CLI runs one step (or, through Airflow, the day);
`publish` requires the stored results of the `gate`s marked `publish`; the closed-loop A/B
(`growthgr.abtest`) runs `in_order()` in-process. Nothing reads the DAG file back.

`reads` and `writes` name what a step reads and writes, for lineage (`growthgr.lineage`: each
task's OpenLineage inputs and outputs) and for the reader of this table: catalog datasets as
`zone/table` (`raw` stands for every raw table), model checkpoints (`models/<name>`), reports
(`reports/<subsystem>`), stored gate results (`validation/gate_results`), dbt's DuckDB marts
(`warehouse`) and the release store (`releases`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from foundation import catalog
from foundation.config import Settings
from foundation.lake import parse_ds
from growthgr import pipeline
from growthgr import publish as publishing
from growthgr.lineage import RELEASES, WAREHOUSE

RAW_LOGS = "growthgr://lake/raw"           # the Asset a day's raw logs update (simulator DAG or export)
RELEASE = "growthgr://releases/current"    # the Asset `publish` updates


@dataclass(frozen=True)
class Step:
    """One step of the daily pipeline (see the module doc)."""

    name: str
    run: Callable[[Settings, date], dict]
    after: tuple[str, ...] = ()
    gate: str | None = None              # the dataset whose gate result the step stores
    publish: bool = False                # `publish` requires that gate result to have passed
    pool: str | None = None              # the Airflow pool of a single-writer store
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    inlets: tuple[str, ...] = ()         # Asset URIs
    outlets: tuple[str, ...] = ()
    timeout_minutes: float = 15.0        # the task's execution timeout in the demo profile (scaled per profile)

    def __call__(self, settings: Settings, ds: str | date) -> dict:
        """Run the step for `ds` (parsed here, once: the step function gets a `date`), recording its
        duration and outcome under its name."""
        return pipeline.timed(self.run, settings, parse_ds(ds), name=self.name)


def gx_gate(dataset: str) -> Callable[[Settings, date], dict]:
    """The Great Expectations gate of `dataset` as a step function."""
    def run(settings: Settings, ds: date) -> dict:
        return pipeline.gate(settings, dataset, ds)

    run.__name__ = run.__qualname__ = f"gate_{dataset}"
    return run


def publish_gates() -> tuple[str, ...]:
    """The gate results `publish` requires, in pipeline order."""
    return tuple(s.gate for s in DAILY if s.gate and s.publish)


def publish(settings: Settings, ds: date) -> dict:
    """`growthgr.publish.publish` behind the gate results of `publish_gates()`."""
    return publishing.publish(settings, ds, publish_gates())


def _keys(*datasets) -> tuple[str, ...]:
    return tuple(f"{d.zone}/{d.table}" for d in datasets)


_FEATURES = _keys(*catalog.FEATURE_TABLES.values())
_TRAINING_SET = _keys(catalog.training_set("itemltv_v1"))
_SPARK_OUT = _keys(catalog.ITEM_DAILY_STATS, catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES,
                   *catalog.FEATURE_TABLES.values(), catalog.GR_SAMPLES)
_SIDS = _keys(catalog.ITEM_SIDS)
_GATE_RESULTS = ("validation/gate_results",)


def _model(name: str) -> str:
    return catalog.model_prefix(name).rstrip("/")


def _reports(subsystem: str) -> str:
    return f"reports/{subsystem}"

DAILY: tuple[Step, ...] = (
    Step("gate_raw", gx_gate("raw"), gate="raw", publish=True, reads=("raw",), writes=_GATE_RESULTS,
         inlets=(RAW_LOGS,)),
    Step("spark_jobs", pipeline.spark, ("gate_raw",), reads=("raw",), writes=_SPARK_OUT, timeout_minutes=45),
    Step("dbt_build", pipeline.dbt, ("spark_jobs",), pool="duckdb",
         reads=("raw", *_keys(catalog.ITEM_DAILY_STATS, catalog.ITEMLTV_LABELS)), writes=(WAREHOUSE,),
         timeout_minutes=30),
    Step("gate_features", gx_gate("features"), ("spark_jobs",), gate="features", publish=True, reads=_FEATURES,
         writes=_GATE_RESULTS),
    Step("gate_labels", pipeline.gate_labels, ("spark_jobs",), gate="labels",
         reads=_keys(catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES), writes=_GATE_RESULTS),
    Step("feast_materialize", pipeline.materialize, ("gate_features",), pool="feast_registry", reads=_FEATURES,
         timeout_minutes=30),
    Step("training_set", pipeline.training_set, ("feast_materialize", "gate_labels"), pool="feast_registry",
         reads=(*_FEATURES, *_keys(catalog.ITEMLTV_SAMPLES)),
         writes=(*_TRAINING_SET, *_keys(catalog.ITEMLTV_POOL_FEATURES)), timeout_minutes=30),
    Step("tokenize", pipeline.tokenize, ("gate_raw",), reads=("raw",),
         writes=_keys(catalog.ITEM_EMBEDDINGS, catalog.ITEM_SIDS), timeout_minutes=60),
    Step("gate_sids", gx_gate("sids"), ("tokenize",), gate="sids", publish=True, reads=_SIDS, writes=_GATE_RESULTS),
    Step("itemltv", pipeline.itemltv, ("training_set", "gate_sids"),
         reads=(*_TRAINING_SET, *_keys(catalog.ITEMLTV_SAMPLES, catalog.ITEMLTV_LABELS)),
         writes=(_model("itemltv"), _reports("itemltv")), timeout_minutes=90),
    Step("pool", pipeline.pool, ("itemltv",), reads=(*_keys(catalog.ITEMLTV_POOL_FEATURES), _model("itemltv")),
         writes=_keys(catalog.NEW_ITEM_POOL, catalog.ITEM_UPLIFT)),
    Step("gate_pool", gx_gate("pool"), ("pool",), gate="pool", publish=True, reads=_keys(catalog.NEW_ITEM_POOL),
         writes=_GATE_RESULTS),
    # MoPO's long-term reward reads the day's ItemLTV scores (item_uplift)
    Step("multigr_train", pipeline.multigr_train, ("pool",),
         reads=(*_keys(catalog.GR_SAMPLES, catalog.ITEM_UPLIFT), *_SIDS), writes=(_model("multigr"),),
         timeout_minutes=180),
    Step("multigr_evaluate", pipeline.multigr_evaluate, ("multigr_train",),
         reads=(*_keys(catalog.GR_SAMPLES), *_SIDS, _model("multigr")), writes=(_reports("multigr"),),
         timeout_minutes=45),
    Step("gate_multigr", pipeline.gate_multigr, ("multigr_evaluate",), gate="multigr", publish=True,
         reads=(_model("multigr"), _reports("multigr")), writes=_GATE_RESULTS),
    # the dense retriever reads the day's gr_samples (Spark) and SIDs
    Step("dense_train", pipeline.dense_train, ("spark_jobs", "gate_sids"), reads=(*_keys(catalog.GR_SAMPLES), *_SIDS),
         writes=(_model("dense"), _reports("dense")), timeout_minutes=120),
    Step("gate_dense", pipeline.gate_dense, ("dense_train",), gate="dense", publish=True,
         reads=(_model("dense"), _reports("dense")), writes=_GATE_RESULTS),
    Step("publish", publish, ("gate_pool", "gate_multigr", "gate_dense", "dbt_build"),
         reads=(*_keys(catalog.NEW_ITEM_POOL), *_SIDS, *_GATE_RESULTS, _model("itemltv"), _model("multigr"),
                _model("dense")),
         writes=(RELEASES,), outlets=(RELEASE,)),
)

# The simulated platform's day (its own DAG, `dags/simulate_platform_day.py`): the day's raw logs.
SIMULATE_DAY = Step("simulate_day", pipeline.simulate_day, writes=("raw",), outlets=(RAW_LOGS,), timeout_minutes=30)

BY_NAME: dict[str, Step] = {s.name: s for s in (*DAILY, SIMULATE_DAY)}


def in_order(steps: tuple[Step, ...] = DAILY) -> list[Step]:
    """The steps in a topological order of `after` (ties in declaration order)."""
    declared = {s.name: i for i, s in enumerate(steps)}
    pending = {s.name: set(s.after) for s in steps}
    order: list[Step] = []
    while pending:
        ready = sorted((n for n, up in pending.items() if not up - {s.name for s in order}), key=declared.get)
        if not ready:
            raise ValueError(f"the daily steps have a cycle or an unknown dependency among {sorted(pending)}")
        order.append(steps[declared[ready[0]]])
        del pending[ready[0]]
    return order


def step(name: str) -> Step:
    """The step called `name`; a ValueError listing the names otherwise."""
    if name not in BY_NAME:
        raise ValueError(f"unknown step {name!r}: one of {', '.join(BY_NAME)}")
    return BY_NAME[name]
