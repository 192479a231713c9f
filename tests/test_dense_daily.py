"""The dense retriever in the daily pipeline (`growthgr.pipeline.dense_train / gate_dense`, the release
files the service loads) and in the offline tables (`run_offline` with `models.dense.offline.offline_rows`),
on the shared tiny world: gr_samples by Spark, SIDs by the tokenize step (~1 min set-up, marked slow).

A gated day ships the three files under the names `growthgr.serve` loads; an index whose stored
search parameter does not deliver the target recall, or non-finite item vectors, fail the gate and
`publish` refuses the day.
"""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pytest

from foundation import catalog
from foundation.config import load_settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.schemas import CHANNELS
from growthgr import pipeline
from growthgr.publish import DENSE_FILES, PublishRefused, _gated_dense, stored_gates
from growthgr.steps import publish as publish_step

pytestmark = pytest.mark.slow
FIRST, DS = "2026-02-13", "2026-02-14"
IVF = {"dense": {"index": {"exact_max_items": 50, "kind": "ivf"}}}


@pytest.fixture(scope="module")
def settings(tmp_path_factory, copy_world):
    """The tiny world with gr_samples of 02-12..02-14 and the SID snapshots of FIRST and DS."""
    from spark_jobs.jobs import run_job

    top = tmp_path_factory.mktemp("dense_daily")
    root = copy_world(top / "lake")
    s = load_settings("tiny", env={}, overrides={"lake_root": str(root), "releases_root": str(top / "releases")})
    lake = Lake.from_settings(s)
    for ds in ("2026-02-12", FIRST, DS):
        run_job(lake, s.spark, s.storage, "gr_samples", date.fromisoformat(ds))
    for ds in (FIRST, DS):
        pipeline.tokenize(s, date.fromisoformat(ds))
    return s


def _with(s, overrides: dict):
    return load_settings("tiny", env={}, overrides={"lake_root": s.lake_root, "releases_root": s.releases_root,
                                                    **overrides})


def _objects(s) -> list[bytes]:
    lake = Lake.from_settings(s)
    return [lake.store.get_bytes(catalog.model_key("dense", DS, name)) for name in DENSE_FILES]


@pytest.fixture(scope="module")
def gated(settings):
    return pipeline.dense_train(settings, date.fromisoformat(DS)), pipeline.gate_dense(settings, date.fromisoformat(DS)), _objects(settings)


def test_day_is_trained_indexed_gated_and_loads_in_the_service(settings, gated):
    from growthgr import serve
    from models.dense.platform import item_table

    out, gate, objects = gated
    lake, store = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
    table, sid_ds, _ = item_table(lake, date.fromisoformat(DS))
    assert out["days"] == [FIRST, DS] and out["requests"] > 50 and sid_ds == date.fromisoformat(DS)
    assert out["items"] == len(table) and out["index"] == "flat" and out["measured_recall"] == 1.0
    assert gate["checks"] == {"finite_weights": True, "vectors": True, "recall": True}
    assert gate["recall"]["value"] == 1.0 and gate["recall"]["n_queries"] == settings.dense.index.recall_queries
    assert stored_gates(lake, DS, ("dense",)) == {"dense": True}
    report = json.loads(lake.store.get_bytes(catalog.report_key("dense", DS, "daily.json")))
    assert report["epochs"] == settings.dense.daily.epochs == 2 and len(report["epoch_losses"]) == 2
    files, metrics = _gated_dense(lake, DS)
    assert set(files) == set(serve.DENSE_FILES)
    assert metrics["index"]["kind"] == "flat" and metrics["index"]["measured_recall"] == 1.0
    assert metrics["index"]["n_items"] == len(table) and metrics["days"] == [FIRST, DS]
    assert all(math.isfinite(v) for v in (metrics["final_loss"], metrics["index"]["target_recall"]))
    release = store.publish(f"ds={DS}-dense", files, {"ds": DS, "metrics": {"dense": metrics}})
    stage = serve.load_dense(store, release, lake, DS)
    assert np.array_equal(stage.vectors.ids, np.sort(table.ids)) and stage.top_n == settings.dense.two_stage_top_n
    norms = np.linalg.norm(stage.vectors.vectors, axis=1)
    assert stage.vectors.vectors.shape[1] == settings.dense.emb_dim and np.allclose(norms, 1.0, atol=1e-4)
    # same inputs, same machine: the same bytes (weights, config, index)
    pipeline.dense_train(settings, date.fromisoformat(DS))
    assert _objects(settings) == objects


def test_approximate_index_parameter_is_chosen_by_measured_recall(settings):
    s = _with(settings, IVF)
    out = pipeline.dense_train(s, date.fromisoformat(DS))
    assert out["index"] == "ivf" and set(out["params"]) == {"nlist", "nprobe"}
    assert out["measured_recall"] >= 0.95 and 1 <= out["params"]["nprobe"] <= out["params"]["nlist"]
    gate = pipeline.gate_dense(s, date.fromisoformat(DS))
    assert gate["recall"]["value"] >= 0.95 and gate["recall"]["params"] == out["params"]
    metrics = _gated_dense(Lake.from_settings(s), DS)[1]
    assert metrics["index"]["nprobe"] == out["params"]["nprobe"]


def test_index_below_target_recall_is_refused(settings, monkeypatch):
    """The manifest records nprobe 1 with the recall of the nprobe that was chosen: the gate loads the
    index as a consumer does (search parameter from the manifest), measures it again and refuses it."""
    from models.dense import daily
    from models.dense.index import build_index

    def one_probe(*args, **kwargs):
        index, manifest = build_index(*args, **kwargs)
        assert manifest["params"]["nprobe"] > 1
        return index, {**manifest, "params": {**manifest["params"], "nprobe": 1}}

    monkeypatch.setattr(daily, "build_index", one_probe)
    s = _with(settings, IVF)
    out = pipeline.dense_train(s, date.fromisoformat(DS))
    assert out["measured_recall"] >= 0.95 and out["params"]["nprobe"] == 1
    with pytest.raises(pipeline.GateFailed, match="rule=index_recall") as failed:
        pipeline.gate_dense(s, date.fromisoformat(DS))
    assert f"recorded at build: {out['measured_recall']}" in str(failed.value)
    lake = Lake.from_settings(s)
    stored = json.loads(lake.store.get_bytes(catalog.gate_result_key(DS, "dense")))
    assert stored["passed"] is False and [f["rule"] for f in stored["failures"]] == ["index_recall"]
    assert stored_gates(lake, DS, ("dense",)) == {"dense": False}
    with pytest.raises(PublishRefused, match="'dense'"):
        publish_step(s, DS)


def test_non_finite_item_vectors_are_refused(settings, monkeypatch):
    from models.dense import daily

    encode = daily.encode_catalog

    def poisoned(model, table):
        ids, vectors = encode(model, table)
        vectors[3] = np.nan
        return ids, vectors

    monkeypatch.setattr(daily, "encode_catalog", poisoned)
    pipeline.dense_train(settings, date.fromisoformat(DS))
    with pytest.raises(pipeline.GateFailed, match="rule=finite_normalised_vectors") as failed:
        pipeline.gate_dense(settings, date.fromisoformat(DS))
    assert "1 of" in str(failed.value) and "not finite" in str(failed.value)
    assert stored_gates(Lake.from_settings(settings), DS, ("dense",)) == {"dense": False}


def test_an_index_replaced_after_training_is_refused(settings):
    pipeline.dense_train(settings, date.fromisoformat(DS))
    lake = Lake.from_settings(settings)
    key = catalog.model_key("dense", DS, "index.faiss")
    blob = lake.store.get_bytes(key)
    lake.store.put_bytes(key, blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(pipeline.GateFailed, match="rule=config_names_objects"):
        pipeline.gate_dense(settings, date.fromisoformat(DS))
    assert stored_gates(lake, DS, ("dense",)) == {"dense": False}


def test_offline_tables_get_the_dr_and_two_stage_rows(settings):
    from models.dense.offline import offline_rows
    from models.multigr.offline import TABLES, offline_markdown, run_offline

    lake = Lake.from_settings(settings)
    cfg = settings.multigr.model_copy(update={"mopo": settings.multigr.mopo.model_copy(update={"steps": 2})})
    hook = offline_rows(settings.dense, settings.trainer, lake, epochs=2)
    report = run_offline(cfg, lake, date.fromisoformat(DS), 2, 1, [0], settings.trainer, variants=("growthgr",), max_test_requests=20,
                         extra_rows=hook)
    assert {"dr", "two_stage"} <= set(report["rows"]) and {"dr", "two_stage"} <= set(TABLES["Table 3: main comparison"])
    for row in ("dr", "two_stage", "growthgr"):
        for label, m in report["rows"][row].items():
            r10, r100, r1000 = (m[f"recall@{k}"]["mean"] for k in (10, 100, 1000))
            assert all(math.isfinite(v) for v in (r10, r100, r1000)) and 0 <= r10 <= r100 <= r1000 <= 1, (row, label)
    for label in report["rows"]["growthgr"]:        # the same items, re-ordered by DR
        assert report["rows"]["two_stage"][label]["recall@1000"] == report["rows"]["growthgr"][label]["recall@1000"]
    assert report["rows"]["dr"]["search"]["recall@100"]["mean"] > 0
    run = report["runs"]["0"]
    assert run["dr"]["index"]["kind"] == "flat" and run["dr"]["epochs"] == 2
    assert run["dr"]["index"]["n_items"] == report["items_with_sid"]
    assert run["two_stage"] == {"first_stage": "growthgr", "top_n": 1000}
    table3 = offline_markdown(report).split("## Table 4")[0]
    assert "| dr |" in table3 and "| two_stage |" in table3
    channels = report["label_channels"]                       # every relevant pair has a channel (or none)
    assert set(channels) == set(report["label_requests"])
    assert sum(channels["search"].values()) >= report["label_requests"]["search"]
    assert set(channels["search"]) <= set(CHANNELS) and set(channels["all-net"]) <= {*CHANNELS, "none"}
    assert "by the retrieval channel" in offline_markdown(report)
