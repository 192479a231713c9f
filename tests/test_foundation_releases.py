import json

import pytest
from typer.testing import CliRunner

from foundation.releases import HISTORY, POINTER, ReleaseError, ReleaseStore
from foundation.storage import InvalidKey, LocalStore, S3Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return ReleaseStore.open(str(tmp_path / "releases"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return ReleaseStore.open(f"{bucket}/releases", endpoint_url=endpoint)


def _day(store, ds, content=b"x"):
    rid = f"ds={ds}-{content.hex()[:6]}"
    store.publish(rid, {"pool.parquet": content}, {"ds": ds})
    return rid


def test_publish_moves_pointer_last_and_lists(store):
    store.publish("r1", {"pool.parquet": b"p1", "model.safetensors": b"m1"}, {"ds": "2026-01-01"})
    assert store.current_id() == "r1"
    assert store.read("current", "pool.parquet") == b"p1"
    assert store.get("r1").manifest["files"] == {"model.safetensors": 2, "pool.parquet": 2}
    store.publish("r2", {"pool.parquet": b"p2"}, {"ds": "2026-01-02"})
    assert [r["release_id"] for r in store.list() if r["current"]] == ["r2"]


def test_failed_upload_keeps_previous_release_current(store, monkeypatch):
    store.publish("r1", {"pool.parquet": b"p1", "index.faiss": b"i1"}, {"ds": "2026-01-01"})
    real = store.store.put_bytes

    def put(key, data):
        if key.endswith("index.faiss"):
            raise OSError("network dropped")
        real(key, data)

    monkeypatch.setattr(store.store, "put_bytes", put)
    with pytest.raises(OSError):
        store.publish("r2", {"pool.parquet": b"p2", "index.faiss": b"i2"}, {"ds": "2026-01-02"})
    monkeypatch.undo()
    assert store.current_id() == "r1"
    assert store.read("current", "index.faiss") == b"i1"
    rows = {r["release_id"]: r for r in store.list()}
    assert rows["r2"]["complete"] is False
    with pytest.raises(ReleaseError, match="incomplete"):
        store.set_current("r2")


def test_releases_are_immutable_and_rollback_restores_previous(store):
    store.publish("r1", {"a": b"1"}, {})
    store.publish("r2", {"a": b"2"}, {})
    with pytest.raises(ReleaseError, match="immutable"):
        store.publish("r2", {"a": b"3"}, {})
    assert store.rollback() == "r1"
    assert store.read("current", "a") == b"1"


def test_rollback_without_history_is_an_error(store):
    with pytest.raises(ReleaseError, match="nothing to roll back"):
        store.rollback()


def test_backfilling_three_past_days_leaves_current_on_the_newest_release(store):
    newest = _day(store, "2026-03-10")
    for ds in ("2026-03-07", "2026-03-08", "2026-03-09"):
        _day(store, ds)
        assert store.current_id() == newest
    assert [r["complete"] for r in store.list()] == [True] * 4
    # re-publishing an older day (identical content: advance) does not demote either
    assert store.advance("ds=2026-03-08-78") is False and store.current_id() == newest
    # the same day or a newer one moves it forward
    same_day = _day(store, "2026-03-10", b"y")
    assert store.current_id() == same_day
    assert _day(store, "2026-03-11") == store.current_id()


def test_promote_moves_back_explicitly_and_rollback_undoes_it(store):
    old, new = _day(store, "2026-03-01"), _day(store, "2026-03-02")
    store.set_current(old)
    assert store.current_id() == old
    assert store.rollback() == new


def test_repeated_rollbacks_walk_back_never_forward(store):
    r1, r2, r3 = (_day(store, f"2026-03-0{i}") for i in (1, 2, 3))
    assert store.rollback() == r2
    assert store.rollback() == r1
    with pytest.raises(ReleaseError, match="nothing to roll back"):
        store.rollback()
    assert store.current_id() == r1
    # a rolled-back release is not served again by a re-run of its day ...
    assert store.advance(r3) is False and store.current_id() == r1
    # ... but a new release of a later day is, and rollback from it skips the rolled-back ones
    r4 = _day(store, "2026-03-04")
    assert store.current_id() == r4 and store.rollback() == r1
    assert store.advance(r4) is False and store.current_id() == r1
    # promote clears a rollback: r3 is a rollback target again, r4 still is not
    store.set_current(r3)
    _day(store, "2026-03-05")
    assert store.rollback() == r3


def crash_on_pointer(store, monkeypatch, error: BaseException) -> None:
    """Every write of `CURRENT` raises `error` (a mover killed between its history entry and the pointer)."""
    real = store.store.put_bytes

    def put(key, data):
        if key == POINTER:
            raise error
        real(key, data)

    monkeypatch.setattr(store.store, "put_bytes", put)


def test_a_crash_between_history_and_pointer_does_not_break_rollback(store, monkeypatch):
    r1, r2 = _day(store, "2026-03-01"), _day(store, "2026-03-02")
    crash_on_pointer(store, monkeypatch, KeyboardInterrupt("killed"))
    with pytest.raises(KeyboardInterrupt):
        _day(store, "2026-03-03")  # complete, logged, but CURRENT never moved
    with pytest.raises(KeyboardInterrupt):
        store.rollback()           # logged, but CURRENT never moved
    monkeypatch.undo()
    assert store.current_id() == r2
    # killed (not an error): the two entries have no outcome, so rollback infers that they never happened
    assert [(m["action"], m["outcome"]) for m in store.history()] == [
        ("publish", "moved"), ("publish", "moved"), ("publish", None), ("rollback", None)]
    assert len(store.store.get_bytes(HISTORY).splitlines()) == 6          # 4 entries, 2 outcomes
    assert store.rollback() == r1   # not to the never-served r3, not a no-op to r2
    with pytest.raises(ReleaseError, match="nothing to roll back"):
        store.rollback()


def test_store_keys_are_validated(store):
    for bad in ("../../x", "/etc/passwd", "a//b", "a/../../b", "", "./a", "a/"):
        for call in (store.store.get_bytes, store.store.exists, store.store.delete):
            with pytest.raises(InvalidKey, match="invalid store key"):
                call(bad)
        with pytest.raises(InvalidKey):
            store.store.put_bytes(bad, b"x")
    with pytest.raises(ReleaseError, match="invalid release id"):
        store.get("../../x")
    assert store.store.list("") == [] and store.store.list("a/") == []


def test_releases_show_rejects_a_path_outside_the_store(tmp_path, monkeypatch):
    from growthgr.cli import app

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"secret": 1}))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(tmp_path / "a" / "releases"))
    out = CliRunner().invoke(app, ["releases", "show", "../../x"])
    assert out.exit_code == 1 and "invalid release id" in out.output and "secret" not in out.output


def test_promote_and_rollback_commands(tmp_path, monkeypatch):
    from growthgr.cli import app

    store = ReleaseStore.open(str(tmp_path))
    old, new = _day(store, "2026-03-01"), _day(store, "2026-03-02")
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["releases", "promote", old]).exit_code == 0 and store.current_id() == old
    out = runner.invoke(app, ["releases", "promote", "ds=2026-09-09-nope"])
    assert out.exit_code == 1 and "missing or incomplete" in out.output
    out = runner.invoke(app, ["releases", "rollback"])
    assert out.exit_code == 0 and store.current_id() == new
    lines = runner.invoke(app, ["releases", "history", "--last", "2"]).output.splitlines()
    assert [line.split()[1:] for line in lines] == [["promote", new, "->", old, "moved"],
                                                   ["rollback", old, "->", new, "moved"]]


def test_s3_errors_other_than_missing_propagate(s3_bucket):
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    endpoint, bucket = s3_bucket
    s3 = S3Store(f"{bucket}/releases", endpoint_url=endpoint)
    assert s3.exists("nope") is False
    with pytest.raises(FileNotFoundError):
        s3.get_bytes("nope")
    with pytest.raises(ClientError, match="NoSuchBucket"):
        S3Store("s3://no-such-bucket-here/releases", endpoint_url=endpoint).get_bytes("CURRENT")
    with Stubber(s3.client) as stub:
        stub.add_client_error("head_object", "AccessDenied", http_status_code=403)
        stub.add_client_error("get_object", "SlowDown", http_status_code=503)
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.exists("CURRENT")
        with pytest.raises(ClientError, match="SlowDown"):
            s3.get_bytes("CURRENT")


def test_local_store_keeps_keys_inside_its_root(tmp_path):
    local = LocalStore(tmp_path / "root")
    with pytest.raises(InvalidKey):
        local.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_put_if_absent_creates_once(store):
    assert store.store.put_if_absent("k/lock", b"a") and not store.store.put_if_absent("k/lock", b"b")
    assert store.store.get_bytes("k/lock") == b"a"


def test_concurrent_publishes_never_move_current_backwards_nor_lose_history(store):
    """Two publishers race, many times: an older day never lands last, every move is in the history."""
    import threading

    days = [f"2026-02-{d:02d}" for d in range(1, 25)]
    barrier = threading.Barrier(2)

    def publish(ds: str) -> None:
        rid = f"ds={ds}"
        store.store.put_bytes(f"{rid}/pool.parquet", b"x")          # artifacts first, as publish does
        barrier.wait()
        store.publish(rid + "-m", {"pool.parquet": b"x"}, {"ds": ds})

    for newer, older in zip(days[1::2], days[::2], strict=True):     # the newer day starts first
        threads = [threading.Thread(target=publish, args=(d,)) for d in (newer, older)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.current_id() == f"ds={newer}-m"
    moves = store.history()
    assert {m["outcome"] for m in moves} == {"moved"}                                # each recorded
    targets = [m["to"] for m in moves]
    assert targets == sorted(targets) and targets[-1] == f"ds={days[-1]}-m"       # never backwards
    assert set(f"ds={d}-m" for d in days[1::2]) <= set(targets)                     # every newer day served
    assert all(m["from"] == p["to"] for p, m in zip(moves, moves[1:], strict=False))  # a chain: no entry lost
    assert not store.store.exists("_MOVE_LOCK")


def test_a_publish_racing_a_rollback_keeps_history_and_pointer_consistent(store):
    import threading

    for i in range(10):
        _day(store, f"2026-03-{2 * i + 1:02d}", bytes([i]))
        _day(store, f"2026-03-{2 * i + 2:02d}", bytes([100 + i]))
        rid = f"ds=2026-04-{i + 1:02d}-{bytes([200 + i]).hex()}"
        threads = [threading.Thread(target=store.rollback),
                   threading.Thread(target=store.publish, args=(rid, {"pool.parquet": b"y"}, {"ds": f"2026-04-{i + 1:02d}"}))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        moves = store.history()
        assert all(m["from"] == p["to"] for p, m in zip(moves, moves[1:], strict=False))      # a chain: none lost
        assert moves[-1]["to"] == store.current_id()


def test_a_rollback_that_crashed_after_its_entry_is_not_counted(store, monkeypatch):
    """publish W, X; a rollback crashes after its history entry; publish Y; rollback goes to X."""
    w, x = _day(store, "2026-01-01", b"w"), _day(store, "2026-01-02", b"x")
    crash_on_pointer(store, monkeypatch, OSError("killed"))
    with pytest.raises(OSError):
        store.rollback()
    monkeypatch.undo()
    assert not store.store.exists("_MOVE_LOCK")              # released on the way out
    assert store.history()[-1]["outcome"] == "failed"        # recorded: the rollback did not happen
    y = _day(store, "2026-01-03", b"y")
    assert store.current_id() == y and store.rollback() == x and w != x
    assert [m["outcome"] for m in store.history()] == ["moved", "moved", "failed", "moved", "moved"]


def test_a_pointer_write_that_raised_but_landed_is_recorded_as_a_move(store, monkeypatch):
    """A store timeout after the store applied the write: CURRENT names the new release, so the
    history says `moved` and the publish reports no error."""
    w = _day(store, "2026-01-01", b"w")
    real = store.store.put_bytes

    def put(key, data):
        real(key, data)
        if key == POINTER:
            raise TimeoutError("read timeout after the write")

    monkeypatch.setattr(store.store, "put_bytes", put)
    x = _day(store, "2026-01-02", b"x")
    monkeypatch.undo()
    assert store.current_id() == x and [m["outcome"] for m in store.history()] == ["moved", "moved"]
    assert store.rollback() == w


def test_a_corrupt_current_is_named_and_promote_repairs_it(store):
    x = _day(store, "2026-01-02", b"x")
    store.store.put_bytes(POINTER, b"{not json")
    with pytest.raises(ReleaseError, match="is corrupt .* releases promote"):
        store.current_id()
    with pytest.raises(ReleaseError, match="is corrupt"):
        store.rollback()
    store.set_current(x)
    assert store.current_id() == x


def test_a_crashed_movers_lock_is_taken_over(store):
    from datetime import UTC, datetime, timedelta

    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    store.store.put_bytes("_MOVE_LOCK", json.dumps({"write_id": "dead", "host": "elsewhere", "pid": 1,
                                                   "acquired_at": old}).encode())
    assert store.current_id() is None
    x = _day(store, "2026-01-02", b"x")
    assert store.current_id() == x and not store.store.exists("_MOVE_LOCK")


def test_a_truncated_or_altered_release_file_is_never_read(store):
    store.publish("r1", {"model.safetensors": b"0123456789", "pool.parquet": b"pool"}, {"ds": "2026-01-01"})
    assert store.read("r1", "model.safetensors") == b"0123456789"
    store.store.put_bytes("r1/model.safetensors", b"01234")
    with pytest.raises(ReleaseError, match="has 5 bytes, its manifest says 10"):
        store.read("r1", "model.safetensors")
    store.store.put_bytes("r1/pool.parquet", b"POOL")
    with pytest.raises(ReleaseError, match="does not match its manifest's SHA-256"):
        store.read("current", "pool.parquet")
