"""The daily DAG under a real Airflow (SQLite, dag.test) on the tiny profile: lake B.

The scenarios build on each other (good day -> faulty D -> repaired D -> re-run D), as the
session-wide products of `dag_scenarios` (built once, by whichever xdist worker asks first;
tests/test_dag_s3.py compares its S3 run with them): the good day 02-15 publishes; day D with
nulls injected into its raw logs is refused and the good day's release keeps serving; the clean
logs of D, delivered again, publish D (MultiGR warm-started from the good day); running D again on
that lake once more changes no output partition and publishes nothing.
"""

from __future__ import annotations

import io
import json

import dag_scenarios as dag
import numpy as np
import pandas as pd
import pytest

from foundation.lake import Lake
from foundation.releases import ReleaseStore
from growthgr.airflow_local import RunOutcome

D, DAYS = dag.D, dag.DAYS
RELEASE_FILES = ["pool.parquet", "index.faiss", "metrics.json", "itemltv.safetensors", "sid_trie.npz",
                 "item_sids.parquet", "multigr.safetensors", "multigr_config.json", "dense.safetensors",
                 "dense_config.json", "dense_index.faiss"]


@pytest.fixture(scope="module")
def good_dir(shared_root, copy_world, airflow_home):
    return dag.good(shared_root, copy_world, airflow_home)


@pytest.fixture(scope="module")
def good_day(good_dir):
    """The good day on lake B: (outcome, release id)."""
    info = dag.read_json(good_dir, "good.json")
    return RunOutcome(info["state"], info["tasks"]), info["release"]


@pytest.fixture(scope="module")
def lake_b(good_dir):
    """Lake B after the good day: its settings and release store (read only)."""
    s = dag.settings_of(good_dir)
    return s, ReleaseStore.from_settings(s)


@pytest.fixture(scope="module")
def repaired_dir(good_dir, shared_root, copy_world, airflow_home):
    return dag.repaired(shared_root, copy_world, airflow_home)


@pytest.fixture(scope="module")
def faulty_day(repaired_dir):
    """The refused run of D: its outcome, and what the store and the raw gate held right after it."""
    info = dag.read_json(repaired_dir, "repaired.json")
    return RunOutcome(**info["faulty"]), info["after_faulty"]


@pytest.fixture(scope="module")
def repaired_day(repaired_dir):
    """The clean logs of D delivered again (raw partitions replaced by the clean ones), D run again:
    (outcome, release id, its release store)."""
    info = dag.read_json(repaired_dir, "repaired.json")
    return RunOutcome(**info["repaired"]), info["release"], ReleaseStore.from_settings(dag.settings_of(repaired_dir))


@pytest.mark.slow
def test_good_day_publishes(good_day, lake_b):
    outcome, current = good_day
    assert outcome.ok, outcome.tasks
    assert current.startswith(f"ds={DAYS[0]}")
    release = lake_b[1].get(current)
    assert set(RELEASE_FILES) <= set(release.files), release.files
    multigr = release.manifest["metrics"]["multigr"]
    assert multigr["mode"] == "scratch" and multigr["eval_days"] == [DAYS[0]] == multigr["evaluated_days"]
    assert multigr["train_days"] == ["2026-02-13", "2026-02-14"] and multigr["valid_sid_fraction"] == 1.0
    assert 0 <= multigr["metrics"]["search"]["recall@10"] <= multigr["metrics"]["search"]["recall@100"] <= 1
    assert release.manifest["multigr_gate"]["passed"] and release.manifest["multigr_gate"]["serving_release"] is None
    dense = release.manifest["metrics"]["dense"]
    assert dense["index"]["kind"] == "flat" and dense["index"]["measured_recall"] == 1.0 >= dense["index"]["target_recall"]
    assert dense["days"] == ["2026-02-14", DAYS[0]] and release.manifest["gates"]["dense"] is True


@pytest.mark.slow
def test_good_day_lineage_names_each_steps_inputs_and_outputs(good_dir, lake_b):
    """Airflow's OpenLineage provider (file transport): one START and one COMPLETE per task, whose
    inputs and outputs are the registry step's datasets on this run's stores; dbt's events, children
    of the dbt_build task's run, name each model's relations and the lake sources they read."""
    from growthgr.lineage import dataset, expand
    from growthgr.steps import DAILY

    s, events = lake_b[0], dag.read_json(good_dir, "lineage.json")
    kinds = {}
    for e in events["tasks"]:
        kinds.setdefault(e["job"]["name"], []).append(e["eventType"])
    assert kinds == {f"growthgr_daily.{st.name}": ["START", "COMPLETE"] for st in DAILY}, kinds
    done = {e["job"]["name"].split(".", 1)[1]: e for e in events["tasks"] if e["eventType"] == "COMPLETE"}
    for st in DAILY:
        names = {io: {(d["namespace"], d["name"]) for d in done[st.name][io]} for io in ("inputs", "outputs")}
        assert names["inputs"] == {dataset(s, k) for k in expand(st.reads)}, st.name
        assert names["outputs"] == {dataset(s, k) for k in expand(st.writes)}, st.name
        assert names["inputs"] or names["outputs"], st.name
    assert ("file", f"{good_dir / 'lake'}/samples/itemltv_labels") in {
        (d["namespace"], d["name"]) for d in done["spark_jobs"]["outputs"]}
    dbt_run = done["dbt_build"]["run"]["runId"]
    assert events["children"] and all(e["run"]["facets"]["parent"]["run"]["runId"] == dbt_run
                                      for e in events["children"])
    built = {e["job"]["name"].split(".")[-3]: e for e in events["children"]
             if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".build.run")}
    assert {"dim_items", "fct_itemltv_labels", "new_item_cohorts", "fct_search_funnel_daily", "stg_items"} <= set(built)
    funnel = {i["name"] for i in built["fct_search_funnel_daily"]["inputs"]}
    assert {"growthgr.main.dim_items", "growthgr.staging.stg_search_requests"} <= funnel, funnel
    assert [o["name"] for o in built["fct_search_funnel_daily"]["outputs"]] == ["growthgr.main.fct_search_funnel_daily"]
    assert {i["name"] for i in built["stg_items"]["inputs"]} == {"growthgr.raw.items"}, built["stg_items"]["inputs"]


@pytest.mark.slow
def test_released_dense_retriever_loads_in_the_service(good_day, lake_b):
    """The service's loader reads the release's DR files: model, and the vectors of the catalog as of the day."""
    from growthgr import serve
    from models.dense.platform import item_table

    s, releases = lake_b
    release = releases.get(good_day[1])
    stage = serve.load_dense(releases, release, Lake.from_settings(s), DAYS[0])
    table, _, _ = item_table(Lake.from_settings(s), DAYS[0])
    assert stage is not None and stage.model.cfg.emb_dim == s.dense.emb_dim
    assert np.array_equal(stage.vectors.ids, np.sort(table.ids))
    assert np.isfinite(stage.vectors.vectors).all() and release.manifest["metrics"]["dense"]["index"]["n_items"] == len(table)


@pytest.mark.slow
def test_released_multigr_decodes_only_valid_sids(good_day, lake_b, tmp_path):
    """The release's MultiGR, decoded as served (its beam widths and top_k, the release's SID trie of
    the pool), returns only SIDs of the release's SID table."""
    from models.multigr.beam import beam_search, trie_table
    from models.multigr.data import left_pad
    from models.multigr.lineage import from_bytes
    from models.multigr.platform import SidLookup, request_prompt
    from models.tokenizer.sids import sid_matrix
    from models.tokenizer.trie import SidTrie

    s, releases = lake_b
    rid = good_day[1]
    model = from_bytes(releases.read(rid, "multigr.safetensors"),
                          json.loads(releases.read(rid, "multigr_config.json")), rid).model
    (tmp_path / "trie.npz").write_bytes(releases.read(rid, "sid_trie.npz"))
    table = pd.read_parquet(io.BytesIO(releases.read(rid, "item_sids.parquet")))
    codes = sid_matrix(table)
    lookup = SidLookup(table, ["c1", "c2", "c3", "c4"][: codes.shape[1]])
    requests = Lake.from_settings(s).read_partition("samples", "gr_samples", DAYS[0]).to_pandas().head(50)
    prompts = [request_prompt(model.vocab, r, lookup, model.cfg.max_history, model.cfg.max_query_words)
               for r in requests.itertuples(index=False)]
    cfg = model.cfg
    top_k = min(cfg.top_k, len(table))
    out = beam_search(model, left_pad(prompts), cfg.beam_widths, top_k, trie_table(SidTrie.load(tmp_path / "trie.npz")))
    decoded = out.sids.reshape(-1, codes.shape[1]).numpy()
    found = decoded[(decoded >= 0).all(1)]             # -1 rows: a narrow beam found fewer than top_k SIDs
    assert len(found) > len(decoded) / 2 and ((decoded >= 0).all(1) | (decoded < 0).all(1)).all()
    assert set(map(tuple, found.tolist())) <= set(map(tuple, codes.tolist()))


@pytest.mark.slow
def test_faulty_day_blocks_publish_and_keeps_the_release(good_day, faulty_day):
    outcome, after = faulty_day
    assert outcome.state == "failed"
    assert outcome.tasks["gate_raw"] == "failed"
    assert all(outcome.tasks[t] == "upstream_failed" for t in ("spark_jobs", "itemltv", "pool", "multigr_train",
                                                                 "gate_multigr", "publish"))
    assert after["current"] == good_day[1]
    assert not any(r.startswith(f"ds={D}") for r in after["releases"])
    assert '"passed": false' in after["raw_gate"] and "not_null" in after["raw_gate"]


@pytest.mark.slow
def test_repaired_day_publishes(good_day, repaired_day):
    outcome, released, releases = repaired_day
    assert outcome.ok, outcome.tasks
    assert released.startswith(f"ds={D}") and released != good_day[1]
    manifest = releases.get(released).manifest
    multigr, gate = manifest["metrics"]["multigr"], manifest["multigr_gate"]
    # warm start from the good day's MultiGR, refreshed on D, compared with it on the same held-out day
    assert multigr["mode"] == "warm_start" and multigr["init_release"] == good_day[1]
    assert multigr["train_days"] == [D] and multigr["eval_days"] == [DAYS[0]]
    assert gate["serving_release"] == good_day[1] and gate["recall"]["limit"] is not None
    assert gate["recall"]["value"] >= gate["recall"]["limit"]


@pytest.mark.slow
def test_rerun_is_idempotent(repaired_dir, repaired_day):
    """D once more on the repaired lake: every output partition of both days is unchanged and
    nothing is published."""
    rerun = dag.read_json(repaired_dir, "repaired.json")["rerun"]
    snapshot = dag.snapshot(repaired_dir)
    before, after = snapshot["outputs"], snapshot["after_rerun"]
    assert rerun["state"] == "success", rerun["tasks"]
    assert rerun["release"] == repaired_day[1]
    assert before.keys() == after.keys() and len(after) == len(dag.OUTPUTS) * len(DAYS)
    for key in before:
        pd.testing.assert_frame_equal(before[key], after[key], obj=str(key))
