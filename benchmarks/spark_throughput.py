"""Throughput of the Spark jobs `item_daily_stats` and `itemltv_labels` at two scales.

For each scale (a profile: `demo` = 1x, `large` = ~10x demo) it simulates
`--days` days into a fresh lake (unless `--lake` points at one), then runs each
job `--repeats` times for the last day in one warm SparkSession and prints the
median seconds and input rows per second (input rows = raw rows the job reads).
Linear scaling means time(10x) / time(1x) near 10.

    .venv/bin/python benchmarks/spark_throughput.py --profiles demo large --days 40 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta

from foundation.calendar import COHORT_OFFSET, LABEL_DAYS
from foundation.config import load_settings
from foundation.lake import Lake
from spark_jobs import item_daily_stats, itemltv_labels
from spark_jobs.common import days
from spark_jobs.session import get_spark

START = "2026-01-01"


def input_rows(lake: Lake, job: str, ds: str) -> int:
    if job == "item_daily_stats":
        tables = {t: [ds] for t in item_daily_stats.FUNNEL_TABLES}
    else:
        new, label = days(ds, -COHORT_OFFSET, -LABEL_DAYS), days(ds, -(LABEL_DAYS - 1), 0)
        tables = {"search_requests": new, "exposures": new, "clicks": new, "purchases": label, "site_orders": label}
    return sum(lake.commit_info("raw", t, d).rows for t, ds_list in tables.items() for d in ds_list)


def bench(profile: str, n_days: int, repeats: int, root: str | None) -> dict[str, tuple[float, int]]:
    settings = load_settings(profile, overrides={"lake_root": root or tempfile.mkdtemp(prefix=f"bench_{profile}_")})
    lake = Lake.from_settings(settings)
    if root is None:
        from simulator.run import simulate

        simulate(lake, settings.simulator, seed=1, start=START, days=n_days)
    ds = (date.fromisoformat(START) + timedelta(days=n_days - 1)).isoformat()
    spark = get_spark(settings.spark, settings.storage, settings.lake_root)
    out = {}
    for name, run in (("item_daily_stats", item_daily_stats.run), ("itemltv_labels", itemltv_labels.run)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(spark, lake, ds)
            times.append(time.perf_counter() - t0)
        out[name] = (statistics.median(times), input_rows(lake, name, ds))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", nargs="+", default=["demo", "large"])
    p.add_argument("--days", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lake", nargs="*", default=None, help="existing lake roots, one per profile")
    a = p.parse_args()
    results = {}
    for i, profile in enumerate(a.profiles):
        results[profile] = bench(profile, a.days, a.repeats, a.lake[i] if a.lake else None)
        for job, (sec, rows) in results[profile].items():
            print(f"{profile:6s} {job:17s} median {sec:7.2f}s  input rows {rows:>11,d}  {rows / sec:>12,.0f} rows/s")
    if len(a.profiles) == 2:
        small, big = (results[p] for p in a.profiles)
        for job in small:
            print(f"time ratio {a.profiles[1]}/{a.profiles[0]} {job}: {big[job][0] / small[job][0]:.1f} "
                  f"(input ratio {big[job][1] / small[job][1]:.1f})")


if __name__ == "__main__":
    main()
