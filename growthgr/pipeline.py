"""The steps of one daily run, as plain functions `(settings, ds) -> summary dict`.

`growthgr.steps` declares which of them make a day, in what order (the DAG, the CLI and the
closed-loop A/B walk it); the tests call them directly too. Each
step is idempotent for its `ds` (it overwrites its own partitions), raises on
failure, and never publishes anything itself except `publish`, which checks
the stored gate results of the day first.

Order of one day (DESIGN.md section 2):
  gate raw -> spark jobs -> dbt build -> gate labels/features -> feast materialise
  -> training set -> embeddings + SID assignment -> gate sids -> ItemLTV train/evaluate -> pool
  -> gate pool -> MultiGR train -> MultiGR evaluate -> gate MultiGR -> publish
  (DR train -> gate DR, after the SID gate and the day's gr_samples, also before publish)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from foundation import catalog
from foundation.config import Settings
from foundation.lake import Lake, to_ds
from foundation.releases import Release, ReleaseStore, release_ds

if TYPE_CHECKING:
    from models.multigr.model import MultiGR

log = logging.getLogger(__name__)

# The day's MultiGR in the lake (`catalog.model_key("multigr", ds, file)`) -> its name in a release.
MULTIGR = "multigr"
MULTIGR_FILES = {"model.safetensors": "multigr.safetensors", "config.json": "multigr_config.json"}
# The day's dense retriever (checkpoint + FAISS index of the catalog) -> its names in a release
# (the names `growthgr.serve.DENSE_FILES` loads).
DENSE = "dense"
DENSE_FILES = {"model.safetensors": "dense.safetensors", "config.json": "dense_config.json",
               "index.faiss": "dense_index.faiss"}


class GateFailed(RuntimeError):
    """A GX gate failed; the message is the gate's readable summary."""


def simulate_day(settings: Settings, ds: str) -> dict:
    """Advance the simulated platform by one day, to `ds` (the day's raw logs "arrive").

    Idempotent and append-only: a day already simulated is left untouched (raw
    data is never overwritten); a day that is not the next one is an error.
    """
    from simulator.run import next_start, simulate

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

    from warehouse.runner import build

    return asdict(build(Lake.from_settings(settings)))


def gate_labels(settings: Settings, ds: str) -> dict:
    """The label/sample gate, on days where a cohort closed (the Spark job skips earlier days)."""
    if not Lake.from_settings(settings).exists(*catalog.ITEMLTV_LABELS, to_ds(ds)):
        log.warning("no itemltv_labels for ds=%s (no cohort closes yet): label gate skipped", to_ds(ds))
        return {"gate": "labels", "skipped": True}
    return gate(settings, "labels", ds)


def materialize(settings: Settings, ds: str) -> dict:
    """Load the day's feature rows into the Feast online store."""
    from features import store as features

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

    from features import store as features
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


# -- MultiGR: train, evaluate and gate the day's generative retriever ------------------------------
class LineageModel(NamedTuple):
    """A MultiGR with its `config.json` (config, lineage, held-out days, SID version, sha256)."""

    model: MultiGR
    meta: dict
    blob: bytes                  # the safetensors bytes
    release_id: str | None = None


def multigr_train(settings: Settings, ds: str) -> dict:
    """Train the day's MultiGR (`models.multigr.daily.train_daily`) and write it to the lake
    (`models/multigr/ds=<ds>/model.safetensors` + `config.json`).

    Warm start from the MultiGR of the release that served last among those of days before `ds`
    (the current release on a normal day; on a re-run of `ds`, the same one as the first run) when
    it was trained on today's SID version: an SFT refresh on the day's samples, keeping its
    lineage's held-out days; otherwise (first day, no MultiGR in it, new SID version) from scratch.
    """
    from models.multigr import daily

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    init = _init_multigr(ReleaseStore.from_settings(settings), lake, ds)
    model, info = daily.train_daily(settings.multigr, settings.trainer, lake, ds, init and init.model,
                                    eval_days=init and init.meta["eval_days"])
    warm = info["mode"] == "warm_start"
    meta = {"ds": ds, "mode": info["mode"], "sid_version": info["sid_version"], "sid_snapshot": info["sid_snapshot"],
            "eval_days": info["eval_days"], "train_days": info["train_days"],
            "lineage_start": init.meta["lineage_start"] if warm else ds,
            "init_release": init.release_id if warm else None, "mopo": "mopo" in info}
    key = _write_multigr(lake, ds, model, meta)
    return {"checkpoint": key, "init_release": meta["init_release"], **info}


def multigr_evaluate(settings: Settings, ds: str) -> dict:
    """Evaluate the day's MultiGR on its lineage's fixed held-out days (`daily.evaluate_daily`) and,
    when comparable, the serving release's MultiGR on the same requests; writes
    `reports/multigr/ds=<ds>/daily.json` (what `gate_multigr` checks)."""
    from models.multigr import daily

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    day = _lake_multigr(lake, ds)
    candidate = daily.evaluate_daily(day.model, lake, ds, settings.multigr, eval_days=day.meta["eval_days"])
    serving, skipped = _serving_evaluation(ReleaseStore.from_settings(settings), lake, ds, day, candidate, settings)
    report = {"ds": ds, "checkpoint": catalog.model_key(MULTIGR, ds), "checkpoint_sha256": day.meta["sha256"],
              **{k: day.meta[k] for k in ("mode", "lineage_start", "init_release", "train_days", "sid_version")},
              "candidate": candidate, "serving": serving and serving[1], "serving_release": serving and serving[0],
              "serving_skipped": skipped, "weight_change_vs_serving": serving and serving[2]}
    key = catalog.report_key(MULTIGR, ds, "daily.json")
    lake.store.put_bytes(key, json.dumps(report, indent=2, sort_keys=True).encode())
    return {"report": lake.store.url(key), "evaluated_days": candidate["evaluated_days"],
            " ".join(daily.GATE_METRIC): daily.gate_figure(candidate),
            "serving": daily.gate_figure(serving and serving[1]),
            "serving_skipped": skipped, "valid_sid_fraction": candidate["valid_sid_fraction"]}


def gate_multigr(settings: Settings, ds: str) -> dict:
    """The model gate of the day's MultiGR, stored like every gate (`catalog.gate_result_key(ds,
    "multigr")`, naming the checkpoint, config, report and input partitions it validated): the
    evaluation report is of the current checkpoint, metrics are finite, 100% of decoded SIDs are
    valid, every held-out day up to ds has samples, and search Recall@10 on the held-out days is
    not below the serving release's by more than `multigr.daily.max_recall_drop`. Raises
    `GateFailed` naming the metric, the values and the limit."""
    from expectations.gate import Failure, GateResult, store_result
    from models.multigr import daily

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    store_result(lake, GateResult(MULTIGR, ds, False), status="running")
    report_key, model_key = catalog.report_key(MULTIGR, ds, "daily.json"), catalog.model_key(MULTIGR, ds)
    where = f"ds={ds}"
    if not lake.store.exists(report_key) or not lake.store.exists(model_key):
        missing = [k for k in (model_key, report_key) if not lake.store.exists(k)]
        failures = [Failure("multigr", where, "*", "report_exists",
                            f"missing {missing}: run multigr_train and multigr_evaluate for {ds}")]
        return _store_model_gate(lake, GateResult(MULTIGR, ds, False, failures, ["multigr_daily"], 1))
    report = json.loads(lake.store.get_bytes(report_key))
    writes = [_object_write(lake, k) for k in (model_key, catalog.model_key(MULTIGR, ds, "config.json"), report_key)]
    if writes[0]["sha256"] != report["checkpoint_sha256"]:
        failures = [Failure("multigr", where, "checkpoint_sha256", "report_of_current_checkpoint",
                            f"{report_key} evaluated checkpoint {report['checkpoint_sha256'][:12]}, but {model_key} "
                            f"is {writes[0]['sha256'][:12]}: run multigr_evaluate again")]
        return _store_model_gate(lake, GateResult(MULTIGR, ds, False, failures, ["multigr_daily"], 1, writes))
    checks = daily.gate_checks(report["candidate"], report["serving"], settings.multigr.daily.max_recall_drop)
    if checks["recall"]["skipped"] and report.get("serving_skipped"):
        checks["recall"]["skipped"] = report["serving_skipped"]
    failures = [_gate_failure(name, check, where, report) for name, check in checks.items() if not check["passed"]]
    result = GateResult(MULTIGR, ds, not failures, failures, ["multigr_daily"], len(checks) + 1,
                        writes + report["candidate"]["inputs"])
    _store_model_gate(lake, result)
    return {"gate": MULTIGR, "checks": {name: check["passed"] for name, check in checks.items()},
            "recall": {k: checks["recall"][k] for k in ("metric", "value", "serving", "limit", "skipped")},
            "serving_release": report["serving_release"]}


def _gate_failure(name: str, check: dict, where: str, report: dict):
    from expectations.gate import Failure

    if name == "finite_metrics":
        return Failure("multigr", where, ",".join(check["non_finite"]), "finite", "non-finite metrics")
    if name == "valid_sids":
        return Failure("multigr", where, "valid_sid_fraction", "valid_sid_fraction == 1.0",
                       f"{check['value']} of {check['decoded_sids']} SIDs decoded by the constrained decoder are in "
                       f"{catalog.ITEM_SIDS.key(report['candidate']['sid_snapshot'])} (limit 1.0)")
    if name == "held_out_days":
        return Failure("multigr", where, "samples/gr_samples", "held_out_days",
                       f"held-out days {check['missing']} of the lineage have no samples/gr_samples: run the gr_samples "
                       "Spark job for them")
    return Failure("multigr", where, check["metric"], "max_recall_drop",
                   f"candidate {check['value']} < limit {check['limit']:.4f} = serving {check['serving']:.4f} "
                   f"(release {report['serving_release']}) - max_recall_drop {check['max_recall_drop']} "
                   f"on held-out days {check['days']}")


def _store_model_gate(lake: Lake, result) -> None:
    from expectations.gate import store_result

    store_result(lake, result)
    if not result.passed:
        raise GateFailed(result.summary())


def _object_write(lake: Lake, key: str) -> dict:
    return {"key": key, "sha256": hashlib.sha256(lake.store.get_bytes(key)).hexdigest()}


def _write_multigr(lake: Lake, ds: str, model: MultiGR, meta: dict) -> str:
    """Weights (safetensors), then `config.json` naming their sha256 (a torn pair is detected)."""
    from models.training import checkpoint_bytes

    blob, config = checkpoint_bytes(model, meta)
    key = catalog.model_key(MULTIGR, ds)
    lake.store.put_bytes(key, blob)
    lake.store.put_bytes(catalog.model_key(MULTIGR, ds, "config.json"), config)
    return key


def _load_multigr(blob: bytes, meta: dict, release_id: str | None = None) -> LineageModel:
    from foundation.sections.multigr import MultiGRConfig
    from models.multigr.model import MultiGR
    from models.training import checkpoint_from_bytes

    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        where = f"release {release_id}" if release_id else f"models/{MULTIGR}/ds={meta.get('ds')}"
        raise ValueError(f"the MultiGR weights of {where} do not match the sha256 of their config.json")
    return LineageModel(checkpoint_from_bytes(blob, meta, MultiGR, MultiGRConfig), meta, blob, release_id)


def _lake_multigr(lake: Lake, ds: str) -> LineageModel:
    key, config = catalog.model_key(MULTIGR, ds), catalog.model_key(MULTIGR, ds, "config.json")
    if not (lake.store.exists(key) and lake.store.exists(config)):
        raise FileNotFoundError(f"no MultiGR checkpoint {key} (+ config.json) in {lake.store.uri}: run multigr_train")
    return _load_multigr(lake.store.get_bytes(key), json.loads(lake.store.get_bytes(config)))


def _release_multigr(store: ReleaseStore, release: Release) -> LineageModel | None:
    names = MULTIGR_FILES.values()
    if not all(name in release.files for name in names):
        return None
    blob, config = (store.read(release.release_id, name) for name in names)
    return _load_multigr(blob, json.loads(config), release.release_id)


def _init_multigr(store: ReleaseStore, lake: Lake, ds: str) -> LineageModel | None:
    """The warm start of `ds`: the MultiGR of the release served last among those of earlier days
    (None when there is none, it has no MultiGR, or its SID version is not today's)."""
    from models.multigr.daily import sid_table

    release = next((r for r in map(store.get, reversed(store.served())) if (release_ds(r) or ds) < ds), None)
    found = release and _release_multigr(store, release)
    if found is None:
        log.info("MultiGR ds=%s: no MultiGR in a release of an earlier day (%s): training from scratch", ds,
                 release and release.release_id)
        return None
    version = sid_table(lake, ds).version
    if found.meta["sid_version"] != version:
        log.warning("MultiGR ds=%s: release %s was trained on SID version %s, today's is %s: training from scratch",
                    ds, found.release_id, found.meta["sid_version"], version)
        return None
    return found


def _serving_evaluation(store: ReleaseStore, lake: Lake, ds: str, day: LineageModel, candidate: dict,
                        settings: Settings) -> tuple[tuple[str, dict] | None, str | None]:
    """((serving release id, its evaluation on the candidate's held-out requests, the candidate's relative
    weight change from it), None), or (None, why not)."""
    from models.multigr.daily import evaluate_daily

    if store.current_id() is None:
        return None, "no serving release"
    current = store.get("current")
    serving = _release_multigr(store, current)
    if serving is None:
        return None, f"serving release {current.release_id} has no MultiGR"
    if (release_ds(current) or ds) > ds:
        return None, f"serving release {current.release_id} is of a later day: it may have trained on the held-out days"
    if serving.meta["eval_days"] != day.meta["eval_days"] or serving.meta["sid_version"] != day.meta["sid_version"]:
        return None, (f"serving release {current.release_id} is of another lineage (held-out days "
                      f"{serving.meta['eval_days']}, SID version {serving.meta['sid_version']}): not comparable")
    change = weight_change(day.model, serving.model)
    if serving.meta["sha256"] == day.meta["sha256"]:
        return (current.release_id, candidate, change), None
    return (current.release_id, evaluate_daily(serving.model, lake, ds, settings.multigr,
                                               eval_days=day.meta["eval_days"]), change), None


def weight_change(model, reference) -> float:
    """||w - w_ref|| / ||w_ref|| over every floating-point tensor of two models of one architecture."""
    import torch

    a, b = model.state_dict(), reference.state_dict()
    keys = [k for k, v in b.items() if v.is_floating_point() and k in a and a[k].shape == v.shape]
    diff = sum(float(torch.sum((a[k] - b[k]) ** 2)) for k in keys)
    norm = sum(float(torch.sum(b[k] ** 2)) for k in keys)
    return (diff / norm) ** 0.5 if norm else 0.0


# -- DR: train the day's dense retriever, index the catalog, gate the index ------------------------
def dense_train(settings: Settings, ds: str) -> dict:
    """Train the day's dense retriever from scratch on the newest `dense.daily.train_days` days of
    `gr_samples`, encode the catalog as of ds and index it (`models.dense.daily.build_daily`); write
    `models/dense/ds=<ds>/index.faiss`, `model.safetensors` and then `config.json` (DenseConfig, the
    index manifest, the sha256 of weights and index: a torn trio is detected), and
    `reports/dense/ds=<ds>/daily.json` (the same, plus the timings and the partitions read at their
    write ids: kept out of `config.json`, so that a re-run of the day publishes identical bytes)."""
    from models.dense import daily
    from models.dense.index import index_to_bytes
    from models.training import checkpoint_bytes

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    built = daily.build_daily(settings.dense, settings.trainer, lake, ds)
    index_blob = index_to_bytes(built.index)
    stats = {k: built.stats[k] for k in ("days", "sample_rows", "sid_snapshot", "requests", "items", "epochs",
                                         "epoch_losses", "params", "temperature")}
    meta = {"ds": ds, **stats, "index": built.manifest, "index_sha256": hashlib.sha256(index_blob).hexdigest()}
    blob, config = checkpoint_bytes(built.model, meta)
    lake.store.put_bytes(catalog.model_key(DENSE, ds, "index.faiss"), index_blob)
    lake.store.put_bytes(catalog.model_key(DENSE, ds), blob)
    lake.store.put_bytes(catalog.model_key(DENSE, ds, "config.json"), config)
    report = {**meta, "checkpoint_sha256": hashlib.sha256(blob).hexdigest(), "inputs": built.inputs,
              "training_time_s": built.stats["training_time_s"]}
    lake.store.put_bytes(catalog.report_key(DENSE, ds, "daily.json"), json.dumps(report, indent=2, sort_keys=True).encode())
    m = built.manifest
    return {"checkpoint": catalog.model_key(DENSE, ds), "days": stats["days"], "requests": stats["requests"],
            "items": m["n_items"], "index": m["kind"], "params": m["params"], "measured_recall": m["measured_recall"],
            "training_time_s": built.stats["training_time_s"]}


def gate_dense(settings: Settings, ds: str) -> dict:
    """The model gate of the day's dense retriever, stored like every gate (`catalog.gate_result_key(ds,
    "dense")`, naming the checkpoint, config, index and the partitions it was trained on): weights and
    index are the ones `config.json` names, weights finite, the vectors read back from the index finite,
    L2-normalised and as many as recorded, and the stored index's recall@`dense.index.recall_k` against
    exact search, measured again on the day's requests, >= `dense.index.target_recall`
    (`models.dense.daily.check_daily`). Raises `GateFailed` naming the check and the values."""
    from expectations.gate import GateResult, store_result
    from foundation.sections.dense import DenseConfig
    from models.dense import daily
    from models.dense.index import index_from_bytes
    from models.dense.model import DenseRetriever
    from models.training import checkpoint_from_bytes

    ds, lake = to_ds(ds), Lake.from_settings(settings)
    store_result(lake, GateResult(DENSE, ds, False), status="running")
    failure, writes, (blob, meta, index_blob, report) = _dense_objects(lake, ds)
    if failure is not None:
        return _store_model_gate(lake, GateResult(DENSE, ds, False, [failure], ["dense_daily"], 1, writes))
    model = checkpoint_from_bytes(blob, meta, DenseRetriever, DenseConfig)
    index = index_from_bytes(index_blob, meta["index"])
    checks = daily.check_daily(model, index, meta["index"], lake, ds, settings.dense)
    failures = [_dense_failure(name, check, f"ds={ds}") for name, check in checks.items() if not check["passed"]]
    _store_model_gate(lake, GateResult(DENSE, ds, not failures, failures, ["dense_daily"], len(checks) + 1,
                                       writes + report["inputs"]))
    return {"gate": DENSE, "checks": {name: check["passed"] for name, check in checks.items()},
            "recall": {k: checks["recall"][k] for k in ("value", "limit", "k", "n_queries", "kind", "params")}}


def _dense_objects(lake: Lake, ds: str) -> tuple[object, list[dict], tuple]:
    """(a Failure or None, the object writes read, (weights, config, index bytes, report)): the day's DR
    objects exist, `config.json` names the weights and the index, and the report is of those weights."""
    from expectations.gate import Failure

    keys = [catalog.model_key(DENSE, ds, name) for name in DENSE_FILES] + [catalog.report_key(DENSE, ds, "daily.json")]
    where, none = f"ds={ds}", (None, None, None, None)
    if missing := [k for k in keys if not lake.store.exists(k)]:
        return Failure(DENSE, where, "*", "checkpoint_exists", f"missing {missing}: run dense_train for {ds}"), [], none
    blob, config, index_blob, report = (lake.store.get_bytes(k) for k in keys)
    writes, meta, report = [_object_write(lake, k) for k in keys], json.loads(config), json.loads(report)
    torn = [name for name, data, sha in (("weights", blob, meta.get("sha256")), ("index", index_blob, meta.get("index_sha256")))
            if hashlib.sha256(data).hexdigest() != sha]
    if torn:
        return Failure(DENSE, where, ",".join(torn), "config_names_objects",
                       f"the {' and '.join(torn)} in models/{DENSE}/ds={ds} are not the ones its config.json names: "
                       "run dense_train again"), writes, none
    if report.get("checkpoint_sha256") != writes[0]["sha256"]:
        return Failure(DENSE, where, "checkpoint_sha256", "report_of_current_checkpoint",
                       f"{keys[-1]} is of another checkpoint: run dense_train again"), writes, none
    return None, writes, (blob, meta, index_blob, report)


def _dense_failure(name: str, check: dict, where: str):
    from expectations.gate import Failure

    if name == "finite_weights":
        return Failure(DENSE, where, ",".join(check["non_finite"][:5]), "finite_weights", "non-finite DR weights")
    if name == "vectors":
        return Failure(DENSE, where, "index", "finite_normalised_vectors", "; ".join(check["failures"]))
    return Failure(DENSE, where, f"recall@{check['k']}", "index_recall",
                   f"the stored {check['kind']} index (params {check['params']}) has recall@{check['k']} "
                   f"{check['value']} against exact search on {check['n_queries']} of the day's queries, below "
                   f"target {check['limit']} (recorded at build: {check['recorded']})")


def publish(settings: Settings, ds: str, gates: tuple[str, ...]) -> dict:
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
    from growthgr.publish import PublishRefused, ReleaseInputs, publish_release
    from models.itemltv.pipeline import score_checkpoints
    from models.itemltv.train import FULL, checkpoint_key, latest_checkpoint_ds
    from models.tokenizer import embed, sids

    ds, lake = to_ds(ds), Lake.from_settings(settings)
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
        ds=ds,
        pool=frame,
        item_ids=frame["item_id"].to_numpy(),
        embeddings=embed.embedding_matrix(emb.reset_index()),
        metrics={**metrics, MULTIGR: multigr_metrics, DENSE: dense_metrics},
        input_partitions=_inputs_of(lake, ds),
        sid_version=str(sid_rows["sid_version"].iloc[0]),
        files={
            "itemltv.safetensors": lake.store.get_bytes(ckpt),
            "sid_trie.npz": _trie_bytes(trie),
            "item_sids.parquet": _parquet(sid_rows[sid_rows["item_id"].isin(frame["item_id"])]),
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


def _gated_multigr(lake: Lake, ds: str, max_recall_drop: float) -> tuple[dict[str, bytes], dict, dict]:
    """The release files of the day's MultiGR, checked against the objects its stored gate validated;
    its metrics (the deterministic part of the evaluation report: no timings, no serving figures, so
    a re-run of the day publishes identical content); the gate's comparison with the serving release."""
    from models.multigr.daily import gate_checks, headline

    files = _gated_files(lake, ds, MULTIGR, MULTIGR_FILES)
    report = json.loads(lake.store.get_bytes(catalog.report_key(MULTIGR, ds, "daily.json")))
    metrics = {**headline(report["candidate"]), **{k: report[k] for k in (
        "mode", "lineage_start", "init_release", "train_days", "checkpoint_sha256")}}
    recall = gate_checks(report["candidate"], report["serving"], max_recall_drop)["recall"]
    gate = {"passed": _gate_result(lake, ds, MULTIGR)["passed"], "recall": {**recall, "skipped": recall["skipped"] and (report["serving_skipped"] or recall["skipped"])},
            "serving_release": report["serving_release"],
            "serving": report["serving"] and headline(report["serving"])}
    return files, metrics, gate


def _gated_files(lake: Lake, ds: str, name: str, names: dict[str, str]) -> dict[str, bytes]:
    """{release name: bytes} of the day's `models/<name>/` objects, each checked to be the object the
    stored `<name>` gate validated (`PublishRefused` otherwise)."""
    from growthgr.publish import PublishRefused

    gated = {w["key"]: w["sha256"] for w in _gate_result(lake, ds, name).get("writes", []) if "key" in w}
    files = {}
    for lake_name, release_name in names.items():
        key = catalog.model_key(name, ds, lake_name)
        blob = lake.store.get_bytes(key)
        if hashlib.sha256(blob).hexdigest() != gated.get(key):
            raise PublishRefused(f"not publishing ds={ds}: {key} is not the object gate_{name} validated")
        files[release_name] = blob
    return files


def _gated_dense(lake: Lake, ds: str) -> tuple[dict[str, bytes], dict]:
    """The release files of the day's dense retriever (the objects `gate_dense` validated) and its
    metrics: the index (kind, nprobe / efSearch, measured recall@k against exact search, target) and
    the training summary, all from its `config.json` (no timings: a re-run publishes identical content)."""
    files = _gated_files(lake, ds, DENSE, DENSE_FILES)
    meta = json.loads(files[DENSE_FILES["config.json"]])
    index = meta["index"]
    metrics = {"index": {"kind": index["kind"], **index["params"], **{k: index[k] for k in (
                   "measured_recall", "target_recall", "recall_k", "n_queries", "n_items", "dim")}},
               "checkpoint_sha256": meta["sha256"], "index_sha256": meta["index_sha256"],
               **{k: meta[k] for k in ("days", "sid_snapshot", "requests", "epochs", "params")},
               "final_loss": meta["epoch_losses"][-1] if meta["epoch_losses"] else None}
    return files, metrics


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _inputs_of(lake: Lake, ds: str) -> list[str]:
    from foundation.schemas import RAW_TABLES

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


def stored_gates(lake: Lake, ds: str, names: tuple[str, ...]) -> dict[str, bool]:
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


def _gate_result(lake: Lake, ds: str, name: str) -> dict:
    key = catalog.gate_result_key(ds, name)
    return json.loads(lake.store.get_bytes(key)) if lake.store.exists(key) else {}


def _still_committed(lake: Lake, write: dict) -> bool:
    """Whether the partition `write` names is still committed at that write id (an object of the
    lake's store, such as a model checkpoint: still holds the bytes of that sha256)."""
    if "key" in write:
        return lake.store.exists(write["key"]) and _object_write(lake, write["key"])["sha256"] == write["sha256"]
    if not lake.exists(write["zone"], write["table"], write["ds"]):
        return False
    return lake.commit_info(write["zone"], write["table"], write["ds"]).write_id == write["write_id"]


def timed(step: Callable[[Settings, str], dict], settings: Settings, ds: str, name: str | None = None) -> dict:
    """Run one step and record its duration and outcome in the lake (`catalog.pipeline_step_key`;
    a re-run of the step overwrites its record; a failed write only logs). A failed step also
    stores its traceback (`catalog.pipeline_step_log_key`), which the record's `log` names."""
    import traceback
    from datetime import UTC, datetime

    name, ds = name or step.__name__, to_ds(ds)
    begun, started, status, error, trace = datetime.now(UTC), time.perf_counter(), "failed", None, None
    try:
        out = step(settings, ds)
        status = "ok"
    except Exception as exc:
        error, trace = f"{type(exc).__name__}: {exc}"[:2000], traceback.format_exc()
        raise
    finally:
        seconds = time.perf_counter() - started
        record = {"step": name, "ds": ds, "status": status, "seconds": round(seconds, 3), "error": error,
                  "started": begun.isoformat(), "finished": datetime.now(UTC).isoformat()}
        try:
            store = Lake.from_settings(settings).store
            if trace is not None:
                store.put_bytes(catalog.pipeline_step_log_key(ds, name), trace.encode())
                record["log"] = store.url(catalog.pipeline_step_log_key(ds, name))
            store.put_bytes(catalog.pipeline_step_key(ds, name), json.dumps(record).encode())
        except Exception:                    # the timing record must never fail the step
            log.warning("could not record the timing of %s ds=%s", name, ds, exc_info=True)
    log.info("%s ds=%s done in %.1fs: %s", name, ds, seconds, out)
    return out


def pool_frame(lake: Lake, ds: str) -> pd.DataFrame:
    return lake.read_partition(*catalog.NEW_ITEM_POOL, to_ds(ds)).to_pandas()
