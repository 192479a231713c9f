"""ItemLTV training throughput (exposures/s), peak memory, and the overhead of the
Lightning loop over a bare PyTorch loop on the same model and batches (target <= 1.10).

    .venv/bin/python benchmarks/itemltv_train.py [--lake DIR] [--ds YYYY-MM-DD] [--profile demo] [--epochs 2]

Without --lake it writes the synthetic platform of `models.itemltv.synthetic` to a
temporary directory and uses it. The Lightning Trainer is the one of every model
(`models.training.build_trainer`, validation off); missing Feast training sets are built first.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import lightning as L
import torch

from features import store as features
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from foundation.sections.trainer import TrainerConfig
from models.itemltv.data import SERVICE, TRAINING_TABLE, load_inputs, prepare, sample_partitions
from models.itemltv.lit import ItemLTVData, LitItemLTV
from models.itemltv.model import loss_fn
from models.itemltv.synthetic import write_synthetic_lake
from models.itemltv.train import model_kwargs, model_spec
from models.training import build_trainer


def bare_loop(lit: LitItemLTV, data: ItemLTVData, epochs: int, trainer_cfg: TrainerConfig, grad_clip: float) -> float:
    opt = lit.configure_optimizers()
    lit.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for b in data.train_dataloader():
            opt.zero_grad()
            loss = loss_fn(lit.model(b, treated_only=True), b, lit.objective)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lit.parameters(), grad_clip or float("inf"))
            opt.step()
    return time.perf_counter() - start


def lightning_loop(lit: LitItemLTV, data: ItemLTVData, epochs: int, trainer_cfg: TrainerConfig,
                   grad_clip: float) -> float:
    trainer = build_trainer(trainer_cfg, max_epochs=epochs, gradient_clip_val=grad_clip, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(lit, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake")
    ap.add_argument("--ds", default="2026-02-13")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    root = args.lake or tempfile.mkdtemp(prefix="itemltv_bench_")
    if not args.lake:
        write_synthetic_lake(Lake.open(root), days=44, items_per_day=60, n_users=500, seed=0)
    split = {} if args.lake else {"val_cohorts": 1, "test_cohorts": 1}   # the synthetic lake has 8 cohorts
    settings = load_settings(args.profile, env={}, overrides={"lake_root": root, "itemltv": split})
    cfg, lake = settings.itemltv, Lake.open(root)
    for ds in sample_partitions(lake, parse_ds(args.ds), 1000):
        if not lake.exists(*TRAINING_TABLE, ds):
            features.training_set(settings.feast, lake, SERVICE, ds, settings.spark.master)
    splits, pre = prepare(load_inputs(lake, parse_ds(args.ds), 1000), cfg)
    spec = model_spec(cfg, pre, True)
    kwargs = model_kwargs(spec)
    n = len(splits.train.y) * args.epochs
    times = {}
    for name, loop in (("bare", bare_loop), ("lightning", lightning_loop)):
        L.seed_everything(cfg.seed, verbose=False)
        data = ItemLTVData(splits, cfg.items_per_batch, settings.trainer.num_workers)
        times[name] = loop(LitItemLTV(kwargs, cfg.objective, cfg.lr, cfg.weight_decay), data, args.epochs,
                           settings.trainer, cfg.grad_clip)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"train exposures: {len(splits.train.y):,} x {args.epochs} epochs, profile {args.profile}")
    for name, sec in times.items():
        print(f"{name:<10} {sec:7.2f} s  {n / sec:10,.0f} exposures/s")
    print(f"lightning / bare = {times['lightning'] / times['bare']:.3f} (target <= 1.10); peak RSS {peak_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
