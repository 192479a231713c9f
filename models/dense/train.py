"""Training of the dense retriever through the shared Trainer factory, encoding, retrieval,
evaluation and checkpoints.

    model, stats = fit(cfg, requests, table)                 # requests: data.build_requests(...)
    ids, vectors = encode_catalog(model, table)              # (N,), (N, D) float32, L2-normalised
    ranked = retrieve(query_vectors(model, table, samples), vectors, ids, k=100)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from foundation.sections.dense import DenseConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.dense.data import (
    OBJECTIVES,
    Batch,
    DenseDataModule,
    ItemTable,
    Request,
    query_batch,
    query_vocab,
    request_query,
)
from models.dense.loss import moppr_loss
from models.dense.model import DenseRetriever
from models.metrics import ranking_metrics
from models.training import build_trainer


def objective_weights(cfg: DenseConfig) -> list[float]:
    return [getattr(cfg.weights, o) for o in OBJECTIVES]


class DenseModule(L.LightningModule):
    """Lightning wrapper: MOPPR loss, AdamW; keeps the mean training loss of every epoch."""

    def __init__(self, cfg: DenseConfig):
        super().__init__()
        self.cfg = cfg
        self.model = DenseRetriever(cfg)
        self.weights = objective_weights(cfg)
        self.epoch_losses: list[float] = []
        self._sum, self._n = 0.0, 0

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model.logits(self.model.encode_query(batch.query), self.model.encode_items(batch.items))
        return moppr_loss(logits, batch.positives, self.weights, self.cfg.loss)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, per_objective = self.batch_loss(batch)
        b = batch.positives.shape[1]
        self.log("train_loss", loss, prog_bar=True, batch_size=b)
        for name, value in zip(OBJECTIVES, per_objective, strict=True):
            self.log(f"train_{name}", value, batch_size=b)
        self._sum, self._n = self._sum + float(loss.detach()), self._n + 1
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(self._sum / max(self._n, 1))
        self._sum, self._n = 0.0, 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def fit(cfg: DenseConfig, requests: Sequence[Request], table: ItemTable,
        trainer_cfg: TrainerConfig = TrainerConfig()) -> tuple[DenseRetriever, dict[str, Any]]:
    """Seeded training for `cfg.max_epochs` epochs; returns the model (on CPU, eval mode) and stats
    (requests, epochs, per-epoch mean loss, seconds, parameters)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(cfg.num_threads)
    module = DenseModule(cfg)
    trainer = build_trainer(trainer_cfg, max_epochs=cfg.max_epochs, gradient_clip_val=1.0, limit_val_batches=0,
                            curve="dense")
    start = time.perf_counter()
    trainer.fit(module, datamodule=DenseDataModule(requests, table, cfg))
    stats = {"requests": len(requests), "items": len(table), "epochs": cfg.max_epochs,
             "epoch_losses": [round(x, 5) for x in module.epoch_losses],
             "training_time_s": round(time.perf_counter() - start, 2), "params": module.model.num_params(),
             "temperature": round(float(1.0 / module.model.scale().detach()), 5)}
    return module.model.cpu().eval(), stats


@torch.no_grad()
def mean_loss(model: DenseRetriever, batches: Sequence[Batch]) -> float:
    """Mean MOPPR loss of fixed batches (eval mode), e.g. before vs after training."""
    model.eval()
    weights = objective_weights(model.cfg)
    losses = [float(moppr_loss(model.logits(model.encode_query(b.query), model.encode_items(b.items)),
                               b.positives, weights, model.cfg.loss)[0]) for b in batches]
    return float(np.mean(losses))


@torch.no_grad()
def encode_item_ids(model: DenseRetriever, table: ItemTable, item_ids: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """(N,) item ids -> (N, D) float32 item vectors."""
    model.eval()
    item_ids = np.asarray(item_ids, dtype=np.int64)
    out = [model.encode_items(table.feats(item_ids[i : i + batch_size], model.cfg)).numpy()
           for i in range(0, len(item_ids), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.cfg.emb_dim), np.float32)


def encode_catalog(model: DenseRetriever, table: ItemTable) -> tuple[np.ndarray, np.ndarray]:
    """Every item of the table: (item ids (N,), vectors (N, D))."""
    return table.ids.copy(), encode_item_ids(model, table, table.ids)


@torch.no_grad()
def query_vectors(model: DenseRetriever, table: ItemTable, samples: pd.DataFrame, batch_size: int = 1024) -> np.ndarray:
    """(R, D) query vectors of `gr_samples`-shaped rows (user_id, query_text, history_item_ids)."""
    model.eval()
    cfg, vocab = model.cfg, query_vocab(model.cfg)
    parts = [request_query(cfg, vocab, r.user_id, r.query_text, r.history_item_ids)
             for r in samples.itertuples(index=False)]
    out = []
    for i in range(0, len(parts), batch_size):
        chunk = parts[i : i + batch_size]
        q = query_batch(table, cfg, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk])
        out.append(model.encode_query(q).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, cfg.emb_dim), np.float32)


def retrieve(queries: np.ndarray, item_vectors: np.ndarray, item_ids: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item ids by inner product, (R, k) (ties by item order)."""
    scores = queries @ item_vectors.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.asarray(item_ids)[np.take_along_axis(top, order, 1)]


def evaluate(model: DenseRetriever, table: ItemTable, samples: pd.DataFrame, ks: Sequence[int] = (10, 100),
             label: str = "purchase_ids") -> dict[str, float]:
    """Full-catalog Recall/NDCG@ks of the `label` items of `samples` (exact search)."""
    ids, vectors = encode_catalog(model, table)
    ranked = retrieve(query_vectors(model, table, samples), vectors, ids, max(ks))
    relevant = [np.asarray(v, dtype=np.int64) for v in samples[label]]
    return ranking_metrics(ranked, relevant, ks)


def save_checkpoint(model: DenseRetriever, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """`model.safetensors` + `config.json` (the DenseConfig and any `extra` metadata): `models.checkpoint`."""
    return checkpoint.save_model(model, path, extra)


def load_checkpoint(path: str | Path) -> DenseRetriever:
    return checkpoint.load_model(path, DenseRetriever, DenseConfig)
