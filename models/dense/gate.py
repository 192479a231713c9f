"""The model gate of the day's dense retriever, in one place: which checks, their figures, the failure
messages, and its metrics in a release. The application stores the result like every gate
(`catalog.gate_result_key(ds, "dense")`) and refuses to publish without it.

The checks: weights and index are the ones `config.json` names, the report is of those weights,
weights finite, the vectors read back from the index finite, L2-normalised and as many as recorded,
and the stored index's recall@`dense.index.recall_k` against exact search, measured again on the
day's requests, >= `dense.index.target_recall`.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import faiss
import numpy as np
import torch

from foundation import catalog
from foundation.lake import Lake
from foundation.sections.dense import DenseConfig
from models import checkpoint
from models.checkpoint import object_write
from models.dense.daily import NAME, recall_queries
from models.dense.index import gate_index, index_from_bytes, index_vectors, measure_recall
from models.dense.model import DenseRetriever
from models.dense.platform import item_table

SUITE = "dense_daily"
LAKE_FILES = ("model.safetensors", "config.json", "index.faiss")     # of `models/dense/ds=<ds>/`


def check_daily(model: DenseRetriever, index: faiss.Index, manifest: dict[str, Any], lake: Lake, ds: date,
                cfg: DenseConfig) -> dict[str, dict]:
    """The gate's checks of a stored model + index: `finite_weights`, `vectors` (`index.gate_index` on
    the vectors read back from the index, the recorded recall included) and `recall` (measured again
    on the stored index against exact search, >= `index.target_recall`)."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    ids, vectors = index_vectors(index)
    failures = gate_index(vectors, manifest, min_recall=cfg.index.target_recall)
    k = manifest.get("recall_k", cfg.index.recall_k)
    queries = recall_queries(model, item_table(lake, ds)[0], lake, ds, cfg) if not bad else np.zeros((0, 1))
    finite = not len(queries) or bool(np.isfinite(queries).all())
    recall = measure_recall(index, queries, k) if finite and len(queries) and np.isfinite(vectors).all() else float("nan")
    return {
        "finite_weights": {"passed": not bad, "non_finite": bad},
        "vectors": {"passed": not failures, "failures": failures, "n_items": int(len(ids))},
        "recall": {"passed": bool(np.isfinite(recall) and recall >= cfg.index.target_recall), "value": recall,
                   "limit": cfg.index.target_recall, "k": int(k), "n_queries": int(len(queries)),
                   "recorded": manifest.get("measured_recall"), "kind": manifest.get("kind"),
                   "params": manifest.get("params"), "finite_queries": finite},
    }


def failure(name: str, check: dict) -> tuple[str, str, str]:
    """(column, rule, details) of a failed check."""
    if name == "finite_weights":
        return ",".join(check["non_finite"][:5]), "finite_weights", "non-finite DR weights"
    if name == "vectors":
        return "index", "finite_normalised_vectors", "; ".join(check["failures"])
    return (f"recall@{check['k']}", "index_recall",
            f"the stored {check['kind']} index (params {check['params']}) has recall@{check['k']} "
            f"{check['value']} against exact search on {check['n_queries']} of the day's queries, below "
            f"target {check['limit']} (recorded at build: {check['recorded']})")


def _objects(lake: Lake, ds: date) -> tuple[tuple[str, str, str] | None, list[dict], tuple]:
    """(a failure or None, the object writes read, (weights, config, index bytes, report)): the day's DR
    objects exist, `config.json` names the weights and the index, and the report is of those weights."""
    keys = [catalog.model_key(NAME, ds, name) for name in LAKE_FILES] + [catalog.report_key(NAME, ds, "daily.json")]
    none = (None, None, None, None)
    if missing := [k for k in keys if not lake.store.exists(k)]:
        return ("*", "checkpoint_exists", f"missing {missing}: run dense_train for {ds}"), [], none
    blob, config, index_blob, report = (lake.store.get_bytes(k) for k in keys)
    writes, meta, report = [object_write(lake, k) for k in keys], json.loads(config), json.loads(report)
    torn = [name for name, data, sha in (("weights", blob, meta.get("sha256")), ("index", index_blob, meta.get("index_sha256")))
            if checkpoint.sha256(data) != sha]
    if torn:
        return (",".join(torn), "config_names_objects",
                f"the {' and '.join(torn)} in models/{NAME}/ds={ds} are not the ones its config.json names: "
                "run dense_train again"), writes, none
    if report.get("checkpoint_sha256") != writes[0]["sha256"]:
        return ("checkpoint_sha256", "report_of_current_checkpoint",
                f"{keys[-1]} is of another checkpoint: run dense_train again"), writes, none
    return None, writes, (blob, meta, index_blob, report)


def check(lake: Lake, ds: date, cfg: DenseConfig) -> dict:
    """The gate of the day's DR: {"failures": [(column, rule, details)], "n_expectations", "writes"
    (the objects and partitions validated), "checks" (None when the gate stopped at the objects)}."""
    stopped, writes, (blob, meta, index_blob, report) = _objects(lake, ds)
    if stopped is not None:
        return {"failures": [stopped], "n_expectations": 1, "writes": writes, "checks": None}
    model = checkpoint.model_from_bytes(blob, meta, DenseRetriever, DenseConfig)
    checks = check_daily(model, index_from_bytes(index_blob, meta["index"]), meta["index"], lake, ds, cfg)
    return {"failures": [failure(name, c) for name, c in checks.items() if not c["passed"]],
            "n_expectations": len(checks) + 1, "writes": writes + report["inputs"], "checks": checks}


def summary(gate: dict) -> dict:
    """What the gate step returns of a passed gate."""
    checks = gate["checks"]
    return {"gate": NAME, "checks": {name: c["passed"] for name, c in checks.items()},
            "recall": {k: checks["recall"][k] for k in ("value", "limit", "k", "n_queries", "kind", "params")}}


def release_metrics(meta: dict) -> dict:
    """The DR's metrics in a release, from its `config.json`: the index (kind, nprobe / efSearch,
    measured recall@k against exact search, target) and the training summary (no timings: a re-run
    publishes identical content)."""
    index = meta["index"]
    return {"index": {"kind": index["kind"], **index["params"], **{k: index[k] for k in (
                "measured_recall", "target_recall", "recall_k", "n_queries", "n_items", "dim")}},
            "checkpoint_sha256": meta["sha256"], "index_sha256": meta["index_sha256"],
            **{k: meta[k] for k in ("days", "sid_snapshot", "requests", "epochs", "params")},
            "final_loss": meta["epoch_losses"][-1] if meta["epoch_losses"] else None}
