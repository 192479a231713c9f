"""Fit ItemLTV with Lightning, keep the best epoch on validation, save safetensors checkpoints.

The Trainer comes from `models.training.build_trainer` (where it trains: `settings.trainer`);
its `ModelCheckpoint` picks the best validation epoch. Training uses a warm-up + cosine learning rate and an EMA of the weights (`ItemLTVConfig`);
the EMA weights are the ones validated, selected and saved. Checkpoints live in the lake's `models`
zone as one self-describing file, `catalog.model_key(name, ds)` =
`models/<name>/ds=<ds>/model.safetensors` (`models.checkpoint.to_file`: the weights, and the model
spec and the preprocessing in the config JSON that names their sha256); `name` is `itemltv` (base + uplift) or `itemltv_base` (the "base only"
ablation).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date

import lightning as L
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging

from foundation import catalog
from foundation.lake import Lake, parse_ds
from foundation.sections.itemltv import ItemLTVConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.itemltv.data import Preprocess, Splits
from models.itemltv.lit import ItemLTVData, LitItemLTV
from models.itemltv.model import ItemLTV
from models.training import best_score, best_state, build_trainer

log = logging.getLogger(__name__)
FULL, BASE = "itemltv", "itemltv_base"


@dataclass
class Trained:
    model: ItemLTV
    pre: Preprocess
    spec: dict                       # model kwargs + objective
    train_loss: list[float] = field(default_factory=list)   # per epoch
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0


class EpochLosses(Callback):
    """Per-epoch train and validation losses (for the report; model selection is ModelCheckpoint's)."""

    def __init__(self):
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.train.append(float(trainer.callback_metrics["train_loss"]))

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.val.append(float(trainer.callback_metrics["val_loss"]))


def model_spec(cfg: ItemLTVConfig, pre: Preprocess, use_uplift: bool) -> dict:
    return {"buckets": pre.hash_buckets, "n_categories": 64, "dims": pre.dims(), "emb_dim": cfg.emb_dim,
            "hidden_dim": cfg.hidden_dim, "heads": cfg.attn_heads, "dropout": cfg.dropout,
            "use_uplift": use_uplift, "uplift_bound": cfg.uplift_bound,
            "uplift_link": cfg.uplift_link, "factored": cfg.factored_uplift,
            "match_item": cfg.match_item, "objective": cfg.objective}


def model_kwargs(spec: dict) -> dict:
    """The `ItemLTV` constructor arguments of a spec (the rest is how predictions are formed)."""
    return {k: v for k, v in spec.items() if k not in ("objective", "label_range", "calibration")}


def fit_model(splits: Splits, pre: Preprocess, cfg: ItemLTVConfig, trainer_cfg: TrainerConfig,
              use_uplift: bool) -> Trained:
    """Train one variant; returns the weights of the best validation epoch (an error if no
    validation loss was finite)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # the training labels' range: item predictions are clipped to it (see `evaluate.predict`)
    spec = {**model_spec(cfg, pre, use_uplift), "label_range": [float(splits.train.y.min()), float(splits.train.y.max())]}
    lit = LitItemLTV(model_kwargs(spec), cfg.objective, cfg.lr, cfg.weight_decay,
                     cfg.lr_schedule, cfg.warmup_epochs, cfg.huber_delta)
    losses = EpochLosses()
    # EMA first: it swaps the averaged weights in before the loss callback and ModelCheckpoint read them
    ema = [EMAWeightAveraging(decay=cfg.ema_decay)] if cfg.ema_decay > 0 else []
    trainer = build_trainer(trainer_cfg, max_epochs=cfg.max_epochs, monitor="val_loss", patience=cfg.patience,
                            gradient_clip_val=cfg.grad_clip, callbacks=[*ema, losses],
                            curve=FULL if use_uplift else BASE)
    trainer.fit(lit, datamodule=ItemLTVData(splits, cfg.items_per_batch, trainer_cfg.num_workers))
    state, best = best_state(trainer), best_score(trainer)
    if state is None or not math.isfinite(best):
        raise RuntimeError(f"itemltv {'full' if use_uplift else 'base'}: no finite validation loss in "
                           f"{len(losses.val)} epoch(s) ({losses.val}); no weights to keep")
    lit.model.load_state_dict(state)
    best_epoch = losses.val.index(min(v for v in losses.val if math.isfinite(v)))
    log.info("itemltv %s: best epoch %d val_loss %.4f", "full" if use_uplift else "base", best_epoch, best)
    return Trained(lit.model.cpu().eval(), pre, spec, losses.train, losses.val, best_epoch)


# -- checkpoints -------------------------------------------------------------
def checkpoint_key(name: str, ds: date) -> str:
    """The lake key of the checkpoint `name` of `ds` (the catalog's `model_key`)."""
    return catalog.model_key(name, ds)


def save_checkpoint(lake: Lake, name: str, ds: date, trained: Trained) -> str:
    """Write weights + spec + preprocessing as one checkpoint file (`models.checkpoint.to_file`);
    returns its key."""
    meta = {"spec": trained.spec, "preprocess": asdict(trained.pre), "ds": f"{ds}"}
    key = checkpoint_key(name, ds)
    lake.store.put_bytes(key, checkpoint.to_file(*checkpoint.to_bytes(trained.model.state_dict(), meta)))
    return key


def latest_checkpoint_ds(lake: Lake, name: str, ds: date) -> date:
    """The newest checkpoint date <= ds."""
    found = sorted(day for k in lake.store.list(catalog.model_prefix(name))
                   if (m := re.search(r"ds=(\d{4}-\d{2}-\d{2})/model\.safetensors$", k))
                   and (day := parse_ds(m.group(1))) <= ds)
    if not found:
        raise FileNotFoundError(f"no {name} checkpoint at or before {ds} in {lake.store.uri}")
    return found[-1]


def load_checkpoint(lake: Lake, name: str, ds: date) -> Trained:
    """Load the newest checkpoint at or before `ds`."""
    return checkpoint_from_bytes(lake.store.get_bytes(checkpoint_key(name, latest_checkpoint_ds(lake, name, ds))))


def checkpoint_from_bytes(blob: bytes) -> Trained:
    """A model from the bytes of a checkpoint (e.g. a release's copy), with its own spec and preprocessing."""
    state, meta = checkpoint.from_bytes(*checkpoint.from_file(blob))
    spec, pre = meta["spec"], Preprocess(**meta["preprocess"])
    model = ItemLTV(**model_kwargs(spec))
    model.load_state_dict(state)
    return Trained(model.eval(), pre, spec)

