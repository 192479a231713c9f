"""Shared pieces of the Spark jobs: checked extract of raw partitions, load into the
lake, day arithmetic, the query id column.

Every job is extract -> pure `transform(dataframes..., params) -> DataFrame` ->
load. Extract reads committed partitions through `Lake.partition_files` and
checks each one against `growthgr.core.schemas` first: a missing or malformed
partition raises `InputError` naming the table, the partition and the problem,
before anything is written. Load sorts the output by its key, collects it to
Arrow and replaces exactly one `ds` partition with `Lake.write_partition`
(atomic, idempotent; fine at demo scale).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from growthgr.core.catalog import RAW
from growthgr.core.lake import Lake, to_ds
from growthgr.core.schemas import RAW_SCHEMAS
from spark_jobs.session import spark_url

log = logging.getLogger(__name__)

_ARROW_TO_SPARK = {
    pa.int64(): T.LongType(),
    pa.int32(): T.IntegerType(),
    pa.float64(): T.DoubleType(),
    pa.string(): T.StringType(),
    pa.date32(): T.DateType(),
    pa.bool_(): T.BooleanType(),
    pa.timestamp("us", tz="UTC"): T.TimestampType(),
}


class InputError(RuntimeError):
    """A raw input partition is missing or malformed; nothing was written."""


# -- days -------------------------------------------------------------------
def day(ds: str | date, offset: int = 0) -> date:
    """The UTC calendar day `ds + offset` days."""
    return date.fromisoformat(to_ds(ds)) + timedelta(days=offset)


def days(ds: str | date, first: int, last: int) -> list[str]:
    """`ds + first .. ds + last` (inclusive) as `YYYY-MM-DD` strings."""
    return [day(ds, k).isoformat() for k in range(first, last + 1)]


def end_of_day(ds: str | date) -> datetime:
    """The last microsecond of UTC day `ds`: the `event_timestamp` of features built from it."""
    return datetime.combine(day(ds, 1), time(), tzinfo=UTC) - timedelta(microseconds=1)


# -- query id -----------------------------------------------------------------
def query_id_col(text: Column) -> Column:
    """`query_id` as a Spark column expression (equal to `growthgr.core.catalog.query_id(text)`)."""
    return F.conv(F.substring(F.sha2(text, 256), 1, 15), 16, 10).cast("long")


# -- schemas ----------------------------------------------------------------
def spark_schema(schema: pa.Schema) -> T.StructType:
    return T.StructType([T.StructField(f.name, _ARROW_TO_SPARK[f.type], True) for f in schema])


def _file_schema(lake: Lake, url: str) -> pa.Schema:
    if "://" not in url:
        return pq.read_schema(url)
    key = url[len(lake.store.uri) + 1:]
    return pq.read_schema(io.BytesIO(lake.store.get_bytes(key)))


def schema_problem(found: pa.Schema, expected: pa.Schema) -> str | None:
    """What is wrong with `found` against the contract, or None (extra columns are allowed)."""
    have = {f.name: f.type for f in found}
    missing = [f.name for f in expected if f.name not in have]
    if missing:
        return f"missing columns {missing}"
    wrong = [f"{f.name}: {have[f.name]} (expected {f.type})" for f in expected if have[f.name] != f.type]
    return f"wrong column types {wrong}" if wrong else None


def checked_files(lake: Lake, zone: str, table: str, ds: str, expected: pa.Schema) -> list[str]:
    """The committed files of one partition after checking it exists and matches `expected`."""
    where = f"{zone}/{table}/ds={ds}"
    if not lake.exists(zone, table, ds):
        raise InputError(f"{where}: partition is missing (no committed _SUCCESS marker in {lake.store.uri})")
    files = lake.partition_files(zone, table, ds)
    for url in files:
        try:
            problem = schema_problem(_file_schema(lake, url), expected)
        except (OSError, pa.ArrowException) as err:
            problem = f"unreadable Parquet file {url}: {err}"
        if problem:
            raise InputError(f"{where}: malformed partition: {problem}")
    return files


# -- extract ----------------------------------------------------------------
def read_table(
    spark: SparkSession, lake: Lake, table: str, ds_list: Sequence[str], zone: str = "raw",
    schema: pa.Schema | None = None,
) -> DataFrame:
    """The union of the given partitions of one table, checked, with the contract's columns."""
    expected = schema if schema is not None else RAW_SCHEMAS[table]
    files = [f for ds in ds_list for f in checked_files(lake, zone, table, ds, expected)]
    sschema = spark_schema(expected)
    if not files:
        return spark.createDataFrame([], sschema)
    return spark.read.schema(sschema).parquet(*[spark_url(f) for f in files]).select(*expected.names)


def history_days(lake: Lake, table: str, ds: str, lookback: int, zone: str = "raw") -> list[str]:
    """`ds - lookback + 1 .. ds`, clipped at the table's first committed partition.

    Rolling windows that reach before the first day of data use what exists;
    a gap inside the window is not clipped (the extract then raises InputError).
    """
    parts = lake.list_partitions(zone, table, end=ds)
    if not parts:
        raise InputError(f"{zone}/{table}: no committed partitions up to ds={ds}")
    return [d for d in days(ds, -(lookback - 1), 0) if d >= parts[0]]


def catalog_days(lake: Lake, table: str, ds: str) -> list[str]:
    """Every committed partition of a catalog table (`items`, `users`) up to `ds`."""
    parts = lake.list_partitions(*RAW[table], end=ds)
    if not parts:
        raise InputError(f"{RAW[table].zone}/{table}: no committed partitions up to ds={ds}")
    return parts


# -- load -------------------------------------------------------------------
def write_output(lake: Lake, zone: str, table: str, ds: str, df: DataFrame, keys: Sequence[str]) -> int:
    """Replace partition `zone/table/ds` with `df` sorted by `keys`; returns the row count."""
    arrow = df.orderBy(*keys).toArrow()
    lake.write_partition(zone, table, ds, arrow)
    log.info("wrote %s/%s/ds=%s: %d rows", zone, table, ds, arrow.num_rows)
    return arrow.num_rows


def ts_day(col: str = "ts") -> Column:
    """The UTC calendar day of a timestamp column (the session time zone is UTC)."""
    return F.to_date(F.col(col))
