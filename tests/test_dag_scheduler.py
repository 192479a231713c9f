"""The daily DAG under a real Airflow 3 scheduler, as a data engineer runs it (issue 22).

`growthgr.airflow_local.start_airflow` starts an API server (the task workers report to its
execution API), a DAG processor and a scheduler with the LocalExecutor on a temporary home
(SQLite metadata DB), all on 127.0.0.1; every task runs in its own worker process, which
inherits this environment (tiny profile, lake and release store under tmp). The world is the
issue's reproduction: `growthgr simulate --profile tiny --start 2026-01-01 --days 45 --seed 11`
with the label cohorts of the earlier days backfilled.

The scheduler does not create runs of its own (`[scheduler] use_job_schedule = False`):
unpausing the DAG would otherwise start a run for yesterday's interval on a world that ends in
February. Scenario, with the Airflow CLI:
  1. `airflow backfill create` of 2026-02-13..14 (one run at a time, as the DAG's
     max_active_runs): both runs succeed, write ds=2026-02-13/14 and nothing else, and publish
     one release each;
  2. the platform delivers 2026-02-15; `airflow dags trigger --logical-date 2026-02-15` writes
     and publishes ds=2026-02-15 (not the day before "now");
  3. the same backfill again creates no run: lake and release store are unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from growthgr.airflow_local import airflow_env, start_airflow
from growthgr.core import catalog
from growthgr.core.config import load_settings
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore
from models.itemltv.data import SERVICE

pytestmark = pytest.mark.slow

DAG = "growthgr_daily"
BACKFILL = ["2026-02-13", "2026-02-14"]
MANUAL = "2026-02-15"
RUN_DAYS = {*BACKFILL, MANUAL}
TRAINING_SET = tuple(catalog.training_set(SERVICE))[:2]
RUN_TIMEOUT = 600  # seconds per wait (one day takes 1.5-3 min on 2 busy cores)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The issue's tiny world (45 days from 2026-01-01, seed 11) and a running local Airflow."""
    from growthgr.simulator.run import simulate
    from spark_jobs.jobs import backfill

    top = tmp_path_factory.mktemp("scheduler")
    mp = pytest.MonkeyPatch()
    for key, value in {
        "GROWTHGR_PROFILE": "tiny",
        "GROWTHGR_LAKE_ROOT": str(top / "lake"),
        "GROWTHGR_RELEASES_ROOT": str(top / "releases"),
        "GROWTHGR_SPARK__DRIVER_HOST": "127.0.0.1",  # Spark in the task processes: loopback only
        "SPARK_LOCAL_IP": "127.0.0.1",
        **airflow_env(top / "airflow"),  # start_airflow exports these here too: undone below
    }.items():
        mp.setenv(key, value)
    s = load_settings()
    simulate(Lake.from_settings(s), s.simulator, seed=11, start="2026-01-01", days=45, progress=False)
    backfill(Lake.from_settings(s), s.spark, s.storage, "itemltv_labels", "2026-02-06", "2026-02-12")
    airflow = start_airflow(top / "airflow")
    try:
        yield s, airflow
    finally:
        airflow.stop()
        mp.undo()
        alive = [p.pid for p in airflow.procs.values() if p.poll() is None]
        assert not alive, f"airflow services still running: {alive}"


def _snapshot(lake_root: str) -> dict:
    """Every committed partition of the lake -> its write id."""
    lake = Lake.open(lake_root)
    zones = sorted(p.name for p in Path(lake_root).iterdir() if p.is_dir())
    return {(z, t, ds): lake.commit_info(z, t, ds).write_id
            for z in zones for t in lake.list_tables(z) for ds in lake.list_partitions(z, t)}


def _written(before: dict, after: dict) -> set:
    """Partitions (zone, table, ds) added or rewritten between two snapshots.

    Apart from the run's own ds, a run may only add training sets of earlier sample partitions
    that have none yet (`growthgr.pipeline.training_set`: the first run builds them for the
    label cohorts backfilled before it); it never rewrites another day."""
    changed = {key for key, write_id in after.items() if before.get(key) != write_id}
    others = {key for key in changed if key[2] not in RUN_DAYS}
    assert all(key[:2] == TRAINING_SET and key not in before for key in others), sorted(others)
    return changed - others


def _release_ids(s) -> list[str]:
    return [r["release_id"] for r in ReleaseStore.from_settings(s).list() if r["complete"]]


def _failure(airflow, runs) -> str:
    return "; ".join(f"{r['run_id']}: {r['state']} {airflow.task_states(DAG, r['run_id'])}" for r in runs.values()) + \
        f" (task logs under {airflow.home / 'logs'})"


def test_backfill_and_manual_run_under_the_scheduler(world):
    s, airflow = world
    timings = {}
    before = _snapshot(s.lake_root)

    # 1. backfill two days: run by the scheduler, one run at a time
    t0 = time.monotonic()
    airflow.cli("backfill", "create", "--dag-id", DAG, "--from-date", BACKFILL[0], "--to-date", BACKFILL[-1],
                "--max-active-runs", "1")
    airflow.cli("dags", "unpause", DAG)  # queued runs of a paused DAG never start
    runs = airflow.wait_for_runs(DAG, BACKFILL, timeout=RUN_TIMEOUT)
    timings["backfill"] = time.monotonic() - t0
    assert all(r["state"] == "success" and r["run_type"] == "backfill" for r in runs.values()), _failure(airflow, runs)
    assert all(set(airflow.task_states(DAG, r["run_id"]).values()) == {"success"} for r in runs.values())

    after_backfill = _snapshot(s.lake_root)
    written = _written(before, after_backfill)
    assert {ds for _, _, ds in written} == set(BACKFILL), sorted(written)
    for table in (("curated", "new_item_pool"), ("samples", "gr_samples"), ("features", "item_features")):
        assert {ds for z, t, ds in written if (z, t) == table} == set(BACKFILL), table
    releases = _release_ids(s)
    assert all(any(r.startswith(f"ds={day}") for r in releases) for day in BACKFILL), releases
    assert ReleaseStore.from_settings(s).current_id().startswith(f"ds={BACKFILL[-1]}")

    # 2. the next day's logs arrive; a manual run with that logical date processes exactly that day
    from growthgr.simulator.run import simulate

    simulate(Lake.from_settings(s), s.simulator, seed=11, days=1, progress=False)
    t0 = time.monotonic()
    airflow.cli("dags", "trigger", DAG, "--logical-date", f"{MANUAL}T00:00:00+00:00")
    runs = airflow.wait_for_runs(DAG, [MANUAL], timeout=RUN_TIMEOUT)
    timings["manual"] = time.monotonic() - t0
    assert runs[MANUAL]["state"] == "success" and runs[MANUAL]["run_type"] == "manual", _failure(airflow, runs)
    lake = Lake.from_settings(s)
    for table in (("curated", "new_item_pool"), ("samples", "gr_samples")):
        assert lake.list_partitions(*table)[-1] == MANUAL, table
    current = ReleaseStore.from_settings(s).current_id()
    assert current.startswith(f"ds={MANUAL}"), current
    manual_written = _written(after_backfill, _snapshot(s.lake_root))
    assert {ds for _, _, ds in manual_written} == {MANUAL}, sorted(manual_written)

    # 3. the same backfill again: Airflow creates no run (the days already succeeded), nothing changes
    airflow.wait_for_backfills(DAG)  # only one active backfill per DAG
    lake_before, releases_before, n_runs = _snapshot(s.lake_root), _release_ids(s), len(airflow.dag_runs(DAG))
    airflow.cli("backfill", "create", "--dag-id", DAG, "--from-date", BACKFILL[0], "--to-date", BACKFILL[-1],
                "--max-active-runs", "1")
    skipped = airflow.query("SELECT logical_date, exception_reason FROM backfill_dag_run WHERE backfill_id = "
                            "(SELECT max(id) FROM backfill WHERE dag_id = ?)", DAG)
    assert sorted((ld[:10], reason) for ld, reason in skipped) == [(d, "already exists") for d in BACKFILL]
    assert len(airflow.dag_runs(DAG)) == n_runs
    assert _snapshot(s.lake_root) == lake_before
    assert _release_ids(s) == releases_before
    assert not [r for r in airflow.dag_runs(DAG) if r["ds"] not in {*BACKFILL, MANUAL}]
    print(f"\nscheduler runs: {', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}")
