"""The daily DAG under a real Airflow 3 scheduler, production-shaped (issues 22 and 19).

`growthgr.airflow_local.start_airflow` starts an API server (the task workers report to its
execution API), a DAG processor and a scheduler with the LocalExecutor on a temporary home,
all on 127.0.0.1; the metadata DB is PostgreSQL, as in production: a private cluster of the
Debian `postgresql` package (`initdb` + `pg_ctl` on a free port, as the `postgres` user when
run as root), started here and removed at the end. Every task runs in its own worker process
(forked from the scheduler, which imported the tasks' modules at start-up: `preload`),
which inherits this environment (tiny profile, lake and release store under tmp, one retry
with no delay). The world is a copy of the shared tiny world (`conftest.TINY_WORLD`: 45 days
from 2026-01-01) with the label cohorts of the earlier days backfilled.
Without the PostgreSQL binaries the test skips, except in CI (`CI=true`), where it fails.

The scheduler does not create runs of its own (`[scheduler] use_job_schedule = False`):
unpausing the DAG would otherwise start a run for yesterday's interval on a world that ends in
February. Scenario, with the Airflow CLI:
  1. `airflow backfill create` of 2026-02-14 (to 23:59:59 of the last day: the daily DAG's intervals
     start at its raw-logs deadline, 06:00 UTC, not at midnight); once `spark_jobs` has committed item_daily_stats,
     its task process is killed with SIGKILL in the middle of the next Spark job: Airflow
     retries it (try 2) and its outputs equal those of an undisturbed run
     (`growthgr.pipeline.spark` on a copy of the lake taken before); the run succeeds, writes
     ds=2026-02-14 and nothing else, and publishes one release. (One day: a multi-day backfill,
     day after day, runs on an S3 lake in tests/test_dag_s3.py with the CLI's `run_days`; the DAG's
     one-run-at-a-time settings are checked in tests/test_dag_definition.py.)
  2. `airflow dags trigger simulate_platform_day --logical-date 2026-02-15`: the manual run delivers
     the raw logs of exactly that day (not the day before "now") and nothing else (the daily DAG's
     steps on a manually triggered day are the backfill's: one full daily run here is enough);
  3. the same backfill again creates no run: lake and release store are unchanged.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import TINY_WORLD, scheduler_env

from foundation import catalog
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from foundation.releases import ReleaseStore
from growthgr.airflow_local import TASK_MODULES, as_ds, free_port, start_airflow
from models.itemltv.data import SERVICE

pytestmark = pytest.mark.slow

DAG = "growthgr_daily"
PLATFORM_DAG = "simulate_platform_day"
BACKFILL = ["2026-02-14"]
MANUAL = "2026-02-15"
RUN_DAYS = {*BACKFILL, MANUAL}
TRAINING_SET = tuple(catalog.training_set(SERVICE))[:2]
RUN_TIMEOUT = 600  # seconds per wait (one day takes 1.5-3 min on 2 busy cores)
KILLED = (BACKFILL[0], "spark_jobs")  # the task whose process is killed (ds, task id)


def _postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin/ (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL cluster on 127.0.0.1:<free port> with an `airflow` database; yields its
    SQLAlchemy URL. PostgreSQL refuses to run as root: then the cluster belongs to `postgres`."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        reason = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run this test (.ci/run installs the package)")
        pytest.skip(reason)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    top = Path(tempfile.mkdtemp(prefix="growthgr-pg-"))  # not under pytest's root-only tmp
    if as_user:
        shutil.chown(top, "postgres", "postgres")
    data, port = top / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_user, str(bin_dir / tool), *args], check=True, capture_output=True, text=True,
                       cwd=top)

    try:
        pg("initdb", "-D", str(data), "-U", "airflow", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={top} -c timezone=UTC "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # a throwaway cluster
        pg("pg_ctl", "start", "-D", str(data), "-l", str(top / "postgres.log"), "-w", "-t", "60", "-o", options)
        try:
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow")
            yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
        finally:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60")
    except subprocess.CalledProcessError as exc:
        log = (top / "postgres.log").read_text() if (top / "postgres.log").exists() else ""
        raise RuntimeError(f"{exc.cmd} failed: {exc.stderr}\n{log}") from exc
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory, copy_world, postgres):
    """A copy of the shared tiny world (45 days from 2026-01-01), the outputs of an undisturbed
    `spark_jobs` for KILLED's day (on a copy of the lake) and a running local Airflow."""
    from growthgr import pipeline
    from spark_jobs.jobs import backfill

    top = tmp_path_factory.mktemp("scheduler")
    mp = pytest.MonkeyPatch()
    for key, value in scheduler_env(     # everything exported here is undone below
        top, postgres,
        GROWTHGR_ORCHESTRATION__RETRIES="1",  # as in production (the tiny profile has none)
        GROWTHGR_ORCHESTRATION__RETRY_DELAY_MINUTES="0",
        GROWTHGR_SIMULATOR__SEED=str(TINY_WORLD["seed"]),  # the platform DAG continues the shared world
    ).items():
        mp.setenv(key, value)
    s = load_settings()
    copy_world(top / "lake")
    backfill(Lake.from_settings(s), s.spark, s.storage, "itemltv_labels", "2026-02-06", "2026-02-13")
    # the undisturbed run of the task to be killed, in this process (its Spark session is up)
    assert not Lake.from_settings(s).exists("curated", "item_daily_stats", KILLED[0])  # written by the task
    reference = s.model_copy(update={"lake_root": str(top / "lake_reference")})
    shutil.copytree(s.lake_root, reference.lake_root)
    before = _snapshot(reference.lake_root)
    pipeline.spark(reference, parse_ds(KILLED[0]))
    expected = {key for key in _changed(before, _snapshot(reference.lake_root)) if key[2] == KILLED[0]}
    airflow = start_airflow(top / "airflow", sql_conn=postgres, preload=TASK_MODULES)
    try:
        yield s, airflow, (Lake.open(reference.lake_root), expected)
    finally:
        airflow.stop()
        mp.undo()
        alive = [p.pid for p in airflow.procs.values() if p.poll() is None]
        assert not alive, f"airflow services still running: {alive}"


def _snapshot(lake_root: str) -> dict:
    """Every committed partition of the lake -> its write id."""
    lake = Lake.open(lake_root)
    zones = sorted(p.name for p in Path(lake_root).iterdir() if p.is_dir())
    return {(z, t, f"{ds}"): lake.commit_info(z, t, ds).write_id
            for z in zones for t in lake.list_tables(z) for ds in lake.list_partitions(z, t)}


def _changed(before: dict, after: dict) -> set:
    return {key for key, write_id in after.items() if before.get(key) != write_id}


def _written(before: dict, after: dict) -> set:
    """Partitions (zone, table, ds) added or rewritten between two snapshots.

    Apart from the run's own ds, a run may only add training sets of earlier sample partitions
    that have none yet (`growthgr.pipeline.training_set`: the first run builds them for the
    label cohorts backfilled before it); it never rewrites another day."""
    changed = _changed(before, after)
    others = {key for key in changed if key[2] not in RUN_DAYS}
    assert all(key[:2] == TRAINING_SET and key not in before for key in others), sorted(others)
    return changed - others


def _release_ids(s) -> list[str]:
    return [r["release_id"] for r in ReleaseStore.from_settings(s).list() if r["complete"]]


def _frame(lake: Lake, zone: str, table: str, ds: str) -> pd.DataFrame:
    """A partition's rows in a canonical order (sorted on every non-nested column)."""
    data = lake.read_partition(zone, table, ds)
    keys = [f.name for f in data.schema if not pa.types.is_nested(f.type)]
    return data.sort_by([(k, "ascending") for k in keys]).to_pandas()


def _kill_task_process(airflow, ds: str, task_id: str, midway: tuple[Lake, str, str]) -> dict:
    """Wait until `task_id` of the run for `ds` runs Spark and has committed its partition of
    `midway` (lake, zone, table), then SIGKILL its task process (the task runner the supervisor
    forked: pid in `task_instance.pid`, titled `airflow worker -- <ti id>`; not the supervisor,
    the executor or the scheduler), in the middle of its next Spark job. Returns what was killed."""
    import psutil

    def running():
        run = next((r for r in airflow.dag_runs(DAG) if r["ds"] == ds), None)
        if run is None:
            return None
        rows = airflow.query("SELECT id, state, pid, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? "
                             "AND task_id = ?", DAG, run["run_id"], task_id)
        if not rows:
            return None
        ti_id, state, pid, try_number = rows[0]
        assert state not in ("success", "failed", "up_for_retry"), f"{task_id} {ds} ended ({state}) before the kill"
        if state != "running" or not pid:
            return None
        try:
            proc = psutil.Process(pid)
            spark = [c for c in proc.children(recursive=True) if c.name() == "java"]
            if str(ti_id) in " ".join(proc.cmdline()) and spark and midway[0].exists(*midway[1:], ds):
                return {"run_id": run["run_id"], "pid": pid, "try_number": try_number, "proc": proc, "jvm": spark}
        except psutil.NoSuchProcess:
            pass
        return None

    victim = airflow.wait(f"{task_id} of {ds} running Spark", running, RUN_TIMEOUT, poll=0.5)
    victim["proc"].send_signal(signal.SIGKILL)
    victim["proc"].wait(timeout=30)
    # the Spark JVM exits when its Python driver's pipe closes (PySpark's gateway watches stdin)
    _, orphans = psutil.wait_procs(victim["jvm"], timeout=60)
    for p in orphans:
        p.kill()
    assert not orphans, f"the killed task's Spark JVM outlived it: {orphans}"
    return victim


def _failure(airflow, runs) -> str:
    return "; ".join(f"{r['run_id']}: {r['state']} {airflow.task_states(DAG, r['run_id'])}" for r in runs.values()) + \
        f" (task logs under {airflow.home / 'logs'})"


def test_backfill_and_manual_run_under_the_scheduler(world):
    s, airflow, (reference, expected) = world
    timings = {}
    before = _snapshot(s.lake_root)

    # 1. backfill a day: run by the scheduler; one task process is killed
    t0 = time.monotonic()
    airflow.cli("backfill", "create", "--dag-id", DAG, "--from-date", BACKFILL[0], "--to-date", f"{BACKFILL[-1]}T23:59:59",
                "--max-active-runs", "1")
    airflow.cli("dags", "unpause", DAG)  # queued runs of a paused DAG never start
    killed = _kill_task_process(airflow, *KILLED, (Lake.from_settings(s), "curated", "item_daily_stats"))
    assert killed["try_number"] == 1
    runs = airflow.wait_for_runs(DAG, BACKFILL, timeout=RUN_TIMEOUT)
    timings["backfill"] = time.monotonic() - t0
    assert all(r["state"] == "success" and r["run_type"] == "backfill" for r in runs.values()), _failure(airflow, runs)
    assert all(set(airflow.task_states(DAG, r["run_id"]).values()) == {"success"} for r in runs.values())
    # the killed try failed and was retried once; no other task needed a retry
    tries = {(r["ds"], t): n for r in runs.values() for t, n in
             airflow.query("SELECT task_id, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                           DAG, r["run_id"])}
    assert tries.pop(KILLED) == 2 and set(tries.values()) == {1}, tries
    history = airflow.query("SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND run_id = ? "
                            "AND task_id = ?", DAG, killed["run_id"], KILLED[1])
    assert [n for n, _ in history] == [1] and history[0][1] in ("up_for_retry", "failed"), history
    # ... and the retry wrote what an undisturbed run writes
    retried = {key for key in _changed(before, _snapshot(s.lake_root)) if key[2] == KILLED[0]}
    assert expected and expected <= retried, sorted(expected - retried)
    for zone, table, ds in sorted(expected):
        pd.testing.assert_frame_equal(_frame(Lake.from_settings(s), zone, table, ds), _frame(reference, zone, table, ds),
                                      obj=f"{zone}/{table}/ds={ds}")

    after_backfill = _snapshot(s.lake_root)
    written = _written(before, after_backfill)
    assert {ds for _, _, ds in written} == set(BACKFILL), sorted(written)
    for table in (("curated", "new_item_pool"), ("samples", "gr_samples"), ("features", "item_features")):
        assert {ds for z, t, ds in written if (z, t) == table} == set(BACKFILL), table
    releases = _release_ids(s)
    assert all(any(r.startswith(f"ds={day}") for r in releases) for day in BACKFILL), releases
    assert ReleaseStore.from_settings(s).current_id().startswith(f"ds={BACKFILL[-1]}")

    # 2. a manual run of the platform DAG with a logical date far from "now" delivers exactly that day
    t0 = time.monotonic()
    airflow.cli("dags", "unpause", PLATFORM_DAG)
    airflow.cli("dags", "trigger", PLATFORM_DAG, "--logical-date", f"{MANUAL}T00:00:00+00:00")
    runs = airflow.wait_for_runs(PLATFORM_DAG, [MANUAL], timeout=RUN_TIMEOUT)
    timings["manual"] = time.monotonic() - t0
    assert runs[MANUAL]["state"] == "success" and runs[MANUAL]["run_type"] == "manual", _failure(airflow, runs)
    manual_written = _changed(after_backfill, _snapshot(s.lake_root))
    assert {ds for _, _, ds in manual_written} == {MANUAL}, sorted(manual_written)
    assert {(z, t) for z, t, _ in manual_written} >= {("raw", "search_requests"), ("raw", "items")}, manual_written
    assert {z for z, _, _ in manual_written} <= {"raw", "truth", "sim_state"}, manual_written  # logs, nothing derived
    assert ReleaseStore.from_settings(s).current_id().startswith(f"ds={BACKFILL[-1]}")

    # 3. the same backfill again: Airflow creates no run (the days already succeeded), nothing changes
    airflow.wait_for_backfills(DAG)  # only one active backfill per DAG
    lake_before, releases_before, n_runs = _snapshot(s.lake_root), _release_ids(s), len(airflow.dag_runs(DAG))
    airflow.cli("backfill", "create", "--dag-id", DAG, "--from-date", BACKFILL[0], "--to-date", f"{BACKFILL[-1]}T23:59:59",
                "--max-active-runs", "1")
    skipped = airflow.query("SELECT logical_date, exception_reason FROM backfill_dag_run WHERE backfill_id = "
                            "(SELECT max(id) FROM backfill WHERE dag_id = ?)", DAG)
    assert sorted((as_ds(ld), reason) for ld, reason in skipped) == [(d, "already exists") for d in BACKFILL]
    assert len(airflow.dag_runs(DAG)) == n_runs
    assert _snapshot(s.lake_root) == lake_before
    assert _release_ids(s) == releases_before
    assert not [r for r in airflow.dag_runs(DAG) if r["ds"] not in BACKFILL]
    print(f"\nscheduler runs: {', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}")

