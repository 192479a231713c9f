"""The ItemLTV steps of the daily run, as plain functions of (settings, ds):

    run_train(settings, ds)     fit "+uplift" and "base only" on the cohorts whose label
                                window ended by ds; save models/itemltv[_base]/ds=<ds>
    run_evaluate(settings, ds)  held-out metrics + plots -> reports/itemltv/ds=<ds>/
    build_pool(settings, ds)    top-N items of age 0..new_item_days-1 by base growth
    write_pool(settings, ds)    build_pool -> curated/new_item_pool/ds=<ds>
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from growthgr.core.lake import Lake, to_ds
from models.itemltv.data import (
    SERVICE,
    Inputs,
    encode,
    feast_features,
    load_inputs,
    normalise_samples,
    numeric_frame,
    prepare,
)
from models.itemltv.evaluate import evaluate_models, metrics_table, write_report
from models.itemltv.train import BASE, FULL, fit_model, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
POOL_TABLE = ("curated", "new_item_pool")


def _inputs(settings, ds: str) -> Inputs:
    cfg = settings.itemltv
    return load_inputs(settings, ds, cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts)


def run_train(settings, ds: str) -> dict:
    """Fit both variants, save their checkpoints; returns losses and checkpoint keys."""
    cfg, lake = settings.itemltv, Lake.from_settings(settings)
    splits, pre = prepare(_inputs(settings, ds), cfg)
    out: dict = {"cohorts": splits.cohorts, "n_train_exposures": len(splits.train.y)}
    for name, use_uplift in ((FULL, True), (BASE, False)):
        trained = fit_model(splits, pre, cfg, use_uplift)
        out[name] = {"checkpoint": save_checkpoint(lake, name, ds, trained), "train_loss": trained.train_loss,
                     "val_loss": trained.val_loss, "best_epoch": trained.best_epoch}
    return out


def run_evaluate(settings, ds: str) -> dict:
    """Evaluate the checkpoints of `ds` on its test cohorts; writes the report; returns the metrics."""
    cfg, lake = settings.itemltv, Lake.from_settings(settings)
    full, base = load_checkpoint(lake, FULL, ds), load_checkpoint(lake, BASE, ds)
    splits, _ = prepare(_inputs(settings, ds), cfg, full.pre)
    metrics, plots = evaluate_models(lake, full, base, splits.train, splits.test, cfg.seed, cfg.gbm_max_iter)
    metrics["cohorts"] = splits.cohorts
    metrics["report_keys"] = write_report(lake, ds, metrics, plots)
    log.info("itemltv evaluation %s\n%s", ds, metrics_table(metrics))
    return metrics


def _pool_inputs(settings, ds: str, days: int) -> Inputs:
    """Every item listed in the last `days` days, as one pseudo-exposure at the end of `ds`
    (no user, no click: only the item tower is used), with its item features from Feast."""
    from growthgr import features

    lake, end = Lake.from_settings(settings), date.fromisoformat(to_ds(ds))
    items = lake.read_range("raw", "items", (end - timedelta(days=days - 1)).isoformat(), to_ds(ds)).to_pandas()
    items = items.drop_duplicates("item_id", keep="last")
    ts = pd.Timestamp(end + timedelta(days=1), tz="UTC")   # features of every event up to the end of ds
    entities = pd.DataFrame({"item_id": items["item_id"].to_numpy(), "event_timestamp": ts})
    store = features.open_store(settings)
    feats = features.historical_features(store, entities, features.service_refs(store, SERVICE, {"item_features"}))
    samples = feast_features(pa.Table.from_pandas(feats, preserve_index=False))
    samples = normalise_samples(samples.assign(user_id=-1, treatment=0.0)).merge(
        items[["item_id", "listing_date"]], on="item_id")
    users = pd.DataFrame({"user_id": [-1], "activity": [np.nan], "price_sensitivity": [np.nan], "segment": [""]})
    return Inputs(samples, items, users, pd.DataFrame(columns=["user_id", "item_id", "ts"]))


@torch.no_grad()
def build_pool(settings, ds: str) -> pd.DataFrame:
    """Score every item of age 0..new_item_days-1 on `ds` with the base-growth tower; keep the top N.

    Columns: ds, item_id, score (predicted base growth on y), rank (1 = best), listing_date.
    """
    cfg, lake = settings.itemltv, Lake.from_settings(settings)
    trained = load_checkpoint(lake, FULL, ds)
    inputs = _pool_inputs(settings, ds, cfg.new_item_days)
    enc = encode(inputs, trained.pre, numeric_frame(inputs))
    t = torch.from_numpy
    scores = trained.model.base(t(enc.tokens[enc.item_row]), t(enc.category[enc.item_row]), t(enc.x["item"])).numpy()
    pool = pd.DataFrame({"ds": to_ds(ds), "item_id": enc.meta["item_id"].astype("int64"), "score": scores.astype(float),
                         "listing_date": enc.meta["listing_date"].to_numpy()})
    pool = pool.sort_values(["score", "item_id"], ascending=[False, True]).head(cfg.pool_size).reset_index(drop=True)
    return pool.assign(rank=np.arange(1, len(pool) + 1, dtype=np.int32))[
        ["ds", "item_id", "score", "rank", "listing_date"]]


def write_pool(settings, ds: str) -> pd.DataFrame:
    pool = build_pool(settings, ds)
    Lake.from_settings(settings).write_partition(*POOL_TABLE, ds, pool)
    return pool


__all__ = ["run_train", "run_evaluate", "build_pool", "write_pool", "metrics_table"]
