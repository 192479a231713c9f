"""The one Lightning Trainer factory of every model (ItemLTV, RQ-VAE, MultiGR, DR), and the one
checkpoint format of the config-built models (MultiGR, DR).

    trainer = build_trainer(settings.trainer, max_epochs=20, monitor="val_loss", patience=5)
    trainer.fit(module, datamodule=dm)
    best = best_state(trainer)          # weights of the best monitored epoch (or None)

    weights, config = checkpoint_bytes(model, {"ds": ds})          # safetensors + config.json bytes
    model = checkpoint_from_bytes(weights, config, MultiGR, MultiGRConfig)
    save_checkpoint(model, "ckpt/"); model = load_checkpoint("ckpt/", MultiGR, MultiGRConfig)

A checkpoint is `model.safetensors` (the state dict) + `config.json`: `{"config": model.cfg,
"sha256": of the weights, **extra}`; a model class is built as `model_cls(config_cls(...))`.

Where and how it trains comes from `TrainerConfig` (CPU by default, `gpu` + `bf16-mixed` + DDP by
config). Model selection uses Lightning's own `ModelCheckpoint` (best `monitor` value, kept in a
temporary directory, never in the lake) and `EarlyStopping`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pydantic import BaseModel
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

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


# -- checkpoints of config-built models (MultiGR, DR) ----------------------------------------------
M = TypeVar("M", bound=torch.nn.Module)
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def checkpoint_bytes(model: torch.nn.Module, extra: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    """(safetensors weights, config.json) of a model with a pydantic `cfg`; the config names the
    weights' sha256 (a torn pair is detected on loading)."""
    blob = save_weights({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    meta = {**(extra or {}), "config": model.cfg.model_dump(mode="json"), "sha256": hashlib.sha256(blob).hexdigest()}
    return blob, json.dumps(meta, indent=2, sort_keys=True).encode()


def checkpoint_from_bytes(blob: bytes, config: bytes | dict, model_cls: Callable[[Any], M],
                          config_cls: type[BaseModel]) -> M:
    """The model (eval mode) of a `checkpoint_bytes` pair; raises ValueError when the config names a
    sha256 the weights do not have."""
    meta = json.loads(config) if isinstance(config, (bytes, str)) else config
    if meta.get("sha256") and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise ValueError("checkpoint weights do not match the sha256 of their config.json")
    model = model_cls(config_cls.model_validate(meta["config"]))
    model.load_state_dict(load_weights(blob))
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """`model.safetensors` + `config.json` (`checkpoint_bytes`) in the directory `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob, config = checkpoint_bytes(model, extra)
    (path / WEIGHTS).write_bytes(blob)
    (path / CONFIG).write_bytes(config)
    return path


def load_checkpoint(path: str | Path, model_cls: Callable[[Any], M], config_cls: type[BaseModel]) -> M:
    path = Path(path)
    return checkpoint_from_bytes((path / WEIGHTS).read_bytes(), (path / CONFIG).read_bytes(), model_cls, config_cls)
