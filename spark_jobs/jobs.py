"""The job registry and the entry points shared by the CLI, tests and Airflow tasks.

Every entry point takes the lake plus the `spark` and `storage` config sections:
`run_job(lake, cfg, storage, name, ds)` runs one job for one day; `run_days` runs a job
for several days (jobs in `RANGE_JOBS` build up to `cfg.backfill_days_per_job` days in
one Spark job, the others one job per day; each day its own idempotent overwrite);
`backfill` runs a range of days through `run_days` (or `run_all` per day); `run_all` runs
every job for one day in dependency-free order, skipping `itemltv_labels` while the raw
data does not reach back to the cohort's listing day (`ds - calendar.COHORT_OFFSET`) and
otherwise catching up the label partitions of every earlier closable day that has none
(`label_days`: a young lake's first daily run labels all cohorts closed so far).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date

from tqdm import tqdm

from foundation import calendar, catalog
from foundation.config import SparkConfig, StorageConfig
from foundation.lake import Lake, ds_range
from spark_jobs import features, gr_samples, item_daily_stats, itemltv_labels
from spark_jobs.common import day
from spark_jobs.session import get_spark

log = logging.getLogger(__name__)

JobFn = Callable[..., dict[str, int]]
RangeFn = Callable[..., dict[date, dict[str, int]]]
JOBS: dict[str, JobFn] = {
    "item_daily_stats": item_daily_stats.run,
    "features": features.run,
    "gr_samples": gr_samples.run,
    "itemltv_labels": itemltv_labels.run,
}
# Jobs that can build many days in one Spark job (same partitions as one run per day).
RANGE_JOBS: dict[str, RangeFn] = {"itemltv_labels": itemltv_labels.run_range}


def _check(name: str) -> None:
    if name not in JOBS:
        raise KeyError(f"unknown spark job {name!r}; known: {sorted(JOBS)}")


def run_job(lake: Lake, cfg: SparkConfig, storage: StorageConfig, name: str, ds: date) -> dict[str, int]:
    """Run job `name` for `ds`; returns rows written per output table."""
    _check(name)
    started = time.perf_counter()
    rows = JOBS[name](get_spark(cfg, storage, lake.store.uri), lake, ds)
    log.info("%s ds=%s: %s in %.1fs", name, ds, rows, time.perf_counter() - started)
    return rows


def label_ready(lake: Lake, ds: date) -> bool:
    """True when the raw data reaches back to the listing day of the cohort closing on ds."""
    first = lake.list_partitions(*catalog.RAW["search_requests"])
    return bool(first) and first[0] <= day(ds, -calendar.COHORT_OFFSET)


def label_days(lake: Lake, ds: date) -> list[date]:
    """`ds` and every earlier closable day (raw data back to its cohort's listing day) whose
    `itemltv_labels` partition is missing; empty while no cohort can close on `ds`."""
    first = lake.list_partitions(*catalog.RAW["search_requests"])
    if not label_ready(lake, ds):
        return []
    closable = ds_range(day(first[0], calendar.COHORT_OFFSET), ds)
    return [d for d in closable if d == ds or not lake.exists(*catalog.ITEMLTV_LABELS, d)]


def run_all(lake: Lake, cfg: SparkConfig, storage: StorageConfig, ds: date) -> dict[str, int]:
    """Every job for `ds` (labels only once a cohort can close, catching up missed label days);
    returns rows per output table of `ds`."""
    out: dict[str, int] = {}
    for name in JOBS:
        if name != "itemltv_labels":
            out.update(run_job(lake, cfg, storage, name, ds))
        elif not (days := label_days(lake, ds)):
            log.warning("itemltv_labels ds=%s skipped: raw data does not reach back to ds-%d",
                        ds, calendar.COHORT_OFFSET)
        else:
            if len(days) > 1:
                log.info("itemltv_labels: catching up %d closable day(s) without labels: %s..%s",
                         len(days) - 1, days[0], days[-2])
            out.update(run_days(lake, cfg, storage, name, days)[ds])
    return out


def run_days(
    lake: Lake, cfg: SparkConfig, storage: StorageConfig, name: str, days: list[date],
) -> dict[date, dict[str, int]]:
    """Run job `name` for each of `days` (in date order); returns rows per day and table."""
    _check(name)
    days = sorted(days)
    if name not in RANGE_JOBS:
        return {ds: run_job(lake, cfg, storage, name, ds) for ds in tqdm(days, desc=f"spark {name}")}
    out: dict[date, dict[str, int]] = {}
    size = cfg.backfill_days_per_job
    for chunk in tqdm([days[i:i + size] for i in range(0, len(days), size)], desc=f"spark {name}", unit="job"):
        started = time.perf_counter()
        out.update(RANGE_JOBS[name](get_spark(cfg, storage, lake.store.uri), lake, chunk))
        log.info("%s ds=%s..%s (%d days) in %.1fs", name, chunk[0], chunk[-1], len(chunk), time.perf_counter() - started)
    return out


def backfill(
    lake: Lake, cfg: SparkConfig, storage: StorageConfig, name: str, start: date, end: date,
) -> dict[date, dict[str, int]]:
    """Run job `name` (or "all", day by day) for every day start..end; returns rows per day and table."""
    if name != "all":
        return run_days(lake, cfg, storage, name, ds_range(start, end))
    return {ds: run_all(lake, cfg, storage, ds) for ds in tqdm(ds_range(start, end), desc="spark all")}
