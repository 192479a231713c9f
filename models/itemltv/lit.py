"""Lightning wrapper and datamodule of ItemLTV.

A training example is one item with every exposure it had in days 0..29 (so
the `item` objective can sum per item); the batch is a flat `Batch` of the
exposures of `items_per_batch` items.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.itemltv.data import Encoded, Splits
from models.itemltv.model import Batch, ItemLTV, loss_fn


class ItemGroups(Dataset):
    """Index = item group; `collate` gathers the exposures of the chosen groups."""

    def __init__(self, enc: Encoded):
        self.enc = enc
        order = np.argsort(enc.group, kind="stable")
        self.order = order
        self.bounds = np.searchsorted(enc.group[order], np.arange(enc.n_groups + 1))

    def __len__(self) -> int:
        return self.enc.n_groups

    def __getitem__(self, g: int) -> int:
        return g

    def collate(self, groups: list[int]) -> Batch:
        rows = np.concatenate([self.order[self.bounds[g]:self.bounds[g + 1]] for g in groups])
        local = np.repeat(np.arange(len(groups)), [self.bounds[g + 1] - self.bounds[g] for g in groups])
        return to_batch(self.enc, rows, local, len(groups))


def to_batch(enc: Encoded, rows: np.ndarray, group: np.ndarray, n_groups: int) -> Batch:
    """Gather rows of `enc` into tensors (content of items and of history items via the item table)."""
    item_row, hist = enc.item_row[rows], enc.hist_rows[rows]        # [N], [N, L]
    t = torch.from_numpy
    return Batch(
        item_tokens=t(enc.tokens[item_row]), item_cat=t(enc.category[item_row]),
        hist_tokens=t(enc.tokens[hist]), hist_cat=t(enc.category[hist]), hist_mask=t(hist > 0),
        item_x=t(enc.x["item"][rows]), user_x=t(enc.x["user"][rows]), ctx_x=t(enc.x["ctx"][rows]),
        treatment=t(enc.treatment[rows]), y=t(enc.y[rows]), group=t(group.astype(np.int64)), n_groups=n_groups,
    )


class ItemLTVData(L.LightningDataModule):
    """Train / validation loaders of `items_per_batch` items (`num_workers`: `TrainerConfig`)."""

    def __init__(self, splits: Splits, items_per_batch: int, num_workers: int = 0):
        super().__init__()
        self.splits, self.items_per_batch, self.num_workers = splits, items_per_batch, num_workers

    def _loader(self, enc: Encoded, shuffle: bool) -> DataLoader:
        ds = ItemGroups(enc)
        return DataLoader(ds, batch_size=self.items_per_batch, shuffle=shuffle, collate_fn=ds.collate,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, False)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.05):
    """LR multiplier: linear warm-up over `warmup_steps`, then cosine decay to `floor` at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class LitItemLTV(L.LightningModule):
    def __init__(self, model_kwargs: dict, objective: str, lr: float, weight_decay: float,
                 lr_schedule: str = "constant", warmup_epochs: float = 0.0, huber_delta: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.model = ItemLTV(**model_kwargs)
        self.objective = objective

    def _step(self, b: Batch, stage: str) -> torch.Tensor:
        loss = loss_fn(self.model(b, treated_only=True), b, self.objective, self.hparams.huber_delta)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=b.n_groups, sync_dist=True)
        return loss

    def training_step(self, b: Batch, _: int) -> torch.Tensor:
        return self._step(b, "train")

    def validation_step(self, b: Batch, _: int) -> torch.Tensor:
        return self._step(b, "val")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.hparams.warmup_epochs * total / max(1, self.trainer.max_epochs))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, max(1, warmup)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
