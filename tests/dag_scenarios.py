"""The daily-DAG scenarios of the tiny world, built once per test session (`conftest.build_once`)
and shared by tests/test_dag_daily.py (lake B: good day, faulty day, repaired day, re-run) and
tests/test_dag_s3.py (lake A backfilled over both days on an `s3://` lake, compared with lake B),
whichever xdist worker asks first; no tests here.

Products (each a folder with `lake/` and `releases/` where it holds a lake):
- `dag_world`: the shared tiny world (2026-01-01..02-14) + 02-15, with the label cohorts of the
  earlier days and two days of gr_samples backfilled by Spark; `A/lake` then receives a clean day D,
  `B/lake` day D with nulls injected into its raw logs.
- `dag_good`: lake B after the good day 02-15 under Airflow (`good.json`: its outcome and release;
  `lineage.json`: the OpenLineage events of the run, its tasks' and dbt's).
- `dag_repaired`: a copy of `dag_good`; day D runs on its faulty logs (refused), the clean logs of D
  are delivered again (lake A's raw partitions), D runs again, then once more (the re-run)
  (`repaired.json`: the three outcomes, what the store and the raw gate held after the refused
  run, the release after the repair and after the re-run; `frames.pkl`: every output partition
  of both days after the repair and after the re-run, the D partitions of `S3_OUTPUTS` and the
  dbt marts' row counts after the repair).
Products are never written after they are built: a test that runs a day copies one first.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import build_once

from foundation import catalog
from foundation.config import Settings, load_settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.schemas import RAW_TABLES

D = "2026-02-16"
DAYS = ["2026-02-15", D]
OUTPUTS = [
    ("curated", "item_daily_stats"), ("samples", "itemltv_labels"), ("samples", "itemltv_samples"),
    ("features", "item_features"), ("features", "user_features"), ("samples", "gr_samples"),
    ("curated", "item_sids"), ("curated", "new_item_pool"),
]
# What an S3 run of a day must reproduce exactly.
S3_OUTPUTS = [
    catalog.ITEM_DAILY_STATS, catalog.USER_FEATURES, catalog.ITEM_FEATURES, catalog.QUERY_FEATURES,
    catalog.GR_SAMPLES, catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES, catalog.training_set("itemltv_v1"),
    catalog.ITEMLTV_POOL_FEATURES, catalog.ITEM_EMBEDDINGS, catalog.ITEM_SIDS, catalog.NEW_ITEM_POOL,
]
MARTS = ["dim_items", "fct_itemltv_labels", "new_item_cohorts", "fct_search_funnel_daily",
         "staging.stg_items", "staging.stg_search_requests", "staging.stg_item_daily_stats",
         "staging.stg_itemltv_labels"]
FUNNEL = "select sum(exposures) as e, sum(gmv) as g from fct_search_funnel_daily"


@contextmanager
def on_lake(root: Path, **env: str) -> Iterator[Settings]:
    """The tiny profile's settings with the lake and release store under `root` (and `env`), set in
    this process's environment while inside (the DAG tasks read them from there)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROWTHGR_PROFILE", "tiny")
        mp.setenv("GROWTHGR_LAKE_ROOT", str(root / "lake"))
        mp.setenv("GROWTHGR_RELEASES_ROOT", str(root / "releases"))
        for key, value in env.items():
            mp.setenv(key, value)
        yield load_settings()


def settings_of(root: Path) -> Settings:
    """The settings of the lake and release store under `root` (read-only use)."""
    return load_settings("tiny", env={**os.environ, "GROWTHGR_LAKE_ROOT": str(root / "lake"),
                                      "GROWTHGR_RELEASES_ROOT": str(root / "releases")})


def copy_product(product: Path, dest: Path) -> Path:
    """A private copy of a product's lake and release store (to run days on)."""
    for part in ("lake", "releases"):
        if (product / part).exists():
            shutil.copytree(product / part, dest / part)
    return dest


def frames(lake: Lake, outputs=OUTPUTS, days=DAYS) -> dict:
    return {(z, t, ds): lake.read_partition(z, t, ds).to_pandas() for z, t in outputs for ds in days
            if lake.exists(z, t, ds)}


def outcome_json(outcome) -> dict:
    return {"state": outcome.state, "tasks": outcome.tasks}


def _build_world(folder: Path, copy_world) -> None:
    from simulator.run import simulate
    from spark_jobs.jobs import backfill

    base = folder / "base"
    with on_lake(base) as s:
        copy_world(base / "lake")                            # the shared tiny world, 2026-01-01 .. 02-14
        simulate(Lake.from_settings(s), s.simulator, seed=1, days=1, progress=False)   # + 2026-02-15
        backfill(Lake.from_settings(s), s.spark, s.storage, "itemltv_labels", "2026-02-06", "2026-02-14")
        # two days of gr_samples before the first run: MultiGR holds out 02-15 and trains on 02-13..14
        backfill(Lake.from_settings(s), s.spark, s.storage, "gr_samples", "2026-02-13", "2026-02-14")
    for name, inject in (("A", ()), ("B", ("nulls",))):
        shutil.copytree(base, folder / name)
        with on_lake(folder / name) as s:
            simulate(Lake.from_settings(s), s.simulator, seed=1, days=1, inject=inject,
                     inject_day=D if inject else None, progress=False)
    shutil.rmtree(base)


def world(shared_root: Path, copy_world) -> Path:
    return build_once(shared_root, "dag_world", lambda folder: _build_world(folder, copy_world))


def _build_good(folder: Path, world_dir: Path, airflow_home: Path) -> None:
    from growthgr.airflow_local import prepare, run_day
    from growthgr.lineage import events_file, read_events

    prepare(airflow_home)
    copy_product(world_dir / "B", folder)
    with on_lake(folder) as s:
        outcome = run_day("growthgr_daily", DAYS[0])
        current = ReleaseStore.from_settings(s).current_id()
        # the run's OpenLineage events: its tasks' (on this lake) and their children's (dbt's); the
        # worker's Airflow home collects the events of every run in the worker
        events = read_events(events_file(s.orchestration.lineage, airflow_home))
        tasks = [e for e in events if e["job"]["name"].startswith("growthgr_daily.")
                 and str(folder) in json.dumps(e.get("inputs", []) + e.get("outputs", []))]
        runs = {e["run"]["runId"] for e in tasks}
        children = [e for e in events if e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") in runs
                    and e not in tasks]
    (folder / "good.json").write_text(json.dumps({**outcome_json(outcome), "release": current}))
    (folder / "lineage.json").write_text(json.dumps({"tasks": tasks, "children": children}))


def good(shared_root: Path, copy_world, airflow_home: Path) -> Path:
    world_dir = world(shared_root, copy_world)
    return build_once(shared_root, "dag_good", lambda folder: _build_good(folder, world_dir, airflow_home))


def _build_repaired(folder: Path, good_dir: Path, world_dir: Path, airflow_home: Path) -> None:
    from growthgr.airflow_local import prepare, run_day
    from warehouse.runner import query

    prepare(airflow_home)
    copy_product(good_dir, folder)
    with on_lake(folder) as s:
        lake, releases = Lake.from_settings(s), ReleaseStore.from_settings(s)
        faulty = run_day("growthgr_daily", D)
        after_faulty = {"current": releases.current_id(), "releases": [r["release_id"] for r in releases.list()],
                        "raw_gate": lake.store.get_bytes(f"validation/gate_results/ds={D}/raw.json").decode()}
        clean = Lake.open(str(world_dir / "A" / "lake"))       # the clean logs of D, delivered again
        for table in RAW_TABLES:
            lake.write_partition("raw", table, D, clean.read_partition("raw", table, D))
        repaired = run_day("growthgr_daily", D)
        snapshot = {"outputs": frames(lake), "s3_outputs": {d.table: lake.read_partition(d.zone, d.table, D).to_pandas()
                                                           for d in S3_OUTPUTS},
                    "marts": {t: int(query(lake, f"select count(*) as n from {t}").frame.n[0]) for t in MARTS},
                    "funnel": query(lake, FUNNEL).frame}
        released = releases.current_id()
        # D once more, in place: a re-run is idempotent on the same lake and config (the release id
        # digests the config, lake paths included)
        rerun = run_day("growthgr_daily", D)
        snapshot["after_rerun"] = frames(lake)
        (folder / "repaired.json").write_text(json.dumps({
            "faulty": outcome_json(faulty), "after_faulty": after_faulty,
            "repaired": outcome_json(repaired), "release": released,
            "rerun": {**outcome_json(rerun), "release": releases.current_id()}}))
    (folder / "frames.pkl").write_bytes(pickle.dumps(snapshot))


def repaired(shared_root: Path, copy_world, airflow_home: Path) -> Path:
    good_dir = good(shared_root, copy_world, airflow_home)
    world_dir = world(shared_root, copy_world)
    return build_once(shared_root, "dag_repaired",
                      lambda folder: _build_repaired(folder, good_dir, world_dir, airflow_home))


def read_json(product: Path, name: str) -> dict:
    return json.loads((product / name).read_text())


def snapshot(product: Path) -> dict:
    return pickle.loads((product / "frames.pkl").read_bytes())
