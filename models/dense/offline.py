"""The dense retriever's rows of the offline tables: `dr` (DR alone) and `two_stage` (GrowthGR-twoStage).

    hook = offline_rows(settings.dense, settings.trainer, lake)
    run_offline(..., extra_rows=hook)          # models.multigr.offline: adds rows "dr" and "two_stage"

Per seed (`inputs`: `models.multigr.offline.ExtraRowInputs`, read by attribute only, so that this
module does not import the MultiGR evaluation):

- DR is trained (`platform.train_dense`, the seed as `DenseConfig.seed`) on the same `gr_samples`
  days as the MultiGR rows, with the catalog as of the last train day;
- the items with a SID in the evaluation snapshot (what MultiGR can decode; new items included,
  with the catalog features as of the last test day and untrained id embeddings) are encoded and
  indexed (`index.build_index`: exact, or IVF / HNSW with the parameter reaching the target recall
  on the test requests' query vectors);
- `dr`: the index's top k per test request;
- `two_stage`: the `growthgr` row's ranking, its first `top_n` items re-ordered by DR score
  (`rerank.two_stage`), the rest after them in GrowthGR's order.

Departure from the paper: GrowthGR-twoStage re-ranks GrowthGR's top 2000; here the first stage is
the ranking the table scores (k = 1000 items: the decoded beams), so by default `top_n` = k and
Recall@1000 of `two_stage` equals `growthgr`'s (same items, other order).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from foundation.lake import Lake
from foundation.sections.dense import DenseConfig
from foundation.sections.trainer import TrainerConfig
from models.dense.index import build_index, search
from models.dense.platform import item_table, train_dense
from models.dense.rerank import ItemVectors, two_stage
from models.dense.train import encode_item_ids, query_vectors


def rerank_first_stage(first_stage: np.ndarray, query_vecs: np.ndarray, lookup: ItemVectors, top_n: int) -> np.ndarray:
    """(R, K) first-stage ranking -> (R, K): the first `top_n` by DR score, then the rest unchanged."""
    n = min(top_n, first_stage.shape[1])
    head = two_stage(first_stage[:, :n], query_vecs, lookup, n).items
    return np.concatenate([head, first_stage[:, n:]], axis=1)


def offline_rows(cfg: DenseConfig, trainer_cfg: TrainerConfig, lake: Lake, epochs: int | None = None,
                 top_n: int | None = None):
    """The `extra_rows` hook of `models.multigr.offline.run_offline` (see the module docstring);
    `epochs` overrides `cfg.max_epochs`, `top_n` the re-ranked depth (default: the whole ranking)."""

    def rows(inputs: Any) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        started = time.perf_counter()
        seed_cfg = cfg.model_copy(update={"seed": int(inputs.seed), **({"max_epochs": epochs} if epochs else {})})
        model, stats = train_dense(seed_cfg, trainer_cfg, lake, inputs.train_days)
        table, _, _ = item_table(lake, inputs.ds)
        ids = np.asarray(inputs.item_ids, dtype=np.int64)
        vectors = encode_item_ids(model, table, ids)
        queries = query_vectors(model, table, inputs.requests)
        index, manifest = build_index(vectors, cfg.index, ids, queries)
        ranked, _ = search(index, queries, min(inputs.k, len(ids)))
        out = {"dr": _pad(ranked, inputs.k)}
        info = {"seconds": round(time.perf_counter() - started, 1), "training_time_s": stats["training_time_s"],
                "train_requests": stats["requests"], "epochs": stats["epochs"], "final_loss": stats["epoch_losses"][-1],
                "index": {"kind": manifest["kind"], **manifest["params"], "measured_recall": manifest["measured_recall"],
                          "n_items": manifest["n_items"]}}
        figures = {"dr": info}
        if inputs.first_stage is not None:
            depth = top_n or inputs.first_stage.shape[1]
            out["two_stage"] = rerank_first_stage(inputs.first_stage, queries, ItemVectors(ids, vectors), depth)
            figures["two_stage"] = {"first_stage": "growthgr", "top_n": int(min(depth, inputs.first_stage.shape[1]))}
        return out, figures

    return rows


def _pad(ranked: np.ndarray, k: int) -> np.ndarray:
    return np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=-1) if ranked.shape[1] < k else ranked
