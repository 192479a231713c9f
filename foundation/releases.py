"""The release store: where validated artifacts are published, locally or on S3.

Layout under the releases root (a directory or `s3://bucket/prefix`):
  <release_id>/<files...>      the artifacts (model, SID trie, FAISS index, pool, metrics)
  <release_id>/manifest.json   written after every artifact: its presence marks a complete release;
                               each file's size and SHA-256, checked whenever a file is read
  CURRENT                      {"release_id": ...}: the serving pointer, moved last
  HISTORY.jsonl                every pointer move {id, at, action, from, to}, appended before the move,
                               then its outcome {id, at, outcome: moved | failed} appended after it

A publish uploads every artifact, then the manifest, then moves `CURRENT` in
one atomic object write. A failure at any point before that leaves the
previous release current and intact; a release without a manifest is
incomplete and can never become current.

`CURRENT` never moves backwards by itself: a publish (`advance`) moves it only to a
release whose `ds` is >= the current one's and that was not rolled back. Only an
explicit `promote` (`set_current`) or `rollback` moves it anywhere else.

Each move appends its history entry *before* writing `CURRENT` and its outcome after: `moved`
once `CURRENT` was written, `failed` when the write raised. The history is append-only (lines
are added under the mover lock, never edited; an object store has no append, so the object is
rewritten with the new line at its end). A mover killed between the entry and its outcome leaves
an entry without one; `rollback` then infers it (the next entry's `from`, or `CURRENT` itself,
is that entry's `to` exactly when the move happened). Rollback walks back only over releases
that really were current, skipping every release that a rollback that really happened moved away
from (until it is promoted again).

One mover at a time, across processes and hosts: every move (publish's `advance`, `promote`,
`rollback`) runs while holding `_MOVE_LOCK`, created with the store's atomic create-if-absent (a
hard link locally, an S3 conditional write), so two publishes cannot both pass the `ds` check and
land out of order, and no history entry is lost to a concurrent read-append-write. A lock older
than `MOVE_LOCK_TTL` (or of a dead process on this host) is a crashed mover's and is taken over.
A corrupt `CURRENT` is reported as such; `promote` rewrites it (the repair).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from foundation.lake import WriteLock
from foundation.storage import ObjectStore, open_store

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
POINTER = "CURRENT"
HISTORY = "HISTORY.jsonl"
MOVE_LOCK = "_MOVE_LOCK"
MOVE_LOCK_TTL = timedelta(minutes=2)   # a move takes well under a second
MOVE_WAIT_S = 60.0                     # how long a mover waits for another's lock


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
        """Upload `files`, then `manifest.json`, then (optionally) `advance` `CURRENT` to it."""
        _check_id(release_id)
        if self.store.exists(f"{release_id}/{MANIFEST}"):
            raise ReleaseError(f"release {release_id} already exists; releases are immutable")
        sizes, digests = {}, {}
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            self.store.put_bytes(f"{release_id}/{name}", data)
            sizes[name], digests[name] = len(data), hashlib.sha256(data).hexdigest()
        full = {
            **manifest,
            "release_id": release_id,
            "files": sizes,
            "sha256": digests,
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.store.put_bytes(f"{release_id}/{MANIFEST}", json.dumps(full, indent=2, sort_keys=True).encode())
        if make_current:
            self.advance(release_id)
        return Release(release_id, full)

    def advance(self, release_id: str) -> bool:
        """Make a freshly published release current unless that moves `CURRENT` backwards.

        Moves only if the release's `ds` is >= the current release's (a release without a
        `ds` always moves) and it was never rolled back. Returns whether `CURRENT` moved.
        """
        with self._mover():
            return self._advance(release_id)

    def _advance(self, release_id: str) -> bool:
        new, current = self.get(release_id), self._current_or_none()
        if current == release_id:
            return False
        if release_id in self._rolled_back(self.history(), current):
            log.info("not serving %s: it was rolled back (`promote` it to serve it again)", release_id)
            return False
        if current is not None:
            new_ds, current_ds = release_ds(new), release_ds(self.get(current))
            if new_ds and current_ds and new_ds < current_ds:
                log.info("published %s; %s (ds=%s) stays current", release_id, current, current_ds)
                return False
        self._move(release_id, "publish")
        return True

    def set_current(self, release_id: str) -> None:
        """Point `CURRENT` at any complete release (an explicit `promote`, backwards too); rewrites a
        corrupt `CURRENT`."""
        with self._mover():
            self._move(self.get(release_id).release_id, "promote")

    def _move(self, release_id: str, action: str) -> None:
        """Log the move in `HISTORY.jsonl`, then point `CURRENT` at the (complete) release."""
        self.get(release_id)  # raises if missing or incomplete
        previous = self._current_or_none()
        if previous == release_id:
            return
        move_id = uuid.uuid4().hex
        self._append({"id": move_id, "at": _now(), "action": action, "from": previous, "to": release_id})
        try:
            self.store.put_bytes(POINTER, json.dumps({"release_id": release_id}).encode())
        except Exception as err:
            # the write may have landed although it raised (a timeout after the store applied it)
            try:
                landed = self.current_id() == release_id
            except Exception:  # noqa: BLE001 -- unknown: no outcome recorded, inferred later
                raise err from None
            if not landed:
                self._append_outcome(move_id, "failed", f"{type(err).__name__}: {err}"[:200])
                raise
            log.warning("writing CURRENT raised (%s), but it names %s: the move happened", err, release_id)
        self._append_outcome(move_id, "moved")
        log.info("release pointer moved (%s): %s -> %s", action, previous, release_id)

    def _append(self, line: dict) -> None:
        """One line at the end of `HISTORY.jsonl` (called under the mover lock)."""
        history = self.store.get_bytes(HISTORY) if self.store.exists(HISTORY) else b""
        self.store.put_bytes(HISTORY, history + (json.dumps(line) + "\n").encode())

    def _append_outcome(self, move_id: str, outcome: str, error: str | None = None) -> None:
        """The outcome line of move `move_id`; a failure to write it is logged, not raised (the move's
        outcome is then inferred, see the module docstring)."""
        try:
            self._append({"id": move_id, "at": _now(), "outcome": outcome, **({"error": error} if error else {})})
        except Exception:  # noqa: BLE001 -- the pointer write decided the move; its record is best effort
            log.exception("could not record the outcome (%s) of release move %s", outcome, move_id)

    def current_id(self) -> str | None:
        """The release `CURRENT` names (None before the first publish); a corrupt `CURRENT` is a
        `ReleaseError` that says how to repair it."""
        if not self.store.exists(POINTER):
            return None
        raw = self.store.get_bytes(POINTER)
        try:
            release_id = json.loads(raw)["release_id"]
            _check_id(release_id)
            return release_id
        except (ValueError, KeyError, TypeError, ReleaseError):
            raise ReleaseError(f"{self.store.url(POINTER)} is corrupt ({raw[:60]!r}): `growthgr releases promote "
                               f"<release_id>` rewrites it") from None

    def _current_or_none(self) -> str | None:
        """`current_id`, with a corrupt `CURRENT` read as none (a move then rewrites it)."""
        try:
            return self.current_id()
        except ReleaseError as err:
            log.warning("%s", err)
            return None

    @contextmanager
    def _mover(self) -> Iterator[None]:
        """Hold `_MOVE_LOCK` (see the module docstring) while moving `CURRENT`."""
        mine = WriteLock(uuid.uuid4().hex, socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat())
        deadline = time.monotonic() + MOVE_WAIT_S
        while not self.store.put_if_absent(MOVE_LOCK, json.dumps(asdict(mine)).encode()):
            held = self._move_lock()
            if held is not None and held.stale(MOVE_LOCK_TTL):
                log.warning("taking over the release mover lock of %s pid %d (since %s)", held.host, held.pid,
                            held.acquired_at)
                self.store.delete(MOVE_LOCK)
            elif time.monotonic() > deadline:
                raise ReleaseError(f"another mover holds {self.store.url(MOVE_LOCK)} ({held}): retry when it is done")
            else:
                time.sleep(0.02)
        try:
            yield
        finally:
            held = self._move_lock()
            if held is not None and held.write_id == mine.write_id:
                self.store.delete(MOVE_LOCK)

    def _move_lock(self) -> WriteLock | None:
        try:
            return WriteLock(**json.loads(self.store.get_bytes(MOVE_LOCK)))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):                      # a torn lock object: a crashed mover's
            return WriteLock("?", "?", -1, datetime.min.replace(tzinfo=UTC).isoformat())

    def get(self, release_id: str) -> Release:
        """A complete release by id, or `current`."""
        if release_id == "current":
            current = self.current_id()
            if current is None:
                raise ReleaseError(f"no current release in {self.store.uri}")
            release_id = current
        _check_id(release_id)
        try:
            manifest = json.loads(self.store.get_bytes(f"{release_id}/{MANIFEST}"))
        except FileNotFoundError:
            raise ReleaseError(f"release {release_id} is missing or incomplete (no {MANIFEST})") from None
        return Release(release_id, manifest)

    def read(self, release_id: str, name: str) -> bytes:
        """A release file, verified against its manifest (size, and SHA-256 where the manifest has
        it): a truncated or altered file is a `ReleaseError`, never served."""
        release = self.get(release_id)
        if name not in release.manifest["files"]:
            raise ReleaseError(f"release {release.release_id} has no file {name!r}")
        data = self.store.get_bytes(f"{release.release_id}/{name}")
        size, digest = release.manifest["files"][name], release.manifest.get("sha256", {}).get(name)
        if len(data) != size:
            raise ReleaseError(f"release {release.release_id}: {name} has {len(data)} bytes, its manifest says {size} "
                               f"(truncated or replaced)")
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise ReleaseError(f"release {release.release_id}: {name} does not match its manifest's SHA-256")
        return data

    def list(self) -> list[dict]:
        """Every release id with its state: complete/incomplete, current or not."""
        ids = sorted({key.split("/", 1)[0] for key in self.store.list() if "/" in key})
        current = self.current_id()
        rows = []
        for rid in ids:
            complete = self.store.exists(f"{rid}/{MANIFEST}")
            rows.append({"release_id": rid, "complete": complete, "current": rid == current})
        return rows

    def published(self, ds: str) -> list[str]:
        """The complete releases of day `ds` (their manifest's `ds`; only ids naming that day are read)."""
        ids = sorted({key.split("/", 1)[0] for key in self.store.list() if key.endswith(f"/{MANIFEST}")})
        return [rid for rid in ids if release_ds(Release(rid)) == ds and release_ds(self.get(rid)) == ds]

    def rollback(self) -> str:
        """Make current the release served before the current one, skipping rolled-back releases.

        Repeated rollbacks keep walking back (never forward to a release they rolled back).
        """
        with self._mover():
            moves, current = self.history(), self.current_id()
            if not moves:
                raise ReleaseError("no release history: nothing to roll back to")
            skip = self._rolled_back(moves, current) | {current}
            for rid in reversed(self._served(moves, current)):
                if rid not in skip and self.store.exists(f"{rid}/{MANIFEST}"):
                    self._move(rid, "rollback")
                    return rid
        raise ReleaseError(f"no release served before {current} that was not rolled back: nothing to roll back to")

    def served(self) -> list[str]:
        """Every release that really was current, in the order it became current (the current one last)."""
        moves, current = self.history(), self.current_id()
        if not moves:
            return [current] if current else []
        return self._served(moves, current)

    def history(self) -> list[dict]:
        """Every logged move in order, each with its `outcome`: `moved`, `failed`, or None (its mover
        stopped before recording one; see `_happened`)."""
        if not self.store.exists(HISTORY):
            return []
        moves, by_id = [], {}
        for line in self.store.get_bytes(HISTORY).decode().splitlines():
            if not line:
                continue
            record = json.loads(line)
            if "action" in record:
                moves.append(move := {**record, "outcome": None})
                by_id[record.get("id")] = move
            elif record.get("id") in by_id:
                by_id[record["id"]]["outcome"] = record["outcome"]
        return moves

    @staticmethod
    def _happened(moves: list[dict], current: str | None) -> list[dict]:
        """The logged moves whose pointer write happened, in order: those recorded `moved`; for one
        without an outcome, inferred (a move that never happened is followed by an entry, or a
        `CURRENT`, that does not start from its `to`)."""
        if not moves:
            return []
        after = [m.get("from") for m in moves[1:]] + [current]
        return [m for m, nxt in zip(moves, after, strict=True)
                if m.get("outcome") == "moved" or (m.get("outcome") is None and nxt == m["to"])]

    @classmethod
    def _served(cls, moves: list[dict], current: str | None) -> list[str]:
        """The releases that really were current, in order."""
        return [m["to"] for m in cls._happened(moves, current)]

    @classmethod
    def _rolled_back(cls, moves: list[dict], current: str | None) -> set[str]:
        """Releases a rollback that happened moved away from and no later `promote` brought back."""
        out: set[str] = set()
        for m in cls._happened(moves, current):
            if m.get("action") == "rollback" and m.get("from"):
                out.add(m["from"])
            elif m.get("action") == "promote":
                out.discard(m["to"])
        return out


def _now() -> str:
    return datetime.now(UTC).isoformat()


def release_ds(release: Release) -> str | None:
    """The data date of a release: its manifest's `ds`, else the `ds=YYYY-MM-DD` of its id."""
    if release.manifest.get("ds"):
        return str(release.manifest["ds"])
    match = re.match(r"ds=(\d{4}-\d{2}-\d{2})", release.release_id)
    return match.group(1) if match else None


def _check_id(release_id: str) -> None:
    """A release id is one key segment (it names a folder of the releases root)."""
    if not release_id or "/" in release_id or release_id in (".", "..", POINTER, HISTORY):
        raise ReleaseError(f"invalid release id {release_id!r}: expected one path segment like ds=YYYY-MM-DD-<hash>")
