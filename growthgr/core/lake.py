"""The data lake: date-partitioned Parquet datasets at `<root>/<zone>/<table>/ds=YYYY-MM-DD/`.

One API for a local directory and for `s3://bucket/prefix` (see `growthgr.core.storage`).

Atomic partitions. A write never touches the files of the previous version:
  1. data files go to `ds=.../_w<write_id>/part-NNNNN.parquet` (new names);
  2. the commit marker `ds=.../_SUCCESS` (one small JSON object: write id,
     files, row count, time) is put in a single atomic object write;
  3. only then are files of older writes deleted.
Readers go through the marker, so they see the old partition or the new one,
never a mix, and a crash before step 2 leaves the old partition intact (its
orphaned files are cleaned by the next successful write). Engines that read
files directly (Spark) take the file list from `partition_files`, and may
write their own output into `staging_key` then call `commit_staged`.

Timestamps are stored as microsecond UTC (`timestamp[us, tz=UTC]`), which is
what Feast/DuckDB 2.x expect.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from growthgr.core.storage import ObjectStore, new_write_id, open_store

MARKER = "_SUCCESS"
_DS_RE = re.compile(r"ds=(\d{4}-\d{2}-\d{2})/")
ZONES = ("raw", "truth", "curated", "features", "samples", "models", "validation", "reports")


class PartitionNotFound(FileNotFoundError):
    """The requested partition has no committed version."""


def to_ds(value: str | date | datetime) -> str:
    """Normalise a logical date to `YYYY-MM-DD` (rejects anything else)."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(value).isoformat()


def ds_range(start: str | date, end: str | date) -> list[str]:
    """Every `ds` from `start` to `end`, inclusive."""
    first, last = date.fromisoformat(to_ds(start)), date.fromisoformat(to_ds(end))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def normalise_timestamps(table: pa.Table) -> pa.Table:
    """Cast every timestamp column to microsecond UTC (naive ones are taken as UTC)."""
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            field = field.with_type(pa.timestamp("us", tz="UTC"))
        fields.append(field)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table.cast(schema) if schema != table.schema else table


def _as_arrow(data: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    return normalise_timestamps(data)


@dataclass(frozen=True)
class Commit:
    write_id: str
    files: list[str]
    rows: int
    written_at: str


class Lake:
    """Date-partitioned datasets in an object store."""

    def __init__(self, store: ObjectStore):
        self.store = store

    @classmethod
    def open(cls, root: str, endpoint_url: str | None = None, region: str = "us-east-1") -> Lake:
        return cls(open_store(root, endpoint_url=endpoint_url, region=region))

    @classmethod
    def from_settings(cls, settings) -> Lake:
        return cls.open(settings.lake_root, settings.storage.s3_endpoint_url, settings.storage.s3_region)

    # -- keys -------------------------------------------------------------
    @staticmethod
    def partition_key(zone: str, table: str, ds: str | date) -> str:
        return f"{zone}/{table}/ds={to_ds(ds)}"

    def staging_key(self, zone: str, table: str, ds: str | date, write_id: str) -> str:
        """Where an engine may write the files of one attempt before `commit_staged`."""
        return f"{self.partition_key(zone, table, ds)}/_w{write_id}"

    # -- writes -----------------------------------------------------------
    def write_partition(
        self, zone: str, table: str, ds: str | date, data: pa.Table | pd.DataFrame, *, rows_per_file: int = 2_000_000
    ) -> Commit:
        """Atomically replace one partition with `data` (see the module docstring)."""
        arrow = _as_arrow(data)
        write_id = new_write_id()
        staging = self.staging_key(zone, table, ds, write_id)
        files = []
        for i, offset in enumerate(range(0, max(arrow.num_rows, 1), rows_per_file)):
            buf = io.BytesIO()
            pq.write_table(arrow.slice(offset, rows_per_file), buf, compression="zstd")
            key = f"{staging}/part-{i:05d}.parquet"
            self.store.put_bytes(key, buf.getvalue())
            files.append(key)
        return self._commit(zone, table, ds, write_id, files, arrow.num_rows)

    def commit_staged(self, zone: str, table: str, ds: str | date, write_id: str, rows: int) -> Commit:
        """Commit the Parquet files an engine wrote under `staging_key(..., write_id)`."""
        staging = self.staging_key(zone, table, ds, write_id)
        files = [k for k in self.store.list(staging + "/") if k.endswith(".parquet")]
        return self._commit(zone, table, ds, write_id, files, rows)

    def _commit(self, zone: str, table: str, ds: str | date, write_id: str, files: list[str], rows: int) -> Commit:
        part = self.partition_key(zone, table, ds)
        commit = Commit(write_id, [f[len(part) + 1:] for f in files], rows, datetime.now(UTC).isoformat())
        self.store.put_bytes(f"{part}/{MARKER}", json.dumps(commit.__dict__).encode())
        for key in self.store.list(part + "/"):
            if not key.endswith(MARKER) and not key.startswith(f"{part}/_w{write_id}/"):
                self.store.delete(key)
        return commit

    # -- reads ------------------------------------------------------------
    def commit_info(self, zone: str, table: str, ds: str | date) -> Commit:
        part = self.partition_key(zone, table, ds)
        try:
            return Commit(**json.loads(self.store.get_bytes(f"{part}/{MARKER}")))
        except FileNotFoundError:
            raise PartitionNotFound(f"partition {part} does not exist in {self.store.uri}") from None

    def exists(self, zone: str, table: str, ds: str | date) -> bool:
        return self.store.exists(f"{self.partition_key(zone, table, ds)}/{MARKER}")

    def partition_files(self, zone: str, table: str, ds: str | date) -> list[str]:
        """URLs of the committed files of one partition (for engines such as Spark)."""
        part = self.partition_key(zone, table, ds)
        return [self.store.url(f"{part}/{f}") for f in self.commit_info(zone, table, ds).files]

    def read_partition(self, zone: str, table: str, ds: str | date, columns: list[str] | None = None) -> pa.Table:
        part = self.partition_key(zone, table, ds)
        tables = [
            pq.read_table(io.BytesIO(self.store.get_bytes(f"{part}/{f}")), columns=columns)
            for f in self.commit_info(zone, table, ds).files
        ]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def read_range(
        self, zone: str, table: str, start: str | date, end: str | date, columns: list[str] | None = None
    ) -> pa.Table:
        """Committed partitions with start <= ds <= end, concatenated, with a `ds` column."""
        parts = []
        for ds in self.list_partitions(zone, table, start, end):
            t = self.read_partition(zone, table, ds, columns)
            parts.append(t.append_column("ds", pa.array([ds] * t.num_rows, pa.string())))
        if not parts:
            raise PartitionNotFound(f"no partitions of {zone}/{table} between {to_ds(start)} and {to_ds(end)}")
        return pa.concat_tables(parts, promote_options="default")

    def list_partitions(
        self, zone: str, table: str, start: str | date | None = None, end: str | date | None = None
    ) -> list[str]:
        """The committed `ds` values of a table, sorted, optionally within [start, end]."""
        keys = self.store.list(f"{zone}/{table}/")
        found = sorted({m.group(1) for k in keys if k.endswith("/" + MARKER) and (m := _DS_RE.search(k))})
        lo = to_ds(start) if start else "0000-00-00"
        hi = to_ds(end) if end else "9999-99-99"
        return [ds for ds in found if lo <= ds <= hi]

    def list_tables(self, zone: str) -> list[str]:
        return sorted({k.split("/")[1] for k in self.store.list(f"{zone}/") if "/ds=" in k})

    def write_many(self, zone: str, ds: str | date, tables: dict[str, pa.Table | pd.DataFrame]) -> dict[str, Commit]:
        """Write several tables of one `ds` (each atomically; order is the dict's)."""
        return {name: self.write_partition(zone, name, ds, data) for name, data in tables.items()}

