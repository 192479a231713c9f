"""The data lake: date-partitioned Parquet datasets at `<root>/<zone>/<table>/ds=YYYY-MM-DD/`.

One API for a local directory and for `s3://bucket/prefix` (see `foundation.storage`).

Atomic partitions. A write never touches the files of the current version:
  1. the writer takes the partition's lock `ds=.../_LOCK` (owner, write id, time);
  2. data files go to `ds=.../_w<write_id>/part-NNNNN.parquet` (new names);
  3. the commit marker `ds=.../_SUCCESS` (one small JSON object: write id, files, row count,
     time, and the retired writes) is put in a single atomic object write;
  4. files of writes retired more than `grace` ago are deleted, then the lock is released.

Committed files. The marker is the only definition of what a partition holds, and this class
is the only reader of markers: `read_partition` / `read_range` (Lake API, GX), `partition_files`
(Spark), `committed_files` (every partition of a table: dbt gets it as a var, Feast through
`features.offline_store`). Nothing globs the lake, so the files of an uncommitted or crashed
write, or a stray copy of a folder (`ds=2026-02-14 (copy)`), are never read; `unknown_entries`
names such strays so the raw gate can report them.

One writer per partition. A second writer of a partition whose lock is held fails with
`ConcurrentWrite` naming the holder; a lock is stale after `lock_ttl` or when its owner process
(same host) is gone. A lock covers one partition's upload and commit only (seconds here), so
`lock_ttl` defaults to 4 minutes: shorter than the daily DAG's retry delay (5 minutes), so a
retry on another host (Celery, Kubernetes) takes over the lock of a writer that was killed. A
live writer renews its lock every `lock_ttl / 3` (a heartbeat thread), so a long write (a slow S3
upload) keeps it. A free lock is taken with the store's atomic create-if-absent (a hard link
locally, an S3 conditional write), so of two writers racing for it exactly one gets it; a stale
lock is deleted and then raced for the same way. Each writer re-reads the lock just before
committing, and fails if another owner took it over; the marker itself is written by
compare-and-swap against the marker read before that check (`ObjectStore.replace_if`), so a
writer paused past its lock's expiry between check and write cannot replace the new owner's commit.

Readers during an overwrite. A superseded write (and any write directory the marker does not
name: a crashed or concurrent attempt) is only *retired*, with the time it was first seen
retired, and its files are deleted by a later commit once `grace` has passed. A reader that read
the old marker therefore still finds its files, and `read_partition` re-reads the marker once
if a file has gone anyway. Writers never delete another write's files within `grace`, so
`grace` must exceed the longest read and the longest write (default one hour).

Engines without access to the store (DuckDB without its httpfs extension, ibis in Feast) get a
table's committed files as one Arrow table, `read_files`, each row with its partition's `ds`.
Single-writer state that cannot live in an object store (dbt's DuckDB file, Feast's registry and
SQLite online store) goes under `state_dir`: the root of a local lake, a local directory for an
`s3://` lake (`storage.state_dir`, see `foundation.storage.local_state_dir`).

Timestamps are stored as microsecond UTC (`timestamp[us, tz=UTC]`), which is
what Feast/DuckDB 2.x expect.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from foundation.storage import ObjectStore, local_state_dir, new_write_id, open_store

log = logging.getLogger(__name__)

MARKER = "_SUCCESS"
LOCK = "_LOCK"
_PARTITION_RE = re.compile(r"ds=(\d{4}-\d{2}-\d{2})")
_WRITE_RE = re.compile(r"_w([0-9a-zA-Z]+)")
ZONES = ("raw", "truth", "curated", "features", "samples", "models", "validation", "reports")


class PartitionNotFound(FileNotFoundError):
    """The requested partition has no committed version."""


class ConcurrentWrite(RuntimeError):
    """Another writer holds (or took over) the lock of the partition being written."""


class BadDate(ValueError):
    """A logical date that is not a calendar day `YYYY-MM-DD`."""


def parse_ds(value: str | date | datetime) -> date:
    """The logical date of a run, parsed once at the edge (CLI option, Airflow task, step call);
    everything past the edge takes and passes a `datetime.date` (partition keys format it as
    `YYYY-MM-DD`). A bad value raises `BadDate` naming it."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BadDate(f"{value!r} is not a date YYYY-MM-DD") from None


def _iso(ds: str | date | datetime) -> str:
    """The lake boundary's one normaliser: a `ds` given as a date or a `YYYY-MM-DD` string, as the
    partition key spells it (a bad value raises `BadDate`)."""
    return parse_ds(ds).isoformat()


def partition_dir(ds: str | date) -> str:
    """The folder name of one day's partition, `ds=YYYY-MM-DD` (every lake, report, gate and model key)."""
    return f"ds={_iso(ds)}"


def ds_range(start: str | date, end: str | date) -> list[date]:
    """Every day from `start` to `end`, inclusive."""
    first, last = parse_ds(start), parse_ds(end)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def normalise_timestamps(table: pa.Table) -> pa.Table:
    """Cast every timestamp column to microsecond UTC (naive ones are taken as UTC)."""
    fields = []
    for field_ in table.schema:
        if pa.types.is_timestamp(field_.type):
            field_ = field_.with_type(pa.timestamp("us", tz="UTC"))
        fields.append(field_)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table.cast(schema) if schema != table.schema else table


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth Parquet dictionary encoding: strings. Ids, scores and timestamps are
    mostly distinct, so a dictionary only costs time before Parquet falls back to plain (a raw
    candidate partition writes 2.4x faster and 12% smaller this way)."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_dictionary(f.type)]


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
    retired: dict[str, str] = field(default_factory=dict)  # write id -> first seen retired (ISO time)


@dataclass(frozen=True)
class WriteLock:
    """The content of `ds=.../_LOCK`: who writes the partition, since when."""

    write_id: str
    host: str
    pid: int
    acquired_at: str

    def stale(self, ttl: timedelta) -> bool:
        if datetime.now(UTC) - datetime.fromisoformat(self.acquired_at) > ttl:
            return True
        return self.host == socket.gethostname() and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lake:
    """Date-partitioned datasets in an object store (see the module docstring)."""

    def __init__(self, store: ObjectStore, *, grace: timedelta = timedelta(hours=1),
                 lock_ttl: timedelta = timedelta(minutes=4), state_dir: str | Path | None = None):
        self.store = store
        self.grace = grace
        self.lock_ttl = lock_ttl
        self.state_dir = local_state_dir(store.uri, state_dir)

    @classmethod
    def open(cls, root: str, endpoint_url: str | None = None, region: str = "us-east-1", **kwargs) -> Lake:
        return cls(open_store(root, endpoint_url=endpoint_url, region=region), **kwargs)

    @classmethod
    def from_settings(cls, settings) -> Lake:
        storage = settings.storage
        return cls.open(settings.lake_root, storage.s3_endpoint_url, storage.s3_region, state_dir=storage.state_dir)

    # -- keys -------------------------------------------------------------
    @staticmethod
    def partition_key(zone: str, table: str, ds: str | date) -> str:
        return f"{zone}/{table}/{partition_dir(ds)}"

    def staging_key(self, zone: str, table: str, ds: str | date, write_id: str) -> str:
        """Where the files of one write attempt go before they are committed."""
        return f"{self.partition_key(zone, table, ds)}/_w{write_id}"

    # -- writes -----------------------------------------------------------
    def write_partition(
        self, zone: str, table: str, ds: str | date, data: pa.Table | pd.DataFrame, *, rows_per_file: int = 2_000_000
    ) -> Commit:
        """Atomically replace one partition with `data` (see the module docstring)."""
        arrow = _as_arrow(data)
        with self.staged_write(zone, table, ds) as write_id:
            staging = self.staging_key(zone, table, ds, write_id)
            files = []
            for i, offset in enumerate(range(0, max(arrow.num_rows, 1), rows_per_file)):
                buf = io.BytesIO()
                pq.write_table(arrow.slice(offset, rows_per_file), buf, compression="zstd",
                               use_dictionary=dictionary_columns(arrow.schema))
                key = f"{staging}/part-{i:05d}.parquet"
                self.store.put_bytes(key, buf.getvalue())
                files.append(key)
            return self._commit(zone, table, ds, write_id, files, arrow.num_rows)

    @contextmanager
    def staged_write(self, zone: str, table: str, ds: str | date) -> Iterator[str]:
        """Hold the partition's write lock for one attempt and yield its write id: an engine writes
        Parquet files under `staging_key(..., write_id)`, then calls `commit_staged` inside."""
        part, write_id = self.partition_key(zone, table, ds), new_write_id()
        self._acquire(part, write_id)
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(part, write_id, stop), daemon=True,
                                     name=f"lock-heartbeat-{write_id}")
        heartbeat.start()
        try:
            yield write_id
        finally:
            stop.set()
            heartbeat.join()
            self._release(part, write_id)

    def commit_staged(self, zone: str, table: str, ds: str | date, write_id: str, rows: int) -> Commit:
        """Commit the Parquet files written under `staging_key(..., write_id)` (inside `staged_write`)."""
        staging = self.staging_key(zone, table, ds, write_id)
        files = [k for k in self.store.list(staging + "/") if k.endswith(".parquet")]
        return self._commit(zone, table, ds, write_id, files, rows)

    def _commit(self, zone: str, table: str, ds: str | date, write_id: str, files: list[str], rows: int) -> Commit:
        part = self.partition_key(zone, table, ds)
        self.store.sync(files)          # the files are durable before the marker names them
        previous = self._marker_bytes(part)
        self._check_owner(part, write_id)
        now = datetime.now(UTC)
        retired = self._retired(part, write_id, now.isoformat(), previous)
        expired = {w for w, at in retired.items() if now - datetime.fromisoformat(at) >= self.grace}
        commit = Commit(write_id, [f[len(part) + 1:] for f in files], rows, now.isoformat(),
                        {w: at for w, at in retired.items() if w not in expired})
        # Compare-and-swap on the marker read before the owner check: a writer paused after that
        # check, whose lock was taken over and whose partition was committed by the new owner, fails
        # here instead of replacing the newer commit (the takeover window closed at commit).
        if not self.store.replace_if(f"{part}/{MARKER}", json.dumps(asdict(commit)).encode(), previous):
            raise ConcurrentWrite(f"write {write_id} of {part} lost its lock: another write committed the "
                                  f"partition meanwhile; nothing of this write was committed")
        for key in self.store.list(part + "/"):
            if _write_of(part, key) in expired:
                self.store.delete(key)
        return commit

    def _retired(self, part: str, write_id: str, now: str, previous: bytes | None) -> dict[str, str]:
        """Every write of `part` other than `write_id`, with when it was first seen retired
        (`previous`: the partition's marker as read before the commit)."""
        retired = dict(Commit(**json.loads(previous)).retired) if previous else {}
        dirs = {w for k in self.store.list(part + "/") if (w := _write_of(part, k))}
        for other in dirs - {write_id}:
            retired.setdefault(other, now)
        retired.pop(write_id, None)
        return {w: at for w, at in retired.items() if w in dirs}

    # -- the write lock ---------------------------------------------------
    def _lock(self, part: str) -> WriteLock | None:
        try:
            return WriteLock(**json.loads(self.store.get_bytes(f"{part}/{LOCK}")))
        except FileNotFoundError:
            return None

    def _acquire(self, part: str, write_id: str) -> None:
        mine = WriteLock(write_id, socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat())
        for _ in range(3):
            if self.store.put_if_absent(f"{part}/{LOCK}", json.dumps(asdict(mine)).encode()):
                return
            held = self._lock(part)
            if held is not None and not held.stale(self.lock_ttl):
                raise ConcurrentWrite(f"{part} is being written by {held.host} pid {held.pid} (write "
                                      f"{held.write_id}, since {held.acquired_at}); retry when it is done")
            if held is not None:
                log.warning("taking over the stale lock of %s (write %s of %s pid %d, since %s)", part,
                            held.write_id, held.host, held.pid, held.acquired_at)
                self.store.delete(f"{part}/{LOCK}")
        raise ConcurrentWrite(f"{part}: could not take its write lock (other writers keep taking it)")

    def _heartbeat(self, part: str, write_id: str, stop: threading.Event) -> None:
        """Renew the lock of a live write every `lock_ttl / 3` until `stop` (or the lock is lost)."""
        while not stop.wait(self.lock_ttl.total_seconds() / 3):
            try:
                held = self._lock(part)
                if held is None or held.write_id != write_id:
                    return                       # lost: the commit's owner check fails
                renewed = WriteLock(write_id, held.host, held.pid, datetime.now(UTC).isoformat())
                self.store.put_bytes(f"{part}/{LOCK}", json.dumps(asdict(renewed)).encode())
            except Exception:  # noqa: BLE001 -- a failed renewal is retried at the next beat
                log.warning("could not renew the write lock of %s", part, exc_info=True)

    def _check_owner(self, part: str, write_id: str) -> None:
        held = self._lock(part)
        if held is None or held.write_id != write_id:
            who = f"{held.host} pid {held.pid} (write {held.write_id})" if held else "nobody"
            raise ConcurrentWrite(f"write {write_id} of {part} lost its lock: now held by {who}")

    def _release(self, part: str, write_id: str) -> None:
        held = self._lock(part)
        if held is not None and held.write_id == write_id:
            self.store.delete(f"{part}/{LOCK}")

    # -- reads ------------------------------------------------------------
    def _marker_bytes(self, part: str) -> bytes | None:
        try:
            return self.store.get_bytes(f"{part}/{MARKER}")
        except FileNotFoundError:
            return None

    def _marker(self, part: str) -> Commit | None:
        raw = self._marker_bytes(part)
        return Commit(**json.loads(raw)) if raw is not None else None

    def commit_info(self, zone: str, table: str, ds: str | date) -> Commit:
        part = self.partition_key(zone, table, ds)
        commit = self._marker(part)
        if commit is None:
            raise PartitionNotFound(f"partition {part} does not exist in {self.store.uri}")
        return commit

    def exists(self, zone: str, table: str, ds: str | date) -> bool:
        return self.store.exists(f"{self.partition_key(zone, table, ds)}/{MARKER}")

    def partition_files(self, zone: str, table: str, ds: str | date) -> list[str]:
        """URLs of the committed files of one partition (for engines such as Spark)."""
        part = self.partition_key(zone, table, ds)
        return [self.store.url(f"{part}/{f}") for f in self.commit_info(zone, table, ds).files]

    def committed_files(self, zone: str, table: str) -> list[str]:
        """URLs of the committed files of every partition of a table, by `ds` (for dbt and Feast;
        each URL holds `ds=YYYY-MM-DD/`, so engines can take `ds` from the path)."""
        return [url for ds in self.list_partitions(zone, table) for url in self.partition_files(zone, table, ds)]

    def read_files(self, urls: list[str]) -> pa.Table:
        """The files `urls` (from `committed_files` / `partition_files`) as one table, columns
        united by name, with each row's `ds` (string, from its `ds=` folder), like DuckDB's hive
        partitioning of the same list; read through `store.files` (pyarrow). Empty input: no rows."""
        parts = []
        for url in urls:
            t = self.store.files.read_parquet(url)
            parts.append(t.append_column("ds", pa.array([url_ds(url)] * t.num_rows, pa.string())))
        if not parts:
            return pa.table({"ds": pa.array([], pa.string())})
        return pa.concat_tables(parts, promote_options="default")

    def read_partition(self, zone: str, table: str, ds: str | date, columns: list[str] | None = None) -> pa.Table:
        """The committed version of one partition (re-read through the marker once if an
        overwrite retired the files of the version first read)."""
        try:
            return self._read_commit(zone, table, ds, columns)
        except PartitionNotFound:
            raise
        except FileNotFoundError:
            return self._read_commit(zone, table, ds, columns)

    def _read_commit(self, zone: str, table: str, ds: str | date, columns: list[str] | None) -> pa.Table:
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
            parts.append(t.append_column("ds", pa.array([ds.isoformat()] * t.num_rows, pa.string())))
        if not parts:
            raise PartitionNotFound(f"no partitions of {zone}/{table} between {_iso(start)} and {_iso(end)}")
        return pa.concat_tables(parts, promote_options="default")

    def list_partitions(
        self, zone: str, table: str, start: str | date | None = None, end: str | date | None = None
    ) -> list[date]:
        """The committed days of a table, sorted, optionally within [start, end]."""
        prefix = f"{zone}/{table}/"
        found = sorted({parse_ds(ds) for k in self.store.list(prefix)
                        if k.endswith("/" + MARKER) and (ds := _partition_ds(k[len(prefix):-len(MARKER) - 1]))})
        lo, hi = parse_ds(start) if start else date.min, parse_ds(end) if end else date.max
        return [ds for ds in found if lo <= ds <= hi]

    def unknown_entries(self, zone: str, table: str) -> list[str]:
        """Entries of a table's directory that are not a `ds=YYYY-MM-DD` partition (a stray copy,
        a misplaced file): readers ignore them; the raw gate reports them."""
        prefix = f"{zone}/{table}/"
        names = {k[len(prefix):].split("/")[0] for k in self.store.list(prefix)}
        return sorted(n for n in names if not _partition_ds(n))

    def list_tables(self, zone: str) -> list[str]:
        return sorted({k.split("/")[1] for k in self.store.list(f"{zone}/") if "/ds=" in k})

    def write_many(self, zone: str, ds: str | date, tables: dict[str, pa.Table | pd.DataFrame]) -> dict[str, Commit]:
        """Write several tables of one `ds` (each atomically; order is the dict's)."""
        return {name: self.write_partition(zone, name, ds, data) for name, data in tables.items()}


def _partition_ds(name: str) -> str | None:
    """The `ds` of a partition directory name `ds=YYYY-MM-DD` (a real date), else None."""
    if not (m := _PARTITION_RE.fullmatch(name)):
        return None
    try:
        return date.fromisoformat(m.group(1)).isoformat()
    except ValueError:
        return None


def url_ds(url: str) -> str:
    """The `ds` of a committed file's URL (`.../ds=YYYY-MM-DD/_w.../part-N.parquet`)."""
    found = [ds for name in url.split("/") if (ds := _partition_ds(name))]
    if not found:
        raise ValueError(f"{url}: no ds=YYYY-MM-DD folder in the path")
    return found[-1]


def _write_of(part: str, key: str) -> str | None:
    """The write id of a key under `part/_w<write_id>/`, else None (the marker, the lock)."""
    m = _WRITE_RE.fullmatch(key[len(part) + 1:].split("/")[0])
    return m.group(1) if m else None
