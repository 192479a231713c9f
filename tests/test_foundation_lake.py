import io
import socket
import threading
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.lake import LOCK, ConcurrentWrite, Lake, PartitionNotFound, ds_range

DF1 = pd.DataFrame({"id": [1, 2, 3], "ts": pd.to_datetime(["2026-01-01 10:00"] * 3, utc=True), "v": [0.1, 0.2, 0.3]})
DF2 = pd.DataFrame({"id": [9], "ts": pd.to_datetime(["2026-01-01 12:00"], utc=True), "v": [9.0]})


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    """A lake that deletes superseded writes at once (grace 0); `lake_with_grace` keeps them."""
    if request.param == "local":
        return Lake.open(str(tmp_path / "lake"), grace=timedelta(0))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Lake.open(f"{bucket}/lake", endpoint_url=endpoint, grace=timedelta(0))


@pytest.fixture
def lake_with_grace(tmp_path):
    return Lake.open(str(tmp_path / "lake"))   # default grace: one hour


class Boom(RuntimeError):
    pass


def _fail_on(lake: Lake, predicate, monkeypatch):
    """Every write (`put_bytes`, or the marker's `replace_if`) of a key matching `predicate` raises."""
    real_put, real_replace = lake.store.put_bytes, lake.store.replace_if

    def put(key, data):
        if predicate(key):
            raise Boom(key)
        real_put(key, data)

    def replace_if(key, data, expected):
        if predicate(key):
            raise Boom(key)
        return real_replace(key, data, expected)

    monkeypatch.setattr(lake.store, "put_bytes", put)
    monkeypatch.setattr(lake.store, "replace_if", replace_if)


def test_write_read_list(lake):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    lake.write_partition("raw", "t", "2026-01-03", DF2)
    assert lake.list_partitions("raw", "t") == [date(2026, 1, 1), date(2026, 1, 3)]
    assert lake.list_partitions("raw", "t", "2026-01-02", "2026-01-05") == [date(2026, 1, 3)]
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
    with lake.staged_write("samples", "s", "2026-01-02") as write_id:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(DF1), buf)
        lake.store.put_bytes(f"{lake.staging_key('samples', 's', '2026-01-02', write_id)}/part-0.parquet", buf.getvalue())
        lake.commit_staged("samples", "s", "2026-01-02", write_id, rows=3)
    assert lake.read_partition("samples", "s", "2026-01-02").num_rows == 3
    assert not lake.store.exists(f"samples/s/ds=2026-01-02/{LOCK}")     # released
    with pytest.raises(ConcurrentWrite, match="lost its lock"):         # committing outside the lock
        lake.commit_staged("samples", "s", "2026-01-02", write_id, rows=3)


def test_timestamps_are_microsecond_utc(lake):
    naive = pa.table({"ts": pa.array([0], pa.timestamp("ns"))})
    lake.write_partition("raw", "n", "2026-01-01", naive)
    assert lake.read_partition("raw", "n", "2026-01-01").schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_ds_range_inclusive():
    assert ds_range("2026-01-30", date(2026, 2, 2)) == [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1),
                                                        date(2026, 2, 2)]


# -- committed files only -----------------------------------------------------------------------
def _plant(lake: Lake, key: str, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    lake.store.put_bytes(key, buf.getvalue())


def test_read_files_gives_the_committed_files_with_their_ds_like_hive_partitioning(lake):
    """What dbt and Feast get for an s3:// lake (pyarrow through `store.files`): the same rows as the
    Lake API, each with its partition's ds; a new column of a later partition is null before."""
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    lake.write_partition("raw", "t", "2026-01-02", DF2.assign(extra=["x"]))
    got = lake.read_files(lake.committed_files("raw", "t")).to_pandas()
    assert got["ds"].tolist() == ["2026-01-01"] * 3 + ["2026-01-02"]
    assert got["extra"].tolist() == [None, None, None, "x"]
    expected = lake.read_range("raw", "t", "2026-01-01", "2026-01-02").to_pandas()
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    assert lake.read_files([]).num_rows == 0


def test_state_dir_is_the_local_root_or_a_local_folder_for_s3(tmp_path, monkeypatch):
    from foundation.storage import local_state_dir

    monkeypatch.chdir(tmp_path)
    assert Lake.open(str(tmp_path / "lake")).state_dir == (tmp_path / "lake").resolve()
    assert local_state_dir("s3://b/some/lake") == (tmp_path / ".growthgr-state" / "b" / "some" / "lake").resolve()
    assert local_state_dir("s3://b/lake", tmp_path / "st") == (tmp_path / "st").resolve()


def test_readers_see_only_committed_files_and_strays_are_named(lake):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    committed = lake.committed_files("raw", "t")
    _plant(lake, "raw/t/ds=2026-01-01/_wdeadbeef/part-00000.parquet", DF2)          # a crashed write
    _plant(lake, "raw/t/ds=2026-01-01 (copy)/_wcopy/part-00000.parquet", DF2)      # a stray copy...
    lake.store.put_bytes("raw/t/ds=2026-01-01 (copy)/_SUCCESS", lake.store.get_bytes("raw/t/ds=2026-01-01/_SUCCESS"))
    lake.store.put_bytes("raw/t/notes.txt", b"x")
    _plant(lake, "raw/t/ds=2026-02-30/_wbad/part-00000.parquet", DF2)               # not a date
    assert lake.committed_files("raw", "t") == committed and len(committed) == 1
    assert lake.list_partitions("raw", "t") == [date(2026, 1, 1)]
    assert lake.read_range("raw", "t", "2026-01-01", "2026-01-31").num_rows == 3
    assert lake.unknown_entries("raw", "t") == ["ds=2026-01-01 (copy)", "ds=2026-02-30", "notes.txt"]


# -- one writer per partition -------------------------------------------------------------------
def test_a_second_writer_fails_clearly_while_the_first_holds_the_partition(lake):
    holding, done = threading.Event(), threading.Event()
    outcome = {}

    def first():
        with lake.staged_write("raw", "t", "2026-01-01") as write_id:
            _plant(lake, f"{lake.staging_key('raw', 't', '2026-01-01', write_id)}/part-0.parquet", DF1)
            holding.set()
            done.wait(30)
            outcome["first"] = lake.commit_staged("raw", "t", "2026-01-01", write_id, rows=3)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(30)
    with pytest.raises(ConcurrentWrite, match=r"raw/t/ds=2026-01-01 is being written by .* pid \d+ \(write \w+, since"):
        lake.write_partition("raw", "t", "2026-01-01", DF2)
    done.set()
    thread.join(30)
    assert lake.commit_info("raw", "t", "2026-01-01").write_id == outcome["first"].write_id
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 3             # its files were not touched
    lake.write_partition("raw", "t", "2026-01-01", DF2)                             # free again
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 1


def test_racing_writers_never_break_each_other(lake_with_grace):
    lake, n = lake_with_grace, 8
    barrier, won, lost = threading.Barrier(n), [], []

    def writer(i: int):
        barrier.wait()
        try:
            won.append(lake.write_partition("raw", "t", "2026-01-01", DF1.assign(v=float(i))))
        except ConcurrentWrite as err:
            lost.append(str(err))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert won and len(won) + len(lost) == n
    current = lake.commit_info("raw", "t", "2026-01-01")
    assert current.write_id in {c.write_id for c in won}
    for commit in won:   # within the grace period no writer deleted another's files
        assert all(lake.store.exists(f"raw/t/ds=2026-01-01/{f}") for f in commit.files)
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 3


def test_a_stale_lock_is_taken_over(lake):
    part = "raw/t/ds=2026-01-01"
    old = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    lake.store.put_bytes(f"{part}/{LOCK}", f'{{"write_id": "x", "host": "elsewhere", "pid": 1, "acquired_at": "{old}"}}'.encode())
    lake.write_partition("raw", "t", "2026-01-01", DF1)                             # expired by time
    gone = 2 ** 22 + 12345                                                           # above pid_max: no such process
    now = datetime.now(UTC).isoformat()
    lake.store.put_bytes(f"{part}/{LOCK}", f'{{"write_id": "y", "host": "{socket.gethostname()}", "pid": {gone}, "acquired_at": "{now}"}}'.encode())
    lake.write_partition("raw", "t", "2026-01-01", DF2)                             # its owner is gone
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 1


# -- readers during an overwrite ----------------------------------------------------------------
def test_old_files_outlive_an_overwrite_by_the_grace_period(lake_with_grace):
    lake = lake_with_grace
    first = lake.write_partition("raw", "t", "2026-01-01", DF1)
    held_by_reader = lake.partition_files("raw", "t", "2026-01-01")               # a reader took the old list
    second = lake.write_partition("raw", "t", "2026-01-01", DF2)
    assert pq.read_table(held_by_reader[0]).num_rows == 3                           # still readable
    assert set(second.retired) == {first.write_id}
    lake.grace = timedelta(0)                                                        # the grace period has passed
    third = lake.write_partition("raw", "t", "2026-01-01", DF1)
    assert third.retired == {} and lake.store.list("raw/t/ds=2026-01-01/") == [
        "raw/t/ds=2026-01-01/_SUCCESS", f"raw/t/ds=2026-01-01/{third.files[0]}"]


def test_a_read_racing_an_overwrite_retries_through_the_new_marker(lake, monkeypatch):
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    real_get = lake.store.get_bytes
    raced = []

    def get(key):
        data = real_get(key)
        if key.endswith("_SUCCESS") and not raced:   # the overwrite lands between marker and data reads
            raced.append(key)
            monkeypatch.setattr(lake.store, "get_bytes", real_get)
            lake.write_partition("raw", "t", "2026-01-01", DF2)                       # grace 0: old files deleted
            monkeypatch.setattr(lake.store, "get_bytes", get)
        return data

    monkeypatch.setattr(lake.store, "get_bytes", get)
    assert lake.read_partition("raw", "t", "2026-01-01").to_pandas()["id"].tolist() == [9]
    assert raced


def test_readers_during_overwrites_see_a_whole_version(lake_with_grace):
    lake, versions = lake_with_grace, {3: [1, 2, 3], 1: [9]}
    lake.write_partition("raw", "t", "2026-01-01", DF1)
    stop, errors, seen = threading.Event(), [], set()

    def overwrite():
        for i in range(20):
            lake.write_partition("raw", "t", "2026-01-01", DF2 if i % 2 == 0 else DF1)
        stop.set()

    def read():
        while not stop.is_set():
            try:
                ids = lake.read_partition("raw", "t", "2026-01-01").to_pandas()["id"].tolist()
                assert ids == versions[len(ids)]
                seen.add(len(ids))
            except Exception as err:   # noqa: BLE001 (collected, asserted below)
                errors.append(repr(err))

    threads = [threading.Thread(target=overwrite), threading.Thread(target=read), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and seen


def test_local_writes_are_fsynced_before_the_marker_names_them(tmp_path, monkeypatch):
    """A put fsyncs its file and folder (and the parents of new folders); files an engine wrote
    itself are fsynced, with their folder, before the commit marker names them."""
    import os
    import stat

    lake = Lake.open(str(tmp_path / "lake"))
    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(os.fstat(fd).st_mode)))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    root = tmp_path / "lake"
    with lake.staged_write("samples", "s", "2026-01-02") as write_id:
        folder = root / lake.staging_key("samples", "s", "2026-01-02", write_id)
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(DF1), folder / "part-0.parquet")      # as Spark writes: no fsync
        synced.clear()
        lake.commit_staged("samples", "s", "2026-01-02", write_id, rows=3)
    files = [p for p, is_dir in synced if not is_dir]
    dirs = [p for p, is_dir in synced if is_dir]
    part = root / "samples/s/ds=2026-01-02"
    marker_tmp = next(i for i, p in enumerate(files) if p.startswith(f"{part}/.tmp-"))   # the marker, before its rename
    assert files.index(str(folder / "part-0.parquet")) < marker_tmp
    assert dirs.index(str(folder)) < len(dirs) - 1 and dirs[-1] == str(part)     # the marker's rename, last
    synced.clear()
    lake.store.put_bytes("reports/new/folder/x.json", b"{}")
    assert any(p.startswith(f"{root}/reports/new/folder/.tmp-") and not d for p, d in synced)       # the data
    assert {(str(root / "reports/new/folder"), True), (str(root / "reports/new"), True), (str(root / "reports"), True),
            (str(root), True)} <= set(synced)                                                        # every new folder


def test_a_put_removes_stale_temp_files_a_crashed_writer_left_beside_it(tmp_path):
    import os
    import time

    from foundation.storage import TMP_MAX_AGE_S

    lake = Lake.open(str(tmp_path / "lake"))
    lake.store.put_bytes("reports/a.json", b"1")
    folder = tmp_path / "lake" / "reports"
    old, fresh = folder / ".tmp-crashed", folder / ".tmp-in-flight"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    then = time.time() - TMP_MAX_AGE_S - 60
    os.utime(old, (then, then))
    lake.store.put_bytes("reports/b.json", b"2")
    assert not old.exists() and fresh.exists()                # another writer's temp file is left alone
    assert lake.store.list("reports/") == ["reports/a.json", "reports/b.json"]


def test_a_long_write_keeps_its_lock_by_heartbeat(lake):
    """A write that outlives `lock_ttl` renews its lock: a second writer still gets ConcurrentWrite,
    and the first commits."""
    import time

    lake.lock_ttl = timedelta(seconds=0.6)
    with lake.staged_write("raw", "t", "2026-01-05") as write_id:
        time.sleep(1.5)                                              # 2.5 x the TTL
        with pytest.raises(ConcurrentWrite, match="is being written by"):
            with lake.staged_write("raw", "t", "2026-01-05"):
                pass
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(DF1), buf)
        lake.store.put_bytes(f"{lake.staging_key('raw', 't', '2026-01-05', write_id)}/part-0.parquet", buf.getvalue())
        lake.commit_staged("raw", "t", "2026-01-05", write_id, rows=3)
    assert lake.read_partition("raw", "t", "2026-01-05").num_rows == 3
    assert not lake.store.exists(f"raw/t/ds=2026-01-05/{LOCK}")


def test_writers_racing_for_a_free_lock_get_it_one_at_a_time(lake):
    """Many threads race for one partition's free lock, repeatedly: never two holders at once."""
    holders, overlaps, lock = [], [], threading.Lock()

    def write() -> None:
        try:
            with lake.staged_write("raw", "race", "2026-01-06"):
                with lock:
                    holders.append(1)
                    if len(holders) > 1:
                        overlaps.append(len(holders))
                time.sleep(0.01)
                with lock:
                    holders.pop()
        except ConcurrentWrite:
            pass

    import time

    for _ in range(20):
        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert overlaps == []


def test_a_hung_s3_endpoint_is_an_error_within_the_timeouts(monkeypatch):
    """An S3 API that accepts connections and never answers: a store call fails, it does not hang."""
    import socket
    import time

    from foundation import storage

    monkeypatch.setattr(storage, "S3_REQUEST_TIMEOUT_S", 1.0)
    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 2)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        s3 = storage.S3Store("s3://bucket/lake", endpoint_url=f"http://127.0.0.1:{srv.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timeout|timed out"):
            s3.get_bytes("raw/x")
        assert time.monotonic() - started < 15


def _commit_paused_after_owner_check(root: str, endpoint: str | None, done) -> None:
    """Forked child: write DF1 to raw/t/2026-01-07, stopping itself (SIGSTOP) right after the
    commit's owner check; report how the commit ended on `done`."""
    import os
    import signal

    child = Lake.open(root, endpoint_url=endpoint, grace=timedelta(0))
    child.lock_ttl = timedelta(seconds=1)
    check = child._check_owner

    def check_then_pause(part, write_id):
        check(part, write_id)
        os.kill(os.getpid(), signal.SIGSTOP)

    child._check_owner = check_then_pause
    try:
        child.write_partition("raw", "t", "2026-01-07", DF1)
        done.send("committed")
    except ConcurrentWrite as err:
        done.send(f"ConcurrentWrite: {err}")


def _wait_stopped(pid: int, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the writer never reached its commit"
        time.sleep(0.02)


def test_a_writer_paused_past_its_lock_cannot_replace_the_new_owners_commit(lake, request):
    """Real processes: writer A is stopped (SIGSTOP) between its commit's owner check and its marker
    write, longer than the lock TTL; writer B takes the stale lock over and commits; A resumes
    (SIGCONT): its commit fails with ConcurrentWrite and the partition keeps B's rows."""
    import multiprocessing
    import os
    import signal
    import time

    endpoint = request.getfixturevalue("s3_bucket")[0] if lake.store.uri.startswith("s3://") else None
    fork = multiprocessing.get_context("fork")
    done, child_done = fork.Pipe(duplex=False)
    writer_a = fork.Process(target=_commit_paused_after_owner_check, args=(lake.store.uri, endpoint, child_done))
    writer_a.start()
    try:
        _wait_stopped(writer_a.pid)
        time.sleep(1.5)                                            # past A's 1 s TTL, no heartbeat
        lake.lock_ttl = timedelta(seconds=1)
        lake.write_partition("raw", "t", "2026-01-07", DF2)         # B: takes over the stale lock
        os.kill(writer_a.pid, signal.SIGCONT)
        assert done.poll(60)
        outcome = done.recv()
    finally:
        os.kill(writer_a.pid, signal.SIGCONT)
        writer_a.join(60)
    assert outcome.startswith("ConcurrentWrite") and "another write committed" in outcome, outcome
    assert lake.read_partition("raw", "t", "2026-01-07").to_pandas()["id"].tolist() == [9]
    assert not lake.store.exists(f"raw/t/ds=2026-01-07/{LOCK}")


def test_replace_if_swaps_only_the_object_it_compared(lake):
    store = lake.store
    assert store.replace_if("k/m", b"a", None) and not store.replace_if("k/m", b"b", None)   # create-only
    assert not store.replace_if("k/m", b"c", b"x") and store.get_bytes("k/m") == b"a"         # not what we read
    assert store.replace_if("k/m", b"c", b"a") and store.get_bytes("k/m") == b"c"
    assert not store.replace_if("k/missing", b"c", b"a") and not store.exists("k/missing")
