"""Lightning wrapper and datamodule of ItemLTV.

A training example is one item with every exposure it had in days 0..29 (so
the `item` objective can sum per item); the batch is a flat `Batch` of the
exposures of `items_per_batch` items.
"""

from __future__ import annotations

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


class LitItemLTV(L.LightningModule):
    def __init__(self, model_kwargs: dict, objective: str, lr: float, weight_decay: float):
        super().__init__()
        self.save_hyperparameters()
        self.model = ItemLTV(**model_kwargs)
        self.objective = objective

    def _step(self, b: Batch, stage: str) -> torch.Tensor:
        loss = loss_fn(self.model(b, treated_only=True), b, self.objective)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=b.n_groups, sync_dist=True)
        return loss

    def training_step(self, b: Batch, _: int) -> torch.Tensor:
        return self._step(b, "train")

    def validation_step(self, b: Batch, _: int) -> torch.Tensor:
        return self._step(b, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
