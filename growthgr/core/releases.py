"""The release store: where validated artifacts are published, locally or on S3.

Layout under the releases root (a directory or `s3://bucket/prefix`):
  <release_id>/<files...>      the artifacts (model, SID trie, FAISS index, pool, metrics)
  <release_id>/manifest.json   written after every artifact: its presence marks a complete release
  CURRENT                      {"release_id": ...}: the serving pointer, moved last
  HISTORY.jsonl                every pointer move (for `rollback`)

A publish uploads every artifact, then the manifest, then moves `CURRENT` in
one atomic object write. A failure at any point before that leaves the
previous release current and intact; a release without a manifest is
incomplete and can never become current.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from growthgr.core.storage import ObjectStore, open_store

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
POINTER = "CURRENT"
HISTORY = "HISTORY.jsonl"


class ReleaseError(RuntimeError):
    """A release is missing, incomplete, or cannot be made current."""


@dataclass
class Release:
    release_id: str
    manifest: dict = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return sorted(self.manifest.get("files", {}))


class ReleaseStore:
    def __init__(self, store: ObjectStore):
        self.store = store

    @classmethod
    def open(cls, root: str, endpoint_url: str | None = None, region: str = "us-east-1") -> ReleaseStore:
        return cls(open_store(root, endpoint_url=endpoint_url, region=region))

    @classmethod
    def from_settings(cls, settings) -> ReleaseStore:
        return cls.open(settings.releases_root, settings.storage.s3_endpoint_url, settings.storage.s3_region)

    def publish(
        self, release_id: str, files: Mapping[str, bytes | Path], manifest: Mapping, *, make_current: bool = True
    ) -> Release:
        """Upload `files`, then `manifest.json`, then (optionally) move `CURRENT`."""
        if self.store.exists(f"{release_id}/{MANIFEST}"):
            raise ReleaseError(f"release {release_id} already exists; releases are immutable")
        sizes = {}
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            self.store.put_bytes(f"{release_id}/{name}", data)
            sizes[name] = len(data)
        full = {
            **manifest,
            "release_id": release_id,
            "files": sizes,
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.store.put_bytes(f"{release_id}/{MANIFEST}", json.dumps(full, indent=2, sort_keys=True).encode())
        if make_current:
            self.set_current(release_id)
        return Release(release_id, full)

    def set_current(self, release_id: str) -> None:
        """Point `CURRENT` at a complete release (one atomic write) and log the move."""
        self.get(release_id)  # raises if missing or incomplete
        previous = self.current_id()
        self.store.put_bytes(POINTER, json.dumps({"release_id": release_id}).encode())
        entry = {"at": datetime.now(UTC).isoformat(), "from": previous, "to": release_id}
        history = self.store.get_bytes(HISTORY) if self.store.exists(HISTORY) else b""
        self.store.put_bytes(HISTORY, history + (json.dumps(entry) + "\n").encode())
        log.info("release pointer moved: %s -> %s", previous, release_id)

    def current_id(self) -> str | None:
        if not self.store.exists(POINTER):
            return None
        return json.loads(self.store.get_bytes(POINTER))["release_id"]

    def get(self, release_id: str) -> Release:
        """A complete release by id, or `current`."""
        if release_id == "current":
            current = self.current_id()
            if current is None:
                raise ReleaseError(f"no current release in {self.store.uri}")
            release_id = current
        try:
            manifest = json.loads(self.store.get_bytes(f"{release_id}/{MANIFEST}"))
        except FileNotFoundError:
            raise ReleaseError(f"release {release_id} is missing or incomplete (no {MANIFEST})") from None
        return Release(release_id, manifest)

    def read(self, release_id: str, name: str) -> bytes:
        release = self.get(release_id)
        if name not in release.manifest["files"]:
            raise ReleaseError(f"release {release.release_id} has no file {name!r}")
        return self.store.get_bytes(f"{release.release_id}/{name}")

    def list(self) -> list[dict]:
        """Every release id with its state: complete/incomplete, current or not."""
        ids = sorted({key.split("/", 1)[0] for key in self.store.list() if "/" in key})
        current = self.current_id()
        rows = []
        for rid in ids:
            complete = self.store.exists(f"{rid}/{MANIFEST}")
            rows.append({"release_id": rid, "complete": complete, "current": rid == current})
        return rows

    def rollback(self) -> str:
        """Make the release that was current before the last move current again."""
        if not self.store.exists(HISTORY):
            raise ReleaseError("no release history: nothing to roll back to")
        moves = [json.loads(line) for line in self.store.get_bytes(HISTORY).decode().splitlines() if line]
        target = moves[-1]["from"]
        if target is None:
            raise ReleaseError(f"release {moves[-1]['to']} was the first release: nothing to roll back to")
        self.set_current(target)
        return target
