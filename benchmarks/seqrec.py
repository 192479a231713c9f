"""The shared runner of the next-item benchmarks (`multigr_beauty.py`, `multigr_industrial.py`).

Every row of a table - MultiGR over item positions (`models.multigr.itemseq.ItemSeqGR`), SASRec with
a full cross-entropy, popularity - gets the same training targets, the same validation users, the
same wall-clock budget and the same selection (the epoch with the best Recall@10 on `--val-users`
validation users, Lightning's ModelCheckpoint; early stopping after `--patience` validations without
improvement), and is reported on full validation and test. Each run is appended to `--out` with
every argument, the git commit, the machine, the training minutes and steps. `--exclude-history`
applies the same ranking rule to every row; a split with `refit_train` (Industrial's `--refit`)
trains a second model for the test figures, as many epochs as the selected one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models.checkpoint import save_model as save_checkpoint
from models.metrics import ranking_metrics
from models.multigr import itemseq
from models.multigr.beam import sid_keys, trie_table
from models.tokenizer.trie import SidTrie
from models.training import best_state, build_trainer

log = logging.getLogger("seqrec")


class Split(NamedTuple):
    """Training windows (item ids) and the (history, target) pairs of validation and test;
    `refit_train`: the windows of a second model trained for the test figures (see `run`)."""

    train: list[np.ndarray]
    val_histories: list[np.ndarray]
    val_targets: np.ndarray
    test_histories: list[np.ndarray]
    test_targets: np.ndarray
    refit_train: list[np.ndarray] | None = None


class StopAfter(L.Callback):
    """Stops training after `epochs` epochs (the learning-rate schedule still spans the trainer's max_epochs)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def leaf_item_map(trie: SidTrie, item_sids: np.ndarray) -> np.ndarray:
    """(num_nodes,) item id of each trie leaf, -1 for inner nodes (SIDs are unique per item)."""
    rows = np.searchsorted(sid_keys(trie.sids, trie.codebook_size), sid_keys(item_sids, trie.codebook_size))
    out = np.full(trie.num_nodes, -1, dtype=np.int64)
    out[trie.first_leaf + rows] = np.arange(len(item_sids))
    return out


class History(L.Callback):
    """Logs the training loss; records the validation-subset Recall@10 of every validation."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx % 100 == 0:
            log.info("epoch %d step %d loss %.4f", trainer.current_epoch, batch_idx, float(outputs["loss"]))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "val_subset_recall@10": float(m["val_recall@10"]),
                          "elapsed_s": time.perf_counter()})
        log.info("epoch %d train_loss %.4f val-subset R@10 %.4f", trainer.current_epoch,
                 float(m.get("train_loss", float("nan"))), self.rows[-1]["val_subset_recall@10"])


def add_arguments(p: argparse.ArgumentParser, *, max_history: int, out: str, exclude_history: int) -> None:
    p.add_argument("--arch", choices=("item", "sasrec", "popularity"), default="item",
                   help="item: MultiGR over item positions; sasrec, popularity: the baselines")
    p.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget (recorded)")
    p.add_argument("--epochs", type=int, default=200, help="the schedule's length (cosine decay over these epochs)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up steps")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=50, help="beam width at every SID level")
    p.add_argument("--trie-loss", type=int, default=1, help="1: softmax over the trie's valid children in training")
    p.add_argument("--item-input", type=int, default=0, help="1: add a per-item embedding to the SID codes' sum (item arch)")
    p.add_argument("--item-loss", type=float, default=0.0,
                   help="> 0: item arch also trains an item-level head with this weight and re-scores the beam with it")
    p.add_argument("--exclude-history", type=int, default=exclude_history,
                   help="1: never rank an item of the request's history (every row; for data without repeats)")
    p.add_argument("--val-users", type=int, default=3000, help="validation users of the per-epoch selection")
    p.add_argument("--val-every", type=int, default=3, help="validate every this many epochs")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping")
    p.add_argument("--max-history", type=int, default=max_history)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="results JSON (runs accumulate)")
    p.add_argument("--checkpoint", default=None, help="save the selected model here (safetensors + config.json)")


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return head + (" (dirty)" if dirty.strip() else "")


def machine(threads: int) -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads, no GPU"


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput (best of `repeats` n x n products) with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_flops(module, batches: Sequence[torch.Tensor]) -> float:
    """Mean FLOPs of one training step (forward + backward, torch's FlopCounterMode) over `batches`."""
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            module.model.loss(batch, **module.loss_kwargs).backward()
        total += counter.get_total_flops()
    module.model.zero_grad(set_to_none=True)
    return total / len(batches)


def metric_fields(prefix: str, m: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": round(v, 4) for k, v in m.items() if k != "requests"}


def popularity_row(args: argparse.Namespace, split: Split, n_items: int, ks: Sequence[int],
                   metrics: Sequence[str]) -> dict:
    """The popularity row: the training targets' counts (test: refit_train's, if any)."""
    def top(windows, histories):
        counts = np.bincount(np.concatenate([w[1:] for w in windows]), minlength=n_items)
        order = np.argsort(-counts, kind="stable")[: max(ks) + (args.max_history if args.exclude_history else 0)]
        keep = [order[~np.isin(order, h)] if args.exclude_history else order for h in histories]
        return np.stack([k[: max(ks)] for k in keep])

    val = ranking_metrics(top(split.train, split.val_histories), split.val_targets, ks, metrics)
    test = ranking_metrics(top(split.refit_train or split.train, split.test_histories), split.test_targets, ks, metrics)
    return {"model": "popularity (training targets)", **metric_fields("val", val), **metric_fields("test", test)}


class Setup(NamedTuple):
    """What every fit and ranking of one model row shares."""

    args: argparse.Namespace
    cfg: MultiGRConfig
    item_sids: np.ndarray
    trie_next: torch.Tensor
    leaf_items: np.ndarray
    val_batches: list

    def rank(self, model, histories, k=10):
        if self.args.arch == "sasrec":
            return model.rank(histories, k, exclude_history=bool(self.args.exclude_history))
        return itemseq.rank_items(model, histories, self.args.width, k, self.trie_next, self.leaf_items,
                                  exclude_history=bool(self.args.exclude_history))

    @property
    def item_kwargs(self) -> dict:
        return {"item_input": bool(self.args.item_input), "item_loss": self.args.item_loss}


def setup(args: argparse.Namespace, split: Split, item_sids: np.ndarray, ks: Sequence[int],
          codebook_size: int) -> Setup:
    """The model config, the SID trie and the validation subset of one row."""
    n_levels = item_sids.shape[1]
    cfg = MultiGRConfig(
        seed=args.seed, sid_levels=n_levels, codebook_size=codebook_size, n_user_buckets=0, n_query_buckets=0,
        max_query_words=0, max_history=args.max_history, n_layer=args.n_layer, n_head=args.n_head,
        d_model=args.d_model, dropout=args.dropout, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup, max_epochs=args.epochs, num_threads=args.threads,
        top_k=max(ks), beam_widths=[args.width] * n_levels, renormalize_beams=True,
    )
    trie = SidTrie.from_sids(item_sids, codebook_size)
    vt = split.val_targets
    sub = np.random.default_rng(args.seed).choice(len(vt), size=min(args.val_users, len(vt)), replace=False)
    val_batches = [([split.val_histories[i] for i in sub[j: j + 512]], vt[sub[j: j + 512]]) for j in range(0, len(sub), 512)]
    return Setup(args, cfg, item_sids, trie_table(trie), leaf_item_map(trie, item_sids), val_batches)


def fit(s: Setup, windows: list[np.ndarray], stop_after: int | None = None):
    """A model trained on `windows`: the best validated epoch, or (`stop_after`) the last of that many epochs."""
    args, cfg = s.args, s.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = (itemseq.SASRec(cfg, len(s.item_sids)) if args.arch == "sasrec"
           else itemseq.ItemSeqGR(cfg, s.item_sids, **s.item_kwargs))
    module = itemseq.ItemSeqModule(cfg, net, s.rank, **({"trie_next": s.trie_next} if args.arch == "item" and args.trie_loss else {}))
    history, select = History(), stop_after is None
    trainer = build_trainer(TrainerConfig(), max_epochs=cfg.max_epochs, max_time_s=args.minutes * 60,
                            monitor="val_recall@10" if select else None, mode="max", patience=args.patience,
                            gradient_clip_val=1.0, callbacks=[history] if select else [StopAfter(stop_after)],
                            check_val_every_n_epoch=args.val_every, limit_val_batches=1.0 if select else 0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(itemseq.WindowBatches(windows, cfg.batch_size, cfg.seed), batch_size=None),
                val_dataloaders=DataLoader(s.val_batches, batch_size=None, collate_fn=lambda b: b))
    seconds = time.perf_counter() - start
    if select:
        module.model.load_state_dict(best_state(trainer))
    for h in history.rows:
        h["elapsed_s"] = round(h["elapsed_s"] - start, 1)
    return module, trainer, history.rows, seconds


def final_model(s: Setup, split: Split, model, best: dict, ks: Sequence[int], metrics: Sequence[str]):
    """The model tested (refit on `refit_train` for the selected epochs, if any) and the extra fields."""
    extra = {}
    if split.refit_train is not None:  # the test model: trained again on refit_train for the selected epochs
        selected = ranking_metrics(s.rank(model, split.test_histories, max(ks)), split.test_targets, ks, metrics)
        extra = metric_fields("test_selected", selected)
        refit, refit_trainer, _, refit_s = fit(s, split.refit_train, stop_after=int(best["epoch"]) + 1)
        model = refit.model
        extra |= {"refit_epochs": int(refit_trainer.current_epoch), "refit_minutes": round(refit_s / 60, 2),
                  "refit_train_targets": int(sum(len(w) - 1 for w in split.refit_train))}
    if s.args.checkpoint:
        save_checkpoint(model, s.args.checkpoint, {"arch": s.args.arch, "n_items": len(s.item_sids), **s.item_kwargs})
    return model, extra


def scored_test(s: Setup, split: Split, model, ks: Sequence[int], metrics: Sequence[str]) -> tuple[dict, dict, float]:
    """(test metrics, beam-only fields, decode seconds) of the tested model."""
    t0 = time.perf_counter()
    test = ranking_metrics(s.rank(model, split.test_histories, max(ks)), split.test_targets, ks, metrics)
    decode_s = time.perf_counter() - t0
    extra = {}
    if s.args.arch == "item" and s.args.item_loss > 0:  # the generative ranking alone, without the item head's re-score
        beam_only = itemseq.rank_items(model, split.test_histories, s.args.width, max(ks), s.trie_next, s.leaf_items,
                                       rescore=False, exclude_history=bool(s.args.exclude_history))
        extra = metric_fields("test_beam_only", ranking_metrics(beam_only, split.test_targets, ks, metrics))
    return test, extra, decode_s


def throughput(s: Setup, module, trainer, train_s: float, windows: list[np.ndarray]) -> dict:
    """Training GFLOP per step and per second against the machine's matmul peak."""
    module.model.train()
    flops = step_flops(module, list(itertools.islice(iter(itemseq.WindowBatches(windows, s.cfg.batch_size, 99)), 5)))
    peak = matmul_peak_gflops(s.args.threads)
    achieved = flops * trainer.global_step / train_s / 1e9
    return {"train_gflop_per_step": round(flops / 1e9, 2), "train_gflop_per_s": round(achieved, 2),
            "matmul_peak_gflop_per_s": round(peak, 1), "train_fraction_of_matmul_peak": round(achieved / peak, 3)}


def run(args: argparse.Namespace, split: Split, item_sids: np.ndarray, ks: Sequence[int], codebook_size: int = 256,
        metrics: Sequence[str] = ("recall", "ndcg")) -> dict:
    """Train and evaluate one row (`args.arch`) on `split`; the result dict (see the module docstring)."""
    torch.set_num_threads(args.threads)
    if args.arch == "popularity":
        return popularity_row(args, split, len(item_sids), ks, metrics)
    s = setup(args, split, item_sids, ks, codebook_size)
    module, trainer, rows, train_s = fit(s, split.train)
    best = max(rows, key=lambda h: h["val_subset_recall@10"]) if rows else {"epoch": None}
    val = ranking_metrics(s.rank(module.model, split.val_histories, max(ks)), split.val_targets, ks, metrics)
    model, extra = final_model(s, split, module.model, best, ks, metrics)
    test, beam_only, decode_s = scored_test(s, split, model, ks, metrics)
    return {
        "model": {"item": "MultiGR item positions (ItemSeqGR)", "sasrec": "SASRec, full cross-entropy"}[args.arch],
        "params": model.num_params(), "config": s.cfg.model_dump(mode="json", exclude={"mopo", "daily"}),
        "train_targets": int(sum(len(w) - 1 for w in split.train)), "training_time_s": round(train_s, 1),
        "train_minutes": round(train_s / 60, 2), "steps": int(trainer.global_step),
        "epochs_run": int(trainer.current_epoch), "best_epoch": best["epoch"], "epoch_history": rows,
        **metric_fields("val", val), **metric_fields("test", test), **extra, **beam_only,
        "test_users": len(split.test_targets), "decode_requests_per_s": round(len(split.test_targets) / decode_s, 1),
        **throughput(s, module, trainer, train_s, split.train),
    }


def save(args: argparse.Namespace, result: dict, published: dict) -> dict:
    """Append the run (with every argument, the commit and the machine) to `args.out`; returns the run."""
    result = {**result, "args": vars(args), "commit": git_commit(), "machine": machine(args.threads),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps({k: v for k, v in result.items() if k != "epoch_history"}, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", []) + [result]
    keep = {k: previous[k] for k in ("beam_ablation",) if k in previous}  # multigr_beauty.py --ablate
    out.write_text(json.dumps({"published": published, **keep, "runs": runs}, indent=2) + "\n")
    return result


def summary(out: Path, metrics: Sequence[str], published: dict) -> str:
    """Markdown: test metrics as mean +- sd over the seeds of each (model, arguments but the seed) group
    of the recorded runs (runs of older code without `args` are left out), then the published rows."""
    runs = [r for r in json.loads(out.read_text())["runs"] if "args" in r] if out.exists() else []
    groups: dict[str, list[dict]] = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r["args"].items() if k not in ("seed", "out", "summary", "checkpoint", "ablate")}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    lines = [f"| model | seeds | train min (max) | {' | '.join(f'test {m}' for m in metrics)} | arguments |",
             "|---|---|---|" + "---|" * len(metrics) + "---|"]
    for key, rs in groups.items():
        cells = []
        for m in metrics:
            v = np.array([r[f"test.{m}"] for r in rs])
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}")
        minutes = max(r.get("train_minutes", 0.0) for r in rs)
        lines.append(f"| {rs[0]['model']} | {len(rs)} | {minutes:.1f} | {' | '.join(cells)} | `{key}` |")
    for name, row in published.items():
        lines.append(f"| {name} | published | | {' | '.join(f'{row[m]:.4f}' if m in row else '' for m in metrics)} | |")
    return "\n".join(lines)
