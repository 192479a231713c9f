"""Which retrieval channel placed the clicks of the long-term label: the (request, item) clicks on
items whose ItemLTV uplift (`curated/item_uplift` of `--ds`) is above that table's mean
(`models.multigr.mopo.long_term_items`, the label of the MultiGR evaluation and of MoPO's
long-term reward), split by the `channel` of `raw/rank_candidates` (`none`: not a candidate).

    .venv/bin/python benchmarks/label_channels.py --lake lake --ds 2026-03-01 --days 1 7

A label dominated by a channel no retriever can reproduce (the uniform `explore` bucket) would cap
every retriever's long-term recall; this prints how much of it each channel holds.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta

from foundation.catalog import ITEM_UPLIFT, RAW
from foundation.lake import Lake
from models.multigr.mopo import long_term_items


def label_channels(lake: Lake, ds: date, days: int) -> dict[str, int]:
    """Long-term label pairs of the `days` days ending at `ds`, counted per channel."""
    items = set(long_term_items(lake.read_partition(*ITEM_UPLIFT, ds).to_pandas()).tolist())
    first = ds - timedelta(days=days - 1)
    clicks = lake.read_range(*RAW["clicks"], first, ds, ["request_id", "item_id"]).to_pandas()
    cand = lake.read_range(*RAW["rank_candidates"], first, ds, ["request_id", "item_id", "channel"]).to_pandas()
    pairs = clicks[clicks["item_id"].isin(items)].merge(cand, on=["request_id", "item_id"], how="left")
    return {str(k): int(v) for k, v in pairs["channel"].fillna("none").value_counts().items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root")
    p.add_argument("--ds", required=True, type=date.fromisoformat, help="day of the ItemLTV uplift table")
    p.add_argument("--days", type=int, nargs="+", default=[1], help="window lengths ending at --ds")
    args = p.parse_args()
    lake = Lake.open(args.lake)
    for days in args.days:
        counts = label_channels(lake, args.ds, days)
        total = sum(counts.values())
        print(f"{args.ds - timedelta(days=days - 1)}..{args.ds}: {total} pairs; "
              + ", ".join(f"{c} {n} ({n / total:.1%})" for c, n in counts.items()))


if __name__ == "__main__":
    main()
