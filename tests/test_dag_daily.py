"""The daily DAG under a real Airflow (SQLite, dag.test) on the tiny profile.

One module-scoped world: the tiny simulator up to the day before D, with the
label cohorts of the earlier days backfilled by Spark. Lake A receives a clean
day D; lake B receives day D with nulls injected into its raw logs.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from growthgr.airflow_local import load_dag, prepare, run_day
from growthgr.core.config import load_settings
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore
from growthgr.core.schemas import RAW_TABLES

D = "2026-02-16"
DAYS = ["2026-02-14", "2026-02-15", D]
OUTPUTS = [
    ("curated", "item_daily_stats"), ("samples", "itemltv_labels"), ("samples", "itemltv_samples"),
    ("features", "item_features"), ("features", "user_features"), ("samples", "gr_samples"),
    ("curated", "item_sids"), ("curated", "new_item_pool"),
]


def test_dagbag_imports_with_tags_and_production_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWTHGR_PROFILE", "demo")
    prepare(tmp_path / "airflow")
    for dag_id in ("growthgr_daily", "simulate_platform_day"):
        dag = load_dag(dag_id)
        assert dag.tags, dag_id
        assert all(t.retries >= 1 for t in dag.tasks), dag_id
    daily = load_dag("growthgr_daily")
    assert {"gate_raw", "spark_jobs", "dbt_build", "feast_materialize", "tokenize", "itemltv", "publish"} <= set(
        daily.task_ids)
    assert daily.get_task("dbt_build").pool == "duckdb"
    assert "gate_pool" in daily.get_task("publish").upstream_task_ids


def _use(monkeypatch, root):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(root / "releases"))
    return load_settings()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from growthgr.simulator.run import simulate
    from spark_jobs.jobs import backfill

    mp = pytest.MonkeyPatch()
    mp.setenv("GROWTHGR_PROFILE", "tiny")
    top = tmp_path_factory.mktemp("dag")
    prepare(top / "airflow")
    s = _use(mp, top / "base")
    simulate(Lake.from_settings(s), s.simulator, seed=1, start="2026-01-01", days=46, progress=False)
    backfill(s, "itemltv_labels", "2026-02-06", "2026-02-13")
    for name, inject in (("A", ()), ("B", ("nulls",))):
        shutil.copytree(top / "base", top / name)
        s = _use(mp, top / name)
        simulate(Lake.from_settings(s), s.simulator, seed=1, days=1, inject=inject, inject_day=D if inject else None,
                 progress=False)
    yield top
    mp.undo()


def _frames(root) -> dict:
    lake = Lake.open(str(root / "lake"))
    return {(z, t, ds): lake.read_partition(z, t, ds).to_pandas() for z, t in OUTPUTS for ds in DAYS
            if lake.exists(z, t, ds)}


@pytest.mark.slow
def test_fault_blocks_publish_repair_reruns_idempotent_and_backfill_equals_single_runs(world, monkeypatch):
    # Lake B, day by day: two good days, then the faulty day D.
    s = _use(monkeypatch, world / "B")
    releases = ReleaseStore.from_settings(s)
    for ds in DAYS[:2]:
        outcome = run_day("growthgr_daily", ds)
        assert outcome.ok, outcome.tasks
    good = releases.current_id()
    assert good.startswith(f"ds={DAYS[1]}")

    failed = run_day("growthgr_daily", D)
    assert failed.state == "failed"
    assert failed.tasks["gate_raw"] == "failed"
    assert all(failed.tasks[t] == "upstream_failed" for t in ("spark_jobs", "itemltv", "pool", "publish"))
    assert releases.current_id() == good
    assert not any(r["release_id"].startswith(f"ds={D}") for r in releases.list())
    result = Lake.from_settings(s).store.get_bytes(f"validation/gate_results/ds={D}/raw.json").decode()
    assert '"passed": false' in result and "not_null" in result

    # Repair: the clean logs of D are delivered again; the day now succeeds.
    clean, lake_b = Lake.open(str(world / "A" / "lake")), Lake.from_settings(s)
    for table in RAW_TABLES:
        lake_b.write_partition("raw", table, D, clean.read_partition("raw", table, D))
    assert run_day("growthgr_daily", D).ok
    released = releases.current_id()
    assert released.startswith(f"ds={D}") and released != good
    before = _frames(world / "B")

    # Idempotent: re-running the successful day changes nothing.
    assert run_day("growthgr_daily", D).ok
    assert releases.current_id() == released
    after = _frames(world / "B")
    assert before.keys() == after.keys()
    for key in before:
        pd.testing.assert_frame_equal(before[key], after[key], obj=str(key))

    # A 3-day backfill on lake A gives the same outputs as the single runs on lake B.
    s_a = _use(monkeypatch, world / "A")
    from growthgr.cli.pipeline import run_days

    outcomes = run_days(DAYS, world / "airflow", simulate=False)
    assert all(o.ok for o in outcomes.values()), {d: o.tasks for d, o in outcomes.items()}
    backfilled = _frames(world / "A")
    assert backfilled.keys() == after.keys() and len(after) == len(OUTPUTS) * len(DAYS) - 0
    for key in after:
        pd.testing.assert_frame_equal(after[key], backfilled[key], obj=str(key))
    pool_a = ReleaseStore.from_settings(s_a).read("current", "pool.parquet")
    assert pool_a == releases.read("current", "pool.parquet")
