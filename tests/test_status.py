"""`growthgr status` on a tiny world: a day whose raw logs never arrived, run by the real daily DAG
(dag.test, SQLite metadata DB) and refused at its raw gate, after a published day that keeps serving.

The published day is written through the real stores (raw partitions, passing gate results,
a release with a manifest); the refused day is a real Airflow run with its real gate result and
step traceback. Status is read back through the CLI, as cron or a monitor would.
"""

from __future__ import annotations

import json
from pathlib import Path

import dag_scenarios as dag
import pandas as pd
import pytest
from typer.testing import CliRunner

from expectations.gate import GateResult, store_result
from foundation.lake import Lake, parse_ds
from foundation.releases import ReleaseStore
from foundation.schemas import RAW_TABLES
from growthgr.cli import app
from growthgr.status import DagRunStatus, FailedTask, GateStatus, gate_status, pick_runs, verdict
from growthgr.steps import in_order

GOOD, BAD = "2026-03-01", "2026-03-02"   # after the days other tests run in the same metadata DB
GATES = [(s.gate, s.publish) for s in in_order() if s.gate]


def _publish_good_day(root: Path) -> str:
    """Day GOOD as the pipeline leaves it: raw partitions, the gates' passing results naming the
    writes they validated, a release of the day made current. Returns the release id."""
    settings = dag.settings_of(root)
    lake, releases = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
    writes = [{"zone": "raw", "table": t, "ds": GOOD,
               "write_id": lake.write_partition("raw", t, GOOD, pd.DataFrame({"id": [1, 2]})).write_id}
              for t in RAW_TABLES]
    for name, _ in GATES:
        store_result(lake, GateResult(name, parse_ds(GOOD), True, [], [name], 1, writes))
    release = releases.publish(f"ds={GOOD}-0123456789", {"metrics.json": b"{}"}, {"ds": GOOD})
    return release.release_id


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_home):
    """(root of the lake and release store, Airflow home, release of GOOD): GOOD published, BAD
    run by the daily DAG without its raw logs."""
    from growthgr.airflow_local import prepare, run_day

    root = tmp_path_factory.mktemp("status")
    release_id = _publish_good_day(root)
    prepare(airflow_home)
    with dag.on_lake(root):
        outcome = run_day("growthgr_daily", BAD)
    assert outcome.tasks["gate_raw"] == "failed" and outcome.tasks["publish"] == "upstream_failed", outcome.tasks
    return root, airflow_home, release_id


def status(world, *args: str):
    """`growthgr status --airflow-home <home> <args>` on the world's lake: (exit code, output)."""
    root, home, _ = world
    env = {"GROWTHGR_PROFILE": "tiny", "GROWTHGR_LAKE_ROOT": str(root / "lake"),
           "GROWTHGR_RELEASES_ROOT": str(root / "releases")}
    out = CliRunner().invoke(app, ["status", "--airflow-home", str(home), *args], env=env)
    assert out.exception is None or isinstance(out.exception, SystemExit), out.output
    return out.exit_code, out.output


def test_published_day_exits_0_naming_the_serving_release_and_passed_gates(world):
    code, output = status(world, "--ds", GOOD, "--json")
    report = json.loads(output)
    assert code == 0 and report["ok"], report["reason"]
    assert report["ds"] == GOOD and report["published"] == [world[2]]
    assert report["reason"] == f"ds={GOOD}: published {world[2]}"
    assert report["serving"]["release_id"] == world[2] and report["serving"]["ds"] == GOOD
    assert 0 <= report["serving"]["age_hours"] < 1
    assert {g["name"]: g["state"] for g in report["gates"]} == {name: "passed" for name, _ in GATES}
    assert {r["table"]: r["newest"] for r in report["raw"]} == {t: GOOD for t in RAW_TABLES}


def test_refused_day_exits_1_naming_the_failed_task_its_logs_and_the_gate(world):
    code, output = status(world, "--json")            # the newest day: BAD, from the daily run
    report = json.loads(output)
    assert code == 1 and not report["ok"] and report["ds"] == BAD and report["published"] == []
    assert report["reason"].startswith(f"ds={BAD}: not published: growthgr_daily run ")
    assert "failed task(s): gate_raw" in report["reason"] and "gate raw failed" in report["reason"]
    assert report["serving"]["release_id"] == world[2]          # the published day keeps serving
    (run,) = [r for r in report["runs"] if r["dag_id"] == "growthgr_daily" and r["ds"] == BAD]
    assert run["state"] == "failed" and run["upstream_failed"] == len(in_order()) - 1
    (task,) = run["failed"]
    assert task["task_id"] == "gate_raw" and task["try_number"] == 1
    assert task["log"] == str(world[1].absolute() / "logs" / "dag_id=growthgr_daily" / f"run_id={run['run_id']}"
                              / "task_id=gate_raw" / "attempt=1.log")
    assert "partition_exists" in Path(task["step_log"]).read_text()   # the step's traceback in the lake
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["raw"]["state"] == "failed" and gates["raw"]["failures"] == len(RAW_TABLES)
    assert "rule=partition_exists" in gates["raw"]["first_failure"]
    assert gates["features"]["state"] == "missing" and not gates["labels"]["required"]


def test_report_starts_with_the_verdict_line(world):
    code, output = status(world, "--ds", BAD)
    lines = output.splitlines()
    assert code == 1 and lines[0].startswith(f"ds={BAD}: not published: ")
    assert f"serving: {world[2]} (ds {GOOD}" in output and "gate_raw: failed, try 1; log " in output
    assert "Traceback" not in output


def test_unreadable_metadata_db_is_reported_and_the_release_still_decides(world, tmp_path):
    root, _, release_id = world
    code, output = status((root, tmp_path / "no-home", release_id), "--ds", GOOD, "--json")
    report = json.loads(output)
    assert code == 0 and report["runs"] == [] and "cannot read the metadata DB" in report["airflow_error"]


@pytest.mark.slow
def test_the_good_day_of_the_daily_dag_scenarios(shared_root, copy_world, airflow_home):
    """The day the whole daily DAG published (`dag_scenarios.good`): exit 0, its release serving,
    every gate's real result passed."""
    good_dir = dag.good(shared_root, copy_world, airflow_home)
    release_id = dag.read_json(good_dir, "good.json")["release"]
    code, output = status((good_dir, airflow_home, release_id), "--ds", dag.DAYS[0], "--json")
    report = json.loads(output)
    assert code == 0 and report["reason"] == f"ds={dag.DAYS[0]}: published {release_id}"
    assert report["serving"]["release_id"] == release_id and report["serving"]["ds"] == dag.DAYS[0]
    assert all(g["state"] == "passed" for g in report["gates"] if g["required"]), report["gates"]


# -- the pure parts ----------------------------------------------------------------------------------
def test_pick_runs_keeps_the_days_latest_run_when_older_than_the_last_ones():
    rows = [{"run_id": f"r{i}", "ds": f"2026-01-0{i}"} for i in range(1, 6)]
    assert [r["run_id"] for r in pick_runs(rows, None, 2)] == ["r5", "r4"]
    assert [r["run_id"] for r in pick_runs(rows, "2026-01-01", 2)] == ["r5", "r4", "r1"]


def test_verdict_names_a_running_run_and_a_running_gate():
    running = DagRunStatus("growthgr_daily", "scheduled__x", "2026-01-05", "running", "scheduled", None)
    ok, reason = verdict("2026-01-05", [], [GateStatus("pool", True, "running")], [running])
    assert not ok and reason == "ds=2026-01-05: not published: growthgr_daily run scheduled__x is running; gate pool running"
    failed = DagRunStatus("growthgr_daily", "m", "2026-01-05", "failed", "manual", "t",
                          [FailedTask("itemltv", "failed", 3, None, None)])
    assert "failed task(s): itemltv" in verdict("2026-01-05", [], [], [failed])[1]
    assert verdict(None, [], [], [])[0] is False
    assert verdict("2026-01-05", [], [], [], "no DB")[1].endswith("no growthgr_daily run (Airflow: no DB)")


def test_gate_status_of_a_stored_result():
    assert gate_status("raw", True, {}).state == "missing"
    assert gate_status("raw", True, {"status": "running", "passed": False}).state == "running"
    failure = {"table": "raw.clicks", "partition": "ds=2026-01-05", "column": "ts", "rule": "not_null", "details": "3 of 9"}
    got = gate_status("raw", True, {"status": "done", "passed": False, "failures": [failure]})
    assert (got.state, got.failures) == ("failed", 1)
    assert got.first_failure == "FAIL raw.clicks [ds=2026-01-05] column=ts rule=not_null: 3 of 9"
