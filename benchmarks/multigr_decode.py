"""MultiGR decoding speed on CPU: requests/s and latency per request, constrained vs unconstrained.

A randomly initialised `demo`-size model (speed does not depend on the weights),
a trie over a random pool of valid 3-level SIDs, prompts of 20 history items +
user features + query words (the simulated platform's layout). Each setting
runs constrained and unconstrained decoding alternately; the constraint's cost
is the ratio of their median times.

    .venv/bin/python benchmarks/multigr_decode.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from growthgr.core.sections.multigr import MultiGRConfig
from models.multigr.beam import beam_search, trie_table
from models.multigr.data import context_tokens, left_pad
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
