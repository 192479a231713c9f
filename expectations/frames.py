"""Reading lake partitions into pandas for GX, and the cross-table checks GX cannot express.

Each `check_*` function is pure: it returns one boolean column (True = the row is fine) that a
suite then expects to be all True. Their names start with `_check_` so schema rules can tell
them from the table's own columns.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from growthgr.core.lake import Lake

_NULLABLE_INTS = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping ints as ints when they hold nulls (so a null is a null, not a type change)."""
    return table.to_pandas(types_mapper=_NULLABLE_INTS.get)


def read(lake: Lake, zone: str, table: str, ds: str) -> pd.DataFrame | None:
    """One committed partition as pandas, or None when it does not exist."""
    return to_frame(lake.read_partition(zone, table, ds)) if lake.exists(zone, table, ds) else None


def read_days(lake: Lake, zone: str, table: str, ds: str, lookback: int, columns: list[str]) -> pd.DataFrame:
    """`columns` of the partitions ds-lookback..ds that exist (empty frame if none)."""
    day = date.fromisoformat(ds)
    frames = []
    for back in range(lookback + 1):
        d = (day - timedelta(days=back)).isoformat()
        if lake.exists(zone, table, d):
            t = lake.read_partition(zone, table, d)
            frames.append(to_frame(t.select([c for c in columns if c in t.column_names])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def previous_rows(lake: Lake, zone: str, table: str, ds: str) -> int | None:
    """Row count of the latest committed partition before `ds` (None on the first day)."""
    earlier = [d for d in lake.list_partitions(zone, table, end=ds) if d < ds]
    return lake.commit_info(zone, table, earlier[-1]).rows if earlier else None


def check_has_parent(child: pd.DataFrame, parent: pd.DataFrame, keys: list[str]) -> pd.Series:
    """True where the child row's `keys` occur in `parent` (e.g. a click's exposure)."""
    if any(k not in child.columns for k in keys):
        return pd.Series(True, index=child.index)
    if any(k not in parent.columns for k in keys) or parent.empty:
        return pd.Series(False, index=child.index)
    found = child[keys].merge(parent[keys].dropna().drop_duplicates(), on=keys, how="left", indicator=True)
    return pd.Series((found["_merge"] == "both").to_numpy(), index=child.index)


def check_finite(values: pd.Series) -> pd.Series:
    """True where a numeric value is finite (NaN and +-inf are not)."""
    return pd.Series(np.isfinite(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)), index=values.index)


def check_gmv(frame: pd.DataFrame, rel_tol: float = 1e-6) -> pd.Series:
    """True where gmv == price * quantity (relative tolerance)."""
    if not {"gmv", "price", "quantity"} <= set(frame.columns):
        return pd.Series(True, index=frame.index)
    expected = frame["price"].astype(float) * frame["quantity"].astype(float)
    return (frame["gmv"].astype(float) - expected).abs().le(rel_tol * expected.abs() + 1e-9).fillna(False)


def check_first_of_group(frame: pd.DataFrame, columns: list[str], by: list[str]) -> pd.Series:
    """True for the first row of each distinct `columns` value within `by` (False = a collision)."""
    return ~frame.duplicated(subset=by + columns, keep="first")
