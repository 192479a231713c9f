"""Tokenizer quality on the real Amazon Industrial_and_Scientific items, against the published
MiniOneRec index beside them (3,686 items -> 3,670 distinct SIDs, 48 level-1 codes).

    .venv/bin/python benchmarks/tokenizer_amazon.py [--profile demo] [--cache /tmp/amazon_emb.parquet]

Prints one JSON object: our report, the same figures for the published index, and the
encoder throughput. Skips (exit 0 with a message) when the dataset folder is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from foundation.config import load_settings
from growthgr.cli.tokenizer import dataset_report
from models.tokenizer import embed
from models.tokenizer.metrics import sid_report

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-industrial"


def published_index_report(items, x: np.ndarray | None) -> dict:
    """The same figures for MiniOneRec's published SIDs (their c1..c3, '<a_12><b_3><c_7>' tokens)."""
    index = json.loads((DATA / "minionerec_sid_index.json").read_text())
    ids = items["item_id"].to_numpy()
    codes = np.array([[int(tok.split("_")[1].rstrip(">")) for tok in index[str(i)]][:3] for i in ids], np.int64)
    return sid_report(codes, x=x, brands=items["brand"].to_numpy(dtype=object), codebook_size=256)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--cache", type=Path, default=None, help="Parquet file to reuse the item embeddings.")
    ap.add_argument("--set", nargs="*", default=[], help="tokenizer overrides key=value (YAML values).")
    args = ap.parse_args()
    if not (DATA / "items.json").exists():
        print(f"skipped: {DATA} is missing")
        return 0
    import yaml

    overrides = {"tokenizer": {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
    cfg = load_settings(args.profile, env={}, overrides=overrides).tokenizer
    items = embed.read_item_file(DATA / "items.json")
    ours = dataset_report(items, cfg, args.cache)
    x = None
    if args.cache is not None and args.cache.exists():
        import pandas as pd

        x = embed.embedding_matrix(pd.read_parquet(args.cache).sort_values("item_id"))
    out = {
        "ours": ours,
        "encoder_items_per_second": round(len(items) / ours["encode_seconds"], 1) if ours["encode_seconds"] > 1 else None,
        "published_minionerec": published_index_report(items, x),
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
