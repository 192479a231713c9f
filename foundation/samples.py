"""The one reader of `samples/gr_samples` (the Spark job `spark_jobs.gr_samples` writes it): every
consumer (MultiGR and dense training, the service's context, Feast training sets) reads it here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import pandas as pd

from foundation.catalog import GR_SAMPLES
from foundation.lake import Lake, PartitionNotFound


def read_gr_samples(lake: Lake, days: Iterable[date | str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of `days` in order (all columns, or `columns`). Every day must be committed: a
    missing one raises `PartitionNotFound` naming each missing partition and the job that writes it."""
    days = list(days)
    missing = [d for d in days if not lake.exists(*GR_SAMPLES, d)]
    if missing:
        keys = ", ".join(GR_SAMPLES.key(d) for d in missing)
        raise PartitionNotFound(f"no {keys}: run the gr_samples Spark job ({GR_SAMPLES.writer})")
    cols = list(columns) if columns is not None else None
    frames = [lake.read_partition(*GR_SAMPLES, d, cols).to_pandas() for d in days]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
