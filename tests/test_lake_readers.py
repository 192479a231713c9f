"""Every reader sees only committed files (dbt, Feast, GX through the lake; Spark and Feast also
on an `s3://` lake), and gate results name the writes they validated (publish refuses a result
whose partitions were rewritten)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from spark_fixtures import TINY_LAST
from test_feast_store import DAYS as FEAST_DAYS
from test_feast_store import snapshot
from test_gx_handmade import make_raw_day

import expectations.gate as gate
from features.store import historical_features, load_definitions, open_store
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from growthgr.publish import stored_gates
from warehouse.runner import build, query

pytest_plugins = ("spark_fixtures",)
DS = "2026-01-01"


def pollute(lake: Lake, zone: str, table: str, ds: str, leftover=None, copy=None) -> None:
    """A crashed write's leftover files in `ds`, and a stray copy of the folder (`ds=... (copy)`),
    each holding `leftover` / `copy` (default: the committed files again)."""
    part = lake.partition_key(zone, table, ds)
    committed = [lake.store.get_bytes(f"{part}/{f}") for f in lake.commit_info(zone, table, ds).files]
    for name, frame in (("_wdeadbeef0000", leftover), (None, copy)):
        prefix = f"{part}/{name}" if name else f"{part} (copy)/_wc0ffee000000"
        blobs = [frame.to_parquet(index=False)] if frame is not None else committed
        for i, blob in enumerate(blobs):
            lake.store.put_bytes(f"{prefix}/part-{i:05d}.parquet", blob)
    lake.store.put_bytes(f"{part} (copy)/_SUCCESS", lake.store.get_bytes(f"{part}/_SUCCESS").replace(
        lake.commit_info(zone, table, ds).write_id.encode(), b"c0ffee000000"))


# -- GX gates -----------------------------------------------------------------------------------
@pytest.fixture
def gx_lake(tmp_path):
    settings = load_settings("tiny", overrides={"lake_root": str(tmp_path / "lake")})
    lake = Lake.from_settings(settings)
    lake.write_many("raw", DS, make_raw_day(DS, 0))
    return settings, lake


def _stored(lake: Lake, dataset: str) -> dict:
    return json.loads(lake.store.get_bytes(f"validation/gate_results/ds={DS}/{dataset}.json"))


def test_gate_result_names_its_write_and_a_rewrite_invalidates_it(gx_lake):
    settings, lake = gx_lake
    assert gate.validate(settings.gates_config(), lake, "clicks", parse_ds(DS), build_docs=False).passed
    write_id = lake.commit_info("raw", "clicks", DS).write_id
    assert _stored(lake, "clicks")["writes"] == [{"zone": "raw", "table": "clicks", "ds": DS, "write_id": write_id}]
    assert stored_gates(lake, DS, ("clicks",)) == {"clicks": True}
    lake.write_partition("raw", "clicks", DS, lake.read_partition("raw", "clicks", DS))   # same data, new write
    assert stored_gates(lake, DS, ("clicks",)) == {"clicks": False}
    gate.validate(settings.gates_config(), lake, "clicks", parse_ds(DS), build_docs=False)
    assert stored_gates(lake, DS, ("clicks", "raw")) == {"clicks": True, "raw": False}   # raw never ran


def test_a_crash_mid_gate_leaves_no_earlier_pass(gx_lake, monkeypatch):
    settings, lake = gx_lake
    gate.validate(settings.gates_config(), lake, "clicks", parse_ds(DS), build_docs=False)
    assert stored_gates(lake, DS, ("clicks",)) == {"clicks": True}

    def crash(*args, **kwargs):
        raise MemoryError("killed mid-validation")

    monkeypatch.setattr(gate, "_run_gx", crash)
    with pytest.raises(MemoryError):
        gate.validate(settings.gates_config(), lake, "clicks", parse_ds(DS), build_docs=False)
    assert _stored(lake, "clicks")["status"] == "running" and not _stored(lake, "clicks")["passed"]
    assert stored_gates(lake, DS, ("clicks",)) == {"clicks": False}


def test_raw_gate_reports_unknown_entries_and_ignores_their_data(gx_lake):
    settings, lake = gx_lake
    pollute(lake, "raw", "clicks", DS, leftover=pd.DataFrame({"request_id": [-1]}))
    result = gate.validate(settings.gates_config(), lake, "clicks", parse_ds(DS), build_docs=False)
    assert [(f.table, f.partition, f.rule) for f in result.failures] == [
        ("raw.clicks", f"ds={DS} (copy)", "unknown_entry")]                              # the leftover is not read
    assert "raw/clicks/ds=2026-01-01 (copy) is not a ds=YYYY-MM-DD partition" in result.summary()


# -- dbt ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dbt_marts_ignore_leftovers_and_stray_copies(tiny_lake, tmp_path):
    settings, tiny, _ = tiny_lake
    root = tmp_path / "lake"
    shutil.copytree(tiny.store.uri, root)
    lake = Lake.open(str(root))
    for zone, table in (("raw", "search_requests"), ("samples", "itemltv_labels"), ("curated", "item_daily_stats")):
        pollute(lake, zone, table, TINY_LAST)
    build(str(root))        # with the glob, the duplicated labels failed the grain test
    requests = sum(lake.commit_info("raw", "search_requests", d).rows for d in lake.list_partitions("raw", "search_requests"))
    labels = sum(lake.commit_info("samples", "itemltv_labels", d).rows for d in lake.list_partitions("samples", "itemltv_labels"))
    stats = lake.read_partition("curated", "item_daily_stats", TINY_LAST).to_pandas()
    assert query(str(root), "select count(*) as n from staging.stg_search_requests").frame.n[0] == requests
    assert query(str(root), "select count(*) as n from fct_itemltv_labels").frame.n[0] == labels
    assert query(str(root), "select sum(exposures) as e from fct_search_funnel_daily").frame.e[0] == stats.exposures.sum()


# -- Spark on S3 ----------------------------------------------------------------------------------
def test_spark_reads_only_committed_files_of_an_s3_lake(spark, s3_bucket):
    """No S3A connector here: the lake data source reads the marker's files with pyarrow."""
    from spark_jobs.common import read_connector, read_table

    endpoint, bucket = s3_bucket
    lake = Lake.open(f"{bucket}/lake", endpoint)
    day = make_raw_day(DS, 0)
    lake.write_many("raw", DS, day)
    pollute(lake, "raw", "clicks", DS, leftover=pd.DataFrame({"request_id": [-1]}))
    assert read_connector(spark, lake) == "arrow"
    got = read_table(spark, lake, "clicks", [DS]).toArrow()
    assert got.sort_by("request_id").equals(day["clicks"].select(got.column_names).sort_by("request_id"))


# -- Feast --------------------------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def lake_settings(request, tmp_path):
    """tiny settings on a local lake, or on an `s3://` lake (moto) with a local state directory."""
    if request.param == "local":
        return load_settings("tiny", overrides={"lake_root": str(tmp_path / "lake")})
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return load_settings("tiny", overrides={"lake_root": f"{bucket}/lake", "storage": {
        "s3_endpoint_url": endpoint, "state_dir": str(tmp_path / "state")}})


def test_feast_training_rows_ignore_leftovers_and_stray_copies(lake_settings):
    settings = lake_settings
    lake = Lake.from_settings(settings)
    views = {o.name: o for o in load_definitions(lake, "duckdb") if hasattr(o, "ttl")}
    for i, ds in enumerate(FEAST_DAYS):
        lake.write_partition("features", "user_features", ds, snapshot(views["user_features"], "user_id", ds, i))
    bogus = snapshot(views["user_features"], "user_id", FEAST_DAYS[1], 1)
    at = pd.Timestamp(f"{FEAST_DAYS[1]} 12:00", tz="UTC").as_unit("us")
    pollute(lake, "features", "user_features", FEAST_DAYS[1],
            leftover=bogus.assign(price_level_30d=999.0, event_timestamp=at),
            copy=bogus.assign(price_level_30d=777.0, event_timestamp=at + pd.Timedelta(minutes=30)))
    entities = pd.DataFrame({"user_id": [1, 1, 2], "event_timestamp": [pd.Timestamp(t, tz="UTC") for t in (
        f"{FEAST_DAYS[1]} 13:00", f"{FEAST_DAYS[1]} 23:59:59.999999", "2026-01-03 10:00")]})
    out = historical_features(open_store(settings.feast, lake), entities, ["user_features:price_level_30d"])
    out = out.sort_values(["user_id", "event_timestamp"])
    assert out["user_features__price_level_30d"].tolist() == [10.5, 11.5, 21.5]   # day 0, day 1, day 1: committed only
