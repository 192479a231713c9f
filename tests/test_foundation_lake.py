import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from growthgr.core.lake import Lake, PartitionNotFound, ds_range

DF1 = pd.DataFrame({"id": [1, 2, 3], "ts": pd.to_datetime(["2026-01-01 10:00"] * 3, utc=True), "v": [0.1, 0.2, 0.3]})
DF2 = pd.DataFrame({"id": [9], "ts": pd.to_datetime(["2026-01-01 12:00"], utc=True), "v": [9.0]})


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    if request.param == "local":
        return Lake.open(str(tmp_path / "lake"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Lake.open(f"{bucket}/lake", endpoint_url=endpoint)


class Boom(RuntimeError):
    pass


def _fail_on(lake: Lake, predicate, monkeypatch):
    real = lake.store.put_bytes

    def put(key, data):
        if predicate(key):
            raise Boom(key)
        real(key, data)

    monkeypatch.setattr(lake.store, "put_bytes", put)


def test_write_read_list(lake):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    lake.write_partition("raw", "t", "2026-01-03", DF2)
    assert lake.list_partitions("raw", "t") == ["2026-01-01", "2026-01-03"]
    assert lake.list_partitions("raw", "t", "2026-01-02", "2026-01-05") == ["2026-01-03"]
    got = lake.read_partition("raw", "t", "2026-01-01").to_pandas()
    assert got["id"].tolist() == [1, 2, 3]
    assert str(got["ts"].dtype) == "datetime64[us, UTC]"
    rng = lake.read_range("raw", "t", "2026-01-01", "2026-01-03").to_pandas()
    assert rng["ds"].tolist() == ["2026-01-01"] * 3 + ["2026-01-03"]
    assert lake.list_tables("raw") == ["t"]


def test_overwrite_is_idempotent_and_leaves_no_stale_files(lake):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    lake.write_partition("raw", "t", "2026-01-01", DF2)
    lake.write_partition("raw", "t", "2026-01-01", DF2)
    assert lake.read_partition("raw", "t", "2026-01-01").to_pandas()["id"].tolist() == [9]
    keys = lake.store.list("raw/t/ds=2026-01-01/")
    assert len(keys) == 2  # the marker and one data file


def test_missing_partition_is_a_clear_error(lake):
    with pytest.raises(PartitionNotFound, match=r"raw/t/ds=2026-01-01"):
        lake.read_partition("raw", "t", "2026-01-01")


def test_crash_mid_write_keeps_the_previous_partition(lake, monkeypatch):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    big = pd.concat([DF2] * 5, ignore_index=True)
    # fail on the second data file: one new file is already written
    _fail_on(lake, lambda k: k.endswith("part-00001.parquet"), monkeypatch)
    with pytest.raises(Boom):
        lake.write_partition("raw", "t", "2026-01-01", big, rows_per_file=2)
    assert lake.read_partition("raw", "t", "2026-01-01").to_pandas()["id"].tolist() == [1, 2, 3]
    monkeypatch.undo()
    lake.write_partition("raw", "t", "2026-01-01", big, rows_per_file=2)
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 5


def test_crash_before_commit_marker_keeps_previous(lake, monkeypatch):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    _fail_on(lake, lambda k: k.endswith("_SUCCESS"), monkeypatch)
    with pytest.raises(Boom):
        lake.write_partition("raw", "t", "2026-01-01", DF2)
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 3


def test_staged_engine_output_is_committed(lake):
    staging = lake.staging_key("samples", "s", "2026-01-02", "abc123")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(DF1), buf)
    lake.store.put_bytes(f"{staging}/part-0.parquet", buf.getvalue())
    lake.commit_staged("samples", "s", "2026-01-02", "abc123", rows=3)
    assert lake.read_partition("samples", "s", "2026-01-02").num_rows == 3


def test_timestamps_are_microsecond_utc(lake):
    naive = pa.table({"ts": pa.array([0], pa.timestamp("ns"))})
    lake.write_partition("raw", "n", "2026-01-01", naive)
    assert lake.read_partition("raw", "n", "2026-01-01").schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_ds_range_inclusive():
    assert ds_range("2026-01-30", "2026-02-02") == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
