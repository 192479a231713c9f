"""Tokenizer quality on the simulator's catalog (the items its first day writes to raw/items).

    .venv/bin/python benchmarks/tokenizer_simulator.py [--profile demo] [--cache /tmp/sim_emb.parquet]
        [--sample 8000] [--set epochs=20 ...]

Builds the initial catalog exactly as `growthgr simulate` does (create_world + catalog_tables),
without simulating any searches, then embeds, fits an RQ-VAE and prints the SID report:
collisions, per-level usage and perplexity, reconstruction error and level-1 purity against the
true category (16 categories), with the random-pair baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from foundation.config import load_settings
from growthgr.cli.tokenizer import dataset_report
from simulator.engine import catalog_tables
from simulator.world import create_world, day_index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--cache", default=None, help="Parquet file to reuse the item embeddings.")
    ap.add_argument("--sample", type=int, default=0, help="random subset of the catalog (0 = all items).")
    ap.add_argument("--set", nargs="*", default=[], help="tokenizer overrides key=value (YAML values).")
    args = ap.parse_args()
    overrides = {"tokenizer": {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
    s = load_settings(args.profile, env={}, overrides=overrides)
    day = day_index("2026-01-01")
    world = create_world(s.simulator, s.simulator.seed, day)
    items = catalog_tables(world, day)["items"].to_pandas()
    if 0 < args.sample < len(items):
        items = items.sample(args.sample, random_state=0).sort_values("item_id").reset_index(drop=True)
    report = dataset_report(items, s.tokenizer, Path(args.cache) if args.cache else None)
    report["profile"] = args.profile
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
