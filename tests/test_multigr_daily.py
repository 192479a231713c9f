"""MultiGR in the daily pipeline (`growthgr.pipeline.multigr_train / multigr_evaluate / gate_multigr`,
`models.multigr.daily`).

Fast unit tests of the held-out rule and the gate checks on hand-made partitions; then the steps on
the shared tiny world (gr_samples by Spark, SIDs by the tokenize step): a first day trains from
scratch with fixed held-out days, the next day warm-starts from the serving release's MultiGR,
refreshes on its own samples only and is compared with the serving model on the same held-out
requests; a sabotaged MultiGR fails the gate, `publish` refuses the day and the serving release
stays current.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date

import pandas as pd
import pytest
import torch

from foundation import catalog
from foundation.config import load_settings
from foundation.lake import Lake, PartitionNotFound
from foundation.releases import ReleaseStore
from growthgr import pipeline
from growthgr.publish import PublishRefused, _gated_multigr, stored_gates
from growthgr.steps import publish as publish_step
from models.multigr import daily, gate, lineage

FIRST, NEXT = "2026-02-13", "2026-02-14"


# -- the held-out rule and the gate checks (no training) ------------------------------------------
def _fake_samples(lake: Lake, days: list[str]) -> None:
    for d in days:
        lake.write_partition(*catalog.GR_SAMPLES, d, pd.DataFrame({"request_id": [1], "user_id": [2]}))


def test_held_out_days_are_the_newest_days_when_history_allows(tmp_path):
    lake = Lake.open(str(tmp_path))
    _fake_samples(lake, ["2026-02-08", "2026-02-10", "2026-02-11", "2026-02-12", "2026-02-13"])
    cfg = load_settings("tiny", env={}, overrides={"multigr": {"daily": {"train_days": 2, "eval_days": 2}}}).multigr
    assert daily.lineage_days(lake, date(2026, 2, 13), cfg) == ([date(2026, 2, 10), date(2026, 2, 11)],
                                                          [date(2026, 2, 12), date(2026, 2, 13)])
    # the day before: only partitions up to ds count
    assert daily.lineage_days(lake, date(2026, 2, 12), cfg) == ([date(2026, 2, 8), date(2026, 2, 10)],
                                                          [date(2026, 2, 11), date(2026, 2, 12)])


def test_young_lake_holds_out_the_days_after_the_first_day(tmp_path):
    lake = Lake.open(str(tmp_path))
    _fake_samples(lake, ["2026-02-12", "2026-02-13"])
    cfg = load_settings("tiny", env={}, overrides={"multigr": {"daily": {"train_days": 3, "eval_days": 2}}}).multigr
    assert daily.lineage_days(lake, date(2026, 2, 13), cfg) == ([date(2026, 2, 12), date(2026, 2, 13)],
                                                          [date(2026, 2, 14), date(2026, 2, 15)])
    with pytest.raises(PartitionNotFound, match="samples/gr_samples/ds=2026-02-14"):
        daily.lineage_days(lake, date(2026, 2, 14), cfg)


def _evaluation(recall: float, fraction: float = 1.0, days=("2026-02-13",)) -> dict:
    return {"metrics": {"search": {"recall@10": recall, "ndcg@10": 0.1}, "all-net": {"recall@10": recall}},
            "valid_sid_fraction": fraction, "decoded_sids": 40, "evaluated_days": list(days),
            "missing_eval_days": [], "pending_eval_days": []}


def test_gate_checks_name_the_failed_rule():
    ok = gate.gate_checks(_evaluation(0.30), _evaluation(0.32), 0.05)
    assert all(c["passed"] for c in ok.values()) and ok["recall"]["limit"] == pytest.approx(0.27)
    worse = gate.gate_checks(_evaluation(0.20), _evaluation(0.32), 0.05)["recall"]
    assert not worse["passed"] and worse["value"] == 0.20 and worse["serving"] == 0.32
    first = gate.gate_checks(_evaluation(0.0), None, 0.05)["recall"]
    assert first["passed"] and first["limit"] is None and first["skipped"]
    bad = gate.gate_checks(_evaluation(math.nan, fraction=0.9), None, 0.05)
    assert not bad["finite_metrics"]["passed"] and bad["finite_metrics"]["non_finite"] == ["metrics.search.recall@10", "metrics.all-net.recall@10"]
    assert not bad["valid_sids"]["passed"] and bad["valid_sids"]["value"] == 0.9


# -- the steps on the tiny world (Spark + text encoder set-up: ~1 min on 2 cores; marked slow) ------
@pytest.fixture(scope="module")
def settings(tmp_path_factory, copy_world):
    """The tiny world with gr_samples of 02-12..02-14 and the SID snapshots of FIRST and NEXT. The
    SFT of a first day is longer than the tiny profile's, so a sabotaged model falls past the tolerance."""
    from spark_jobs.jobs import run_job

    top = tmp_path_factory.mktemp("multigr_daily")
    root = copy_world(top / "lake")
    multigr = {"lr": 5e-3, "daily": {"scratch_epochs": 15}}
    s = load_settings("tiny", env={}, overrides={"lake_root": str(root), "releases_root": str(top / "releases"),
                                                 "multigr": multigr})
    lake = Lake.from_settings(s)
    for ds in ("2026-02-12", FIRST, NEXT):
        run_job(lake, s.spark, s.storage, "gr_samples", date.fromisoformat(ds))
    for ds in (FIRST, NEXT):
        pipeline.tokenize(s, date.fromisoformat(ds))
    return s


def _steps(s, ds: str) -> dict:
    return {"train": pipeline.multigr_train(s, date.fromisoformat(ds)), "evaluate": pipeline.multigr_evaluate(s, date.fromisoformat(ds)),
            "gate": pipeline.gate_multigr(s, date.fromisoformat(ds))}


def _release_of_day(s, ds: str) -> str:
    """A release of `ds` holding the gated MultiGR (the rest of a daily release is the DAG test's)."""
    lake, store = Lake.from_settings(s), ReleaseStore.from_settings(s)
    files, metrics, _ = _gated_multigr(lake, ds, s.multigr.daily.max_recall_drop)
    return store.publish(f"ds={ds}-multigr", files, {"ds": ds, "metrics": {"multigr": metrics}}).release_id


@pytest.fixture(scope="module")
def first_day(settings):
    out = _steps(settings, FIRST)
    return out, _release_of_day(settings, FIRST)


def _config(s, ds: str) -> dict:
    return json.loads(Lake.from_settings(s).store.get_bytes(catalog.model_key("multigr", ds, "config.json")))


@pytest.mark.slow
def test_first_day_trains_from_scratch_and_fixes_its_held_out_days(settings, first_day):
    out, _ = first_day
    train = out["train"]
    assert train["mode"] == "scratch" and train["init_release"] is None
    assert train["train_days"] == ["2026-02-12"] and train["eval_days"] == [FIRST]    # tiny: eval_days 1
    meta = _config(settings, FIRST)
    assert meta["eval_days"] == [FIRST] and meta["lineage_start"] == FIRST and meta["sid_version"] == train["sid_version"]
    assert meta["mopo"] is True
    lake = Lake.from_settings(settings)
    report = json.loads(lake.store.get_bytes(catalog.report_key("multigr", FIRST, "daily.json")))
    cand = report["candidate"]
    assert cand["evaluated_days"] == [FIRST] and cand["scored_requests"] > 10
    assert cand["valid_sid_fraction"] == 1.0 and cand["decoded_sids"] >= cand["scored_requests"]
    for label in ("search", "all-net"):
        m = cand["metrics"][label]
        assert set(m) == {"requests", "recall@10", "ndcg@10", "recall@100", "ndcg@100"}
        assert 0 <= m["recall@10"] <= m["recall@100"] <= 1 and all(math.isfinite(v) for v in m.values())
    assert cand["metrics"]["search"]["recall@100"] > 0             # (quality is the SFT / MoPO tests' subject)
    assert report["serving"] is None and report["serving_skipped"] == "no serving release"
    assert out["gate"]["checks"] == {"finite_metrics": True, "valid_sids": True, "held_out_days": True, "recall": True}
    assert stored_gates(lake, FIRST, ("multigr",)) == {"multigr": True}


@pytest.mark.slow
def test_released_multigr_decodes_only_valid_sids(settings, first_day):
    from models.multigr.beam import beam_search, trie_table
    from models.multigr.data import left_pad
    from models.multigr.platform import request_prompt
    from models.tokenizer import sids

    store, lake = ReleaseStore.from_settings(settings), Lake.from_settings(settings)
    release = first_day[1]
    meta = json.loads(store.read(release, "multigr_config.json"))
    model = lineage.from_bytes(store.read(release, "multigr.safetensors"), meta, release).model
    _, table = sids.latest_snapshot(lake, FIRST)
    pool = table["item_id"].to_numpy()[::7]                         # a serving trie over a subset of items
    trie = sids.build_trie(table, settings.tokenizer.codebook_size, pool)
    lookup = daily.sid_table(lake, FIRST).lookup
    samples = lake.read_partition(*catalog.GR_SAMPLES, FIRST).to_pandas().head(64)
    prompts = [request_prompt(model.vocab, r, lookup, model.cfg.max_history, model.cfg.max_query_words)
               for r in samples.itertuples(index=False)]
    out = beam_search(model, left_pad(prompts), model.cfg.beam_widths, model.cfg.top_k, trie_table(trie))
    decoded = out.sids.reshape(-1, out.sids.shape[-1]).numpy()
    found = decoded[(decoded >= 0).all(1)]             # -1 rows: a narrow beam found fewer than top_k SIDs
    valid = set(map(tuple, sids.sid_matrix(table[table["item_id"].isin(pool)]).tolist()))
    assert len(found) > len(decoded) / 2 and ((decoded >= 0).all(1) | (decoded < 0).all(1)).all()
    assert all(tuple(row) in valid for row in found.tolist())
    assert meta["sha256"] == hashlib.sha256(store.read(release, "multigr.safetensors")).hexdigest()


@pytest.fixture(scope="module")
def next_day(settings, first_day):
    return _steps(settings, NEXT)


@pytest.mark.slow
def test_next_day_warm_starts_from_the_serving_release_on_its_own_samples(settings, first_day, next_day):
    train = next_day["train"]
    assert train["mode"] == "warm_start" and train["init_release"] == first_day[1]
    assert train["train_days"] == [NEXT] and train["eval_days"] == [FIRST]       # never trains on the held-out day
    meta = _config(settings, NEXT)
    assert meta["lineage_start"] == FIRST and meta["eval_days"] == [FIRST]
    lake = Lake.from_settings(settings)
    first, second = (lake.store.get_bytes(catalog.model_key("multigr", d)) for d in (FIRST, NEXT))
    assert first != second                                                           # refreshed
    report = json.loads(lake.store.get_bytes(catalog.report_key("multigr", NEXT, "daily.json")))
    assert report["serving_release"] == first_day[1] and report["serving_skipped"] is None
    assert report["candidate"]["evaluated_days"] == report["serving"]["evaluated_days"] == [FIRST]
    assert report["candidate"]["scored_requests"] == report["serving"]["scored_requests"]
    assert next_day["gate"]["recall"]["serving"] == report["serving"]["metrics"]["search"]["recall@10"]
    # same inputs, same machine: the same checkpoint bytes
    assert pipeline.multigr_train(settings, date.fromisoformat(NEXT))["checkpoint"] == catalog.model_key("multigr", NEXT)
    assert lake.store.get_bytes(catalog.model_key("multigr", NEXT)) == second


@pytest.mark.slow
def test_gate_refuses_a_checkpoint_changed_after_its_evaluation(settings, next_day):
    from growthgr.pipeline import GateFailed

    lake = Lake.from_settings(settings)
    assert stored_gates(lake, NEXT, ("multigr",)) == {"multigr": True}
    key = catalog.model_key("multigr", NEXT)
    good = lake.store.get_bytes(key)
    lake.store.put_bytes(key, lake.store.get_bytes(catalog.model_key("multigr", FIRST)))
    try:
        assert stored_gates(lake, NEXT, ("multigr",)) == {"multigr": False}     # stale result
        with pytest.raises(GateFailed, match="report_of_current_checkpoint"):
            pipeline.gate_multigr(settings, date.fromisoformat(NEXT))
    finally:
        lake.store.put_bytes(key, good)


@pytest.mark.slow
def test_regressed_multigr_is_not_published_and_the_release_stays_current(settings, first_day, next_day,
                                                                          monkeypatch):
    """The candidate's SID embeddings are zeroed (every request gets the same first SIDs of the trie:
    search Recall@10 0), and the tolerance is 0 (the tiny world's held-out day has ~30 requests)."""
    from growthgr.pipeline import GateFailed

    train = daily.train_daily

    def sabotaged(*args, **kwargs):
        model, info = train(*args, **kwargs)
        with torch.no_grad():
            model.tok_emb.weight[model.vocab.sid_offset :] = 0.0
        return model, info

    monkeypatch.setattr(daily, "train_daily", sabotaged)
    store, lake = ReleaseStore.from_settings(settings), Lake.from_settings(settings)
    assert store.current_id() == first_day[1]
    serving = first_day[0]["gate"]["recall"]["value"]
    assert serving > 0, "the serving MultiGR retrieves nothing on the held-out day: no regression to detect"
    pipeline.multigr_train(settings, date.fromisoformat(NEXT))
    pipeline.multigr_evaluate(settings, date.fromisoformat(NEXT))
    strict = settings.model_copy(update={"multigr": settings.multigr.model_copy(update={
        "daily": settings.multigr.daily.model_copy(update={"max_recall_drop": 0.0})})})   # tiny: few requests
    with pytest.raises(GateFailed) as failed:
        pipeline.gate_multigr(strict, date.fromisoformat(NEXT))
    message = str(failed.value)
    assert "gate multigr ds=2026-02-14: FAILED" in message
    assert "column=search recall@10 rule=max_recall_drop" in message and first_day[1] in message
    stored = json.loads(lake.store.get_bytes(catalog.gate_result_key(NEXT, "multigr")))
    assert stored["passed"] is False and stored["failures"][0]["rule"] == "max_recall_drop"
    assert stored_gates(lake, NEXT, ("multigr",)) == {"multigr": False}
    with pytest.raises(PublishRefused, match="'multigr'"):
        publish_step(strict, NEXT)
    assert store.current_id() == first_day[1]
    assert not any(r["release_id"].startswith(f"ds={NEXT}") for r in store.list())
