"""The closed loop (`--retrain`): the daily pipeline retrains every retraining arm after each test day.

Each retraining arm (the design's and the fully treated one; the untreated arm serves nothing, so
retraining could not change it) gets a copy of the lake and of the release store under the A/B
working directory; its retriever (`ClosedLoop`) plugs in where a plain `PoolRetriever` would: its
`observe` writes the day's raw and truth tables there, runs the daily pipeline for the day
in-process (the daily pipeline's steps in their dependency order, from the registry the DAG is made
of (`growthgr.steps`), each through `pipeline.timed`) and serves the day's release from the next
day, or keeps the last good one when a step fails (a gate refuses). No pipeline runs after the last
test day (its release would serve no test day).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from foundation.lake import Lake, parse_ds
from foundation.releases import ReleaseStore
from growthgr.abtest.assignment import CONTROL
from growthgr.abtest.channel import (
    CHANNEL,
    Candidates,
    MultiGRRetriever,
    PoolRetriever,
    Retriever,
    release_retriever,
)
from simulator.channels import CatalogView, RequestBatch
from simulator.world import day_ds

if TYPE_CHECKING:
    from foundation.config import Settings

log = logging.getLogger(__name__)

Step = tuple[str, Callable[["Settings", date], dict]]


def daily_steps() -> list[Step]:
    """(name, step function `(settings, ds) -> dict`) of the daily pipeline in its dependency order
    (`growthgr.steps`, the registry the DAG is made from): what Airflow runs, in-process."""
    from growthgr.steps import in_order

    return [(step.name, step.run) for step in in_order()]


def run_pipeline_day(settings: Settings, ds: date, steps: Sequence[Step]) -> dict:
    """Run the steps for `ds` in order, in-process (each through `pipeline.timed`, which records its
    duration in the lake); stop at the first failure. Returns ok, failed step and error, seconds."""
    from growthgr.pipeline import timed

    out: dict = {"ok": True, "failed_step": None, "error": None, "seconds": {}}
    for name, step in steps:
        started = time.perf_counter()
        try:
            timed(step, settings, ds, name=name)
        except Exception as exc:            # a refusing gate, a failed job: the day publishes nothing
            log.warning("closed loop ds=%s: step %s failed: %s", ds, name, exc)
            out.update(ok=False, failed_step=name, error=f"{type(exc).__name__}: {exc}"[:1000])
            return out
        finally:
            out["seconds"][name] = round(time.perf_counter() - started, 3)
    return out


class ClosedLoop:
    """The retriever of one retraining arm (`--retrain`): it serves its arm's current release (the
    pool, refreshed with the release's frozen ItemLTV like a plain `PoolRetriever`); after each day
    it writes the day's raw and truth tables into the arm's lake copy, runs the daily pipeline for
    the day on it (the arm's own release store) and, when the day published a release, serves that
    one from the next day. A day whose pipeline fails (a gate refuses) keeps the last good release;
    `history` records every day (served release, channel placements, pipeline outcome, next release)."""

    name = "closed_loop"

    def __init__(self, settings: Settings, steps: Sequence[Step], pool_size: int, k: int, refresh: bool = True,
                 channel: str = "pool", last_ds: date | None = None):
        self.settings, self.steps, self.channel, self.last_ds = settings, list(steps), channel, last_ds
        self.pool_size, self.k, self.refresh = pool_size, k, refresh
        self.lake, self.store = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
        self.history: list[dict] = []
        self._load(self.store.current_id())

    def _load(self, release_id: str) -> None:
        self.release_id, make = release_retriever(self.store, release_id, self.pool_size, self.k, self.refresh,
                                                  self.channel, self.settings)
        self.pool: PoolRetriever | MultiGRRetriever = make()          # type: ignore[assignment]

    def retrieve(self, requests: RequestBatch, catalog: CatalogView) -> Candidates:
        return self.pool.retrieve(requests, catalog)

    def observe(self, day: int, raw: Mapping[str, pa.Table], truth: Mapping[str, pa.Table] | None = None) -> None:
        ds = parse_ds(day_ds(day))
        placed = _placed_items(raw)
        entry = {"ds": f"{ds}", "served_release": self.release_id, "retriever": self.pool.name,
                 "placements": int(len(placed)),
                 "placed_in_pool": float(np.isin(placed, self.pool.item_id).mean()) if len(placed) else None}
        for zone, tables in (("raw", raw), ("truth", truth or {})):
            for name, t in tables.items():
                self.lake.write_partition(zone, name, ds, t)
        self.pool.observe(day, raw, truth)           # tomorrow's fallback: the frozen model's refresh
        if ds == self.last_ds:                       # its release would serve no test day
            entry.update(pipeline={"ok": True, "skipped": "last test day", "failed_step": None, "seconds": {}},
                         published=False, next_release=self.release_id, next_pool_size=int(len(self.pool.item_id)))
            self.history.append(entry)
            return
        entry["pipeline"] = run_pipeline_day(self.settings, ds, self.steps)
        current = self.store.current_id()
        entry["published"] = entry["pipeline"]["ok"] and current != self.release_id
        if entry["published"]:
            self._load(current)
        elif entry["pipeline"]["ok"]:
            entry["pipeline"]["note"] = f"no new release became current (current: {current})"
        entry["next_release"], entry["next_pool_size"] = self.release_id, int(len(self.pool.item_id))
        log.info("closed loop %s: served %s, pipeline %s, serving %s from tomorrow", ds, entry["served_release"],
                 "ok" if entry["pipeline"]["ok"] else f"failed at {entry['pipeline']['failed_step']}", self.release_id)
        self.history.append(entry)


def _placed_items(raw: Mapping[str, pa.Table]) -> np.ndarray:
    cand = raw["rank_candidates"]
    channel = cand.column("channel").to_numpy(zero_copy_only=False)
    return cand.column("item_id").to_numpy(zero_copy_only=False)[channel == CHANNEL].astype(np.int64)


MARKER = ".growthgr-abtest"


def prepare_workdir(workdir: Path) -> Path:
    """An empty A/B working directory (one this command made before is cleared; anything else refused)."""
    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise FileExistsError(f"{workdir} is not empty and is not an A/B working directory: choose another --work-dir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("A/B closed-loop working directory (lake and release store copies per arm)\n")
    return workdir


def closed_loop_factory(settings: Settings, workdir: Path, release: str, steps: Sequence[Step] | None = None,
                        refresh: bool = True, last_ds: date | str | None = None) -> Callable[[str], Retriever]:
    """The `Experiment.make_arm_retriever` of `--retrain`: each retraining arm gets a copy of the
    source lake and release store under `workdir/<arm>/` (the sources are only read), serving
    `release` first; the fully untreated arm does not retrain (its channel serves nothing, so its
    models could not change what it serves) and gets a plain `PoolRetriever`. `steps`: default the
    daily pipeline's (`daily_steps`); `last_ds`: the last test day, after which no pipeline runs."""
    for root in (settings.lake_root, settings.releases_root):
        if "://" in root:
            raise ValueError(f"--retrain copies the lake and the release store locally; {root} is not local")
    steps = daily_steps() if steps is None else steps
    log.info("closed loop: after each test day %s", " -> ".join(name for name, _ in steps))
    source = ReleaseStore.from_settings(settings)
    release_id, plain = release_retriever(source, release, settings.itemltv.pool_size, settings.abtest.candidates,
                                          refresh)      # the untreated arm's: it never retrieves

    def make(arm: str) -> Retriever:
        if arm == CONTROL:
            return plain()
        home = Path(workdir) / arm
        shutil.copytree(settings.lake_root, home / "lake", ignore=shutil.ignore_patterns("*.lock"))
        if Path(settings.releases_root).exists():
            shutil.copytree(settings.releases_root, home / "releases")
        arm_settings = settings.model_copy(update={
            "lake_root": str(home / "lake"), "releases_root": str(home / "releases"),
            "storage": settings.storage.model_copy(update={"state_dir": None})})
        store = ReleaseStore.from_settings(arm_settings)
        if store.current_id() != release_id:
            store.set_current(release_id)
        return ClosedLoop(arm_settings, steps, settings.itemltv.pool_size, settings.abtest.candidates, refresh,
                          settings.abtest.channel, None if last_ds is None else parse_ds(last_ds))
    return make
