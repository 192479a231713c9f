"""Feast materialisation of one day into the local SQLite online store: GrowthGR's bulk
writer (`growthgr.feast_online`, the default) against Feast's stock SQLite store.

    .venv/bin/python benchmarks/feast_materialize.py [--lake lake] [--ds YYYY-MM-DD] [--profile demo] [--repeats 3]

Needs a lake with feature tables (e.g. after `make demo`); --ds defaults to its last
`features/item_features` partition. Materialising is an idempotent upsert, so the
lake's own online store is used; each store's median seconds and feature values written
per second are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

from growthgr.config import load_settings
from growthgr.features import FeatureStoreConfig, materialize, open_store
from growthgr.lake import Lake


def feature_values(lake: Lake, ds: str) -> int:
    """Values one day writes: rows x feature columns (not the key, not event_timestamp) per table."""
    tables = ("user_features", "item_features", "query_features")
    return sum(t.num_rows * (t.num_columns - 2) for t in (lake.read_partition("features", n, ds) for n in tables))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="lake")
    p.add_argument("--ds", default=None)
    p.add_argument("--profile", default="demo")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    settings = load_settings(args.profile, env={}, overrides={"lake_root": args.lake})
    lake = Lake.from_settings(settings)
    ds = args.ds or lake.list_partitions("features", "item_features")[-1]
    values = feature_values(lake, ds)
    for label, cfg in (("bulk (default)", FeatureStoreConfig()), ("feast sqlite", FeatureStoreConfig(online_store="sqlite"))):
        open_store(settings, cfg)                       # apply outside the timing
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            materialize(settings, ds, cfg)
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        print(f"{label:<15} ds={ds}: {sec:6.1f} s median of {args.repeats}  ({values / sec:,.0f} feature values/s)")
    open_store(settings)                                # leave the lake on its default store


if __name__ == "__main__":
    main()
