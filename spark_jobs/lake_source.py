"""The lake's committed Parquet files as a Spark DataFrame, read by pyarrow in the executors:
how the jobs read an `s3://` lake with what pyspark ships (no S3A connector).

    footers = [Footer.read(files, url) for url in committed_urls]       # driver
    df = read_files(spark, footers, struct, files)                       # executors read

Reading is a `mapInArrow` over one row per planned input partition (`spark.range` with as many
partitions as the plan), not a Python data source: a data source costs every read two short-lived
Python planning processes (`create_data_source`, `plan_data_source_read`), about a third of a
second of CPU each, tens of them per daily Spark step.

The driver hands over the files the lake's markers name (`spark_jobs.common.checked_footers`),
never a path to list, so the read sees exactly the committed partitions. It also plans the
input partitions the way Spark's own file source would for the same files (`plan`: files split
at `maxSplitBytes`, a row group belonging to the split holding its midpoint, splits packed
"next fit decreasing" with the open cost; the `spark.sql.files.*` settings of the session), so
every task reads the same rows in the same order as `spark.read.parquet` on a local lake, and
the jobs' floating-point sums come out bit for bit the same. An executor task reads its splits
with `foundation.storage.FileReader` (a local path directly, `s3://` through
`pyarrow.fs.S3FileSystem`; credentials from the executor's AWS default chain: environment or
instance role, none travel with the task) and yields Arrow record batches with only the
schema's columns, cast to the schema's types.

Departs from `spark.read.parquet`: no predicate pushdown (the jobs filter after the read) and no
size statistics for the optimizer (Spark assumes a large relation). Executors must import this
module (the installed `growthgr` distribution on their Python path, as the standalone-cluster
test's workers have).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from foundation.storage import FileReader

Split = tuple[str, list[int]]          # (file URL, indices of the row groups this split reads)


@dataclass(frozen=True)
class Footer:
    """What planning needs of one Parquet file: URL, size, and per row group the offset of its
    first page and its compressed size."""

    url: str
    size: int
    row_groups: tuple[tuple[int, int], ...]

    @classmethod
    def read(cls, files: FileReader, url: str) -> tuple[Footer, pa.Schema]:
        """The footer of `url`, and its Arrow schema."""
        size, meta = files.read_footer(url)
        groups = tuple(_row_group_extent(meta.row_group(i)) for i in range(meta.num_row_groups))
        return cls(url, size, groups), meta.schema.to_arrow_schema()


def _row_group_extent(rg) -> tuple[int, int]:
    """(start, compressed size) of a row group, as parquet-mr computes them for split filtering:
    start = the first column chunk's dictionary page (if it comes first) or first data page."""
    first = rg.column(0)
    start = first.data_page_offset
    if first.has_dictionary_page and 0 <= first.dictionary_page_offset < start:
        start = first.dictionary_page_offset
    return start, sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))


@dataclass(frozen=True)
class FileConf:
    """The `spark.sql.files.*` settings Spark's file source plans with."""

    max_partition_bytes: int = 128 * 1024 * 1024
    open_cost: int = 4 * 1024 * 1024
    min_partitions: int = 1
    max_partitions: int | None = None

    @classmethod
    def of(cls, spark: SparkSession) -> FileConf:
        """The session's settings (defaults without a JVM, e.g. under Spark Connect)."""
        try:
            conf = spark._jsparkSession.sessionState().conf()
            min_parts = conf.filesMinPartitionNum()
            max_parts = conf.filesMaxPartitionNum()
            return cls(int(conf.filesMaxPartitionBytes()), int(conf.filesOpenCostInBytes()),
                       int(min_parts.get() if min_parts.isDefined() else spark._jsparkSession.leafNodeDefaultParallelism()),
                       int(max_parts.get()) if max_parts.isDefined() else None)
        except Exception:  # noqa: BLE001 - no JVM: Spark's defaults
            return cls(min_partitions=spark.sparkContext.defaultParallelism)


def max_split_bytes(footers: Sequence[Footer], conf: FileConf) -> int:
    """Spark's `FilePartition.maxSplitBytes`."""
    total = sum(f.size + conf.open_cost for f in footers)
    return min(conf.max_partition_bytes, max(conf.open_cost, total // conf.min_partitions))


def splits(footer: Footer, max_split: int) -> list[tuple[Split, int]]:
    """The file cut at every `max_split` bytes (Parquet is splittable), each split with its
    length; a row group goes to the split that holds its midpoint (parquet-mr's range filter)."""
    out = []
    for offset in range(0, footer.size, max_split):
        length = min(max_split, footer.size - offset)
        groups = [i for i, (start, size) in enumerate(footer.row_groups) if offset <= start + size // 2 < offset + length]
        out.append(((footer.url, groups), length))
    return out


def pack(sized: Sequence[tuple[Split, int]], max_split: int, open_cost: int) -> list[list[Split]]:
    """Spark's "next fit decreasing": splits by length, longest first (stable), into partitions
    closed when the next split would pass `max_split` (each split also costs `open_cost`)."""
    partitions: list[list[Split]] = []
    current: list[Split] = []
    size = 0
    for split, length in sorted(sized, key=lambda s: -s[1]):
        if current and size + length > max_split:
            partitions.append(current)
            current, size = [], 0
        current.append(split)
        size += length + open_cost
    return partitions + ([current] if current else [])


def plan(footers: Sequence[Footer], conf: FileConf) -> list[list[Split]]:
    """The input partitions Spark's file source would read these files in, in order."""
    max_split = max_split_bytes(footers, conf)
    sized = [s for f in footers for s in splits(f, max_split)]
    parts = pack(sized, max_split, conf.open_cost)
    if conf.max_partitions is not None and len(parts) > conf.max_partitions:
        total = sum(length + conf.open_cost for _, length in sized)
        parts = pack(sized, -(-total // conf.max_partitions), conf.open_cost)
    return parts


def read_splits(parts: list[list[Split]], files: FileReader, schema: T.StructType,
                batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The executor side of `read_files`: each input row is the index of a planned partition,
    whose splits are read in order as Arrow batches with only the schema's columns, cast to its types."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)
    for batch in batches:
        for index in batch.column(0).to_pylist():
            for url, groups in parts[index]:
                if groups:
                    table = files.read_parquet(url, columns=arrow_schema.names, row_groups=groups)
                    yield from table.select(arrow_schema.names).cast(arrow_schema).to_batches()


def read_files(spark: SparkSession, footers: Sequence[Footer], schema: T.StructType, files: FileReader) -> DataFrame:
    """A DataFrame over exactly the files of `footers`, with `schema`, read in the executors by
    pyarrow in the partitions Spark's file source would use (`plan`): `spark.range` puts the index
    of planned partition i alone in Spark partition i, and `mapInArrow` reads it there."""
    parts = plan(footers, FileConf.of(spark))
    if not parts:
        return spark.createDataFrame([], schema)
    return spark.range(0, len(parts), 1, len(parts)).mapInArrow(functools.partial(read_splits, parts, files, schema),
                                                                 schema)
