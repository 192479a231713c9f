import numpy as np
import pandas as pd
import pytest

from growthgr.core.releases import ReleaseStore
from growthgr.publish import PublishRefused, ReleaseInputs, load_faiss_index, publish_release


def _inputs(ds="2026-02-10", scale=1.0):
    rng = np.random.default_rng(0)
    ids = np.arange(100, 120, dtype=np.int64)
    pool = pd.DataFrame({"item_id": ids, "score": np.linspace(1, 0, 20) * scale, "rank": np.arange(20)})
    return ReleaseInputs(ds, pool, ids, rng.normal(size=(20, 8)).astype("float32"), {"mse": 0.5 * scale},
                         ["raw/exposures/ds=2026-02-10"], "v1")


def test_publish_writes_a_searchable_index_and_manifest(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    rel = publish_release(store, _inputs(), {"raw": True, "pool": True}, "cfg")
    assert store.current_id() == rel.release_id and rel.release_id.startswith("ds=2026-02-10-")
    m = store.get("current").manifest
    assert m["pool_size"] == 20 and m["sid_version"] == "v1" and m["metrics"]["mse"] == 0.5
    index = load_faiss_index(store.read("current", "index.faiss"))
    vecs = _inputs().embeddings[:3] / np.linalg.norm(_inputs().embeddings[:3], axis=1, keepdims=True)
    _, found = index.search(vecs.astype("float32"), 1)
    assert found[:, 0].tolist() == [100, 101, 102]


def test_failed_gate_publishes_nothing_and_keeps_current(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    first = publish_release(store, _inputs(), {"raw": True}, "cfg")
    with pytest.raises(PublishRefused, match="raw"):
        publish_release(store, _inputs(scale=2.0), {"raw": False, "pool": True}, "cfg")
    with pytest.raises(PublishRefused, match="no gate"):
        publish_release(store, _inputs(scale=2.0), {}, "cfg")
    assert store.current_id() == first.release_id and len(store.list()) == 1


def test_republishing_identical_content_is_a_no_op(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    a = publish_release(store, _inputs(), {"raw": True}, "cfg")
    b = publish_release(store, _inputs(), {"raw": True}, "cfg")
    assert a.release_id == b.release_id and len(store.list()) == 1
    c = publish_release(store, _inputs(scale=3.0), {"raw": True}, "cfg")
    assert c.release_id != a.release_id and store.current_id() == c.release_id
