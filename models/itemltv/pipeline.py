"""The ItemLTV steps of the daily run, as plain functions of (config sections, lake, ds):

    run_train(cfg, trainer_cfg, lake, ds)   fit "+uplift" and "base only" on the cohorts whose label
                                            window ended by ds; save models/itemltv[_base]/ds=<ds>
    run_evaluate(cfg, lake, ds)             held-out metrics + plots -> reports/itemltv/ds=<ds>/
    run_daily(cfg, trainer_cfg, lake, ds)   both, on the cohorts read once (the daily step)
    score_checkpoints(cfg, lake, ds, blobs) checkpoints (bytes) scored on the same held-out rows of ds
    score_candidates(lake, ds)              base and context-free uplift of every item in its new-item period
    build_pool(cfg, lake, ds)               top-N items in their new-item period by base growth
    write_pool(cfg, lake, ds)               build_pool -> curated/new_item_pool/ds=<ds>, scores ->
                                            curated/item_uplift/ds=<ds>

`cfg` is `settings.itemltv`, `trainer_cfg` `settings.trainer`. Everything is read from the lake:
the Feast training sets and the pool candidates' item features are built beforehand by the
application step `growthgr.pipeline.training_set`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import date, timedelta

import numpy as np
import pandas as pd

from foundation import calendar, catalog
from foundation.lake import Lake, PartitionNotFound
from foundation.sections.itemltv import ItemLTVConfig
from foundation.sections.trainer import TrainerConfig
from models.itemltv.calibrate import calibrate
from models.itemltv.data import (
    Inputs,
    experiment_arms,
    feast_features,
    load_inputs,
    normalise_samples,
    prepare,
    site_order_rates,
)
from models.itemltv.evaluate import evaluate_models, label_metrics, metrics_table, write_report
from models.itemltv.predict import predict
from models.itemltv.score import item_scores
from models.itemltv.train import (
    BASE,
    FULL,
    checkpoint_from_bytes,
    fit_model,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)


def _inputs(cfg: ItemLTVConfig, lake: Lake, ds: date) -> Inputs:
    return load_inputs(lake, ds, cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts)


def run_train(cfg: ItemLTVConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date,
              inputs: Inputs | None = None) -> dict:
    """Fit both variants, save their checkpoints; returns losses and checkpoint keys. `inputs`:
    the cohorts of `ds` already read (`_inputs`), else read here."""
    splits, pre = prepare(inputs or _inputs(cfg, lake, ds), cfg)
    out: dict = {"cohorts": splits.cohorts, "n_train_exposures": len(splits.train.y)}
    for name, use_uplift in ((FULL, True), (BASE, False)):
        trained = fit_model(splits, pre, cfg, trainer_cfg, use_uplift)
        if use_uplift and cfg.arm_calibration:
            out["calibration"] = calibrate(trained, splits)
        out[name] = {"checkpoint": save_checkpoint(lake, name, ds, trained), "train_loss": trained.train_loss,
                     "val_loss": trained.val_loss, "best_epoch": trained.best_epoch}
    return out


def run_evaluate(cfg: ItemLTVConfig, lake: Lake, ds: date, inputs: Inputs | None = None) -> dict:
    """Evaluate the checkpoints of `ds` on its test cohorts; writes the report; returns the metrics.
    `inputs` as in `run_train`."""
    full, base = load_checkpoint(lake, FULL, ds), load_checkpoint(lake, BASE, ds)
    splits, _ = prepare(inputs or _inputs(cfg, lake, ds), cfg, full.pre)
    metrics, plots = evaluate_models(lake, full, base, splits, cfg.seed, cfg.gbm_max_iter)
    metrics["cohorts"] = splits.cohorts
    metrics["report_keys"] = write_report(lake, ds, metrics, plots)
    log.info("itemltv evaluation %s\n%s", ds, metrics_table(metrics))
    return metrics


def run_daily(cfg: ItemLTVConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date) -> tuple[dict, dict]:
    """The daily step: `run_train` then `run_evaluate` on the cohorts of `ds`, read once."""
    inputs = _inputs(cfg, lake, ds)
    return run_train(cfg, trainer_cfg, lake, ds, inputs), run_evaluate(cfg, lake, ds, inputs)


def score_checkpoints(cfg: ItemLTVConfig, lake: Lake, ds: date, blobs: Mapping[str, bytes]) -> dict:
    """Score ItemLTV checkpoints (safetensors bytes by name, e.g. a candidate and the serving
    release's) on the test cohorts of `ds` (the split `run_evaluate` reports on) with the report's
    label metrics. Each checkpoint encodes the same raw rows with its own preprocessing (stored in
    it), so the figures are comparable; scored rows that differ between checkpoints are an error.

    Returns {"ds", "test_cohorts", "n_test_items", "rows" (digest of the scored item ids and labels),
    "scores": {name: {"mse", "ndcg"}}}.
    """
    if not blobs:
        raise ValueError("no checkpoint to score")
    inputs, scores, rows = _inputs(cfg, lake, ds), {}, set()
    for name, blob in blobs.items():
        trained = checkpoint_from_bytes(blob)
        splits, _ = prepare(inputs, cfg, trained.pre)
        items = predict(trained, splits.test).items
        scores[name] = label_metrics(items)
        rows.add(hashlib.sha256(items["item_id"].to_numpy("int64").tobytes()
                                + items["y"].to_numpy("float32").tobytes()).hexdigest()[:16])
    if len(rows) > 1:
        raise RuntimeError(f"checkpoints {sorted(blobs)} were scored on different rows of ds={ds}")
    return {"ds": f"{ds}", "test_cohorts": splits.cohorts["test"], "n_test_items": len(items),
            "rows": rows.pop(), "scores": scores}


def pool_candidates(lake: Lake, ds: date) -> pd.DataFrame:
    """The items in their new-item period on `ds` (listed on ds - NEW_ITEM_DAYS + 1 .. ds), latest rows."""
    first = ds - timedelta(days=calendar.NEW_ITEM_DAYS - 1)
    return lake.read_range(*catalog.RAW["items"], first, ds).to_pandas().drop_duplicates("item_id", keep="last")


def pool_inputs(lake: Lake, ds: date) -> Inputs:
    """Every pool candidate as one pseudo-exposure at the end of `ds` (no user, no history), in its
    real context on the day: its point-in-time item features (`catalog.ITEMLTV_POOL_FEATURES`), its
    listing age, its exposures and clicks up to `ds` (`pool_activity`) and its site-wide order
    rate so far."""
    if not lake.exists(*catalog.ITEMLTV_POOL_FEATURES, ds):
        raise PartitionNotFound(f"no {catalog.ITEMLTV_POOL_FEATURES.key(ds)}: build it first "
                                "(`growthgr pipeline step training_set`)")
    items = pool_candidates(lake, ds)
    samples = feast_features(lake.read_partition(*catalog.ITEMLTV_POOL_FEATURES, ds))
    samples = normalise_samples(samples.assign(user_id=-1, treatment=0.0)).merge(
        items[["item_id", "listing_date"]], on="item_id").merge(pool_activity(lake, ds), on="item_id", how="left")
    samples = samples.fillna({"prior_exposures": 0.0, "prior_clicks": 0.0})
    users = pd.DataFrame({"user_id": [-1], "age_band": [None]})
    first = ds - timedelta(days=calendar.NEW_ITEM_DAYS - 1)
    return Inputs(samples, items, users, pd.DataFrame(columns=["user_id", "item_id", "ts"]),
                  site_rates=site_order_rates(lake, items, first, ds), arms=experiment_arms(lake, first, ds))


def pool_activity(lake: Lake, ds: date) -> pd.DataFrame:
    """item_id, prior_exposures, prior_clicks: each item's raw exposures and clicks over the new-item
    period window ending on `ds` (the context the uplift tower was trained with: activity before the
    exposure; the pool serves the day after `ds`)."""
    first = ds - timedelta(days=calendar.NEW_ITEM_DAYS - 1)
    counts = {}
    for name, table in (("prior_exposures", "exposures"), ("prior_clicks", "clicks")):
        try:
            ids = lake.read_range(*catalog.RAW[table], first, ds, ["item_id"]).column("item_id").to_numpy()
        except PartitionNotFound:
            ids = np.zeros(0, np.int64)
        counts[name] = pd.Series(ids).value_counts()
    return pd.DataFrame(counts).fillna(0.0).rename_axis("item_id").reset_index()


def score_candidates(lake: Lake, ds: date) -> pd.DataFrame:
    """ItemLTV's scores of every item in its new-item period on `ds`, with the "+uplift" checkpoint of `ds`.

    Columns: item_id, base (the base-growth tower), uplift (the uplift tower on the same
    pseudo-exposure: no user, no history, so the context-free uplift of one click),
    listing_date; in item-id order.
    """
    return item_scores(load_checkpoint(lake, FULL, ds), pool_inputs(lake, ds))


def pool_from_scores(cfg: ItemLTVConfig, ds: date, scores: pd.DataFrame) -> pd.DataFrame:
    """The top `pool_size` candidates by base growth (ties: item id).

    Columns: ds, item_id, score (predicted base growth on y), rank (1 = best), listing_date.
    """
    pool = scores.rename(columns={"base": "score"}).assign(ds=f"{ds}")
    pool = pool.sort_values(["score", "item_id"], ascending=[False, True]).head(cfg.pool_size).reset_index(drop=True)
    return pool.assign(rank=np.arange(1, len(pool) + 1, dtype=np.int32))[
        ["ds", "item_id", "score", "rank", "listing_date"]]


def build_pool(cfg: ItemLTVConfig, lake: Lake, ds: date) -> pd.DataFrame:
    """Score every item in its new-item period on `ds` with the base-growth tower; keep the top N
    (`pool_from_scores`)."""
    return pool_from_scores(cfg, ds, score_candidates(lake, ds))


def write_pool(cfg: ItemLTVConfig, lake: Lake, ds: date) -> pd.DataFrame:
    """Write `curated/new_item_pool` (the top N, returned) and `curated/item_uplift` (ds, item_id,
    base, uplift of every candidate: MoPO's long-term reward) for `ds`."""
    scores = score_candidates(lake, ds)
    pool = pool_from_scores(cfg, ds, scores)
    lake.write_partition(*catalog.ITEM_UPLIFT, ds, scores.assign(ds=f"{ds}")[["ds", "item_id", "base", "uplift"]])
    lake.write_partition(*catalog.NEW_ITEM_POOL, ds, pool)
    return pool


__all__ = ["run_train", "run_evaluate", "score_checkpoints", "pool_candidates", "pool_inputs", "pool_activity", "score_candidates", "build_pool", "write_pool", "metrics_table"]
