"""The daily pipeline on an `s3://` lake and releases root (moto's S3 API server on loopback; no
S3A connector, as pyspark ships none): one tiny day under Airflow (gates, Spark jobs, dbt build,
Feast materialise and training sets, tokenizer, ItemLTV, pool, MultiGR, publish) releases, and its outputs
equal the same day's on a local lake started from the same bytes.

Both lakes start as the shared tiny world (2026-01-01 .. D) with the label cohorts of every
closable day before D backfilled (so the day's Spark run labels D only: `spark_jobs.jobs.label_days`);
the S3 lake is an object-by-object upload of the local one, so the two runs read identical inputs.
"""

from __future__ import annotations

import hashlib
import shutil

import boto3
import pandas as pd
import pytest
from spark_fixtures import TINY_LAST

from growthgr.airflow_local import prepare, run_day
from growthgr.core import catalog
from growthgr.core.config import load_settings
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore
from growthgr.core.storage import LocalStore, S3Store
from growthgr.dbt_runner import query

pytestmark = pytest.mark.slow
D = TINY_LAST
LABEL_DAYS = ("2026-02-06", "2026-02-13")      # 2026-01-01 + 36 .. D - 1
BUCKET = "growthgr-lake"
OUTPUTS = [
    catalog.ITEM_DAILY_STATS, catalog.USER_FEATURES, catalog.ITEM_FEATURES, catalog.QUERY_FEATURES,
    catalog.GR_SAMPLES, catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES, catalog.training_set("itemltv_v1"),
    catalog.ITEMLTV_POOL_FEATURES, catalog.ITEM_EMBEDDINGS, catalog.ITEM_SIDS, catalog.NEW_ITEM_POOL,
]
MARTS = ["dim_items", "fct_itemltv_labels", "new_item_cohorts", "fct_search_funnel_daily",
         "staging.stg_items", "staging.stg_search_requests", "staging.stg_item_daily_stats",
         "staging.stg_itemltv_labels"]


def upload(root, store: S3Store) -> int:
    """Every object of the local store at `root` put under the same key in `store`."""
    local = LocalStore(root)
    keys = local.list()
    for key in keys:
        store.put_bytes(key, local.get_bytes(key))
    return len(keys)


@pytest.fixture(scope="module")
def start(tmp_path_factory, copy_world):
    """The tiny world with the label cohorts of LABEL_DAYS backfilled (a local lake)."""
    from spark_jobs.jobs import backfill

    root = copy_world(tmp_path_factory.mktemp("s3_start") / "lake")
    s = load_settings("tiny", env={}, overrides={"lake_root": str(root)})
    backfill(Lake.from_settings(s), s.spark, s.storage, "itemltv_labels", *LABEL_DAYS)
    return root


def _env(mp: pytest.MonkeyPatch, values: dict[str, str | None]):
    for key, value in values.items():
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)
    return load_settings()


@pytest.fixture(scope="module")
def runs(start, s3_server, tmp_path_factory):
    """D under Airflow on a copy of `start` (local) and on an upload of it (S3): {"local"|"s3": (outcome, settings)}."""
    top = tmp_path_factory.mktemp("s3_pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("GROWTHGR_PROFILE", "tiny")
    prepare(top / "airflow")
    out = {}
    shutil.copytree(start, top / "local" / "lake")
    local = _env(mp, {"GROWTHGR_LAKE_ROOT": str(top / "local" / "lake"),
                      "GROWTHGR_RELEASES_ROOT": str(top / "local" / "releases"),
                      "GROWTHGR_S3_ENDPOINT_URL": None, "GROWTHGR_STORAGE__STATE_DIR": None})
    out["local"] = run_day("growthgr_daily", D), local
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    s3 = _env(mp, {"GROWTHGR_LAKE_ROOT": f"s3://{BUCKET}/lake", "GROWTHGR_RELEASES_ROOT": f"s3://{BUCKET}/releases",
                   "GROWTHGR_S3_ENDPOINT_URL": s3_server, "GROWTHGR_STORAGE__STATE_DIR": str(top / "s3_state")})
    upload(start, Lake.from_settings(s3).store)
    out["s3"] = run_day("growthgr_daily", D), s3
    yield out
    mp.undo()


def test_the_day_publishes_on_both_lakes(runs):
    for name, (outcome, settings) in runs.items():
        assert outcome.ok, (name, outcome.tasks)
        assert ReleaseStore.from_settings(settings).current_id().startswith(f"ds={D}"), name


def _frame(settings, dataset) -> pd.DataFrame:
    return Lake.from_settings(settings).read_partition(dataset.zone, dataset.table, D).to_pandas()


def test_every_output_partition_equals_the_local_lakes(runs):
    """Spark, Feast, tokenizer and ItemLTV outputs of D: the same rows; floats may differ in the
    last bits only where Spark plans a join differently (the S3 reader reports no size to the
    optimizer), so they are compared to 1e-9."""
    local, s3 = runs["local"][1], runs["s3"][1]
    for dataset in OUTPUTS:
        expected, got = _frame(local, dataset), _frame(s3, dataset)
        assert len(got) > 0, dataset.table
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, obj=dataset.table)


def test_dbt_marts_hold_the_same_rows_and_sql_reads_them(runs):
    local, s3 = (Lake.from_settings(runs[k][1]) for k in ("local", "s3"))
    for table in MARTS:
        n = query(s3, f"select count(*) as n from {table}").n[0]
        assert n > 0 and n == query(local, f"select count(*) as n from {table}").n[0], table
    funnel = "select sum(exposures) as e, sum(gmv) as g from fct_search_funnel_daily"
    assert query(s3, funnel).equals(query(local, funnel))


def test_release_files_are_identical(runs):
    """Every released artifact but the manifest (release id, time, config digest) is byte-identical."""
    stores = {k: ReleaseStore.from_settings(runs[k][1]) for k in runs}
    files = stores["s3"].get("current").manifest["files"]
    assert set(files) == set(stores["local"].get("current").manifest["files"]) and "pool.parquet" in files
    for name in sorted(set(files) - {"manifest.json"}):
        digest = {k: hashlib.sha256(store.read("current", name)).hexdigest() for k, store in stores.items()}
        assert digest["s3"] == digest["local"], name


def test_single_writer_state_stays_local(runs):
    """dbt's DuckDB file and Feast's registry live in the S3 run's state directory, not in the bucket."""
    settings = runs["s3"][1]
    lake = Lake.from_settings(settings)
    assert (lake.state_dir / "warehouse" / "growthgr.duckdb").is_file()
    assert (lake.state_dir / "feast" / "registry.db").is_file()
    assert not [k for k in lake.store.list() if k.startswith(("warehouse/", "feast/"))]
