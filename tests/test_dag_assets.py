"""The daily DAG's data-aware schedule under a real Airflow 3 scheduler (SQLite home, LocalExecutor,
the scheduler creating runs of its own, as in production).

The world is a copy of the shared tiny world (raw logs up to 2026-02-14). Unpausing the DAGs makes
the scheduler start each one's latest time-based run, on days far after the world: the daily DAG's
deadline run finds no raw logs and fails at `gate_raw`; the platform DAG's cannot simulate a day
that is not the next one. Then a manual run of the platform DAG delivers the raw logs of
2026-02-15 and updates the raw-logs Asset with `{"ds": "2026-02-15"}`: the scheduler starts an
asset-triggered run of the daily DAG, which processes exactly that day (its raw gate passes and
stores its result for 2026-02-15). The test stops Airflow once that gate has passed (the rest of
the day's steps are tested elsewhere).
"""

from __future__ import annotations

import time

import pytest

from foundation.config import load_settings
from foundation.lake import Lake
from growthgr.airflow_local import start_airflow
from growthgr.status import gate_statuses

pytestmark = pytest.mark.slow

DAILY, PLATFORM = "growthgr_daily", "simulate_platform_day"
DAY = "2026-02-15"        # the day after the shared tiny world
TIMEOUT = 600


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, copy_world):
    from conftest import TINY_WORLD, scheduler_env

    top = tmp_path_factory.mktemp("assets")
    mp = pytest.MonkeyPatch()
    # the platform DAG continues the shared world; everything exported here is undone below
    for key, value in scheduler_env(top, GROWTHGR_SIMULATOR__SEED=str(TINY_WORLD["seed"])).items():
        mp.setenv(key, value)
    copy_world(top / "lake")
    running = start_airflow(top / "airflow", cron=True, preload=("growthgr.steps", "simulator.run"))
    try:
        yield load_settings(), running
    finally:
        running.stop()
        mp.undo()


def test_raw_logs_trigger_the_daily_run_of_their_day_and_the_deadline_run_fails_without_them(airflow):
    s, af = airflow
    af.cli("dags", "unpause", DAILY)      # its latest deadline run starts: no raw logs for that day
    deadline = af.wait("the daily DAG's deadline run finished",
                       lambda: [r for r in af.dag_runs(DAILY) if r["run_type"] == "scheduled"
                                and r["state"] in ("success", "failed")], TIMEOUT)
    assert deadline[0]["state"] == "failed" and deadline[0]["ds"] != DAY
    assert af.task_states(DAILY, deadline[0]["run_id"])["gate_raw"] == "failed"

    af.cli("dags", "unpause", PLATFORM)
    af.cli("dags", "trigger", PLATFORM, "--logical-date", f"{DAY}T00:00:00+00:00")
    platform = af.wait_for_runs(PLATFORM, [DAY], timeout=TIMEOUT)[DAY]
    assert platform["state"] == "success", platform
    assert Lake.from_settings(s).exists("raw", "search_requests", DAY)

    def raw_gate_passed():
        runs = [r for r in af.dag_runs(DAILY) if r["run_type"] == "asset_triggered"]
        return runs if runs and af.task_states(DAILY, runs[0]["run_id"]).get("gate_raw") == "success" else None

    t0 = time.monotonic()
    (run,) = af.wait("the asset-triggered daily run passed its raw gate", raw_gate_passed, TIMEOUT)
    assert run["ds"] == DAY                               # the event's ds (the run has no logical date)
    (raw,) = gate_statuses(Lake.from_settings(s), DAY, [("raw", True)])
    assert raw.state == "passed", raw
    print(f"\nasset-triggered run: raw gate passed {time.monotonic() - t0:.0f}s after the raw logs arrived")
