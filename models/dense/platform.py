"""The dense retriever on a lake: train on `samples/gr_samples` days, encode the catalog of a day.

    model, stats = train_dense(settings.dense, settings.trainer, lake, ["2026-01-07", ..., "2026-01-16"])
    item_ids, vectors = encode_items(model, lake, "2026-01-16")

Reads, through `foundation.catalog`:
- `GR_SAMPLES` of every training day (`foundation.samples.read_gr_samples`: each must be committed);
- `RAW["items"]` partitions up to the day (category and price of every listed item);
- `ITEM_SIDS`: the newest snapshot up to the day (SID codes c1..c3; `growthgr tokenizer fit`).
Training never reads `truth/`. The SID codebook size of the model is the config's, raised to
the snapshot's largest code + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from foundation.catalog import ITEM_SIDS, RAW
from foundation.lake import Lake, PartitionNotFound
from foundation.samples import read_gr_samples
from foundation.sections.dense import DenseConfig
from foundation.sections.trainer import TrainerConfig
from models.dense.data import SAMPLE_COLUMNS, ItemTable, build_requests
from models.dense.model import DenseRetriever
from models.dense.train import encode_catalog, fit

ITEM_COLUMNS = ["item_id", "category_id", "price"]
CODE_COLUMNS = ("c1", "c2", "c3")


def read_items(lake: Lake, ds: date) -> tuple[pd.DataFrame, pd.DataFrame, date]:
    """(raw items listed up to `ds`, the newest SID snapshot up to `ds`, that snapshot's ds)."""
    item_parts = lake.list_partitions(*RAW["items"], end=ds)
    if not item_parts:
        raise PartitionNotFound(f"no {RAW['items'].key(ds)} or earlier")
    items = pd.concat([lake.read_partition(*RAW["items"], d, ITEM_COLUMNS).to_pandas() for d in item_parts],
                      ignore_index=True)
    sid_parts = lake.list_partitions(*ITEM_SIDS, end=ds)
    if not sid_parts:
        raise PartitionNotFound(f"no {ITEM_SIDS.key(ds)} or earlier: run `growthgr tokenizer fit`")
    sids = lake.read_partition(*ITEM_SIDS, sid_parts[-1], ["item_id", *CODE_COLUMNS]).to_pandas()
    return items, sids, sid_parts[-1]


def item_table(lake: Lake, ds: date) -> tuple[ItemTable, date, int]:
    """(the catalog's DR features as of `ds`, the SID snapshot's ds, its largest code + 1)."""
    items, sids, sid_ds = read_items(lake, ds)
    codes = sids[list(CODE_COLUMNS)].to_numpy(np.int64)
    return ItemTable.from_frames(items, sids, CODE_COLUMNS), sid_ds, int(codes.max()) + 1 if codes.size else 0


def platform_config(cfg: DenseConfig, code_bound: int) -> DenseConfig:
    """`cfg` with 3 SID levels and a codebook covering the snapshot's codes."""
    return cfg.model_copy(update={"sid_levels": len(CODE_COLUMNS), "codebook_size": max(cfg.codebook_size, code_bound)})


def train_dense(cfg: DenseConfig, trainer_cfg: TrainerConfig, lake: Lake, days: Sequence[date]
                ) -> tuple[DenseRetriever, dict[str, Any]]:
    """Train DR on the `gr_samples` of `days` with the catalog as of the last day; (model, stats)."""
    if not days:
        raise ValueError("train_dense needs at least one day of gr_samples")
    days = sorted(days)
    samples = read_gr_samples(lake, days, SAMPLE_COLUMNS)
    table, sid_ds, bound = item_table(lake, days[-1])
    cfg = platform_config(cfg, bound)
    requests = build_requests(samples, cfg)
    model, stats = fit(cfg, requests, table, trainer_cfg)
    return model, {**stats, "days": [f"{days[0]}", f"{days[-1]}"], "sample_rows": int(len(samples)),
                   "sid_snapshot": f"{sid_ds}"}


def encode_items(model: DenseRetriever, lake: Lake, ds: date) -> tuple[np.ndarray, np.ndarray]:
    """(item ids (N,), L2-normalised vectors (N, D)) of every item listed up to `ds`, with the
    SIDs of the newest snapshot up to `ds` (codes beyond the model's codebook count as no SID)."""
    table, _, _ = item_table(lake, ds)
    return encode_catalog(model, table)
