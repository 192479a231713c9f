"""The daily DAG under a real Airflow (SQLite, dag.test) on the tiny profile.

One module-scoped world: the tiny simulator up to the day before D, with the
label cohorts of the earlier days backfilled by Spark. Lake A receives a clean
day D; lake B receives day D with nulls injected into its raw logs. The scenarios
on lake B build on each other through module-scoped fixtures (good day -> faulty
D -> repaired D -> re-run D), one test each.

Lake A, uploaded object by object to an `s3://` lake and releases root (moto's S3 API server on
loopback; no S3A connector, as pyspark ships none) before any run, is backfilled there over both
days with `growthgr pipeline backfill`'s `run_days`: the backfill on S3 equals lake B's single
runs (every output partition, the dbt marts, the released files of the good day).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import boto3
import numpy as np
import pandas as pd
import pytest

from foundation import catalog
from foundation.config import load_settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.schemas import RAW_TABLES
from foundation.storage import LocalStore
from growthgr.airflow_local import prepare, run_day
from warehouse.runner import query

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
# What the S3 run of the good day must reproduce exactly.
S3_OUTPUTS = [
    catalog.ITEM_DAILY_STATS, catalog.USER_FEATURES, catalog.ITEM_FEATURES, catalog.QUERY_FEATURES,
    catalog.GR_SAMPLES, catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES, catalog.training_set("itemltv_v1"),
    catalog.ITEMLTV_POOL_FEATURES, catalog.ITEM_EMBEDDINGS, catalog.ITEM_SIDS, catalog.NEW_ITEM_POOL,
]
MARTS = ["dim_items", "fct_itemltv_labels", "new_item_cohorts", "fct_search_funnel_daily",
         "staging.stg_items", "staging.stg_search_requests", "staging.stg_item_daily_stats",
         "staging.stg_itemltv_labels"]
FUNNEL = "select sum(exposures) as e, sum(gmv) as g from fct_search_funnel_daily"
BUCKET = "growthgr-lake"


def _use(monkeypatch, root):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(root / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(root / "releases"))
    return load_settings()


def _use_s3(monkeypatch, endpoint: str | None, state_dir=None):
    """The S3 lake and releases root on `endpoint` (None: back to local storage)."""
    for key, value in (("GROWTHGR_S3_ENDPOINT_URL", endpoint), ("GROWTHGR_STORAGE__STATE_DIR", state_dir)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(value))
    if endpoint is not None:
        monkeypatch.setenv("GROWTHGR_LAKE_ROOT", f"s3://{BUCKET}/lake")
        monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", f"s3://{BUCKET}/releases")
    return load_settings()


@pytest.fixture(scope="module")
def world(tmp_path_factory, copy_world, s3_server):
    from simulator.run import simulate
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
    # the S3 lake: lake A before any run, object by object
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    bucket = Lake.from_settings(_use_s3(mp, s3_server, top / "s3_state")).store
    local = LocalStore(top / "A" / "lake")
    for key in local.list():
        bucket.put_bytes(key, local.get_bytes(key))
    _use_s3(mp, None)
    _use(mp, top / "B")
    yield top, mp
    mp.undo()


def _frames(lake: Lake) -> dict:
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
    """The good day on lake B: (outcome, release id, its S3_OUTPUTS partitions)."""
    _on_b(world)
    outcome = run_day("growthgr_daily", DAYS[0])
    lake = Lake.from_settings(lake_b[0])
    outputs = {d.table: lake.read_partition(d.zone, d.table, DAYS[0]).to_pandas() for d in S3_OUTPUTS}
    return outcome, lake_b[1].current_id(), outputs


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
    return outcome, releases.current_id(), _frames(Lake.open(str(top / "B" / "lake")))


@pytest.mark.slow
def test_good_day_publishes(good_day, lake_b):
    outcome, current, _ = good_day
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
    from models.multigr.beam import beam_search, trie_table
    from models.multigr.data import left_pad
    from models.multigr.lineage import from_bytes
    from models.multigr.platform import SidLookup, request_prompt
    from models.tokenizer.sids import sid_matrix
    from models.tokenizer.trie import SidTrie

    s, releases = lake_b
    rid = good_day[1]
    model = from_bytes(releases.read(rid, "multigr.safetensors"),
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
    after = _frames(Lake.open(str(world[0] / "B" / "lake")))
    assert before.keys() == after.keys() and len(after) == len(OUTPUTS) * len(DAYS)
    for key in before:
        pd.testing.assert_frame_equal(before[key], after[key], obj=str(key))


@pytest.fixture(scope="module")
def s3_backfill(world, repaired_day, s3_server):
    """Both days backfilled under Airflow on the S3 lake (lake A, uploaded in `world`):
    (outcomes, its settings, its OUTPUTS frames)."""
    from growthgr.cli.pipeline import run_days

    top, mp = world
    s3 = _use_s3(mp, s3_server, top / "s3_state")
    try:
        outcomes = run_days(DAYS, top / "airflow", simulate=False)
        frames = _frames(Lake.from_settings(s3))
    finally:
        _use_s3(mp, None)
        _on_b(world)
    return outcomes, s3, frames


@pytest.mark.slow
def test_backfill_on_s3_equals_single_runs(s3_backfill, repaired_day, lake_b):
    outcomes, s3, backfilled = s3_backfill
    assert all(o.ok for o in outcomes.values()), {d: o.tasks for d, o in outcomes.items()}
    single = repaired_day[2]
    assert backfilled.keys() == single.keys()
    for key in single:  # to 1e-9: see test_s3_lake_outputs_equal_the_local_lakes
        pd.testing.assert_frame_equal(backfilled[key], single[key], check_exact=False, rtol=1e-9, obj=str(key))
    current = ReleaseStore.from_settings(s3).current_id()
    assert current.startswith(f"ds={D}")
    assert ReleaseStore.from_settings(s3).read("current", "pool.parquet") == lake_b[1].read("current", "pool.parquet")


@pytest.mark.slow
def test_s3_lake_outputs_equal_the_local_lakes(s3_backfill, good_day):
    """Spark, Feast, tokenizer and ItemLTV outputs of the good day: the same rows; floats may differ in
    the last bits only where Spark plans a join differently (the S3 reader reports no size to the
    optimizer), so they are compared to 1e-9."""
    lake = Lake.from_settings(s3_backfill[1])
    for dataset in S3_OUTPUTS:
        expected = good_day[2][dataset.table]
        got = lake.read_partition(dataset.zone, dataset.table, DAYS[0]).to_pandas()
        assert len(got) > 0, dataset.table
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, obj=dataset.table)


@pytest.mark.slow
def test_s3_lake_dbt_marts_hold_the_same_rows_and_sql_reads_them(s3_backfill, lake_b):
    s3, local = Lake.from_settings(s3_backfill[1]), Lake.from_settings(lake_b[0])
    for table in MARTS:
        n = query(s3, f"select count(*) as n from {table}").n[0]
        assert n > 0 and n == query(local, f"select count(*) as n from {table}").n[0], table
    # DuckDB sums floats in a thread-dependent order: equal to rounding, not bit for bit.
    pd.testing.assert_frame_equal(query(s3, FUNNEL), query(local, FUNNEL), rtol=1e-9)


@pytest.mark.slow
def test_s3_release_files_are_identical(s3_backfill, good_day, lake_b):
    """The good day's release on S3 and on lake B: every artifact but the manifest (release id,
    time, config digest) is byte-identical."""
    s3 = ReleaseStore.from_settings(s3_backfill[1])
    rid = next(r["release_id"] for r in s3.list() if r["release_id"].startswith(f"ds={DAYS[0]}"))
    files = s3.get(rid).manifest["files"]
    assert set(files) == set(lake_b[1].get(good_day[1]).manifest["files"]) and "pool.parquet" in files
    for name in sorted(set(files) - {"manifest.json"}):
        assert hashlib.sha256(s3.read(rid, name)).digest() == \
            hashlib.sha256(lake_b[1].read(good_day[1], name)).digest(), name


@pytest.mark.slow
def test_s3_lake_single_writer_state_stays_local(s3_backfill):
    """dbt's DuckDB file and Feast's registry live in the S3 run's state directory, not in the bucket."""
    lake = Lake.from_settings(s3_backfill[1])
    assert (lake.state_dir / "warehouse" / "growthgr.duckdb").is_file()
    assert (lake.state_dir / "feast" / "registry.db").is_file()
    assert not [k for k in lake.store.list() if k.startswith(("warehouse/", "feast/"))]
