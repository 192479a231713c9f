"""Reading lake partitions into pandas for GX, and the cross-table checks GX cannot express.

Each `check_*` function is pure: it returns one boolean column (True = the row is fine) that a
suite then expects to be all True. Their names start with `_check_` so schema rules can tell
them from the table's own columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.lake import Lake

_NULLABLE_INTS = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
# What a corrupt, truncated or missing file (or a garbled commit marker) raises when read.
READ_ERRORS = (OSError, ValueError, pa.ArrowException)


# (lake uri, zone, table, ds, columns) -> the columns of that partition, inside `shared_reads()`
_SHARED: ContextVar[dict | None] = ContextVar("shared_reads", default=None)


class Unreadable(Exception):
    """A committed partition whose files (or commit marker) cannot be read; the message names it."""


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping ints as ints when they hold nulls (so a null is a null, not a type change).
    Invalid UTF-8 in a string column becomes U+FFFD (the `text_control_chars` rule flags it)."""
    return _utf8_repaired(table).to_pandas(types_mapper=_NULLABLE_INTS.get)


def _utf8_repaired(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_string(f.type):
            try:
                table.column(i).validate(full=True)
            except pa.ArrowInvalid:
                raw = table.column(i).cast(pa.binary()).to_pylist()
                fixed = [None if v is None else v.decode("utf-8", "replace") for v in raw]
                table = table.set_column(i, f, pa.array(fixed, pa.string()))
    return table


def read_table(lake: Lake, zone: str, table: str, ds: date) -> pd.DataFrame:
    """One committed partition as pandas; raises `Unreadable` naming it when it cannot be read."""
    try:
        return to_frame(lake.read_partition(zone, table, ds))
    except READ_ERRORS as err:
        raise Unreadable(f"cannot read {zone}/{table}/ds={ds}: {type(err).__name__}: {err}"[:300]) from None


def read(lake: Lake, zone: str, table: str, ds: date) -> pd.DataFrame | None:
    """One committed partition as pandas, or None when it does not exist (`Unreadable` if corrupt)."""
    return read_table(lake, zone, table, ds) if lake.exists(zone, table, ds) else None


def read_days(lake: Lake, zone: str, table: str, ds: date, lookback: int, columns: list[str]) -> pd.DataFrame:
    """`columns` of the partitions ds-lookback..ds that exist (empty frame if none)."""
    days = [ds - timedelta(days=back) for back in range(lookback + 1)]
    return _concat(lake, zone, table, [d for d in days if lake.exists(zone, table, d)], columns)


def read_up_to(lake: Lake, zone: str, table: str, ds: date, columns: list[str], *, before: bool = False
               ) -> pd.DataFrame:
    """`columns` of every committed partition up to ds (inclusive, or strictly `before` it)."""
    days = lake.list_partitions(zone, table, end=ds - timedelta(days=1) if before else ds)
    return _concat(lake, zone, table, days, columns)


@contextmanager
def shared_reads() -> Iterator[None]:
    """Inside, `read_days` / `read_up_to` read each partition's columns once: one gate looks up the
    same catalog partitions (every item, user and request id up to ds) for several tables. The
    partitions a gate reads are not rewritten while it runs (a rewrite changes their write id,
    and publish refuses the gate's result), so the memo lives for one gate only."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _columns(lake: Lake, zone: str, table: str, ds: date | str, columns: list[str]) -> pd.DataFrame:
    memo, key = _SHARED.get(), (lake.store.uri, zone, table, f"{ds}", tuple(columns))
    if memo is not None and key in memo:
        return memo[key]
    frame = read_table(lake, zone, table, ds)
    frame = frame[[c for c in columns if c in frame.columns]]
    if memo is not None:
        memo[key] = frame
    return frame


def _concat(lake: Lake, zone: str, table: str, days: list[date] | list[str], columns: list[str]) -> pd.DataFrame:
    frames = [_columns(lake, zone, table, d, columns) for d in days]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def read_partitions(lake: Lake, zone: str, table: str, days: list, columns: list[str]) -> list[pd.DataFrame]:
    """`columns` of each committed partition of `days`, one frame per day (a column a day lacks, e.g.
    after a schema fault that day, is all-null there)."""
    out = []
    for d in days:
        try:
            out.append(lake.read_partition(zone, table, d, columns=columns).to_pandas())
        except READ_ERRORS:
            try:
                out.append(lake.read_partition(zone, table, d).to_pandas().reindex(columns=columns))
            except READ_ERRORS as err:
                raise Unreadable(f"cannot read {zone}/{table}/ds={d}: {err}") from None
    return out


def earlier_partitions(lake: Lake, zone: str, table: str, ds: date) -> list[str]:
    return lake.list_partitions(zone, table, end=ds - timedelta(days=1))


def previous_rows(lake: Lake, zone: str, table: str, ds: date) -> int | None:
    """Row count of the latest committed partition before `ds` (None on the first day)."""
    earlier = earlier_partitions(lake, zone, table, ds)
    if not earlier:
        return None
    try:
        return lake.commit_info(zone, table, earlier[-1]).rows
    except READ_ERRORS as err:
        raise Unreadable(f"cannot read the commit marker of {zone}/{table}/ds={earlier[-1]}: {err}") from None


def medians_by(frame: pd.DataFrame, key: str, column: str) -> pd.Series:
    """Median numeric `column` per `key` (int64 index), rows with a null key or value left out."""
    if not {key, column} <= set(frame.columns):
        return pd.Series(dtype=float)
    values = pd.DataFrame({key: pd.to_numeric(frame[key], errors="coerce"),
                           column: pd.to_numeric(frame[column], errors="coerce")}).dropna()
    return values.groupby(values[key].astype("int64"))[column].median()


def relative_median_change(today: pd.DataFrame, before: pd.DataFrame, key: str, column: str) -> pd.Series:
    """|today's median / earlier median - 1| of `column` for each `key` present on both sides with a
    positive earlier median (index: key), e.g. how far each item's price moved."""
    now, then = medians_by(today, key, column), medians_by(before, key, column)
    then = then[then > 0]
    both = now.index.intersection(then.index)
    return (now[both] / then[both] - 1).abs()


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


def check_in(values: pd.Series, allowed) -> pd.Series:
    """True where the value occurs in `allowed` (a reference id set) or is null (not_null's job)."""
    return values.isin(allowed) | values.isna()


def check_not_in(values: pd.Series, earlier) -> pd.Series:
    """True where the value does not occur in `earlier` (a key already used on a previous day)."""
    return ~values.isin(earlier)
