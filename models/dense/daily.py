"""The dense retriever in the daily pipeline: train, encode the catalog, index, and check the index.

    built = build_daily(settings.dense, settings.trainer, lake, ds)      # model, ids, vectors, index, manifest
    checks = check_daily(model, index, lake, ds, settings.dense)         # {name: {"passed": ..., ...}}

Pure functions over a lake (no release store): the application (`growthgr.pipeline.dense_train /
gate_dense / publish`) writes the checkpoint, the index and the gate result, and ships them.

- Training days: the newest `daily.train_days` committed `samples/gr_samples` partitions up to
  ds (ds itself must be one), from scratch, `daily.epochs` epochs (`platform.train_dense`).
- Items: every item listed up to ds with the newest SID snapshot up to ds (`platform.item_table`;
  the pool is a subset), encoded and indexed by `index.build_index` (exact up to
  `index.exact_max_items`, IVF / HNSW above, its nprobe / efSearch the smallest with recall@k >=
  `index.target_recall` against exact search).
- Recall queries: the query vectors of a seeded sample of `index.recall_queries` of ds's requests
  (real queries, not item vectors), the same in the build and in the check.

`check_daily` does not trust the manifest: it reads the vectors back from the index, checks them
(finite, L2-normalised, as many as recorded) and the model's weights (finite), and measures the
stored index's recall@k against exact search over those vectors again.

Departures from the paper: no warm start and no replay of older days (a short window, trained
from scratch daily); one index of the whole catalog serves both the catalog and the new-item pool
(the pool is a subset; the paper does not say how its production index is split).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import faiss
import numpy as np
import torch

from foundation.catalog import GR_SAMPLES, ITEM_SIDS
from foundation.lake import Lake, PartitionNotFound, to_ds
from foundation.sections.dense import DenseConfig
from foundation.sections.trainer import TrainerConfig
from models.dense.data import ItemTable
from models.dense.index import build_index, gate_index, index_vectors, measure_recall
from models.dense.model import DenseRetriever
from models.dense.platform import item_table, read_samples, train_dense
from models.dense.train import encode_catalog, query_vectors


class DailyDense(NamedTuple):
    model: DenseRetriever
    item_ids: np.ndarray         # (N,) the catalog as of ds
    vectors: np.ndarray          # (N, D) float32, L2-normalised
    index: faiss.Index
    manifest: dict[str, Any]     # `index.build_index`'s
    stats: dict[str, Any]        # training stats (`train.fit`) + days, sample rows, SID snapshot
    inputs: list[dict]           # the partitions read: {zone, table, ds, write_id}


def train_days(lake: Lake, ds: str, cfg: DenseConfig) -> list[str]:
    """The newest `daily.train_days` `gr_samples` days up to ds (ds must have one)."""
    ds = to_ds(ds)
    days = lake.list_partitions(*GR_SAMPLES, end=ds)
    if ds not in days:
        raise PartitionNotFound(f"no {GR_SAMPLES.key(ds)}: run the gr_samples Spark job (spark_jobs) for {ds}")
    return days[-cfg.daily.train_days:]


def recall_queries(model: DenseRetriever, table: ItemTable, lake: Lake, ds: str, cfg: DenseConfig) -> np.ndarray:
    """(Q, D) query vectors of a seeded sample of `index.recall_queries` of ds's requests."""
    samples = read_samples(lake, [ds])
    rng = np.random.default_rng(cfg.index.seed)
    rows = np.sort(rng.choice(len(samples), min(cfg.index.recall_queries, len(samples)), replace=False))
    return query_vectors(model, table, samples.iloc[rows].reset_index(drop=True))


def _inputs(lake: Lake, days: list[str], sid_ds: str) -> list[dict]:
    parts = [(GR_SAMPLES, d) for d in days] + [(ITEM_SIDS, sid_ds)]
    return [{"zone": p.zone, "table": p.table, "ds": d, "write_id": lake.commit_info(*p, d).write_id}
            for p, d in parts]


def build_daily(cfg: DenseConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: str) -> DailyDense:
    """The day's DR (from scratch on `train_days`), its catalog vectors and their FAISS index."""
    ds = to_ds(ds)
    days = train_days(lake, ds, cfg)
    model, stats = train_dense(cfg.model_copy(update={"max_epochs": cfg.daily.epochs}), trainer_cfg, lake, days)
    table, _, _ = item_table(lake, ds)
    ids, vectors = encode_catalog(model, table)
    index, manifest = build_index(vectors, cfg.index, ids, recall_queries(model, table, lake, ds, cfg))
    return DailyDense(model, ids, vectors, index, manifest, stats, _inputs(lake, days, stats["sid_snapshot"]))


def check_daily(model: DenseRetriever, index: faiss.Index, manifest: dict[str, Any], lake: Lake, ds: str,
                cfg: DenseConfig) -> dict[str, dict]:
    """The gate's checks of a stored model + index: `finite_weights`, `vectors` (`index.gate_index` on
    the vectors read back from the index, the recorded recall included) and `recall` (measured again
    on the stored index against exact search, >= `index.target_recall`)."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    ids, vectors = index_vectors(index)
    failures = gate_index(vectors, manifest, min_recall=cfg.index.target_recall)
    k = manifest.get("recall_k", cfg.index.recall_k)
    queries = recall_queries(model, item_table(lake, ds)[0], lake, ds, cfg) if not bad else np.zeros((0, 1))
    finite = not len(queries) or bool(np.isfinite(queries).all())
    recall = measure_recall(index, queries, k) if finite and len(queries) and np.isfinite(vectors).all() else float("nan")
    return {
        "finite_weights": {"passed": not bad, "non_finite": bad},
        "vectors": {"passed": not failures, "failures": failures, "n_items": int(len(ids))},
        "recall": {"passed": bool(np.isfinite(recall) and recall >= cfg.index.target_recall), "value": recall,
                   "limit": cfg.index.target_recall, "k": int(k), "n_queries": int(len(queries)),
                   "recorded": manifest.get("measured_recall"), "kind": manifest.get("kind"),
                   "params": manifest.get("params"), "finite_queries": finite},
    }
