"""The day's MultiGR in its lineage: train it (warm-started from the serving release's model when it
can be), write its checkpoint, evaluate it beside the serving release's (`daily` trains and evaluates;
this module finds the models and keeps the records).

Checkpoints are `models.checkpoint` pairs: in the lake `models/multigr/ds=<ds>/model.safetensors` +
`config.json`, in a release `multigr.safetensors` + `multigr_config.json`. The config records the
lineage: `ds`, `mode` (scratch | warm_start), `sid_version`, `sid_snapshot`, `eval_days` (the held-out
days, fixed when the lineage starts), `train_days`, `lineage_start`, `init_release`, `mopo`.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import NamedTuple

import torch

from foundation import catalog
from foundation.lake import Lake, parse_ds
from foundation.releases import Release, ReleaseStore, release_ds
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.multigr import daily
from models.multigr.gate import GATE_METRIC, NAME, gate_figure
from models.multigr.model import MultiGR

log = logging.getLogger(__name__)

RELEASE_FILES = ("multigr.safetensors", "multigr_config.json")    # weights, config in a release


class LineageModel(NamedTuple):
    """A MultiGR with its `config.json` (config, lineage, held-out days, SID version, sha256)."""

    model: MultiGR
    meta: dict
    blob: bytes                  # the safetensors bytes
    release_id: str | None = None


def write_checkpoint(lake: Lake, ds: date, model: MultiGR, meta: dict) -> str:
    """Weights (safetensors), then `config.json` naming their sha256 (a torn pair is detected)."""
    blob, config = checkpoint.model_to_bytes(model, meta)
    key = catalog.model_key(NAME, ds)
    lake.store.put_bytes(key, blob)
    lake.store.put_bytes(catalog.model_key(NAME, ds, "config.json"), config)
    return key


def from_bytes(blob: bytes, meta: dict, release_id: str | None = None) -> LineageModel:
    """The lineage model of a checkpoint pair; a ValueError names it when its weights are torn."""
    try:
        model = checkpoint.model_from_bytes(blob, meta, MultiGR, MultiGRConfig)
    except checkpoint.CheckpointMismatch:
        where = f"release {release_id}" if release_id else f"models/{NAME}/ds={meta.get('ds')}"
        raise ValueError(f"the MultiGR weights of {where} do not match the sha256 of their config.json") from None
    return LineageModel(model, meta, blob, release_id)


def _days(meta: dict) -> list[date]:
    """The held-out days a checkpoint's config.json records (`YYYY-MM-DD` strings there)."""
    return [parse_ds(d) for d in meta["eval_days"]]


def lake_model(lake: Lake, ds: date) -> LineageModel:
    key, config = catalog.model_key(NAME, ds), catalog.model_key(NAME, ds, "config.json")
    if not (lake.store.exists(key) and lake.store.exists(config)):
        raise FileNotFoundError(f"no MultiGR checkpoint {key} (+ config.json) in {lake.store.uri}: run multigr_train")
    return from_bytes(lake.store.get_bytes(key), json.loads(lake.store.get_bytes(config)))


def release_model(store: ReleaseStore, release: Release) -> LineageModel | None:
    if not all(name in release.files for name in RELEASE_FILES):
        return None
    blob, config = (store.read(release.release_id, name) for name in RELEASE_FILES)
    return from_bytes(blob, json.loads(config), release.release_id)


def init_model(store: ReleaseStore, lake: Lake, ds: date) -> LineageModel | None:
    """The warm start of `ds`: the MultiGR of the release served last among those of earlier days
    (None when there is none, it has no MultiGR, or its SID version is not today's)."""
    release = next((r for r in map(store.get, reversed(store.served())) if parse_ds(release_ds(r) or ds) < ds), None)
    found = release and release_model(store, release)
    if found is None:
        log.info("MultiGR ds=%s: no MultiGR in a release of an earlier day (%s): training from scratch", ds,
                 release and release.release_id)
        return None
    version = daily.sid_table(lake, ds).version
    if found.meta["sid_version"] != version:
        log.warning("MultiGR ds=%s: release %s was trained on SID version %s, today's is %s: training from scratch",
                    ds, found.release_id, found.meta["sid_version"], version)
        return None
    return found


def train(cfg: MultiGRConfig, trainer_cfg: TrainerConfig, lake: Lake, store: ReleaseStore, ds: date) -> dict:
    """Train the day's MultiGR (`daily.train_daily`) and write it to the lake
    (`models/multigr/ds=<ds>/model.safetensors` + `config.json`).

    Warm start from the MultiGR of the release that served last among those of days before `ds`
    (the current release on a normal day; on a re-run of `ds`, the same one as the first run) when
    it was trained on today's SID version: an SFT refresh on the day's samples, keeping its
    lineage's held-out days; otherwise (first day, no MultiGR in it, new SID version) from scratch.
    """
    init = init_model(store, lake, ds)
    model, info = daily.train_daily(cfg, trainer_cfg, lake, ds, init and init.model,
                                    eval_days=init and _days(init.meta))
    warm, day = info["mode"] == "warm_start", f"{ds}"
    meta = {"ds": day, "mode": info["mode"], "sid_version": info["sid_version"], "sid_snapshot": info["sid_snapshot"],
            "eval_days": info["eval_days"], "train_days": info["train_days"],
            "lineage_start": init.meta["lineage_start"] if warm else day,
            "init_release": init.release_id if warm else None, "mopo": "mopo" in info}
    key = write_checkpoint(lake, ds, model, meta)
    return {"checkpoint": key, "init_release": meta["init_release"], **info}


def evaluate(cfg: MultiGRConfig, lake: Lake, store: ReleaseStore, ds: date) -> dict:
    """Evaluate the day's MultiGR on its lineage's fixed held-out days (`daily.evaluate_daily`) and,
    when comparable, the serving release's MultiGR on the same requests; writes
    `reports/multigr/ds=<ds>/daily.json` (what the gate checks)."""
    day = lake_model(lake, ds)
    candidate = daily.evaluate_daily(day.model, lake, ds, cfg, eval_days=_days(day.meta))
    serving, skipped = serving_evaluation(store, lake, ds, day, candidate, cfg)
    report = {"ds": f"{ds}", "checkpoint": catalog.model_key(NAME, ds), "checkpoint_sha256": day.meta["sha256"],
              **{k: day.meta[k] for k in ("mode", "lineage_start", "init_release", "train_days", "sid_version")},
              "candidate": candidate, "serving": serving and serving[1], "serving_release": serving and serving[0],
              "serving_skipped": skipped, "weight_change_vs_serving": serving and serving[2]}
    key = catalog.report_key(NAME, ds, "daily.json")
    lake.store.put_bytes(key, json.dumps(report, indent=2, sort_keys=True).encode())
    return {"report": lake.store.url(key), "evaluated_days": candidate["evaluated_days"],
            " ".join(GATE_METRIC): gate_figure(candidate), "serving": gate_figure(serving and serving[1]),
            "serving_skipped": skipped, "valid_sid_fraction": candidate["valid_sid_fraction"]}


def serving_evaluation(store: ReleaseStore, lake: Lake, ds: date, day: LineageModel, candidate: dict,
                       cfg: MultiGRConfig) -> tuple[tuple[str, dict, float] | None, str | None]:
    """((serving release id, its evaluation on the candidate's held-out requests, the candidate's relative
    weight change from it), None), or (None, why not)."""
    if store.current_id() is None:
        return None, "no serving release"
    current = store.get("current")
    serving = release_model(store, current)
    if serving is None:
        return None, f"serving release {current.release_id} has no MultiGR"
    if parse_ds(release_ds(current) or ds) > ds:
        return None, f"serving release {current.release_id} is of a later day: it may have trained on the held-out days"
    if serving.meta["eval_days"] != day.meta["eval_days"] or serving.meta["sid_version"] != day.meta["sid_version"]:
        return None, (f"serving release {current.release_id} is of another lineage (held-out days "
                      f"{serving.meta['eval_days']}, SID version {serving.meta['sid_version']}): not comparable")
    change = weight_change(day.model, serving.model)
    if serving.meta["sha256"] == day.meta["sha256"]:
        return (current.release_id, candidate, change), None
    return (current.release_id, daily.evaluate_daily(serving.model, lake, ds, cfg, eval_days=_days(day.meta)),
            change), None


def weight_change(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    """||w - w_ref|| / ||w_ref|| over every floating-point tensor of two models of one architecture."""
    a, b = model.state_dict(), reference.state_dict()
    keys = [k for k, v in b.items() if v.is_floating_point() and k in a and a[k].shape == v.shape]
    diff = sum(float(torch.sum((a[k] - b[k]) ** 2)) for k in keys)
    norm = sum(float(torch.sum(b[k] ** 2)) for k in keys)
    return (diff / norm) ** 0.5 if norm else 0.0
