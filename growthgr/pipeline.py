"""The steps of one daily run, as plain functions `(settings, ds) -> summary dict`.

`growthgr.steps` declares which of them make a day, in what order (the DAG, the CLI and the
closed-loop A/B walk it); the tests call them directly too. Each
step is idempotent for its `ds` (it overwrites its own partitions), raises on
failure, and never publishes anything itself: the publish step, which checks the stored gate
results of the day first, is `growthgr.publish.publish`.

Order of one day (DESIGN.md section 2):
  gate raw -> spark jobs -> dbt build -> gate labels/features -> feast materialise
  -> training set -> embeddings + SID assignment -> gate sids -> ItemLTV train/evaluate -> pool
  -> gate pool -> MultiGR train -> MultiGR evaluate -> gate MultiGR -> publish
  (DR train -> gate DR, after the SID gate and the day's gr_samples, also before publish)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import date, timedelta

from foundation import catalog
from foundation.config import Settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from growthgr.publish import DENSE, MULTIGR

log = logging.getLogger(__name__)


def _curves(lake: Lake, ds: date):
    """The block in which a step's trainings log their learning curves to the day's
    `reports/curves/ds=<ds>/<model>/` (`models.training.learning_curves`)."""
    from models.training import learning_curves

    return learning_curves(lake, catalog.report_prefix(catalog.CURVES, ds))


class GateFailed(RuntimeError):
    """A GX gate failed; the message is the gate's readable summary."""


def simulate_day(settings: Settings, ds: date) -> dict:
    """Advance the simulated platform by one day, to `ds` (the day's raw logs "arrive").

    Idempotent and append-only: a day already simulated is left untouched (raw
    data is never overwritten); a day that is not the next one is an error.
    """
    from simulator.run import next_start, simulate

    lake = Lake.from_settings(settings)
    following = next_start(lake, settings.simulator)
    if ds < following:
        return {"simulated": f"{ds}", "skipped": "already simulated"}
    if ds > following:
        raise ValueError(f"cannot simulate {ds}: the simulated platform is at {following} (run the days between first)")
    summary = simulate(lake, settings.simulator, days=1, progress=False)
    return {"simulated": f"{ds}", "rows": summary.rows, "seconds": round(summary.seconds, 2)}


def gate(settings: Settings, dataset: str, ds: date) -> dict:
    """Run the GX suites of `dataset` on `ds`; raise `GateFailed` with the summary on failure."""
    from expectations.gate import validate

    result = validate(settings.gates_config(), Lake.from_settings(settings), dataset, ds)
    if not result.passed:
        raise GateFailed(result.summary())
    return {"gate": dataset, "expectations": result.n_expectations, "docs": result.data_docs_uri}


def spark(settings: Settings, ds: date) -> dict:
    """Every Spark job for `ds` (labels only once a cohort can close)."""
    from spark_jobs.jobs import run_all

    return run_all(Lake.from_settings(settings), settings.spark, settings.storage, ds)


def dbt(settings: Settings, ds: date) -> dict:
    """Check the lake sources' freshness as of `ds` (`dbt source freshness`: a source whose newest
    partition is more than `warehouse.freshness_error_after_days` before `ds` fails the step, named
    with its age), then build (run + test) the dbt project over the lake; the build's OpenLineage
    events (one per model, seed and test) go where `orchestration.lineage` says."""
    from dataclasses import asdict

    from growthgr.lineage import emit_dbt
    from warehouse.runner import build, freshness

    lake = Lake.from_settings(settings)
    fresh = freshness(lake, ds, settings.warehouse)
    built = build(lake)
    return {**asdict(built), "stale_warnings": fresh.warnings,
            "lineage_events": emit_dbt(settings.orchestration.lineage, lake)}


def gate_labels(settings: Settings, ds: date) -> dict:
    """The label/sample gate, on days where a cohort closed (the Spark job skips earlier days)."""
    if not Lake.from_settings(settings).exists(*catalog.ITEMLTV_LABELS, ds):
        log.warning("no itemltv_labels for ds=%s (no cohort closes yet): label gate skipped", ds)
        return {"gate": "labels", "skipped": True}
    return gate(settings, "labels", ds)


def materialize(settings: Settings, ds: date) -> dict:
    """Load the day's feature rows into the Feast online store."""
    from features import store as features

    features.materialize(settings.feast, Lake.from_settings(settings), ds, settings.spark.master)
    return {"materialized": f"{ds}"}


def tokenize(settings: Settings, ds: date) -> dict:
    """Embed the day's new items; give them SIDs with the frozen codebook (fit one if none exists)."""
    from models.tokenizer import embed, sids

    lake = Lake.from_settings(settings)
    new = embed.embed_new_items(lake, ds, settings.tokenizer)
    if lake.list_partitions(sids.ZONE, sids.TABLE, end=ds):
        return {"embedded": new, **sids.assign(lake, ds, settings.tokenizer)}
    with _curves(lake, ds):
        return {"embedded": new, **sids.fit(lake, ds, settings.tokenizer, trainer_cfg=settings.trainer)}


def training_set(settings: Settings, ds: date) -> dict:
    """Build from Feast (after `feast_materialize`) the point-in-time inputs ItemLTV reads from the
    lake, never Feast itself: the training set of every samples partition it trains on that has
    none yet and of the cohort closing on `ds` (rebuilt on every run of the day), and the item
    features of the day's pool candidates as of the end of `ds` (`catalog.ITEMLTV_POOL_FEATURES`)."""
    from datetime import UTC, datetime

    from features import store as features
    from models.itemltv.data import SERVICE, sample_partitions
    from models.itemltv.pipeline import pool_candidates

    lake, cfg, master = Lake.from_settings(settings), settings.itemltv, settings.spark.master
    n_cohorts = cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts
    todo = [p for p in sample_partitions(lake, ds, n_cohorts)
            if p == ds or not lake.exists(*catalog.training_set(SERVICE), p)]
    rows = sum(features.training_set(settings.feast, lake, SERVICE, p, master).num_rows for p in todo)
    end_of_day = datetime(ds.year, ds.month, ds.day, tzinfo=UTC) + timedelta(days=1)
    items = pool_candidates(lake, ds)["item_id"].to_numpy()
    pool = features.item_features_at(settings.feast, lake, SERVICE, items, end_of_day, master)
    lake.write_partition(*catalog.ITEMLTV_POOL_FEATURES, ds, pool)
    return {"training_set": SERVICE, "built": [f"{p}" for p in todo], "rows": rows, "pool_candidates": pool.num_rows}


def itemltv(settings: Settings, ds: date) -> dict:
    """Train ItemLTV ("+uplift" and "base only") on the closed cohorts' training sets, then
    evaluate on held-out ones."""
    from models.itemltv.pipeline import run_daily

    lake = Lake.from_settings(settings)
    with _curves(lake, ds):
        trained, metrics = run_daily(settings.itemltv, settings.trainer, lake, ds)
    return {"cohorts": trained["cohorts"], "metrics": _headline(metrics)}


def pool(settings: Settings, ds: date) -> dict:
    """Score the items in their new-item period with the base tower; write the daily pool."""
    from models.itemltv.pipeline import write_pool

    frame = write_pool(settings.itemltv, Lake.from_settings(settings), ds)
    return {"pool_size": len(frame), "top_score": float(frame["score"].max()) if len(frame) else None}


# -- the model gates: the checks live with each model (`models.<name>.gate.check`) ----------------
def _model_gate(lake: Lake, name: str, suite: str, ds: date, check: Callable[[], dict]) -> dict:
    """Run a model's gate (`check()`: its failures as (column, rule, details), expectations, writes)
    and store its result like every gate (`catalog.gate_result_key(ds, name)`); raises `GateFailed`
    with the summary on failure."""
    from expectations.gate import Failure, GateResult, store_result

    store_result(lake, GateResult(name, ds, False), status="running")
    gate = check()
    failures = [Failure(name, f"ds={ds}", *f) for f in gate["failures"]]
    result = GateResult(name, ds, not failures, failures, [suite], gate["n_expectations"], gate["writes"])
    store_result(lake, result)
    if not result.passed:
        raise GateFailed(result.summary())
    return gate


# -- MultiGR: train, evaluate and gate the day's generative retriever (`models.multigr.lineage`) --
def multigr_train(settings: Settings, ds: date) -> dict:
    """Train the day's MultiGR, warm-started from the serving release's when it can be, and write it to
    the lake (`models.multigr.lineage.train`)."""
    from models.multigr import lineage

    lake = Lake.from_settings(settings)
    with _curves(lake, ds):
        return lineage.train(settings.multigr, settings.trainer, lake, ReleaseStore.from_settings(settings), ds)


def multigr_evaluate(settings: Settings, ds: date) -> dict:
    """Evaluate the day's MultiGR and, when comparable, the serving release's on its lineage's held-out
    days; writes `reports/multigr/ds=<ds>/daily.json` (`models.multigr.lineage.evaluate`)."""
    from models.multigr import lineage

    return lineage.evaluate(settings.multigr, Lake.from_settings(settings), ReleaseStore.from_settings(settings), ds)


def gate_multigr(settings: Settings, ds: date) -> dict:
    """The model gate of the day's MultiGR (`models.multigr.gate`), stored like every gate
    (`catalog.gate_result_key(ds, "multigr")`, naming the checkpoint, config, report and input
    partitions it validated). Raises `GateFailed` naming the metric, the values and the limit."""
    from models.multigr import gate

    lake = Lake.from_settings(settings)
    result = _model_gate(lake, MULTIGR, gate.SUITE, ds,
                         lambda: gate.check(lake, ds, settings.multigr.daily.max_recall_drop))
    return gate.summary(result)


# -- DR: train the day's dense retriever, index the catalog, gate the index (`models.dense`) -------
def dense_train(settings: Settings, ds: date) -> dict:
    """Train the day's dense retriever, index the catalog and write checkpoint, index and report
    (`models.dense.daily.train`)."""
    from models.dense import daily

    lake = Lake.from_settings(settings)
    with _curves(lake, ds):
        return daily.train(settings.dense, settings.trainer, lake, ds)


def gate_dense(settings: Settings, ds: date) -> dict:
    """The model gate of the day's dense retriever (`models.dense.gate`), stored like every gate
    (`catalog.gate_result_key(ds, "dense")`, naming the checkpoint, config, index and the partitions
    it was trained on). Raises `GateFailed` naming the check and the values."""
    from models.dense import gate

    lake = Lake.from_settings(settings)
    return gate.summary(_model_gate(lake, DENSE, gate.SUITE, ds, lambda: gate.check(lake, ds, settings.dense)))


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def timed(step: Callable[[Settings, date], dict], settings: Settings, ds: date, name: str | None = None) -> dict:
    """Run one step and record its duration and outcome in the lake (`catalog.pipeline_step_key`;
    a re-run of the step overwrites its record; a failed write only logs). A failed step also
    stores its traceback (`catalog.pipeline_step_log_key`), which the record's `log` names."""
    import traceback
    from datetime import UTC, datetime

    name = name or step.__name__
    begun, started, status, error, trace = datetime.now(UTC), time.perf_counter(), "failed", None, None
    try:
        out = step(settings, ds)
        status = "ok"
    except Exception as exc:
        error, trace = f"{type(exc).__name__}: {exc}"[:2000], traceback.format_exc()
        raise
    finally:
        seconds = time.perf_counter() - started
        record = {"step": name, "ds": f"{ds}", "status": status, "seconds": round(seconds, 3), "error": error,
                  "started": begun.isoformat(), "finished": datetime.now(UTC).isoformat()}
        try:
            store = Lake.from_settings(settings).store
            if trace is not None:
                store.put_bytes(catalog.pipeline_step_log_key(ds, name), trace.encode())
                record["log"] = store.url(catalog.pipeline_step_log_key(ds, name))
            store.put_bytes(catalog.pipeline_step_key(ds, name), json.dumps(record).encode())
        except Exception:                    # the timing record must never fail the step
            log.warning("could not record the timing of %s ds=%s", name, ds, exc_info=True)
    log.info("%s ds=%s done in %.1fs: %s", name, ds, seconds, out)
    return out
