import pytest

from growthgr.core.releases import ReleaseError, ReleaseStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return ReleaseStore.open(str(tmp_path / "releases"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return ReleaseStore.open(f"{bucket}/releases", endpoint_url=endpoint)


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
