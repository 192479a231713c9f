"""Object stores behind the lake and the release store: a local directory or S3 (boto3).

Both offer the same small API over `/`-separated keys: `put_bytes` (atomic for
one object: a reader sees the old bytes or the new ones), `get_bytes`,
`exists`, `list(prefix)`, `delete`. Multi-object atomicity is built on top of
this by the callers (commit markers, pointers that move last).

Every key is checked first (`check_key`): relative, no empty, `.` or `..` segment, so no
key can reach outside the store's root. Only a missing object reads as missing
(`FileNotFoundError`, `exists() is False`); any other error (denied, network) propagates.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


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


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...


class LocalStore:
    """Objects are files under `root`; `put_bytes` writes a temp file then `os.replace`s it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.uri = str(self.root)

    def _path(self, key: str, *, prefix: bool = False) -> Path:
        return self.root / check_key(key, prefix=prefix)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
        import boto3

        self.uri = uri.rstrip("/")
        self.loc = S3Location.parse(uri)
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str, *, prefix: bool = False) -> str:
        check_key(key, prefix=prefix)
        return f"{self.loc.prefix}/{key}" if self.loc.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.loc.bucket, Key=self._key(key), Body=data)

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


def new_write_id() -> str:
    """A unique, sortable-enough id for one write attempt."""
    return uuid.uuid4().hex[:12]
