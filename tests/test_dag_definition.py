"""The DAG definitions under Airflow (SQLite): what the DagBag holds, how a run's logical date
becomes its `ds`, and a manual run of the simulate DAG far from "now" (`dag.test`, a 3-day
world). The daily DAG's scenarios are in tests/test_dag_daily.py. Every test uses the worker's
`airflow_home`: Airflow binds a process to its first metadata DB, so a private home here would
capture the runs of later tests in the same worker."""

from __future__ import annotations

import json
from datetime import date

import pytest

from foundation.config import load_settings
from foundation.lake import Lake, ds_range
from growthgr.airflow_local import load_dag, prepare, run_day


def test_dagbag_imports_with_tags_and_production_retries(airflow_home, monkeypatch):
    monkeypatch.setenv("GROWTHGR_PROFILE", "demo")
    prepare(airflow_home)
    for dag_id in ("growthgr_daily", "simulate_platform_day"):
        dag = load_dag(dag_id)
        assert dag.tags, dag_id
        assert all(t.retries >= 1 for t in dag.tasks), dag_id
    daily = load_dag("growthgr_daily")
    assert daily.max_active_runs == 1 and not daily.catchup     # backfills run day after day, in order
    assert {"gate_raw", "spark_jobs", "dbt_build", "feast_materialize", "tokenize", "itemltv", "publish",
            "multigr_train", "multigr_evaluate", "gate_multigr", "dense_train", "gate_dense"} <= set(daily.task_ids)
    assert daily.get_task("dbt_build").pool == "duckdb"
    assert {"gate_pool", "gate_multigr", "gate_dense"} <= daily.get_task("publish").upstream_task_ids
    assert daily.get_task("dense_train").upstream_task_ids == {"spark_jobs", "gate_sids"}   # gr_samples, SIDs
    assert daily.get_task("multigr_train").upstream_task_ids == {"pool"}          # MoPO reads the day's item_uplift
    assert daily.get_task("gate_multigr").upstream_task_ids == {"multigr_evaluate"}


def test_every_task_has_its_step_timeout_and_the_failure_alert_and_each_dag_a_deadline(airflow_home, monkeypatch):
    """Each task's execution timeout is its registry step's (scaled per profile, or the per-step
    override); every task alerts on failure and every DAG has a deadline alert (`growthgr.alerts`)."""
    from datetime import timedelta

    from growthgr.alerts import on_task_failure
    from growthgr.steps import BY_NAME, SIMULATE_DAY

    monkeypatch.setenv("GROWTHGR_PROFILE", "tiny")
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__STEP_TIMEOUT_MINUTES", "{dbt_build: 7}")
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__DEADLINE_MINUTES", "90")
    prepare(airflow_home)
    daily, platform = load_dag("growthgr_daily"), load_dag("simulate_platform_day")
    scale = load_settings().orchestration.timeout_scale
    for task in daily.tasks:
        minutes = 7 if task.task_id == "dbt_build" else BY_NAME[task.task_id].timeout_minutes * scale
        assert task.execution_timeout == timedelta(minutes=minutes), task.task_id
    assert daily.get_task("multigr_train").execution_timeout > daily.get_task("gate_raw").execution_timeout
    assert platform.get_task("simulate").execution_timeout == timedelta(minutes=SIMULATE_DAY.timeout_minutes * scale)
    for dag in (daily, platform):
        assert all(t.on_failure_callback == [on_task_failure] for t in dag.tasks), dag.dag_id
        [deadline] = dag.deadline
        assert deadline.interval == timedelta(minutes=90) and deadline.callback.path == "growthgr.alerts.on_deadline_missed"
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__STEP_TIMEOUT_MINUTES", "{dbt_buld: 7}")   # a typo is an error
    with pytest.raises(RuntimeError, match="dbt_buld"):
        load_dag("growthgr_daily")


def test_the_daily_dag_is_the_step_registry(airflow_home, monkeypatch):
    """One task per registry step (task id = step name), one edge per declared dependency, the
    step's pool and assets; `growthgr pipeline step` accepts every task id."""
    from typer.testing import CliRunner

    from growthgr.cli import app
    from growthgr.steps import DAILY, publish_gates

    monkeypatch.setenv("GROWTHGR_PROFILE", "tiny")
    prepare(airflow_home)
    daily = load_dag("growthgr_daily")
    assert sorted(daily.task_ids) == sorted(s.name for s in DAILY)
    edges = {(up, t.task_id) for t in daily.tasks for up in t.upstream_task_ids}
    assert edges == {(up, s.name) for s in DAILY for up in s.after} and len(edges) >= len(DAILY)
    for s in DAILY:
        assert daily.get_task(s.name).pool == (s.pool or "default_pool"), s.name
    assert [a.uri for a in daily.get_task("gate_raw").inlets] == ["growthgr://lake/raw"]
    assert [a.uri for a in daily.get_task("publish").outlets] == ["growthgr://releases/current"]
    assert publish_gates() == ("raw", "features", "sids", "pool", "multigr", "dense")
    listed = CliRunner().invoke(app, ["pipeline", "steps"])
    assert listed.exit_code == 0 and [line.split()[0] for line in listed.output.splitlines()][0] == "gate_raw"
    assert {line.split()[0] for line in listed.output.splitlines()} == set(daily.task_ids)


def test_run_ds_keys_every_kind_of_run_on_its_logical_date():
    import pendulum

    from growthgr.airflow_local import run_ds

    day = pendulum.datetime(2026, 2, 14, tz="UTC")
    assert run_ds(day, day) == date(2026, 2, 14)                              # scheduled / backfill
    assert run_ds(day, pendulum.datetime(2026, 11, 30, tz="UTC")) == date(2026, 2, 14)  # manual with a logical date
    assert run_ds(None, pendulum.datetime(2026, 11, 30, tz="UTC")) == date(2026, 11, 30)  # manual without one
    assert run_ds(pendulum.datetime(2026, 2, 14, 23, 30, tz="Europe/Berlin"), None) == date(2026, 2, 14)
    with pytest.raises(ValueError):
        run_ds(None, None)
    # a run the raw logs' Asset triggered: the newest day of the events it consumed
    assert run_ds(None, None, ("2026-02-13", "2026-02-14")) == date(2026, 2, 14)
    assert run_ds(day, day, ("2026-02-20",)) == date(2026, 2, 14)      # a logical date still wins


def test_asset_days_and_the_redundant_deadline_run():
    from types import SimpleNamespace

    from growthgr.airflow_local import asset_days, redundant_deadline_run

    events = {"raw": [SimpleNamespace(extra={"ds": "2026-02-13"}), SimpleNamespace(extra={}),
                      SimpleNamespace(extra=None)], "other": [SimpleNamespace(extra={"ds": "2026-02-14"})]}
    assert asset_days(events) == ("2026-02-13", "2026-02-14") and asset_days(None) == ()
    assert redundant_deadline_run("scheduled", ["ds=2026-02-13-abc"])
    assert not redundant_deadline_run("scheduled", []) and not redundant_deadline_run("manual", ["ds=2026-02-13-abc"])
    assert not redundant_deadline_run("asset_triggered", ["ds=2026-02-13-abc"])


def test_the_daily_run_starts_on_the_raw_logs_or_at_the_deadline(airflow_home, monkeypatch):
    """Asset-or-time: the raw logs' Asset (which the platform DAG updates) or the deadline time of
    the next day; the platform DAG runs midnight to midnight."""
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    from growthgr.steps import RAW_LOGS

    monkeypatch.setenv("GROWTHGR_PROFILE", "tiny")
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__RAW_DEADLINE_UTC", "05:30")
    prepare(airflow_home)
    daily, platform = load_dag("growthgr_daily"), load_dag("simulate_platform_day")
    assert isinstance(daily.timetable, AssetOrTimeSchedule)
    assert [a.uri for _, a in daily.timetable.asset_condition.iter_assets()] == [RAW_LOGS]
    assert daily.timetable.timetable.summary == "30 5 * * *"
    assert isinstance(platform.timetable, CronDataIntervalTimetable) and platform.timetable.summary == "0 0 * * *"
    assert [a.uri for a in platform.get_task("simulate").outlets] == [RAW_LOGS]
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__RAW_DEADLINE_UTC", "25:00")
    with pytest.raises(Exception, match="raw_deadline_utc"):
        load_settings()


def test_manual_run_with_a_logical_date_processes_that_day(tmp_path, airflow_home, monkeypatch):
    """Under Airflow, a run created for a logical date far from "now" writes exactly that day."""
    from simulator.run import simulate

    monkeypatch.setenv("GROWTHGR_PROFILE", "tiny")
    monkeypatch.setenv("GROWTHGR_SIMULATOR__N_USERS", "50")
    monkeypatch.setenv("GROWTHGR_SIMULATOR__N_ITEMS", "60")
    prepare(airflow_home)
    s = _use(monkeypatch, tmp_path)
    lake = Lake.from_settings(s)
    simulate(lake, s.simulator, start="2026-02-10", days=3, progress=False)
    outcome = run_day("simulate_platform_day", "2026-02-13")
    assert outcome.ok, outcome.tasks
    assert lake.list_partitions("raw", "search_requests") == ds_range("2026-02-10", "2026-02-13")
    # Airflow's OpenLineage provider: the task's events name the raw tables it wrote on this lake
    from foundation.schemas import RAW_TABLES
    from growthgr.lineage import events_file, read_events
    from growthgr.steps import RAW_LOGS

    events = [e for e in read_events(events_file(s.orchestration.lineage, airflow_home))
              if e["job"]["name"] == "simulate_platform_day.simulate"
              and e["run"]["facets"]["airflow"]["dagRun"]["logical_date"].startswith("2026-02-13")]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"], events
    assert {(o["namespace"], o["name"]) for o in events[-1]["outputs"]} == {
        ("file", f"{tmp_path / 'lake'}/raw/{t}") for t in RAW_TABLES}
    # the raw logs' asset event names the day (an asset-triggered daily run processes it)
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as db:
        extras = [json.loads(x) for (x,) in db.execute(
            "SELECT ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id WHERE a.uri = ?", (RAW_LOGS,))]
    assert {"ds": "2026-02-13"} in extras, extras


def _use(monkeypatch, root):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(root / "releases"))
    return load_settings()
