"""Supervised fine-tuning (SFT) of MultiGR by next-token prediction, checkpoints, ranking by beam search.

Offline metrics (Recall@K, NDCG@K) come from `models.metrics`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.metrics import ranking_metrics
from models.multigr.beam import beam_search
from models.multigr.data import SeqBatch, SFTDataModule, left_pad
from models.multigr.model import MultiGR
from models.training import best_state, build_trainer

log = logging.getLogger(__name__)

CURVE = "multigr_sft"          # the learning curve's name (`models.training.learning_curves`)

Ranker = Callable[[MultiGR, Sequence[np.ndarray]], np.ndarray]
"""(model, prompts) -> (B, n) ranked item ids (e.g. `rank_items` with a fixed trie and beams)."""


class MultiGRModule(L.LightningModule):
    """Lightning wrapper: AdamW, linear warm-up then cosine decay to 10%, per-step schedule.

    With a `rank` function, validation batches (prompts, target item ids) are ranked and
    `val_recall@{val_k}` is logged per epoch (the metric that selects the checkpoint)."""

    def __init__(self, cfg: MultiGRConfig, rank: Ranker | None = None, val_k: int = 10):
        super().__init__()
        self.cfg, self.rank, self.val_k = cfg, rank, val_k
        self.model = MultiGR(cfg)

    def training_step(self, batch: SeqBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch.tokens, batch.targets)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.tokens.shape[0])
        return loss

    def validation_step(self, batch: tuple[list[np.ndarray], np.ndarray], batch_idx: int) -> None:
        if self.rank is None:
            return
        prompts, targets = batch
        recall = ranking_metrics(self.rank(self.model, prompts), np.asarray(targets), (self.val_k,))
        self.log(f"val_recall@{self.val_k}", recall[f"recall@{self.val_k}"], prog_bar=True, batch_size=len(targets))

    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "pos_emb" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2 or "pos_emb" in n]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.cfg.lr,
            betas=(0.9, 0.98),
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, self.cfg.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def fit(
    cfg: MultiGRConfig,
    dm: SFTDataModule,
    max_time_s: float | None = None,
    callbacks: Sequence[L.Callback] = (),
    trainer_cfg: TrainerConfig = TrainerConfig(),
    *,
    rank: Ranker | None = None,
    val_k: int = 10,
    patience: int | None = None,
    fast_dev_run: bool = False,
    init: MultiGR | None = None,
) -> tuple[MultiGR, float]:
    """Seeded SFT (device and precision from `trainer_cfg`); returns the trained model (on CPU)
    and the wall-clock training time (s). With `init` (a model of the same architecture) training
    starts from its weights (a warm start; `init` itself is not modified).

    With `rank` and validation data in `dm`, the weights of the epoch with the best
    `val_recall@{val_k}` are returned (Lightning's ModelCheckpoint) and, with `patience`,
    training stops after that many epochs without improvement.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(cfg.num_threads)
    module = MultiGRModule(cfg, rank, val_k)
    if init is not None:
        module.model.load_state_dict(init.state_dict())
    trainer = build_trainer(
        trainer_cfg, max_epochs=cfg.max_epochs, max_time_s=max_time_s, monitor=f"val_recall@{val_k}" if rank else None,
        mode="max", patience=patience, gradient_clip_val=1.0, callbacks=callbacks, fast_dev_run=fast_dev_run,
        curve=CURVE, **({} if rank else {"limit_val_batches": 0}),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - start
    if (best := best_state(trainer)) is not None:
        module.model.load_state_dict(best)
    return module.model.cpu(), seconds


def save_checkpoint(model: MultiGR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """`model.safetensors` + `config.json` (the MultiGRConfig and any `extra` metadata): `models.checkpoint`."""
    return checkpoint.save_model(model, path, extra)


def load_checkpoint(path: str | Path) -> MultiGR:
    return checkpoint.load_model(path, MultiGR, MultiGRConfig)


def rank_items(
    model: MultiGR,
    prompts: Sequence[np.ndarray],
    beam_widths: Sequence[int],
    top_k: int,
    trie_next: torch.Tensor | None,
    leaf_items: np.ndarray,
    batch_size: int = 256,
) -> np.ndarray:
    """Beam-search every prompt; (U, top_k) item ids via the leaf -> item map (one item per SID).

    `leaf_items[node]` is the item of trie leaf `node` (-1 elsewhere); for SIDs shared
    by several items use `SidItems.expand` instead.
    """
    out = []
    for i in range(0, len(prompts), batch_size):
        res = beam_search(model, left_pad(prompts[i : i + batch_size]), beam_widths, top_k, trie_next)
        nodes = res.nodes.numpy()
        out.append(np.where(nodes >= 0, leaf_items[np.maximum(nodes, 0)], -1))
    return np.concatenate(out)
