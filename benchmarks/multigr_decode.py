"""MultiGR decoding speed on CPU: requests/s and latency per request, constrained vs unconstrained.

A randomly initialised `demo`-size model (speed does not depend on the weights),
a trie over a random pool of valid 3-level SIDs, prompts of 20 history items +
user features + query words (the simulated platform's layout). Each setting
runs constrained and unconstrained decoding alternately; the constraint's cost
is the ratio of their median times.

    .venv/bin/python benchmarks/multigr_decode.py --threads 1

With `--checkpoint` (an `ItemSeqGR` saved by `multigr_beauty.py --checkpoint DIR`) it times the
trained Beauty model instead: prompts are the last 20 items of Beauty test users, the trie holds
the 12,101 items' SIDs, beam width 10, 50 and 100 at every level (top 10), one warm-up, then
`--repeats` (>= 20) alternating constrained / unconstrained runs; the ratio of each pair is
reported as median and interquartile range.

    .venv/bin/python benchmarks/multigr_decode.py --checkpoint /tmp/beauty_ckpt --repeats 25 --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from foundation.sections.multigr import MultiGRConfig
from models.multigr import itemseq
from models.multigr.beam import beam_search, trie_table
from models.multigr.data import context_tokens, left_pad, load_sequences
from models.multigr.model import MultiGR
from models.tokenizer.trie import SidTrie

SETTINGS = {  # name: (beam width per level, top-K)
    "beam10": ([10, 10, 10], 10),
    "beam100": ([30, 100, 100], 100),
    "top1000": ([100, 500, 1000], 1000),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=50_000, help="number of valid SIDs in the trie")
    p.add_argument("--batch", type=int, default=16, help="requests per batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--checkpoint", default=None, help="a trained ItemSeqGR (Amazon Beauty) to time instead")
    p.add_argument("--data-dir", default="../shared/datasets/amazon-beauty")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        return trained_beauty(args)
    cfg = MultiGRConfig()
    torch.manual_seed(0)
    model = MultiGR(cfg).eval()
    rng = np.random.default_rng(0)
    trie = SidTrie.from_sids(rng.integers(0, cfg.codebook_size, size=(args.pool, cfg.sid_levels)), cfg.codebook_size)
    prompts = left_pad([
        context_tokens(model.vocab, rng.integers(0, cfg.codebook_size, size=(20, cfg.sid_levels)), [1, 2, 3],
                       "red running shoes for women", cfg.max_query_words)
        for _ in range(args.batch)
    ])
    table = trie_table(trie)
    results = {"params": model.num_params(), "pool": len(trie), "batch": args.batch, "threads": args.threads}
    for name, (widths, top_k) in SETTINGS.items():
        times = {"constrained": [], "unconstrained": []}
        for _ in range(args.repeats):
            for mode, tn in (("constrained", table), ("unconstrained", None)):
                t0 = time.perf_counter()
                beam_search(model, prompts, widths, top_k, tn)
                times[mode].append(time.perf_counter() - t0)
        con, unc = statistics.median(times["constrained"]), statistics.median(times["unconstrained"])
        results[name] = {
            "beam_widths": widths, "top_k": top_k,
            "requests_per_s": round(args.batch / con, 1),
            "latency_ms_per_request": round(1000 * con / args.batch, 2),
            "batch_latency_ms": round(1000 * con, 1),
            "constrained_over_unconstrained": round(con / unc, 3),
        }
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(json.dumps(results, indent=2) + "\n")


def trained_beauty(args: argparse.Namespace) -> None:
    model = itemseq.load(args.checkpoint).eval()
    data = load_sequences(Path(args.data_dir) / "inter.json", Path(args.data_dir) / "index_rqvae.json")
    trie_next = trie_table(SidTrie.from_sids(data.item_sids, model.cfg.codebook_size))
    histories = itemseq.pad_items([s[:-1][-model.cfg.max_history:] for s in data.sequences[: args.batch]], left=True)
    results = {"model": "ItemSeqGR (Amazon Beauty)", "checkpoint": args.checkpoint, "params": model.num_params(),
               "items": len(data.item_sids), "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    for width in (10, 50, 100):
        times: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
        for rep in range(args.repeats + 1):  # the first pair warms up and is dropped
            for mode, tn in (("constrained", trie_next), ("unconstrained", None)):
                t0 = time.perf_counter()
                model.beam_search(histories, width, 10, tn)
                if rep:
                    times[mode].append(time.perf_counter() - t0)
        ratio = np.array(times["constrained"]) / np.array(times["unconstrained"])
        q1, med, q3 = np.percentile(ratio, [25, 50, 75])
        con = statistics.median(times["constrained"])
        results[f"width{width}"] = {
            "requests_per_s": round(args.batch / con, 1), "batch_latency_ms": round(1000 * con, 1),
            "unconstrained_batch_latency_ms": round(1000 * statistics.median(times["unconstrained"]), 1),
            "ratio_median": round(float(med), 3), "ratio_iqr": [round(float(q1), 3), round(float(q3), 3)],
        }
        print(f"width {width}", json.dumps(results[f"width{width}"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
