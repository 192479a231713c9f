"""The daily DAG under a real Airflow (SQLite, dag.test) on the tiny profile.

One module-scoped world: the tiny simulator up to the day before D, with the
label cohorts of the earlier days backfilled by Spark. Lake A receives a clean
day D; lake B receives day D with nulls injected into its raw logs. The scenarios
on lake B build on each other through module-scoped fixtures (good day -> faulty
D -> repaired D -> re-run D), one test each; lake A backfills both days.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from growthgr.airflow_local import load_dag, prepare, run_day
from growthgr.core.config import load_settings
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore
from growthgr.core.schemas import RAW_TABLES

D = "2026-02-16"
DAYS = ["2026-02-15", D]
RELEASE_FILES = ["pool.parquet", "index.faiss", "metrics.json", "itemltv.safetensors", "sid_trie.npz",
                 "item_sids.parquet", "multigr.safetensors", "multigr_config.json", "dense.safetensors",
                 "dense_config.json", "dense_index.faiss"]
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
    assert {"gate_raw", "spark_jobs", "dbt_build", "feast_materialize", "tokenize", "itemltv", "publish",
            "multigr_train", "multigr_evaluate", "gate_multigr", "dense_train", "gate_dense"} <= set(daily.task_ids)
    assert daily.get_task("dbt_build").pool == "duckdb"
    assert {"gate_pool", "gate_multigr", "gate_dense"} <= daily.get_task("publish").upstream_task_ids
    assert daily.get_task("dense_train").upstream_task_ids == {"spark_jobs", "gate_sids"}   # gr_samples, SIDs
    assert daily.get_task("multigr_train").upstream_task_ids == {"pool"}          # MoPO reads the day's item_uplift
    assert daily.get_task("gate_multigr").upstream_task_ids == {"multigr_evaluate"}


def test_run_ds_keys_every_kind_of_run_on_its_logical_date():
    import pendulum

    from growthgr.airflow_local import run_ds

    day = pendulum.datetime(2026, 2, 14, tz="UTC")
    assert run_ds(day, day) == "2026-02-14"                                  # scheduled / backfill
    assert run_ds(day, pendulum.datetime(2026, 11, 30, tz="UTC")) == "2026-02-14"  # manual with a logical date
    assert run_ds(None, pendulum.datetime(2026, 11, 30, tz="UTC")) == "2026-11-30"  # manual without one
    assert run_ds(pendulum.datetime(2026, 2, 14, 23, 30, tz="Europe/Berlin"), None) == "2026-02-14"
    with pytest.raises(ValueError):
        run_ds(None, None)


def test_manual_run_with_a_logical_date_processes_that_day(tmp_path, monkeypatch):
    """Under Airflow, a run created for a logical date far from "now" writes exactly that day."""
    from growthgr.simulator.run import simulate

    monkeypatch.setenv("GROWTHGR_PROFILE", "tiny")
    monkeypatch.setenv("GROWTHGR_SIMULATOR__N_USERS", "50")
    monkeypatch.setenv("GROWTHGR_SIMULATOR__N_ITEMS", "60")
    prepare(tmp_path / "airflow")
    s = _use(monkeypatch, tmp_path)
    lake = Lake.from_settings(s)
    simulate(lake, s.simulator, start="2026-02-10", days=3, progress=False)
    outcome = run_day("simulate_platform_day", "2026-02-13")
    assert outcome.ok, outcome.tasks
    assert lake.list_partitions("raw", "search_requests") == ["2026-02-10", "2026-02-11", "2026-02-12", "2026-02-13"]


def _use(monkeypatch, root):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(root / "releases"))
    return load_settings()


@pytest.fixture(scope="module")
def world(tmp_path_factory, copy_world):
    from growthgr.simulator.run import simulate
    from spark_jobs.jobs import backfill

    mp = pytest.MonkeyPatch()
    mp.setenv("GROWTHGR_PROFILE", "tiny")
    top = tmp_path_factory.mktemp("dag")
    prepare(top / "airflow")
    s = _use(mp, top / "base")
    copy_world(top / "base" / "lake")                        # the shared tiny world, 2026-01-01 .. 02-14
    simulate(Lake.from_settings(s), s.simulator, seed=1, days=1, progress=False)   # + 2026-02-15
    backfill(Lake.from_settings(s), s.spark, s.storage, "itemltv_labels", "2026-02-06", "2026-02-14")
    # two days of gr_samples before the first run: MultiGR holds out 02-15 and trains on 02-13..14
    backfill(Lake.from_settings(s), s.spark, s.storage, "gr_samples", "2026-02-13", "2026-02-14")
    for name, inject in (("A", ()), ("B", ("nulls",))):
        shutil.copytree(top / "base", top / name)
        s = _use(mp, top / name)
        simulate(Lake.from_settings(s), s.simulator, seed=1, days=1, inject=inject, inject_day=D if inject else None,
                 progress=False)
    yield top, mp
    mp.undo()


def _frames(root) -> dict:
    lake = Lake.open(str(root / "lake"))
    return {(z, t, ds): lake.read_partition(z, t, ds).to_pandas() for z, t in OUTPUTS for ds in DAYS
            if lake.exists(z, t, ds)}


@pytest.fixture(scope="module")
def lake_b(world):
    """Lake B's settings and release store; the DAG tasks read lake B from the environment."""
    top, mp = world
    s = _use(mp, top / "B")
    return s, ReleaseStore.from_settings(s)


def _on_b(world) -> None:
    _use(world[1], world[0] / "B")


@pytest.fixture(scope="module")
def good_day(world, lake_b):
    _on_b(world)
    outcome = run_day("growthgr_daily", DAYS[0])
    return outcome, lake_b[1].current_id()


@pytest.fixture(scope="module")
def faulty_day(good_day, world):
    _on_b(world)
    return run_day("growthgr_daily", D)


@pytest.fixture(scope="module")
def repaired_day(faulty_day, world, lake_b):
    """The clean logs of D are delivered again (raw partitions replaced by the clean ones)."""
    s, releases = lake_b
    _on_b(world)
    top = world[0]
    clean, lake = Lake.open(str(top / "A" / "lake")), Lake.from_settings(s)
    for table in RAW_TABLES:
        lake.write_partition("raw", table, D, clean.read_partition("raw", table, D))
    outcome = run_day("growthgr_daily", D)
    return outcome, releases.current_id(), _frames(top / "B")


@pytest.mark.slow
def test_good_day_publishes(good_day, lake_b):
    outcome, current = good_day
    assert outcome.ok, outcome.tasks
    assert current.startswith(f"ds={DAYS[0]}")
    release = lake_b[1].get(current)
    assert set(RELEASE_FILES) <= set(release.files), release.files
    multigr = release.manifest["metrics"]["multigr"]
    assert multigr["mode"] == "scratch" and multigr["eval_days"] == [DAYS[0]] == multigr["evaluated_days"]
    assert multigr["train_days"] == ["2026-02-13", "2026-02-14"] and multigr["valid_sid_fraction"] == 1.0
    assert 0 <= multigr["metrics"]["search"]["recall@10"] <= multigr["metrics"]["search"]["recall@100"] <= 1
    assert release.manifest["multigr_gate"]["passed"] and release.manifest["multigr_gate"]["serving_release"] is None
    dense = release.manifest["metrics"]["dense"]
    assert dense["index"]["kind"] == "flat" and dense["index"]["measured_recall"] == 1.0 >= dense["index"]["target_recall"]
    assert dense["days"] == ["2026-02-14", DAYS[0]] and release.manifest["gates"]["dense"] is True


@pytest.mark.slow
def test_released_dense_retriever_loads_in_the_service(good_day, lake_b):
    """The service's loader reads the release's DR files: model, and the vectors of the catalog as of the day."""
    from growthgr import serve
    from models.dense.platform import item_table

    s, releases = lake_b
    release = releases.get(good_day[1])
    stage = serve.load_dense(releases, release, Lake.from_settings(s), DAYS[0])
    table, _, _ = item_table(Lake.from_settings(s), DAYS[0])
    assert stage is not None and stage.model.cfg.emb_dim == s.dense.emb_dim
    assert np.array_equal(stage.vectors.ids, np.sort(table.ids))
    assert np.isfinite(stage.vectors.vectors).all() and release.manifest["metrics"]["dense"]["index"]["n_items"] == len(table)


@pytest.mark.slow
def test_released_multigr_decodes_only_valid_sids(good_day, lake_b, tmp_path):
    """The release's MultiGR, decoded as served (its beam widths and top_k, the release's SID trie of
    the pool), returns only SIDs of the release's SID table."""
    from growthgr.pipeline import _load_multigr
    from models.multigr.beam import beam_search, trie_table
    from models.multigr.data import left_pad
    from models.multigr.platform import SidLookup, request_prompt
    from models.tokenizer.sids import sid_matrix
    from models.tokenizer.trie import SidTrie

    s, releases = lake_b
    rid = good_day[1]
    model = _load_multigr(releases.read(rid, "multigr.safetensors"),
                          json.loads(releases.read(rid, "multigr_config.json")), rid).model
    (tmp_path / "trie.npz").write_bytes(releases.read(rid, "sid_trie.npz"))
    table = pd.read_parquet(io.BytesIO(releases.read(rid, "item_sids.parquet")))
    codes = sid_matrix(table)
    lookup = SidLookup(table, ["c1", "c2", "c3", "c4"][: codes.shape[1]])
    requests = Lake.from_settings(s).read_partition("samples", "gr_samples", DAYS[0]).to_pandas().head(50)
    prompts = [request_prompt(model.vocab, r, lookup, model.cfg.max_history, model.cfg.max_query_words)
               for r in requests.itertuples(index=False)]
    cfg = model.cfg
    top_k = min(cfg.top_k, len(table))
    out = beam_search(model, left_pad(prompts), cfg.beam_widths, top_k, trie_table(SidTrie.load(tmp_path / "trie.npz")))
    decoded = out.sids.reshape(-1, codes.shape[1]).numpy()
    found = decoded[(decoded >= 0).all(1)]             # -1 rows: a narrow beam found fewer than top_k SIDs
    assert len(found) > len(decoded) / 2 and ((decoded >= 0).all(1) | (decoded < 0).all(1)).all()
    assert set(map(tuple, found.tolist())) <= set(map(tuple, codes.tolist()))


@pytest.mark.slow
def test_faulty_day_blocks_publish_and_keeps_the_release(good_day, faulty_day, lake_b):
    s, releases = lake_b
    assert faulty_day.state == "failed"
    assert faulty_day.tasks["gate_raw"] == "failed"
    assert all(faulty_day.tasks[t] == "upstream_failed" for t in ("spark_jobs", "itemltv", "pool", "multigr_train",
                                                                    "gate_multigr", "publish"))
    assert releases.current_id() == good_day[1]
    assert not any(r["release_id"].startswith(f"ds={D}") for r in releases.list())
    result = Lake.from_settings(s).store.get_bytes(f"validation/gate_results/ds={D}/raw.json").decode()
    assert '"passed": false' in result and "not_null" in result


@pytest.mark.slow
def test_repaired_day_publishes(good_day, repaired_day, lake_b):
    outcome, released, _ = repaired_day
    assert outcome.ok, outcome.tasks
    assert released.startswith(f"ds={D}") and released != good_day[1]
    manifest = lake_b[1].get(released).manifest
    multigr, gate = manifest["metrics"]["multigr"], manifest["multigr_gate"]
    # warm start from the good day's MultiGR, refreshed on D, compared with it on the same held-out day
    assert multigr["mode"] == "warm_start" and multigr["init_release"] == good_day[1]
    assert multigr["train_days"] == [D] and multigr["eval_days"] == [DAYS[0]]
    assert gate["serving_release"] == good_day[1] and gate["recall"]["limit"] is not None
    assert gate["recall"]["value"] >= gate["recall"]["limit"]


@pytest.mark.slow
def test_rerun_is_idempotent(repaired_day, world, lake_b):
    _, released, before = repaired_day
    _on_b(world)
    assert run_day("growthgr_daily", D).ok
    assert lake_b[1].current_id() == released
    after = _frames(world[0] / "B")
    assert before.keys() == after.keys() and len(after) == len(OUTPUTS) * len(DAYS)
    for key in before:
        pd.testing.assert_frame_equal(before[key], after[key], obj=str(key))


@pytest.mark.slow
def test_backfill_equals_single_runs(repaired_day, world, lake_b, monkeypatch):
    from growthgr.cli.pipeline import run_days

    single = repaired_day[2]
    top = world[0]
    s_a = _use(monkeypatch, top / "A")
    outcomes = run_days(DAYS, top / "airflow", simulate=False)
    assert all(o.ok for o in outcomes.values()), {d: o.tasks for d, o in outcomes.items()}
    backfilled = _frames(top / "A")
    assert backfilled.keys() == single.keys()
    for key in single:
        pd.testing.assert_frame_equal(single[key], backfilled[key], obj=str(key))
    assert ReleaseStore.from_settings(s_a).read("current", "pool.parquet") == lake_b[1].read("current", "pool.parquet")
