"""The one Lightning Trainer factory of every model (ItemLTV, RQ-VAE, MultiGR, DR); their one
checkpoint format is `models.checkpoint`.

    trainer = build_trainer(settings.trainer, max_epochs=20, monitor="val_loss", patience=5)
    trainer.fit(module, datamodule=dm)
    best = best_state(trainer)          # weights of the best monitored epoch (or None)

Where and how it trains comes from `TrainerConfig` (CPU by default, `gpu` + `bf16-mixed` + DDP by
config). Model selection uses Lightning's own `ModelCheckpoint` (best `monitor` value, kept in a
temporary directory, never in the lake) and `EarlyStopping`.

Learning curves: inside a `learning_curves(lake, folder)` block, every training that names itself
(`build_trainer(..., curve="dense")`, or `curve_logger(name)` for a loop without a Trainer) logs
what its module `self.log`s, every step, with Lightning's `CSVLogger` into a local folder; when
the block ends, each training's `metrics.csv` and its per-epoch means `epochs.csv` (one row per
epoch: `epoch` and one column per metric) go to `<folder>/<name>/` in the lake. Outside a block
nothing is logged. Logging changes no training result.
"""

from __future__ import annotations

import atexit
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from foundation.lake import Lake
from foundation.sections.trainer import TrainerConfig

for _noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
               "lightning.fabric.utilities.seed"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _CurveSink:
    """The open `learning_curves` block: the lake folder and the local folder the loggers write to."""

    lake: Lake
    folder: str               # lake prefix, e.g. reports/curves/ds=<ds>
    local: Path               # temporary; one sub-folder per training


_SINK: ContextVar[_CurveSink | None] = ContextVar("growthgr_learning_curves", default=None)


@contextmanager
def learning_curves(lake: Lake, folder: str) -> Iterator[None]:
    """Log the learning curves of the trainings run in the block; when it ends (also on an error:
    what was logged until then), write each one's `metrics.csv` and `epochs.csv` to `<folder>/<name>/` in the lake."""
    with tempfile.TemporaryDirectory(prefix="growthgr-curves-") as tmp:
        token = _SINK.set(_CurveSink(lake, folder.rstrip("/"), Path(tmp)))
        try:
            yield
        finally:
            _SINK.reset(token)
            store_curves(lake, folder.rstrip("/"), Path(tmp))


def curve_logger(name: str | None) -> CSVLogger | None:
    """Lightning's CSV logger of the training `name` (`<local>/<name>/metrics.csv`) inside a
    `learning_curves` block; None outside one or without a name. A name logged twice in one block
    keeps its last training."""
    sink = _SINK.get()
    return None if sink is None or name is None else CSVLogger(sink.local, name=name, version="")


def epoch_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of a `CSVLogger` log (`step`, `epoch` and one column per logged metric,
    one row per `log_metrics` call): the mean of each metric's values logged in that epoch (the
    epoch's mean training loss for a per-step metric, the value itself for a per-epoch one)."""
    if "epoch" not in metrics or metrics["epoch"].isna().all():
        return pd.DataFrame({"epoch": pd.Series(dtype="int64")})
    frame = metrics.drop(columns=["step"], errors="ignore").dropna(subset=["epoch"])
    table = frame.groupby(frame["epoch"].astype("int64")).mean(numeric_only=True).drop(columns="epoch")
    return table.reset_index()[["epoch", *sorted(table.columns)]]


def store_curves(lake: Lake, folder: str, local: Path) -> list[str]:
    """Write every `<local>/<name>/metrics.csv` and its `epoch_table` (`epochs.csv`) to
    `<folder>/<name>/` in the lake; returns the names."""
    names = []
    for csv in sorted(local.glob("*/metrics.csv")):
        name, raw = csv.parent.name, csv.read_bytes()
        lake.store.put_bytes(f"{folder}/{name}/metrics.csv", raw)
        table = epoch_table(pd.read_csv(io.BytesIO(raw)))
        lake.store.put_bytes(f"{folder}/{name}/epochs.csv", table.to_csv(index=False).encode())
        names.append(name)
    if names:
        log.info("learning curves of %s -> %s", ", ".join(names), lake.store.url(folder))
    return names


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
    curve: str | None = None,
    **extra: Any,
) -> L.Trainer:
    """A Trainer from config. With `monitor`, a `ModelCheckpoint` keeps the best epoch (read it with
    `best_state`) and, with `patience`, `EarlyStopping` stops on it. `curve`: the name the training's
    learning curve has inside a `learning_curves` block (`curve_logger`)."""
    logger = None if fast_dev_run else curve_logger(curve)
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
        gradient_clip_val=gradient_clip_val or None, logger=logger or False,
        log_every_n_steps=1, enable_checkpointing=bool(monitor) and not fast_dev_run,
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
