import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load, save

from foundation.releases import ReleaseStore
from growthgr.publish import ModelGateFailed, PublishRefused, ReleaseInputs, load_faiss_index, publish_release

WEIGHTS = {"layer.weight": np.ones((4, 3), dtype="float32"), "steps": np.array([7], dtype="int64")}


def _inputs(ds="2026-02-10", scale=1.0, mse=None, weights=WEIGHTS):
    """A release whose model scores `mse` on any held-out rows (0.5 * scale by default)."""
    rng = np.random.default_rng(0)
    ids = np.arange(100, 120, dtype=np.int64)
    pool = pd.DataFrame({"item_id": ids, "score": np.linspace(1, 0, 20) * scale, "rank": np.arange(20)})
    metrics = {"n_test_items": 20, "with_uplift": {"mse": 0.5 * scale, "ndcg": 0.9}}
    weights = {**weights, "mse": np.array([0.5 * scale if mse is None else mse])}
    return ReleaseInputs(ds, pool, ids, rng.normal(size=(20, 8)).astype("float32"), metrics,
                         ["raw/exposures/ds=2026-02-10"], "v1", files={"itemltv.safetensors": save(weights)})


def score(blobs):
    """A stand-in for `score_checkpoints`: each model's figure is stored in its weights."""
    scored.append(sorted(blobs))
    return {"ds": "2026-02-10", "test_cohorts": ["2026-01-01"], "n_test_items": 20, "rows": "abc",
            "scores": {name: {"mse": float(load(blob)["mse"][0]), "ndcg": 0.9} for name, blob in blobs.items()}}


scored: list[list[str]] = []


def _publish(store, inputs, gates=None, tol=0.2):
    return publish_release(store, inputs, gates or {"raw": True}, "cfg", max_regression=tol, score=score)


def test_publish_writes_a_searchable_index_and_manifest(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    rel = _publish(store, _inputs(), {"raw": True, "pool": True})
    assert store.current_id() == rel.release_id and rel.release_id.startswith("ds=2026-02-10-")
    m = store.get("current").manifest
    assert m["pool_size"] == 20 and m["sid_version"] == "v1" and m["metrics"]["with_uplift"]["mse"] == 0.5
    assert m["model_gate"]["passed"] and m["model_gate"]["checks"]["quality"]["serving"] is None
    index = load_faiss_index(store.read("current", "index.faiss"))
    vecs = _inputs().embeddings[:3] / np.linalg.norm(_inputs().embeddings[:3], axis=1, keepdims=True)
    _, found = index.search(vecs.astype("float32"), 1)
    assert found[:, 0].tolist() == [100, 101, 102]


def test_failed_gate_publishes_nothing_and_keeps_current(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    first = _publish(store, _inputs())
    with pytest.raises(PublishRefused, match="raw"):
        _publish(store, _inputs(scale=2.0), {"raw": False, "pool": True})
    with pytest.raises(PublishRefused, match="no gate"):
        publish_release(store, _inputs(scale=2.0), {}, "cfg", max_regression=0.2, score=score)
    assert store.current_id() == first.release_id and len(store.list()) == 1


def test_republishing_identical_content_is_a_no_op(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    a = _publish(store, _inputs())
    b = _publish(store, _inputs())
    assert a.release_id == b.release_id and len(store.list()) == 1
    c = _publish(store, _inputs(scale=1.1))
    assert c.release_id != a.release_id and store.current_id() == c.release_id


def test_an_older_day_or_a_rerun_never_demotes_the_newer_release(tmp_path):
    store = ReleaseStore.open(str(tmp_path))
    old = _publish(store, _inputs("2026-02-09"))
    new = _publish(store, _inputs("2026-02-10", scale=1.1))
    scored.clear()
    backfill = _publish(store, _inputs("2026-02-08", scale=3.0))        # not compared with a later day's model
    quality = store.get(backfill.release_id).manifest["model_gate"]["checks"]["quality"]
    assert quality["serving"] is None and "later day" in quality["serving_skipped"] and scored == [["candidate"]]
    assert _publish(store, _inputs("2026-02-09")).release_id == old.release_id   # re-run: shortcut
    assert store.current_id() == new.release_id


@pytest.mark.parametrize("case, check", [
    ("nan_weight", "finite_weights"), ("inf_metric", "finite_metrics"), ("regression", "quality"),
    ("nan_score", "finite_weights, quality"), ("no_model", "quality"),
])
def test_model_gate_refuses_and_publishes_nothing(tmp_path, case, check):
    store = ReleaseStore.open(str(tmp_path))
    first = _publish(store, _inputs(mse=0.5))
    bad = {
        "nan_weight": _inputs(scale=1.1, weights={**WEIGHTS, "layer.weight": np.full((4, 3), np.nan, "float32")}),
        "inf_metric": _inputs(scale=1.1),
        "regression": _inputs(scale=1.1, mse=0.61),        # > 0.5 * 1.2
        "nan_score": _inputs(scale=1.1, mse=float("nan")),
        "no_model": _inputs(scale=1.1),
    }[case]
    if case == "inf_metric":
        bad.metrics = {"mse": float("inf")}
    if case == "no_model":
        bad.files = {}
    with pytest.raises(ModelGateFailed, match=f"model gate failed: {check}"):
        _publish(store, bad)
    assert store.current_id() == first.release_id and len(store.list()) == 1


def test_model_gate_tolerance_and_manifest_record(tmp_path):
    """Both models are scored by one call (the same rows), recorded with what the rows are; the
    report's own figure (metrics) plays no part."""
    store = ReleaseStore.open(str(tmp_path))
    first = _publish(store, _inputs(mse=0.5))
    scored.clear()
    second = _publish(store, _inputs(scale=9.0, mse=0.59))       # within 20%
    quality = store.get("current").manifest["model_gate"]["checks"]["quality"]
    assert store.current_id() == second.release_id and scored == [["candidate", "serving"]]
    assert quality == {"metric": "mse", "candidate": 0.59, "serving": 0.5, "max_regression": 0.2,
                       "limit": pytest.approx(0.6), "passed": True, "ds": "2026-02-10",
                       "test_cohorts": ["2026-01-01"], "n_test_items": 20, "rows": "abc",
                       "serving_release": first.release_id, "serving_skipped": None,
                       "figures": {"candidate": {"mse": 0.59, "ndcg": 0.9}, "serving": {"mse": 0.5, "ndcg": 0.9}}}


def test_bf16_weights_are_checked_too(tmp_path):
    import torch
    from safetensors.torch import save as torch_save

    store = ReleaseStore.open(str(tmp_path))
    inputs = _inputs()
    inputs.files = {"m.safetensors": torch_save({"w": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)})}
    with pytest.raises(ModelGateFailed, match="m.safetensors:w"):
        _publish(store, inputs)
