"""The one Lightning Trainer factory of every model (ItemLTV, RQ-VAE, MultiGR, DR); their one
checkpoint format is `models.checkpoint`.

    trainer = build_trainer(settings.trainer, max_epochs=20, monitor="val_loss", patience=5)
    trainer.fit(module, datamodule=dm)
    best = best_state(trainer)          # weights of the best monitored epoch (or None)

Where and how it trains comes from `TrainerConfig` (CPU by default, `gpu` + `bf16-mixed` + DDP by
config). Model selection uses Lightning's own `ModelCheckpoint` (best `monitor` value, kept in a
temporary directory, never in the lake) and `EarlyStopping`.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from foundation.sections.trainer import TrainerConfig

for _noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
               "lightning.fabric.utilities.seed"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def build_trainer(
    cfg: TrainerConfig,
    *,
    max_epochs: int = 1,
    max_steps: int = -1,
    max_time_s: float | None = None,
    monitor: str | None = None,
    mode: str = "min",
    patience: int | None = None,
    gradient_clip_val: float | None = None,
    callbacks: Sequence[Callback] = (),
    fast_dev_run: bool | int = False,
    **extra: Any,
) -> L.Trainer:
    """A Trainer from config. With `monitor`, a `ModelCheckpoint` keeps the best epoch (read it with
    `best_state`) and, with `patience`, `EarlyStopping` stops on it."""
    cbs = list(callbacks)
    if monitor and not fast_dev_run:
        dirpath = tempfile.mkdtemp(prefix="growthgr-ckpt-")
        atexit.register(shutil.rmtree, dirpath, ignore_errors=True)
        cbs.append(ModelCheckpoint(dirpath=dirpath, monitor=monitor, mode=mode,
                                   save_top_k=1, save_weights_only=True, enable_version_counter=False))
        if patience:
            cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    return L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision,
        deterministic=cfg.deterministic, enable_progress_bar=cfg.progress_bar, max_epochs=max_epochs,
        max_steps=max_steps, max_time={"seconds": int(max_time_s)} if max_time_s else None,
        gradient_clip_val=gradient_clip_val or None, logger=False, enable_checkpointing=bool(monitor) and not fast_dev_run,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=cbs, fast_dev_run=fast_dev_run, **extra,
    )


def checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


def best_state(trainer: L.Trainer, prefix: str = "model.") -> dict[str, torch.Tensor] | None:
    """The state dict (keys without `prefix`) of the best monitored epoch, or None if none was saved."""
    ckpt = checkpoint_callback(trainer)
    if ckpt is None or not ckpt.best_model_path:
        return None
    state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    shutil.rmtree(ckpt.dirpath, ignore_errors=True)           # read once; nothing else needs the folder
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def best_score(trainer: L.Trainer) -> float:
    ckpt = checkpoint_callback(trainer)
    return float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else float("nan")
