"""Tokenizer speed on this machine: text-encoder throughput and RQ-VAE fit time per item count.

    .venv/bin/python benchmarks/tokenizer_speed.py [--texts 512] [--repeats 3] [--epochs 2]

Encoder: items/s (median of `repeats`) on real Amazon titles (short texts, like the simulator's
catalog titles) and on title + description (up to `max_seq_length` tokens); falls back to
synthetic titles when the dataset folder is missing.
RQ-VAE: the demo config fitted for `--epochs` epochs on N synthetic unit vectors (a mixture of
clusters, 384-d) for N = the demo and large catalog sizes; prints seconds per epoch (total / epochs, k-means
initialisation included) and the projected full-fit time: warm-up + main epochs after the
`max_steps` cap, warm-up epochs counted as full epochs (an upper bound).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from foundation.config import load_settings
from models.tokenizer import embed
from models.tokenizer.rqvae import train_rqvae

AMAZON = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-industrial" / "items.json"


def texts(n: int, long: bool) -> list[str]:
    if AMAZON.exists():
        items = embed.read_item_file(AMAZON).head(n)
        if not long:
            items = items[["item_id", "title", "brand"]]
        return [embed.item_text(r) for r in items.to_dict("records")]
    rng = np.random.default_rng(0)
    words = ["cordless", "drill", "steel", "glove", "lamp", "led", "compact", "pro", "kit", "blue"]
    return [" ".join(rng.choice(words, 8)) for _ in range(n)]


def encoder_throughput(n: int, repeats: int, long: bool, cfg) -> float:
    enc = embed.load_encoder(cfg.max_seq_length)
    batch = texts(n, long)
    embed.encode_texts(enc, batch[: cfg.encode_batch_size], cfg.encode_batch_size)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed.encode_texts(enc, batch, cfg.encode_batch_size)
        times.append(time.perf_counter() - t0)
    return len(batch) / statistics.median(times)


def synthetic_embeddings(n: int, dim: int = 384, clusters: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fit_seconds_per_epoch(n: int, epochs: int, cfg, trainer_cfg) -> float:
    x = synthetic_embeddings(n)
    t0 = time.perf_counter()
    train_rqvae(x, cfg.model_copy(update={"epochs": epochs, "warmup_epochs": 0}), trainer_cfg=trainer_cfg)
    return (time.perf_counter() - t0) / epochs  # includes k-means init, amortised


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="item counts (default: demo, large)")
    args = ap.parse_args()
    demo = load_settings("demo", env={})
    large = load_settings("large", env={})
    cfg = demo.tokenizer
    out: dict = {
        "encoder_items_per_s_title": round(encoder_throughput(args.texts, args.repeats, False, cfg), 1),
        "encoder_items_per_s_title_description": round(encoder_throughput(args.texts, args.repeats, True, cfg), 1),
        "rqvae": [],
    }
    runs = ([(n, demo) for n in args.sizes] if args.sizes
            else [(demo.simulator.n_items, demo), (large.simulator.n_items, large)])
    for n, settings in runs:
        tcfg = settings.tokenizer
        spe = fit_seconds_per_epoch(n, args.epochs, tcfg, settings.trainer)
        steps = -(-n // tcfg.batch_size)
        full = min(tcfg.epochs, tcfg.max_steps / steps) + min(tcfg.warmup_epochs, (tcfg.max_steps // 4) / steps)
        out["rqvae"].append({"items": n, "batch_size": tcfg.batch_size, "epochs_run": args.epochs,
                             "seconds_per_epoch": round(spe, 2), "full_epochs": round(full, 1),
                             "projected_full_fit_s": round(spe * full, 1)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
