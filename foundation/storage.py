"""Object stores behind the lake and the release store: a local directory or S3 (boto3).

Both offer the same small API over `/`-separated keys: `put_bytes` (atomic for
one object: a reader sees the old bytes or the new ones), `get_bytes`,
`exists`, `list(prefix)`, `delete`. Multi-object atomicity is built on top of
this by the callers (commit markers, pointers that move last).

Every key is checked first (`check_key`): relative, no empty, `.` or `..` segment, so no
key can reach outside the store's root. Only a missing object reads as missing
(`FileNotFoundError`, `exists() is False`); any other error (denied, network) propagates.

Engines that read lake files by URL in other processes (Spark executors, the dbt and Feast
readers of an `s3://` lake) use a `FileReader` (`store.files`): plain settings, no client and no
credentials, so it can be pickled to an executor; there pyarrow's `S3FileSystem` takes the
credentials from AWS's default chain (environment, shared config files, instance role).
`local_state_dir` names the local directory for what cannot live in an object store (single-writer
files: dbt's DuckDB file, Feast's registry and SQLite online store).
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq


class InvalidKey(ValueError):
    """A key that could name something outside the store (absolute, `..`, empty segment)."""


def check_key(key: str, *, prefix: bool = False) -> str:
    """`key` if it is a valid relative `/`-separated key, else `InvalidKey`.

    A `prefix` (of `list`, `url`) may also be empty or end with one `/`.
    """
    body = key[:-1] if prefix and key.endswith("/") else key
    if prefix and body == "":
        return key
    if any(seg in ("", ".", "..") for seg in body.split("/")):  # also catches "/abs" and "a//b"
        raise InvalidKey(f"invalid store key {key!r}: keys are relative, with no empty, '.' or '..' segment")
    return key


@dataclass(frozen=True)
class FileReader:
    """Reads one lake file by URL in any process: a local path directly, `s3://bucket/key`
    through pyarrow's `S3FileSystem` at `endpoint_url` (None: AWS) in `region`.

    Holds settings only (picklable, shipped to Spark executors); credentials come from AWS's
    default chain in the reading process and are never part of it.
    """

    endpoint_url: str | None = None
    region: str = "us-east-1"

    def filesystem(self):
        """pyarrow's `S3FileSystem` for this endpoint (one per process and endpoint)."""
        return _s3_filesystem(self.endpoint_url, self.region)

    def open(self, url: str):
        """A readable random-access file for `url` (close it, or use it in `with`)."""
        if not url.startswith("s3://"):
            return pa.OSFile(url, "rb")
        return self.filesystem().open_input_file(url[len("s3://"):])

    def read_parquet(self, url: str, columns: list[str] | None = None,
                     row_groups: list[int] | None = None) -> pa.Table:
        """The Parquet file at `url` (only `columns` and `row_groups`, when given)."""
        with self.open(url) as f:
            if row_groups is None:
                return pq.read_table(f, columns=columns, partitioning=None)
            return pq.ParquetFile(f).read_row_groups(row_groups, columns=columns)

    def read_footer(self, url: str) -> tuple[int, pq.FileMetaData]:
        """The size in bytes and the footer metadata of the Parquet file at `url` (an `s3://`
        file: ranged reads of its tail only)."""
        with self.open(url) as f:
            return f.size(), pq.read_metadata(f)

    def read_schema(self, url: str) -> pa.Schema:
        """The Arrow schema in the footer of the Parquet file at `url`."""
        return self.read_footer(url)[1].schema.to_arrow_schema()


# Every S3 wait is bounded: connecting, and each request (boto3 and pyarrow), with boto3's standard
# retry mode (exponential backoff) for throttling and transient errors.
S3_CONNECT_TIMEOUT_S = 5.0
S3_REQUEST_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 5


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint_url: str | None, region: str):
    """pyarrow's `S3FileSystem` at `endpoint_url` (path-style addressing, as MinIO/moto need)."""
    from pyarrow import fs

    bounded = {"connect_timeout": S3_CONNECT_TIMEOUT_S, "request_timeout": S3_REQUEST_TIMEOUT_S,
               "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS)}
    if not endpoint_url:
        return fs.S3FileSystem(region=region, **bounded)
    scheme, _, host = endpoint_url.partition("://")
    return fs.S3FileSystem(region=region, scheme=scheme, endpoint_override=host.rstrip("/"),
                           force_virtual_addressing=False, **bounded)


def s3_client(endpoint_url: str | None, region: str):
    """A boto3 S3 client whose waits are bounded (`S3_*` above)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_REQUEST_TIMEOUT_S,
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}))


class ObjectStore(Protocol):
    uri: str
    files: FileReader

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...
    def sync(self, keys: list[str]) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def replace_if(self, key: str, data: bytes, expected: bytes | None) -> bool: ...


TMP_MAX_AGE_S = 3600.0    # a `.tmp-*` file this old is a crashed writer's: the next write beside it removes it


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (its entries: a rename, a new file or folder in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_temp(folder: Path, data: bytes) -> str:
    """A `.tmp-*` file in `folder` holding `data`, fsynced (removed again if writing fails)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


class LocalStore:
    """Objects are files under `root`; `put_bytes` writes a temp file, fsyncs it, `os.replace`s it
    and fsyncs the directory (and the parents of folders it created), so a put that returned
    survives a crash. Temp files older than `TMP_MAX_AGE_S` that a crashed writer left beside the
    object are removed by the next put into that folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.uri = str(self.root)
        self.files = FileReader()

    def _path(self, key: str, *, prefix: bool = False) -> Path:
        return self.root / check_key(key, prefix=prefix)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        created = [d for d in (path.parent, *path.parent.parents) if d.is_relative_to(self.root) and not d.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        for d in reversed(created):          # the new folders' entries in their parents
            fsync_path(d.parent)
        tmp = _durable_temp(path.parent, data)
        try:
            os.replace(tmp, path)
            fsync_path(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._sweep_temp(path.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object only if there is none (atomic: a hard link fails on an existing name);
        whether this call created it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _durable_temp(path.parent, data)
        try:
            os.link(tmp, path)
            fsync_path(path.parent)
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

    def replace_if(self, key: str, data: bytes, expected: bytes | None) -> bool:
        """Compare-and-swap: write `data` only if the object holds `expected` (None: only if there
        is none); whether it wrote. Atomic among `replace_if` callers on this host: they hold an
        exclusive `flock` on the object's folder while comparing and renaming."""
        if expected is None:
            return self.put_if_absent(key, data)
        path = self._path(key)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            if not path.exists() or path.read_bytes() != expected:
                return False
            tmp = _durable_temp(path.parent, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            os.fsync(folder)
            return True
        finally:
            os.close(folder)                 # releases the flock

    def sync(self, keys: list[str]) -> None:
        """Make objects an engine wrote itself (Spark, pyarrow) durable: fsync each file and its folder."""
        paths = [self._path(k) for k in keys]
        for path in paths:
            fsync_path(path)
        for folder in sorted({p.parent for p in paths}):
            fsync_path(folder)

    @staticmethod
    def _sweep_temp(folder: Path) -> None:
        cutoff = time.time() - TMP_MAX_AGE_S
        for stale in folder.glob(".tmp-*"):
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()
            except FileNotFoundError:       # another writer's sweep got there first
                pass

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such object")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        # walk only the deepest directory the prefix names, not the whole root
        check_key(prefix, prefix=True)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and "/.tmp-" not in "/" + k)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self._path(key, prefix=True))


@dataclass
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        return cls(bucket, prefix.strip("/"))


class S3Store:
    """Objects in `s3://bucket/prefix` through boto3 (endpoint URL configurable, e.g. moto/MinIO)."""

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str = "us-east-1", client=None):
        self.uri = uri.rstrip("/")
        self.loc = S3Location.parse(uri)
        self.files = FileReader(endpoint_url, region)
        self.client = client or s3_client(endpoint_url, region)

    def _key(self, key: str, *, prefix: bool = False) -> str:
        check_key(key, prefix=prefix)
        return f"{self.loc.prefix}/{key}" if self.loc.prefix else key

    def sync(self, keys: list[str]) -> None:
        """Nothing to do: an S3 object is durable once its PUT returned."""

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.loc.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object only if there is none (S3 conditional write, `If-None-Match: *`);
        whether this call created it."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.loc.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def replace_if(self, key: str, data: bytes, expected: bytes | None) -> bool:
        """Compare-and-swap: write `data` only if the object holds `expected` (None: only if there
        is none); whether it wrote. The write is conditional on the ETag of the object that was
        compared (`If-Match`), so a write by anyone in between makes it fail."""
        from botocore.exceptions import ClientError

        if expected is None:
            return self.put_if_absent(key, data)
        try:
            current = self.client.get_object(Bucket=self.loc.bucket, Key=self._key(key))
        except ClientError as err:
            if _missing(err):
                return False
            raise
        if current["Body"].read() != expected:
            return False
        try:
            self.client.put_object(Bucket=self.loc.bucket, Key=self._key(key), Body=data, IfMatch=current["ETag"])
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.loc.bucket, Key=self._key(key))["Body"].read()
        except ClientError as err:
            if _missing(err):
                raise FileNotFoundError(f"{self.url(key)}: no such object") from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.loc.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if _missing(err):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        strip = len(self.loc.prefix) + 1 if self.loc.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.loc.bucket, Prefix=self._key(prefix, prefix=True)
        )
        return sorted(obj["Key"][strip:] for page in pages for obj in page.get("Contents", []))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.loc.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        return f"{self.uri}/{check_key(key, prefix=True)}"


def _missing(err) -> bool:
    """Whether a botocore `ClientError` says the object is absent (and nothing worse).

    A HEAD carries no error body, so its bare 404 (missing key, or missing bucket) counts too.
    """
    return err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def open_store(uri: str, endpoint_url: str | None = None, region: str = "us-east-1") -> ObjectStore:
    """A `LocalStore` for a path, an `S3Store` for `s3://bucket/prefix`."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=endpoint_url, region=region)
    return LocalStore(uri)


def local_state_dir(uri: str, configured: str | Path | None = None) -> Path:
    """The local directory for the single-writer state of the store at `uri`: `configured` when
    given, else the root itself for a local store, else `.growthgr-state/<bucket>/<prefix>` under
    the working directory for `s3://bucket/prefix`."""
    if configured:
        return Path(configured).resolve()
    if not uri.startswith("s3://"):
        return Path(uri).resolve()
    loc = S3Location.parse(uri)
    return Path(".growthgr-state", loc.bucket, *[p for p in loc.prefix.split("/") if p]).resolve()


def new_write_id() -> str:
    """A unique, sortable-enough id for one write attempt."""
    return uuid.uuid4().hex[:12]
