"""Supervised fine-tuning (SFT) of MultiGR by next-token prediction, checkpoints, offline metrics."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from growthgr.core.sections.multigr import MultiGRConfig
from models.multigr.beam import beam_search
from models.multigr.data import SeqBatch, SFTDataModule, left_pad
from models.multigr.model import MultiGR

log = logging.getLogger(__name__)


class MultiGRModule(L.LightningModule):
    """Lightning wrapper: AdamW, linear warm-up then cosine decay to 10%, per-step schedule."""

    def __init__(self, cfg: MultiGRConfig):
        super().__init__()
        self.cfg = cfg
        self.model = MultiGR(cfg)

    def training_step(self, batch: SeqBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch.tokens, batch.targets)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.tokens.shape[0])
        return loss

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
) -> tuple[MultiGR, float]:
    """Seeded SFT on CPU; returns the trained model and the wall-clock training time (s)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(cfg.num_threads)
    module = MultiGRModule(cfg)
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        max_time={"seconds": int(max_time_s)} if max_time_s else None,
        accelerator="cpu",
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        deterministic=True,
        callbacks=list(callbacks),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return module.model, time.perf_counter() - start


def save_checkpoint(model: MultiGR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """`model.safetensors` + `config.json` (the MultiGRConfig and any `extra` metadata)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    meta = {"config": model.cfg.model_dump(mode="json"), **(extra or {})}
    (path / "config.json").write_text(json.dumps(meta, indent=2))
    return path


def load_checkpoint(path: str | Path) -> MultiGR:
    path = Path(path)
    cfg = MultiGRConfig.model_validate(json.loads((path / "config.json").read_text())["config"])
    model = MultiGR(cfg)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """ranked: (U, n) item ids (-1 padding); targets: (U,) one relevant item each -> Recall@k, NDCG@k."""
    hit = ranked == targets[:, None]  # (U, n)
    rank = np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)  # 0-based, or never
    out = {}
    for k in ks:
        found = rank < k
        out[f"recall@{k}"] = float(found.mean())
        out[f"ndcg@{k}"] = float(np.where(found, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0).mean())
    return out


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
