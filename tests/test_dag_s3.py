"""Both days backfilled under Airflow on an `s3://` lake and release store (moto's S3 API server on
loopback; no S3A connector, as pyspark ships none) equal lake B's single runs of them
(tests/test_dag_daily.py, through the shared `dag_scenarios` products).

The S3 lake is lake A of `dag_scenarios.world` (the clean day D), uploaded object by object before
any run; `growthgr pipeline backfill`'s `run_days` then runs 02-15 and D on S3, day after day.
Every output partition of both days, the Spark / Feast / tokenizer / ItemLTV outputs of each day,
the dbt marts, and the released files of the good day are compared with lake B's.
"""

from __future__ import annotations

import hashlib

import boto3
import dag_scenarios as dag
import pandas as pd
import pytest

from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.storage import LocalStore
from warehouse.runner import query

pytestmark = pytest.mark.slow
D = dag.D
BUCKET = "growthgr-lake"
LOCAL_STATE = ("warehouse/", "feast/")   # single-writer state: in the state directory, never in the bucket


@pytest.fixture(scope="module")
def s3_backfill(shared_root, copy_world, airflow_home, s3_server, tmp_path_factory):
    """Both days backfilled on the S3 lake: (outcomes, its settings, its OUTPUTS frames)."""
    from growthgr.cli.pipeline import run_days

    world_dir = dag.world(shared_root, copy_world)
    top = tmp_path_factory.mktemp("s3")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    env = {"GROWTHGR_S3_ENDPOINT_URL": s3_server, "GROWTHGR_STORAGE__STATE_DIR": str(top / "s3_state"),
           "GROWTHGR_LAKE_ROOT": f"s3://{BUCKET}/lake", "GROWTHGR_RELEASES_ROOT": f"s3://{BUCKET}/releases"}
    with dag.on_lake(top, **env) as s3:
        lake, local = Lake.from_settings(s3), LocalStore(world_dir / "A" / "lake")
        for key in local.list():
            lake.store.put_bytes(key, local.get_bytes(key))
        outcomes = run_days(dag.DAYS, airflow_home, simulate=False)
        return outcomes, s3, dag.frames(lake)


@pytest.fixture(scope="module")
def lake_b(s3_backfill, shared_root, copy_world, airflow_home):
    """Lake B's good day and repaired day (built by whichever worker asked first): the repaired
    lake's snapshot, its release store, and the good day's lake."""
    good, product = dag.good(shared_root, copy_world, airflow_home), dag.repaired(shared_root, copy_world, airflow_home)
    return dag.snapshot(product), ReleaseStore.from_settings(dag.settings_of(product)), \
        Lake.from_settings(dag.settings_of(good))


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
    """Spark, Feast, tokenizer and ItemLTV outputs of each day: the same rows; floats may differ in
    the last bits only where Spark plans a join differently (the S3 reader reports no size to the
    optimizer), so they are compared to 1e-9."""
    lake = Lake.from_settings(s3_backfill[1])
    for dataset in dag.S3_OUTPUTS:
        for day, expected in ((dag.DAYS[0], lake_b[2].read_partition(dataset.zone, dataset.table, dag.DAYS[0]).to_pandas()),
                              (D, lake_b[0]["s3_outputs"][dataset.table])):
            got = lake.read_partition(dataset.zone, dataset.table, day).to_pandas()
            assert len(got) > 0, (dataset.table, day)
            pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, obj=f"{dataset.table} {day}")


def test_s3_lake_dbt_marts_hold_the_same_rows_and_sql_reads_them(s3_backfill, lake_b):
    s3 = Lake.from_settings(s3_backfill[1])
    for table in dag.MARTS:
        n = query(s3, f"select count(*) as n from {table}").frame.n[0]
        assert n > 0 and n == lake_b[0]["marts"][table], table
    # DuckDB sums floats in a thread-dependent order: equal to rounding, not bit for bit.
    pd.testing.assert_frame_equal(query(s3, dag.FUNNEL).frame, lake_b[0]["funnel"], rtol=1e-9)


def test_s3_release_files_are_identical(s3_backfill, lake_b):
    """The good day's release on S3 and on lake B: every artifact but the manifest (release id,
    time, config digest) is byte-identical."""
    s3, local = ReleaseStore.from_settings(s3_backfill[1]), lake_b[1]
    day = dag.DAYS[0]
    rid = next(r["release_id"] for r in s3.list() if r["release_id"].startswith(f"ds={day}"))
    local_rid = next(r["release_id"] for r in local.list() if r["release_id"].startswith(f"ds={day}"))
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
