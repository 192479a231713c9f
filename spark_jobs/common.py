"""Shared pieces of the Spark jobs: checked extract of raw partitions, load into the
lake, day arithmetic, the query id column.

Every job is extract -> pure `transform(dataframes..., params) -> DataFrame` ->
load. Extract reads committed partitions through `Lake.partition_files` and
checks each one against `foundation.schemas` first: a missing or malformed
partition raises `InputError` naming the table, the partition and the problem,
before anything is written. A local lake is read with `spark.read.parquet`; an
`s3://` lake through the lake reader (`spark_jobs.lake_source`, pyarrow in
the executors), or through Hadoop's S3A connector when the session has it
(`spark.s3_connector`, see `read_connector`). Load sorts the output by its key, collects it to
Arrow and replaces exactly one `ds` partition with `Lake.write_partition`
(atomic, idempotent; fine at demo scale).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from foundation.catalog import RAW
from foundation.lake import Lake, PartitionNotFound
from foundation.schemas import RAW_SCHEMAS
from foundation.storage import FileReader
from spark_jobs import lake_source
from spark_jobs.lake_source import Footer
from spark_jobs.session import S3_CONNECTOR_CONF, spark_url

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
def day(ds: date, offset: int = 0) -> date:
    """The UTC calendar day `ds + offset` days."""
    return ds + timedelta(days=offset)


def days(ds: date, first: int, last: int) -> list[date]:
    """`ds + first .. ds + last` (inclusive)."""
    return [day(ds, k) for k in range(first, last + 1)]


def end_of_day(ds: date) -> datetime:
    """The last microsecond of UTC day `ds`: the `event_timestamp` of features built from it."""
    return datetime.combine(day(ds, 1), time(), tzinfo=UTC) - timedelta(microseconds=1)


# -- query id -----------------------------------------------------------------
def query_id_col(text: Column) -> Column:
    """`query_id` as a Spark column expression (equal to `foundation.catalog.query_id(text)`)."""
    return F.conv(F.substring(F.sha2(text, 256), 1, 15), 16, 10).cast("long")


# -- schemas ----------------------------------------------------------------
def spark_schema(schema: pa.Schema) -> T.StructType:
    return T.StructType([T.StructField(f.name, _ARROW_TO_SPARK[f.type], True) for f in schema])


def schema_problem(found: pa.Schema, expected: pa.Schema) -> str | None:
    """What is wrong with `found` against the contract, or None (extra columns are allowed)."""
    have = {f.name: f.type for f in found}
    missing = [f.name for f in expected if f.name not in have]
    if missing:
        return f"missing columns {missing}"
    wrong = [f"{f.name}: {have[f.name]} (expected {f.type})" for f in expected if have[f.name] != f.type]
    return f"wrong column types {wrong}" if wrong else None


@functools.lru_cache(maxsize=8192)
def _footer(files: FileReader, url: str) -> tuple[Footer, pa.Schema]:
    """`Footer.read`, once per process and file: a committed file never changes (every write goes
    to new names under its own `_w<write id>/` folder), and jobs of one step, and the days of a
    backfill, read the same raw partitions again (an `s3://` footer costs two ranged reads)."""
    return Footer.read(files, url)


def checked_footers(lake: Lake, zone: str, table: str, ds: date, expected: pa.Schema) -> list[Footer]:
    """The footers of the committed files of one partition, after checking it exists and
    every file matches `expected` (an `s3://` file: only its footer is fetched)."""
    where = f"{zone}/{table}/ds={ds}"
    try:
        urls = lake.partition_files(zone, table, ds)          # one read of the marker, no existence probe
    except PartitionNotFound:
        raise InputError(f"{where}: partition is missing (no committed _SUCCESS marker in {lake.store.uri})") from None
    footers = []
    for url in urls:
        try:
            footer, found = _footer(lake.store.files, url)
            problem = schema_problem(found, expected)
        except (OSError, pa.ArrowException) as err:
            problem = f"unreadable Parquet file {url}: {err}"
        if problem:
            raise InputError(f"{where}: malformed partition: {problem}")
        footers.append(footer)
    return footers


def checked_files(lake: Lake, zone: str, table: str, ds: date, expected: pa.Schema) -> list[str]:
    """The committed files of one partition after checking it exists and matches `expected`."""
    return [f.url for f in checked_footers(lake, zone, table, ds, expected)]


# -- extract ----------------------------------------------------------------
def read_table(
    spark: SparkSession, lake: Lake, table: str, ds_list: Sequence[date], zone: str = "raw",
    schema: pa.Schema | None = None,
) -> DataFrame:
    """The union of the given partitions of one table, checked, with the contract's columns."""
    expected = schema if schema is not None else RAW_SCHEMAS[table]
    footers = [f for ds in ds_list for f in checked_footers(lake, zone, table, ds, expected)]
    sschema = spark_schema(expected)
    if not footers:
        return spark.createDataFrame([], sschema)
    if read_connector(spark, lake) == "arrow":
        return lake_source.read_files(spark, footers, sschema, lake.store.files).select(*expected.names)
    return spark.read.schema(sschema).parquet(*[spark_url(f.url) for f in footers]).select(*expected.names)


S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"


def read_connector(spark: SparkSession, lake: Lake) -> str:
    """How the session reads `lake`'s files: `files` (Spark's own reader: a local lake), `s3a`, or
    `arrow` (the lake reader, `spark_jobs.lake_source`). For an `s3://` lake `spark.s3_connector` decides; `auto` takes
    S3A when its class loads in the driver, else `arrow`."""
    if not lake.store.uri.startswith("s3://"):
        return "files"
    choice = spark.conf.get(S3_CONNECTOR_CONF, "auto")
    if choice == "auto":
        choice = "s3a" if _loadable(spark, S3A_CLASS) else "arrow"
    return choice


def _loadable(spark: SparkSession, class_name: str) -> bool:
    """Whether the driver JVM can load `class_name` (False without a JVM, e.g. Spark Connect)."""
    try:
        return bool(spark.sparkContext._jvm.org.apache.spark.util.Utils.classIsLoadable(class_name))
    except Exception:  # noqa: BLE001 - no JVM gateway or no such helper: treat as absent
        return False


def history_days(lake: Lake, table: str, ds: date, lookback: int, zone: str = "raw") -> list[date]:
    """`ds - lookback + 1 .. ds`, clipped at the table's first committed partition.

    Rolling windows that reach before the first day of data use what exists;
    a gap inside the window is not clipped (the extract then raises InputError).
    """
    parts = lake.list_partitions(zone, table, end=ds)
    if not parts:
        raise InputError(f"{zone}/{table}: no committed partitions up to ds={ds}")
    first = parts[0]
    return [d for d in days(ds, -(lookback - 1), 0) if d >= first]


def catalog_days(lake: Lake, table: str, ds: date) -> list[date]:
    """Every committed partition of a catalog table (`items`, `users`) up to `ds`."""
    parts = lake.list_partitions(*RAW[table], end=ds)
    if not parts:
        raise InputError(f"{RAW[table].zone}/{table}: no committed partitions up to ds={ds}")
    return parts


# -- load -------------------------------------------------------------------
def write_output(lake: Lake, zone: str, table: str, ds: date, df: DataFrame, keys: Sequence[str]) -> int:
    """Replace partition `zone/table/ds` with `df` sorted by `keys`; returns the row count."""
    arrow = df.orderBy(*keys).toArrow()
    lake.write_partition(zone, table, ds, arrow)
    log.info("wrote %s/%s/ds=%s: %d rows", zone, table, ds, arrow.num_rows)
    return arrow.num_rows


def ts_day(col: str = "ts") -> Column:
    """The UTC calendar day of a timestamp column (the session time zone is UTC)."""
    return F.to_date(F.col(col))
