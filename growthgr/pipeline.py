"""The steps of one daily run, as plain functions `(settings, ds) -> summary dict`.

The Airflow DAG (`dags/growthgr_daily.py`), the CLI (`growthgr pipeline ...`)
and the tests call exactly these functions; the DAG only wires them. Each
step is idempotent for its `ds` (it overwrites its own partitions), raises on
failure, and never publishes anything itself except `publish`, which checks
the stored gate results of the day first.

Order of one day (DESIGN.md section 2):
  gate raw -> spark jobs -> dbt build -> gate labels/features -> feast materialise
  -> training set -> embeddings + SID assignment -> gate sids -> ItemLTV train/evaluate -> pool
  -> gate pool -> publish
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pandas as pd

from growthgr.core import catalog
from growthgr.core.config import Settings
from growthgr.core.lake import Lake, to_ds

log = logging.getLogger(__name__)

# The gates whose stored results must have passed for `publish` to release `ds`.
PUBLISH_GATES = ("raw", "features", "sids", "pool")


class GateFailed(RuntimeError):
    """A GX gate failed; the message is the gate's readable summary."""


def simulate_day(settings: Settings, ds: str) -> dict:
    """Advance the simulated platform by one day, to `ds` (the day's raw logs "arrive").

    Idempotent and append-only: a day already simulated is left untouched (raw
    data is never overwritten); a day that is not the next one is an error.
    """
    from growthgr.simulator.run import next_start, simulate

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    following = next_start(lake, settings.simulator)
    if ds < following:
        return {"simulated": ds, "skipped": "already simulated"}
    if ds > following:
        raise ValueError(f"cannot simulate {ds}: the simulated platform is at {following} (run the days between first)")
    summary = simulate(lake, settings.simulator, days=1, progress=False)
    return {"simulated": ds, "rows": summary.rows, "seconds": round(summary.seconds, 2)}


def gate(settings: Settings, dataset: str, ds: str) -> dict:
    """Run the GX suites of `dataset` on `ds`; raise `GateFailed` with the summary on failure."""
    from expectations.gate import validate

    result = validate(settings.gates_config(), Lake.from_settings(settings), dataset, to_ds(ds))
    if not result.passed:
        raise GateFailed(result.summary())
    return {"gate": dataset, "expectations": result.n_expectations, "docs": result.data_docs_uri}


def spark(settings: Settings, ds: str) -> dict:
    """Every Spark job for `ds` (labels only once a cohort can close)."""
    from spark_jobs.jobs import run_all

    return run_all(Lake.from_settings(settings), settings.spark, settings.storage, to_ds(ds))


def dbt(settings: Settings, ds: str) -> dict:
    """Build (run + test) the dbt project over the lake."""
    from dataclasses import asdict

    from growthgr.dbt_runner import build

    return asdict(build(Lake.from_settings(settings)))


def gate_labels(settings: Settings, ds: str) -> dict:
    """The label/sample gate, on days where a cohort closed (the Spark job skips earlier days)."""
    if not Lake.from_settings(settings).exists(*catalog.ITEMLTV_LABELS, to_ds(ds)):
        log.warning("no itemltv_labels for ds=%s (no cohort closes yet): label gate skipped", to_ds(ds))
        return {"gate": "labels", "skipped": True}
    return gate(settings, "labels", ds)


def materialize(settings: Settings, ds: str) -> dict:
    """Load the day's feature rows into the Feast online store."""
    from growthgr import features

    features.materialize(settings.feast, Lake.from_settings(settings), to_ds(ds), settings.spark.master)
    return {"materialized": to_ds(ds)}


def tokenize(settings: Settings, ds: str) -> dict:
    """Embed the day's new items; give them SIDs with the frozen codebook (fit one if none exists)."""
    from models.tokenizer import embed, sids

    lake = Lake.from_settings(settings)
    new = embed.embed_new_items(lake, to_ds(ds), settings.tokenizer)
    if lake.list_partitions(sids.ZONE, sids.TABLE, end=to_ds(ds)):
        return {"embedded": new, **sids.assign(lake, to_ds(ds), settings.tokenizer)}
    return {"embedded": new, **sids.fit(lake, to_ds(ds), settings.tokenizer, trainer_cfg=settings.trainer)}


def training_set(settings: Settings, ds: str) -> dict:
    """Build from Feast (after `feast_materialize`) the point-in-time inputs ItemLTV reads from the
    lake, never Feast itself: the training set of every samples partition it trains on that has
    none yet and of the cohort closing on `ds` (rebuilt on every run of the day), and the item
    features of the day's pool candidates as of the end of `ds` (`catalog.ITEMLTV_POOL_FEATURES`)."""
    from datetime import UTC, datetime, timedelta

    from growthgr import features
    from models.itemltv.data import SERVICE, sample_partitions
    from models.itemltv.pipeline import pool_candidates

    ds, lake, cfg, master = to_ds(ds), Lake.from_settings(settings), settings.itemltv, settings.spark.master
    n_cohorts = cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts
    todo = [p for p in sample_partitions(lake, ds, n_cohorts)
            if p == ds or not lake.exists(*catalog.training_set(SERVICE), p)]
    rows = sum(features.training_set(settings.feast, lake, SERVICE, p, master).num_rows for p in todo)
    end_of_day = datetime.fromisoformat(ds).replace(tzinfo=UTC) + timedelta(days=1)
    items = pool_candidates(lake, ds)["item_id"].to_numpy()
    pool = features.item_features_at(settings.feast, lake, SERVICE, items, end_of_day, master)
    lake.write_partition(*catalog.ITEMLTV_POOL_FEATURES, ds, pool)
    return {"training_set": SERVICE, "built": todo, "rows": rows, "pool_candidates": pool.num_rows}


def itemltv(settings: Settings, ds: str) -> dict:
    """Train ItemLTV ("+uplift" and "base only") on the closed cohorts' training sets, then
    evaluate on held-out ones."""
    from models.itemltv.pipeline import run_evaluate, run_train

    lake = Lake.from_settings(settings)
    trained = run_train(settings.itemltv, settings.trainer, lake, to_ds(ds))
    metrics = run_evaluate(settings.itemltv, lake, to_ds(ds))
    return {"cohorts": trained["cohorts"], "metrics": _headline(metrics)}


def pool(settings: Settings, ds: str) -> dict:
    """Score the items in their new-item period with the base tower; write the daily pool."""
    from models.itemltv.pipeline import write_pool

    frame = write_pool(settings.itemltv, Lake.from_settings(settings), to_ds(ds))
    return {"pool_size": len(frame), "top_score": float(frame["score"].max()) if len(frame) else None}


def publish(settings: Settings, ds: str) -> dict:
    """Release the day's pool, ItemLTV checkpoint, FAISS index of pool items, metrics and SID trie.

    Behind the data gates and the model gate (the day's checkpoint and the serving release's,
    scored on the day's ItemLTV test cohorts: `score_checkpoints`); `current` in the result is the
    serving release afterwards (an older day's release does not demote a newer one).
    """
    from growthgr.core.releases import ReleaseStore
    from growthgr.publish import ReleaseInputs, publish_release
    from models.itemltv.pipeline import score_checkpoints
    from models.itemltv.train import FULL, checkpoint_key, latest_checkpoint_ds
    from models.tokenizer import embed, sids

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    frame = pool_frame(lake, ds)
    emb = embed.read_embeddings(lake, ds).set_index("item_id").loc[frame["item_id"]]
    _, sid_rows = sids.latest_snapshot(lake, ds)
    trie = sids.build_trie(sid_rows, settings.tokenizer.codebook_size, frame["item_id"].to_numpy())
    metrics = json.loads(lake.store.get_bytes(catalog.report_key("itemltv", ds)))
    ckpt = checkpoint_key(FULL, latest_checkpoint_ds(lake, FULL, ds))
    inputs = ReleaseInputs(
        ds=ds,
        pool=frame,
        item_ids=frame["item_id"].to_numpy(),
        embeddings=embed.embedding_matrix(emb.reset_index()),
        metrics=metrics,
        input_partitions=_inputs_of(lake, ds),
        sid_version=str(sid_rows["sid_version"].iloc[0]),
        files={
            "itemltv.safetensors": lake.store.get_bytes(ckpt),
            "sid_trie.npz": _trie_bytes(trie),
            "item_sids.parquet": _parquet(sid_rows[sid_rows["item_id"].isin(frame["item_id"])]),
        },
    )
    store = ReleaseStore.from_settings(settings)
    release = publish_release(store, inputs, stored_gates(lake, ds), settings.digest(),
                              max_regression=settings.gates.publish_max_regression,
                              score=lambda blobs: score_checkpoints(settings.itemltv, lake, ds, blobs))
    quality = release.manifest.get("model_gate", {}).get("checks", {}).get("quality")
    return {"release_id": release.release_id, "pool_size": len(frame), "current": store.current_id(),
            "quality": quality and {k: quality[k] for k in ("candidate", "serving", "limit", "serving_release")}}


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _inputs_of(lake: Lake, ds: str) -> list[str]:
    from growthgr.core.schemas import RAW_TABLES

    return [lake.partition_key("raw", t, ds) for t in RAW_TABLES if lake.exists("raw", t, ds)]


def _trie_bytes(trie) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trie.npz"
        trie.save(path)
        return path.read_bytes()


def _parquet(frame: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def stored_gates(lake: Lake, ds: str, names=PUBLISH_GATES) -> dict[str, bool]:
    """Pass/fail of the day's stored gate results. A result counts only if it passed and every
    partition it validated is still at the write it validated (`writes`): a missing or running
    result, or a partition rewritten (or deleted) since its gate, counts as failed."""
    out = {}
    for name in names:
        key = catalog.gate_result_key(ds, name)
        result = json.loads(lake.store.get_bytes(key)) if lake.store.exists(key) else {}
        stale = [w for w in result.get("writes", []) if not _still_committed(lake, w)]
        if stale:
            log.warning("gate %s ds=%s validated writes that are no longer current: %s", name, ds, stale)
        out[name] = bool(result.get("passed")) and bool(result.get("writes")) and not stale
    return out


def _still_committed(lake: Lake, write: dict) -> bool:
    """Whether the partition `write` names is still committed at that write id."""
    if not lake.exists(write["zone"], write["table"], write["ds"]):
        return False
    return lake.commit_info(write["zone"], write["table"], write["ds"]).write_id == write["write_id"]


def timed(step: Callable[[Settings, str], dict], settings: Settings, ds: str) -> dict:
    started = time.perf_counter()
    out = step(settings, ds)
    log.info("%s ds=%s done in %.1fs: %s", step.__name__, to_ds(ds), time.perf_counter() - started, out)
    return out


def pool_frame(lake: Lake, ds: str) -> pd.DataFrame:
    return lake.read_partition(*catalog.NEW_ITEM_POOL, to_ds(ds)).to_pandas()
