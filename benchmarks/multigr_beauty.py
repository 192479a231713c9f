"""MultiGR on Amazon Beauty with its given 4-level SIDs, against TIGER's published figures.

Protocol (TIGER, NeurIPS 2023): leave-one-out per user (last = test, second-to-last = validation,
the rest = training, every item a target), history capped at 20 items, full ranking over all 12,101
items (trie-constrained beam search, width `--width` at every level, scores renormalised over the
valid children), Recall@5/10 and NDCG@5/10 (`models.metrics`). `--exclude-history 1` (the default
here, every row): an item already in the request's history is never ranked; this data set has no
repeat interactions (0 of the 22,363 test and validation targets occurs earlier in its user's
sequence), so the rule only frees slots (on the seed-0 model of the 36-epoch item-head row: test
Recall@10 / NDCG@10 0.0625 / 0.0326 without it, 0.0694 / 0.0393 with it; ~3% of the beam's
candidates were history items). TIGER's paper does not say whether it filters. Rows: `--arch item` (MultiGR over
item positions, `models.multigr.itemseq`), `sasrec` and `popularity` with the same data, budget and
selection (`benchmarks/seqrec.py`). Runs accumulate in `--out` with every argument.

    .venv/bin/python benchmarks/multigr_beauty.py --minutes 30 --seed 0 [--arch sasrec ...]
    .venv/bin/python benchmarks/multigr_beauty.py --summary      # the table over the recorded runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np
import seqrec

from models.metrics import ranking_metrics
from models.multigr import itemseq
from models.multigr.beam import trie_table
from models.multigr.data import load_sequences
from models.multigr.itemseq import windows
from models.tokenizer.trie import SidTrie

PUBLISHED = {
    "TIGER (paper)": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
    "SASRec (TIGER paper)": {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318},
}


def split(data, max_history: int) -> seqrec.Split:
    train, vh, vt, th, tt = [], [], [], [], []
    for seq in data.sequences:
        if len(seq) < 3:
            continue
        train.extend(windows(seq[:-2], max_history))
        vh.append(seq[:-2][-max_history:])
        vt.append(seq[-2])
        th.append(seq[:-1][-max_history:])
        tt.append(seq[-1])
    return seqrec.Split(train, vh, np.array(vt), th, np.array(tt))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/datasets/amazon-beauty")
    p.add_argument("--summary", action="store_true", help="print the table of the recorded runs and exit")
    p.add_argument("--ablate", default=None, metavar="CHECKPOINT",
                   help="decode a saved ItemSeqGR with beam width 10/50/100, renormalised or not; write to --out")
    seqrec.add_arguments(p, max_history=20, out="benchmarks/results/beauty.json", exclude_history=1)
    args = p.parse_args()
    if args.summary:
        print(seqrec.summary(Path(args.out), ("recall@5", "ndcg@5", "recall@10", "ndcg@10"), PUBLISHED))
        return 0
    data_dir = Path(args.data_dir)
    if not (data_dir / "inter.json").exists():
        print(f"skipped: {data_dir} is missing")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_sequences(data_dir / "inter.json", data_dir / "index_rqvae.json")
    if args.ablate:
        return ablate(args, data)
    result = seqrec.run(args, split(data, args.max_history), data.item_sids, (5, 10))
    seqrec.save(args, {"dataset": "amazon-beauty", **result}, PUBLISHED)
    return 0


def ablate(args: argparse.Namespace, data) -> int:
    """Beam width and renormalisation of one trained model, on validation and test (recorded in --out)."""
    model = itemseq.load(args.ablate)
    sp = split(data, model.cfg.max_history)
    trie = SidTrie.from_sids(data.item_sids, model.cfg.codebook_size)
    table, leaves = trie_table(trie), seqrec.leaf_item_map(trie, data.item_sids)
    rows = []
    for width, renormalize in itertools.product((10, 50, 100), (True, False)):
        row = {"width": width, "renormalize": renormalize}
        for name, hist, targets in (("val", sp.val_histories, sp.val_targets), ("test", sp.test_histories, sp.test_targets)):
            ranked = np.concatenate([np.where(n >= 0, leaves[np.maximum(n, 0)], -1) for n in (
                model.beam_search(itemseq.pad_items(hist[i: i + 512], left=True), width, 10, table, renormalize).nodes.numpy()
                for i in range(0, len(hist), 512))])
            row.update(seqrec.metric_fields(name, ranking_metrics(ranked, targets, (5, 10))))
        logging.info("ablation %s", row)
        rows.append(row)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("beam_ablation", []).append({"checkpoint": args.ablate, "commit": seqrec.git_commit(), "rows": rows})
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
