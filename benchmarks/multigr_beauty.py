"""MultiGR (TIGER-style SFT) on Amazon Beauty with its given 4-level SIDs.

Protocol (TIGER, NeurIPS 2023): leave-one-out per user (last = test,
second-to-last = validation, rest = training, all prefixes), history capped at
20 items, full ranking over all 12,101 items by trie-constrained beam search,
Recall@5/10 and NDCG@5/10 (`models.metrics`). The epoch is chosen on validation
Recall@10 (on a fixed subset of validation users after each epoch, logged by the
module as `val_recall@10` and kept by Lightning's ModelCheckpoint, with early
stopping), then full validation and test are reported for that epoch.

Each run is added to `--out` under `runs`; the file's top level is the run with the best
full-validation Recall@10 (hyper-parameters chosen on validation, test reported).

    .venv/bin/python benchmarks/multigr_beauty.py --minutes 40 [--n-layer 3 --d-model 96 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from growthgr.core.sections.multigr import MultiGRConfig
from growthgr.core.sections.trainer import TrainerConfig
from models.metrics import ranking_metrics
from models.multigr.beam import sid_keys, trie_table
from models.multigr.data import SFTDataModule, leave_one_out, load_sequences
from models.multigr.model import Vocab
from models.multigr.train import fit, rank_items, save_checkpoint
from models.tokenizer.trie import SidTrie

PUBLISHED = {
    "TIGER (paper)": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
    "SASRec (TIGER paper)": {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318},
}
log = logging.getLogger("multigr_beauty")


def leaf_item_map(trie: SidTrie, item_sids: np.ndarray) -> np.ndarray:
    """(num_nodes,) item id of each trie leaf, -1 for inner nodes (SIDs are unique per item)."""
    rows = np.searchsorted(sid_keys(trie.sids, trie.codebook_size), sid_keys(item_sids, trie.codebook_size))
    out = np.full(trie.num_nodes, -1, dtype=np.int64)
    out[trie.first_leaf + rows] = np.arange(len(item_sids))
    return out


class History(L.Callback):
    """Logs the training loss; records the validation-subset Recall@10 of every epoch."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx % 50 == 0:
            log.info("epoch %d step %d loss %.4f", trainer.current_epoch, batch_idx, float(outputs["loss"]))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "val_subset_recall@10": float(m["val_recall@10"]),
                          "elapsed_s": time.perf_counter()})
        log.info("epoch %d train_loss %.4f val-subset R@10 %.4f", trainer.current_epoch,
                 float(m.get("train_loss", float("nan"))), self.rows[-1]["val_subset_recall@10"])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/datasets/amazon-beauty")
    p.add_argument("--minutes", type=float, default=40.0, help="training wall-time cap")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=30, help="warm-up steps")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--beams", default="10,30,30,30", help="beam width per level (final evaluation)")
    p.add_argument("--select-beams", default="10,20,20,20", help="beam widths of the per-epoch validation")
    p.add_argument("--val-users", type=int, default=1000)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stride", type=int, default=5, help="new targets per window beyond 21 items (1 = exact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="/tmp/multigr_beauty_ckpt")
    p.add_argument("--out", default="benchmarks/results/beauty.json", help="results JSON (runs accumulate)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    data = load_sequences(data_dir / "inter.json", data_dir / "index_rqvae.json")
    n_items, n_levels = data.item_sids.shape
    cfg = MultiGRConfig(
        seed=args.seed, sid_levels=n_levels, codebook_size=256, n_user_buckets=0, n_query_buckets=0,
        max_query_words=0, max_history=20, max_len=1 + 21 * n_levels, n_layer=args.n_layer, n_head=args.n_head,
        d_model=args.d_model, dropout=args.dropout, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup, max_epochs=args.epochs, num_threads=args.threads,
        beam_widths=[int(w) for w in args.beams.split(",")], top_k=10,
    )
    split = leave_one_out(Vocab.from_config(cfg), data, cfg.max_history, args.stride)
    trie = SidTrie.from_sids(data.item_sids, cfg.codebook_size)
    trie_next, leaf_items = trie_table(trie), leaf_item_map(trie, data.item_sids)
    log.info("users %d items %d train examples %d trie nodes %d", len(split.test_targets), n_items, len(split.train), trie.num_nodes)

    def metrics(model, prompts, targets, beams=cfg.beam_widths) -> dict[str, float]:
        ranked = rank_items(model, prompts, beams, cfg.top_k, trie_next, leaf_items)
        return ranking_metrics(ranked, targets, (5, 10))

    select_beams = [int(w) for w in args.select_beams.split(",")]
    rng = np.random.default_rng(args.seed)
    sub = rng.choice(len(split.val_targets), size=min(args.val_users, len(split.val_targets)), replace=False)
    history = History()
    dm = SFTDataModule(split.train, cfg.batch_size, cfg.seed, ([split.val_prompts[i] for i in sub], split.val_targets[sub]))
    start = time.perf_counter()
    model, train_s = fit(cfg, dm, max_time_s=args.minutes * 60, callbacks=[history], trainer_cfg=TrainerConfig(),
                         rank=lambda m, prompts: rank_items(m, prompts, select_beams, cfg.top_k, trie_next, leaf_items),
                         patience=args.patience)  # the best epoch's weights
    for h in history.rows:
        h["elapsed_s"] = round(h["elapsed_s"] - start, 1)
    best_epoch = max(history.rows, key=lambda h: h["val_subset_recall@10"])["epoch"]  # first best, as ModelCheckpoint
    val = metrics(model, split.val_prompts, split.val_targets)
    t0 = time.perf_counter()
    test = metrics(model, split.test_prompts, split.test_targets)
    decode_s = time.perf_counter() - t0
    save_checkpoint(model, args.checkpoint, {"best_epoch": best_epoch})
    result = {
        "dataset": "amazon-beauty",
        "protocol": "leave-one-out, history<=20, full ranking over all items (trie-constrained beam search)",
        "model": "MultiGR decoder-only (TIGER-style SFT)",
        "params": model.num_params(),
        "config": cfg.model_dump(mode="json"),
        "train_examples": len(split.train),
        "train_window_stride": args.stride,
        "training_time_s": round(train_s, 1),
        "epochs_run": len(history.rows),
        "best_epoch": best_epoch,
        "epoch_history": history.rows,
        **{f"val.{k}": round(v, 4) for k, v in val.items()},
        **{f"test.{k}": round(v, 4) for k, v in test.items()},
        "test_users": len(split.test_targets),
        "decode_requests_per_s": round(len(split.test_targets) / decode_s, 1),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads (CPU, shared)",
        "published": PUBLISHED,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(select_run(json.loads(out.read_text()) if out.exists() else None, result), indent=2) + "\n")


def select_run(previous: dict | None, run: dict, key: str = "val.recall@10") -> dict:
    """The results file after `run`: every run under `runs`, the one best on `key` at the top level."""
    runs = (previous or {}).get("runs", []) + [{k: v for k, v in run.items() if k != "published"}]
    best = max(runs, key=lambda r: r[key])
    return {**best, "selected_on": key, "published": PUBLISHED, "runs": runs}


if __name__ == "__main__":
    main()
