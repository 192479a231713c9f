"""The repaired day D backfilled under Airflow on an `s3://` lake and release store (moto's S3 API
server on loopback; no S3A connector, as pyspark ships none) equals lake B's single run of it
(tests/test_dag_daily.py, through the shared `dag_scenarios` products).

The S3 lake is lake B after the good day, uploaded object by object before the run, with the clean
logs of D and the good day's release store: `growthgr pipeline backfill`'s `run_days` then runs D
on S3 from there (one day: the backfill code path on S3 reading every earlier output from the
bucket; the day-by-day order of a multi-day backfill runs under the scheduler in
tests/test_dag_scheduler.py). Every output partition, the dbt marts, and the released files of D
are compared with lake B's.
"""

from __future__ import annotations

import hashlib

import boto3
import dag_scenarios as dag
import pandas as pd
import pytest

from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.schemas import RAW_TABLES
from foundation.storage import LocalStore
from warehouse.runner import query

pytestmark = pytest.mark.slow
D = dag.D
BUCKET = "growthgr-lake"
LOCAL_STATE = ("warehouse/", "feast/")   # single-writer state: in the state directory, never in the bucket


@pytest.fixture(scope="module")
def s3_backfill(shared_root, copy_world, airflow_home, s3_server, tmp_path_factory):
    """D backfilled on the S3 lake: (outcomes, its settings, its OUTPUTS frames)."""
    from growthgr.cli.pipeline import run_days

    good_dir, world_dir = dag.good(shared_root, copy_world, airflow_home), dag.world(shared_root, copy_world)
    top = tmp_path_factory.mktemp("s3")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    env = {"GROWTHGR_S3_ENDPOINT_URL": s3_server, "GROWTHGR_STORAGE__STATE_DIR": str(top / "s3_state"),
           "GROWTHGR_LAKE_ROOT": f"s3://{BUCKET}/lake", "GROWTHGR_RELEASES_ROOT": f"s3://{BUCKET}/releases"}
    with dag.on_lake(top, **env) as s3:
        lake, releases = Lake.from_settings(s3), ReleaseStore.from_settings(s3)
        for local, store in ((LocalStore(good_dir / "lake"), lake.store), (LocalStore(good_dir / "releases"), releases.store)):
            for key in local.list():
                if not key.startswith(LOCAL_STATE):
                    store.put_bytes(key, local.get_bytes(key))
        clean = Lake.open(str(world_dir / "A" / "lake"))      # the clean logs of D
        for table in RAW_TABLES:
            lake.write_partition("raw", table, D, clean.read_partition("raw", table, D))
        outcomes = run_days([D], airflow_home, simulate=False)
        return outcomes, s3, dag.frames(lake)


@pytest.fixture(scope="module")
def lake_b(s3_backfill, shared_root, copy_world, airflow_home):
    """Lake B's repaired day (built by whichever worker asked first): its snapshot and release store."""
    product = dag.repaired(shared_root, copy_world, airflow_home)
    return dag.snapshot(product), ReleaseStore.from_settings(dag.settings_of(product))


def test_backfill_on_s3_equals_single_runs(s3_backfill, lake_b):
    outcomes, s3, backfilled = s3_backfill
    assert outcomes and all(o.ok for o in outcomes.values()), {d: o.tasks for d, o in outcomes.items()}
    single = lake_b[0]["outputs"]
    assert backfilled.keys() == single.keys()
    for key in single:  # to 1e-9: see test_s3_lake_outputs_equal_the_local_lakes
        pd.testing.assert_frame_equal(backfilled[key], single[key], check_exact=False, rtol=1e-9, obj=str(key))
    current = ReleaseStore.from_settings(s3).current_id()
    assert current.startswith(f"ds={D}")
    assert ReleaseStore.from_settings(s3).read("current", "pool.parquet") == lake_b[1].read("current", "pool.parquet")


def test_s3_lake_outputs_equal_the_local_lakes(s3_backfill, lake_b):
    """Spark, Feast, tokenizer and ItemLTV outputs of D: the same rows; floats may differ in the last
    bits only where Spark plans a join differently (the S3 reader reports no size to the
    optimizer), so they are compared to 1e-9."""
    lake = Lake.from_settings(s3_backfill[1])
    for dataset in dag.S3_OUTPUTS:
        expected = lake_b[0]["s3_outputs"][dataset.table]
        got = lake.read_partition(dataset.zone, dataset.table, D).to_pandas()
        assert len(got) > 0, dataset.table
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, obj=dataset.table)


def test_s3_lake_dbt_marts_hold_the_same_rows_and_sql_reads_them(s3_backfill, lake_b):
    s3 = Lake.from_settings(s3_backfill[1])
    for table in dag.MARTS:
        n = query(s3, f"select count(*) as n from {table}").n[0]
        assert n > 0 and n == lake_b[0]["marts"][table], table
    # DuckDB sums floats in a thread-dependent order: equal to rounding, not bit for bit.
    pd.testing.assert_frame_equal(query(s3, dag.FUNNEL), lake_b[0]["funnel"], rtol=1e-9)


def test_s3_release_files_are_identical(s3_backfill, lake_b):
    """D's release on S3 and on lake B: every artifact but the manifest (release id, time, config
    digest) is byte-identical."""
    s3, local = ReleaseStore.from_settings(s3_backfill[1]), lake_b[1]
    rid = next(r["release_id"] for r in s3.list() if r["release_id"].startswith(f"ds={D}"))
    local_rid = local.current_id()
    files = s3.get(rid).manifest["files"]
    assert set(files) == set(local.get(local_rid).manifest["files"]) and "pool.parquet" in files
    for name in sorted(set(files) - {"manifest.json"}):
        assert hashlib.sha256(s3.read(rid, name)).digest() == hashlib.sha256(local.read(local_rid, name)).digest(), name


def test_s3_lake_single_writer_state_stays_local(s3_backfill):
    """dbt's DuckDB file and Feast's registry live in the S3 run's state directory, not in the bucket."""
    lake = Lake.from_settings(s3_backfill[1])
    assert (lake.state_dir / "warehouse" / "growthgr.duckdb").is_file()
    assert (lake.state_dir / "feast" / "registry.db").is_file()
    assert not [k for k in lake.store.list() if k.startswith(LOCAL_STATE)]
