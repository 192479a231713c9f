"""The dense retriever in the daily pipeline: train, encode the catalog, index, and check the index.

    built = build_daily(settings.dense, settings.trainer, lake, ds)      # model, ids, vectors, index, manifest
    summary = train(settings.dense, settings.trainer, lake, ds)          # build_daily + write the day's objects

Pure functions over a lake (no release store): the application (`growthgr.pipeline.dense_train /
gate_dense / publish`) calls `train` and the model gate (`models.dense.gate`), stores the gate
result and ships the objects.

- Training days: the newest `daily.train_days` committed `samples/gr_samples` partitions up to
  ds (ds itself must be one), from scratch, `daily.epochs` epochs (`platform.train_dense`).
- Items: every item listed up to ds with the newest SID snapshot up to ds (`platform.item_table`;
  the pool is a subset), encoded and indexed by `index.build_index` (exact up to
  `index.exact_max_items`, IVF / HNSW above, its nprobe / efSearch the smallest with recall@k >=
  `index.target_recall` against exact search).
- Recall queries: the query vectors of a seeded sample of `index.recall_queries` of ds's requests
  (real queries, not item vectors), the same in the build and in the check.

The gate (`gate.check_daily`) does not trust the manifest: it reads the vectors back from the index, checks them
(finite, L2-normalised, as many as recorded) and the model's weights (finite), and measures the
stored index's recall@k against exact search over those vectors again.

Departures from the paper: no warm start and no replay of older days (a short window, trained
from scratch daily); one index of the whole catalog serves both the catalog and the new-item pool
(the pool is a subset; the paper does not say how its production index is split).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, NamedTuple

import faiss
import numpy as np

from foundation import catalog
from foundation.catalog import GR_SAMPLES, ITEM_SIDS
from foundation.lake import Lake, PartitionNotFound
from foundation.samples import read_gr_samples
from foundation.sections.dense import DenseConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.dense.data import SAMPLE_COLUMNS, ItemTable
from models.dense.index import build_index, index_to_bytes
from models.dense.model import DenseRetriever
from models.dense.platform import item_table, train_dense
from models.dense.train import encode_catalog, query_vectors

NAME = "dense"


class DailyDense(NamedTuple):
    model: DenseRetriever
    item_ids: np.ndarray         # (N,) the catalog as of ds
    vectors: np.ndarray          # (N, D) float32, L2-normalised
    index: faiss.Index
    manifest: dict[str, Any]     # `index.build_index`'s
    stats: dict[str, Any]        # training stats (`train.fit`) + days, sample rows, SID snapshot
    inputs: list[dict]           # the partitions read: {zone, table, ds, write_id}


def train_days(lake: Lake, ds: date, cfg: DenseConfig) -> list[date]:
    """The newest `daily.train_days` `gr_samples` days up to ds (ds must have one)."""
    days = lake.list_partitions(*GR_SAMPLES, end=ds)
    if ds not in days:
        raise PartitionNotFound(f"no {GR_SAMPLES.key(ds)}: run the gr_samples Spark job (spark_jobs) for {ds}")
    return days[-cfg.daily.train_days:]


def recall_queries(model: DenseRetriever, table: ItemTable, lake: Lake, ds: date, cfg: DenseConfig) -> np.ndarray:
    """(Q, D) query vectors of a seeded sample of `index.recall_queries` of ds's requests."""
    samples = read_gr_samples(lake, [ds], SAMPLE_COLUMNS)
    rng = np.random.default_rng(cfg.index.seed)
    rows = np.sort(rng.choice(len(samples), min(cfg.index.recall_queries, len(samples)), replace=False))
    return query_vectors(model, table, samples.iloc[rows].reset_index(drop=True))


def _inputs(lake: Lake, days: list[date], sid_ds: date) -> list[dict]:
    parts = [(GR_SAMPLES, d) for d in days] + [(ITEM_SIDS, sid_ds)]
    return [{"zone": p.zone, "table": p.table, "ds": f"{d}", "write_id": lake.commit_info(*p, d).write_id}
            for p, d in parts]


def build_daily(cfg: DenseConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date) -> DailyDense:
    """The day's DR (from scratch on `train_days`), its catalog vectors and their FAISS index."""
    days = train_days(lake, ds, cfg)
    model, stats = train_dense(cfg.model_copy(update={"max_epochs": cfg.daily.epochs}), trainer_cfg, lake, days)
    table, sid_ds, _ = item_table(lake, ds)          # ds is the last train day: the snapshot DR trained with
    ids, vectors = encode_catalog(model, table)
    index, manifest = build_index(vectors, cfg.index, ids, recall_queries(model, table, lake, ds, cfg))
    return DailyDense(model, ids, vectors, index, manifest, stats, _inputs(lake, days, sid_ds))


def train(cfg: DenseConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date) -> dict:
    """Train the day's dense retriever from scratch on the newest `daily.train_days` days of
    `gr_samples`, encode the catalog as of ds and index it (`build_daily`); write
    `models/dense/ds=<ds>/index.faiss`, `model.safetensors` and then `config.json` (a
    `models.checkpoint` pair: DenseConfig, the index manifest, the sha256 of weights and index: a
    torn trio is detected), and `reports/dense/ds=<ds>/daily.json` (the same, plus the timings and
    the partitions read at their write ids: kept out of `config.json`, so that a re-run of the day
    publishes identical bytes)."""
    built = build_daily(cfg, trainer_cfg, lake, ds)
    index_blob = index_to_bytes(built.index)
    stats = {k: built.stats[k] for k in ("days", "sample_rows", "sid_snapshot", "requests", "items", "epochs",
                                         "epoch_losses", "params", "temperature")}
    meta = {"ds": f"{ds}", **stats, "index": built.manifest, "index_sha256": checkpoint.sha256(index_blob)}
    blob, config = checkpoint.model_to_bytes(built.model, meta)
    lake.store.put_bytes(catalog.model_key(NAME, ds, "index.faiss"), index_blob)
    lake.store.put_bytes(catalog.model_key(NAME, ds), blob)
    lake.store.put_bytes(catalog.model_key(NAME, ds, "config.json"), config)
    report = {**meta, "checkpoint_sha256": checkpoint.sha256(blob), "inputs": built.inputs,
              "training_time_s": built.stats["training_time_s"]}
    lake.store.put_bytes(catalog.report_key(NAME, ds, "daily.json"), json.dumps(report, indent=2, sort_keys=True).encode())
    m = built.manifest
    return {"checkpoint": catalog.model_key(NAME, ds), "days": stats["days"], "requests": stats["requests"],
            "items": m["n_items"], "index": m["kind"], "params": m["params"], "measured_recall": m["measured_recall"],
            "training_time_s": built.stats["training_time_s"]}
