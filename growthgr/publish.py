"""Publishing a daily release: pool + model + FAISS index + metrics + manifest.

A release is published only when every data gate of the run passed (the caller
hands over the gate results) and the model gate passes (`model_gate`: finite
weights and metrics, and the candidate's model scored no worse than the serving
release's on the same held-out rows, beyond `gates.publish_max_regression`;
recorded with its figures and data in the manifest under `model_gate`).
A failed or missing gate publishes nothing and the previous release stays
current. The release id is derived from the content (`ds=<ds>-<digest>`), so
re-publishing identical inputs is a no-op (idempotent re-runs), while a changed
input makes a new immutable release. Publishing never demotes a newer release:
`CURRENT` moves only to a ds >= the serving one (`ReleaseStore.advance`).

`publish` is the daily pipeline's publish step (`growthgr.steps`): it reads the day's stored gate
results (`stored_gates`), gathers the artifacts those gates validated and hands them to
`publish_release`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from foundation import catalog
from foundation.config import Settings
from foundation.lake import Lake
from foundation.releases import Release, ReleaseStore, release_ds

log = logging.getLogger(__name__)


class PublishRefused(RuntimeError):
    """A gate failed (or none ran): nothing was published."""


class ModelGateFailed(PublishRefused):
    """The model gate failed (non-finite weights or metrics, or a quality regression)."""


# The model whose held-out quality the gate compares, and its figure (lower is better): MSE on y.
MODEL, METRIC = "itemltv.safetensors", "mse"
# Scores checkpoints (bytes by name: "candidate", "serving") on one set of held-out rows; returns
# {"scores": {name: {METRIC: ...}}, **what the rows are} (`models.itemltv.pipeline.score_checkpoints`).
Scorer = Callable[[Mapping[str, bytes]], Mapping]

# The day's MultiGR in the lake (`catalog.model_key("multigr", ds, file)`) -> its name in a release.
MULTIGR = "multigr"
MULTIGR_FILES = {"model.safetensors": "multigr.safetensors", "config.json": "multigr_config.json"}
# The day's dense retriever (checkpoint + FAISS index of the catalog) -> its names in a release
# (the names `growthgr.serve.DENSE_FILES` loads).
DENSE = "dense"
DENSE_FILES = {"model.safetensors": "dense.safetensors", "config.json": "dense_config.json",
               "index.faiss": "dense_index.faiss"}


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
    # manifest entries that record how the release was checked (e.g. the MultiGR gate's comparison with
    # the serving release); outside the content digest, like `model_gate`, so a re-run is idempotent
    records: Mapping[str, object] = field(default_factory=dict)


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
            cwd=Path(__file__).resolve().parent, timeout=30,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
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


def _non_finite(value, path: str = "") -> list[str]:
    """Paths of the non-finite numbers in a JSON-like value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else [path or "<value>"]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def _tensors(data: bytes) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load

        return load(data)
    except KeyError:  # a dtype numpy lacks (bf16, fp8): torch reads it
        from safetensors.torch import load

        return {k: v.float().numpy() for k, v in load(data).items()}


def held_out_scores(store: ReleaseStore, ds: str, files: Mapping[str, bytes], serving: Release | None,
                    score: Scorer) -> dict:
    """`score` the candidate's `MODEL` and, when comparable, the serving release's on the same rows.

    The serving model is left out (`serving_skipped` says why) when nothing serves, the serving
    release has no `MODEL`, or it is of a later day than `ds` (a backfill: its training cohorts may
    include the candidate's held-out ones)."""
    blobs, skipped = {"candidate": files[MODEL]} if MODEL in files else {}, None
    if serving is None or MODEL not in serving.files:
        skipped = "no serving model"
    elif (release_ds(serving) or ds) > ds:
        skipped = f"serving release is of a later day ({release_ds(serving)}): it may have trained on these rows"
    else:
        blobs["serving"] = store.read(serving.release_id, MODEL)
    scored = dict(score(blobs)) if blobs else {"scores": {}}
    return {**scored, "serving_release": serving.release_id if serving else None, "serving_skipped": skipped}


def model_gate(files: Mapping[str, bytes], metrics: Mapping, held_out: Mapping, max_regression: float) -> dict:
    """Check a candidate release's models; returns the record for the manifest's `model_gate`.

    `finite_weights`: every tensor of every `*.safetensors` file is finite.
    `finite_metrics`: every number in `metrics` is finite.
    `quality`: on the same held-out rows (`held_out`, from `held_out_scores`: the figures by model,
    the serving release, and what the rows are), the candidate's `METRIC` is finite and at most
    the serving model's times (1 + `max_regression`); passes without a comparison when no serving
    model was scored. Raises `ModelGateFailed` naming the failed checks.
    """
    bad_tensors = [f"{name}:{key}" for name, data in sorted(files.items()) if name.endswith(".safetensors")
                   for key, t in sorted(_tensors(data).items())
                   if np.issubdtype(t.dtype, np.floating) and not np.isfinite(t).all()]
    bad_metrics = _non_finite(metrics)
    scores = held_out.get("scores", {})
    candidate = scores.get("candidate", {}).get(METRIC)
    baseline = scores.get("serving", {}).get(METRIC)
    limit = None if baseline is None else baseline * (1 + max_regression)
    quality = {
        "metric": METRIC, "candidate": candidate, "serving": baseline, "max_regression": max_regression,
        "limit": limit, "passed": candidate is not None and math.isfinite(candidate)
        and (limit is None or candidate <= limit), **{k: v for k, v in held_out.items() if k != "scores"},
        "figures": dict(scores),
    }
    checks = {
        "finite_weights": {"passed": not bad_tensors, "non_finite": bad_tensors},
        "finite_metrics": {"passed": not bad_metrics, "non_finite": bad_metrics},
        "quality": quality,
    }
    failed = [name for name, check in checks.items() if not check["passed"]]
    if failed:
        details = {name: {k: v for k, v in checks[name].items() if k != "passed"} for name in failed}
        raise ModelGateFailed(f"model gate failed: {', '.join(failed)}: {details}")
    return {"passed": True, "checks": checks}


def publish_release(
    store: ReleaseStore, inputs: ReleaseInputs, gates: Mapping[str, bool], config_digest: str, *,
    max_regression: float, score: Scorer,
) -> Release:
    """Publish `inputs` if every data gate and the model gate pass; idempotent per content.

    `score` measures the candidate's and the serving release's `MODEL` on the same held-out rows
    (see `held_out_scores`); it runs only when a new release is about to be published.

    `CURRENT` moves last, and only forward (see `ReleaseStore.advance`): a backfill or re-run
    of an older day publishes its release and leaves the newer one current.
    """
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
        store.advance(release_id)
        return store.get(release_id)
    manifest.update(inputs.records)
    serving = store.get("current") if store.current_id() else None
    held_out = held_out_scores(store, inputs.ds, files, serving, score)
    manifest["model_gate"] = model_gate(files, inputs.metrics, held_out, max_regression)
    return store.publish(release_id, files, manifest)


# -- the daily publish step: the day's gated artifacts -> `publish_release` ------------------------
def publish(settings: Settings, ds: date, gates: tuple[str, ...]) -> dict:
    """Release the day's pool, ItemLTV checkpoint, FAISS index of pool items, metrics, SID table and
    trie of the pool, the day's MultiGR (`multigr.safetensors` + `multigr_config.json`, exactly
    the bytes `gate_multigr` validated; its held-out figures under `metrics.multigr`), and the day's
    dense retriever (`dense.safetensors`, `dense_config.json`, `dense_index.faiss`, the bytes
    `gate_dense` validated; index kind, nprobe / efSearch and measured recall under `metrics.dense`).

    Behind the data gates, the MultiGR gate and the ItemLTV model gate (the day's checkpoint and the
    serving release's, scored on the day's ItemLTV test cohorts: `score_checkpoints`); refused before
    reading any artifact when a stored gate result is missing, failed or stale. `current` in the result
    is the serving release afterwards (an older day's release does not demote a newer one).
    """
    from models.itemltv.pipeline import score_checkpoints
    from models.itemltv.train import FULL, checkpoint_key, latest_checkpoint_ds
    from models.tokenizer import embed, sids

    lake = Lake.from_settings(settings)
    gates = stored_gates(lake, ds, gates)
    if not all(gates.values()):
        raise PublishRefused(f"not publishing ds={ds}: gates failed: {sorted(n for n, ok in gates.items() if not ok)}")
    multigr_files, multigr_metrics, multigr_gate = _gated_multigr(lake, ds, settings.multigr.daily.max_recall_drop)
    dense_files, dense_metrics = _gated_dense(lake, ds)
    frame = pool_frame(lake, ds)
    emb = embed.read_embeddings(lake, ds).set_index("item_id").loc[frame["item_id"]]
    _, sid_rows = sids.latest_snapshot(lake, ds)
    trie = sids.build_trie(sid_rows, settings.tokenizer.codebook_size, frame["item_id"].to_numpy())
    metrics = json.loads(lake.store.get_bytes(catalog.report_key("itemltv", ds)))
    ckpt = checkpoint_key(FULL, latest_checkpoint_ds(lake, FULL, ds))
    inputs = ReleaseInputs(
        ds=f"{ds}",
        pool=frame,
        item_ids=frame["item_id"].to_numpy(),
        embeddings=embed.embedding_matrix(emb.reset_index()),
        metrics={**metrics, MULTIGR: multigr_metrics, DENSE: dense_metrics},
        input_partitions=_inputs_of(lake, ds),
        sid_version=str(sid_rows["sid_version"].iloc[0]),
        files={
            "itemltv.safetensors": lake.store.get_bytes(ckpt),
            "sid_trie.npz": _trie_bytes(trie),
            "item_sids.parquet": _parquet_bytes(sid_rows[sid_rows["item_id"].isin(frame["item_id"])]),
            **multigr_files,
            **dense_files,
        },
        records={"multigr_gate": multigr_gate},
    )
    store = ReleaseStore.from_settings(settings)
    release = publish_release(store, inputs, gates, settings.digest(),
                              max_regression=settings.gates.publish_max_regression,
                              score=lambda blobs: score_checkpoints(settings.itemltv, lake, ds, blobs))
    quality = release.manifest.get("model_gate", {}).get("checks", {}).get("quality")
    return {"release_id": release.release_id, "pool_size": len(frame), "current": store.current_id(),
            "quality": quality and {k: quality[k] for k in ("candidate", "serving", "limit", "serving_release")}}


def _gated_multigr(lake: Lake, ds: date, max_recall_drop: float) -> tuple[dict[str, bytes], dict, dict]:
    """The release files of the day's MultiGR, checked against the objects its stored gate validated;
    its metrics and the gate's record (`models.multigr.gate.release_record`)."""
    from models.multigr.gate import release_record

    files = _gated_files(lake, ds, MULTIGR, MULTIGR_FILES)
    report = json.loads(lake.store.get_bytes(catalog.report_key(MULTIGR, ds, "daily.json")))
    metrics, gate = release_record(report, max_recall_drop, _gate_result(lake, ds, MULTIGR)["passed"])
    return files, metrics, gate


def _gated_files(lake: Lake, ds: date, name: str, names: dict[str, str]) -> dict[str, bytes]:
    """{release name: bytes} of the day's `models/<name>/` objects, each checked to be the object the
    stored `<name>` gate validated (`PublishRefused` otherwise)."""
    gated = {w["key"]: w["sha256"] for w in _gate_result(lake, ds, name).get("writes", []) if "key" in w}
    files = {}
    for lake_name, release_name in names.items():
        key = catalog.model_key(name, ds, lake_name)
        blob = lake.store.get_bytes(key)
        if _sha256(blob) != gated.get(key):
            raise PublishRefused(f"not publishing ds={ds}: {key} is not the object gate_{name} validated")
        files[release_name] = blob
    return files


def _gated_dense(lake: Lake, ds: date) -> tuple[dict[str, bytes], dict]:
    """The release files of the day's dense retriever (the objects `gate_dense` validated) and its
    metrics (`models.dense.gate.release_metrics`)."""
    from models.dense.gate import release_metrics

    files = _gated_files(lake, ds, DENSE, DENSE_FILES)
    return files, release_metrics(json.loads(files[DENSE_FILES["config.json"]]))



def _inputs_of(lake: Lake, ds: date) -> list[str]:
    from foundation.schemas import RAW_TABLES

    return [lake.partition_key("raw", t, ds) for t in RAW_TABLES if lake.exists("raw", t, ds)]


def _trie_bytes(trie) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trie.npz"
        trie.save(path)
        return path.read_bytes()


def stored_gates(lake: Lake, ds: date, names: tuple[str, ...]) -> dict[str, bool]:
    """Pass/fail of the day's stored gate results. A result counts only if it passed and every
    partition (or object) it validated is still at the write it validated (`writes`): a missing or
    running result, or a partition rewritten (or deleted) since its gate, counts as failed."""
    out = {}
    for name in names:
        result = _gate_result(lake, ds, name)
        stale = [w for w in result.get("writes", []) if not _still_committed(lake, w)]
        if stale:
            log.warning("gate %s ds=%s validated writes that are no longer current: %s", name, ds, stale)
        out[name] = bool(result.get("passed")) and bool(result.get("writes")) and not stale
    return out


def _gate_result(lake: Lake, ds: date, name: str) -> dict:
    key = catalog.gate_result_key(ds, name)
    return json.loads(lake.store.get_bytes(key)) if lake.store.exists(key) else {}


def _still_committed(lake: Lake, write: dict) -> bool:
    """Whether the partition `write` names is still committed at that write id (an object of the
    lake's store, such as a model checkpoint: still holds the bytes of that sha256)."""
    if "key" in write:
        return lake.store.exists(write["key"]) and _sha256(lake.store.get_bytes(write["key"])) == write["sha256"]
    if not lake.exists(write["zone"], write["table"], write["ds"]):
        return False
    return lake.commit_info(write["zone"], write["table"], write["ds"]).write_id == write["write_id"]



def pool_frame(lake: Lake, ds: date) -> pd.DataFrame:
    return lake.read_partition(*catalog.NEW_ITEM_POOL, ds).to_pandas()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
