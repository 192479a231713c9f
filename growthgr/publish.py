"""Publishing a daily release: pool + model + FAISS index + metrics + manifest.

A release is published only when every gate of the run passed (the caller
hands over the gate results; a failed or missing gate publishes nothing and
the previous release stays current). The release id is derived from the
content (`ds=<ds>-<digest>`), so re-publishing identical inputs is a no-op
(idempotent re-runs), while a changed input makes a new immutable release.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from growthgr.core.releases import Release, ReleaseStore

log = logging.getLogger(__name__)


class PublishRefused(RuntimeError):
    """A gate failed (or none ran): nothing was published."""


@dataclass
class ReleaseInputs:
    """Everything that goes into one release. `files` are extra artifacts by name."""

    ds: str
    pool: pd.DataFrame                          # item_id, score, rank, ...
    item_ids: np.ndarray                        # (N,) int64, ids of the pool items' embeddings
    embeddings: np.ndarray                      # (N, D) float32
    metrics: Mapping[str, object]
    input_partitions: Sequence[str]             # e.g. ["raw/exposures/ds=...", ...]
    sid_version: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


def faiss_index_bytes(item_ids: np.ndarray, embeddings: np.ndarray) -> bytes:
    """An inner-product FAISS index over L2-normalised vectors, keyed by item id."""
    import faiss

    vecs = np.ascontiguousarray(embeddings, dtype=np.float32)
    faiss.normalize_L2(vecs)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    index.add_with_ids(vecs, np.asarray(item_ids, dtype=np.int64))
    return faiss.serialize_index(index).tobytes()


def load_faiss_index(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def code_version() -> str:
    """The git commit of the code, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def release_files(inputs: ReleaseInputs) -> dict[str, bytes]:
    files = {
        "pool.parquet": _parquet_bytes(inputs.pool),
        "index.faiss": faiss_index_bytes(inputs.item_ids, inputs.embeddings),
        "metrics.json": json.dumps(inputs.metrics, indent=2, sort_keys=True, default=float).encode(),
    }
    files.update(inputs.files)
    return files


def content_digest(files: Mapping[str, bytes], manifest: Mapping) -> str:
    h = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode())
    for name in sorted(files):
        h.update(name.encode())
        h.update(hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:10]


def publish_release(
    store: ReleaseStore, inputs: ReleaseInputs, gates: Mapping[str, bool], config_digest: str
) -> Release:
    """Publish `inputs` if every gate passed; move `CURRENT` last. Idempotent per content."""
    failed = sorted(name for name, ok in gates.items() if not ok)
    if not gates or failed:
        raise PublishRefused(f"not publishing ds={inputs.ds}: gates failed: {failed or ['<no gate ran>']}")
    files = release_files(inputs)
    manifest = {
        "ds": inputs.ds,
        "code_version": code_version(),
        "config_digest": config_digest,
        "input_partitions": sorted(inputs.input_partitions),
        "sid_version": inputs.sid_version,
        "metrics": dict(inputs.metrics),
        "gates": dict(gates),
        "pool_size": int(len(inputs.pool)),
    }
    release_id = f"ds={inputs.ds}-{content_digest(files, {k: v for k, v in manifest.items() if k != 'code_version'})}"
    existing = {row["release_id"]: row for row in store.list()}
    if existing.get(release_id, {}).get("complete"):
        log.info("release %s already published with identical content", release_id)
        if store.current_id() != release_id:
            store.set_current(release_id)
        return store.get(release_id)
    return store.publish(release_id, files, manifest)
