"""ItemLTV end to end on a tiny synthetic platform with a known uplift (real Lightning training,
real lake): the application step builds the Feast inputs -> train (loss falls) -> evaluate (every
metric, uplift correlates with the truth) -> daily pool (unique new items, size N, finite scores)
-> checkpoint round trip.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from foundation import catalog
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from growthgr import pipeline
from models.itemltv.baselines import NON_ORACLE
from models.itemltv.data import load_inputs, prepare
from models.itemltv.evaluate import label_metrics
from models.itemltv.model import ItemLTV
from models.itemltv.pipeline import (
    pool_candidates,
    pool_inputs,
    run_evaluate,
    run_train,
    score_checkpoints,
    write_pool,
)
from models.itemltv.predict import predict
from models.itemltv.study import run_study, study_table
from models.itemltv.synthetic import write_synthetic_lake
from models.itemltv.train import FULL, Trained, load_checkpoint, model_kwargs, model_spec, save_checkpoint

LATENT = ("segment", "home_category", "activity", "price_sensitivity", "niche", "quality", "base_demand")
DS = "2026-02-13"   # 44 simulated days from 2026-01-01: cohorts 01-01..01-08 have closed labels
DAY = date(2026, 2, 13)   # DS as the models take it


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltv_lake")
    write_synthetic_lake(Lake.open(str(root)), days=44, items_per_day=24, n_users=200, seed=3)
    return load_settings("tiny", env={}, overrides={
        "lake_root": str(root), "itemltv": {"max_epochs": 6, "patience": 6, "lr": 3e-3, "pool_size": 15, "gbm_max_iter": 30}})


@pytest.fixture(scope="module")
def built(settings):
    """The application step that reads Feast: training sets + the pool candidates' item features."""
    return pipeline.training_set(settings, date.fromisoformat(DS))


@pytest.fixture(scope="module")
def trained(settings, built):
    return run_train(settings.itemltv, settings.trainer, Lake.from_settings(settings), DAY)


@pytest.fixture(scope="module")
def metrics(settings, trained):
    return run_evaluate(settings.itemltv, Lake.from_settings(settings), DAY)


def test_training_loss_falls_and_checkpoints_are_written(settings, trained):
    lake = Lake.from_settings(settings)
    for name in ("itemltv", "itemltv_base"):
        losses = trained[name]["train_loss"]
        assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses
        assert lake.store.exists(trained[name]["checkpoint"])
    assert trained["cohorts"]["test"] == ["2026-01-07", "2026-01-08"]


def test_inputs_come_from_the_feast_training_set(settings, built, trained):
    """The Feast training set (feature service itemltv_v1) is built per samples partition by the
    application step, and its point-in-time features are model inputs of both towers."""
    lake = Lake.from_settings(settings)
    parts = lake.list_partitions("samples", "itemltv_samples")
    assert parts and lake.list_partitions("samples", "training_itemltv_v1") == parts == list(map(parse_ds, built["built"]))
    ts = lake.read_partition("samples", "training_itemltv_v1", parts[0]).to_pandas()
    assert len(ts) == lake.read_partition("samples", "itemltv_samples", parts[0]).num_rows
    # exposures on a listing day see no item snapshot yet (it is written at the end of the day)
    first_day = ts["event_timestamp"].dt.date == ts["listing_date"]
    assert ts.loc[first_day, "item_features__exposures_7d"].isna().all()
    assert ts.loc[~first_day, "item_features__exposures_7d"].notna().mean() > 0.95
    pre = load_checkpoint(lake, FULL, DAY).pre
    # the base tower gets inputs a click cannot change (listing-time attributes, site-wide orders);
    # the item's funnel (treatment, mediators) goes to the uplift side
    assert set(pre.columns["item"]) == {"item__log_price", "item__f_price", "item__log_site_orders_per_day"}
    assert {"ctx__f_item_exposures_7d", "ctx__f_item_ctr_7d", "ctx__f_item_orders_30d"} <= set(pre.columns["ctx"])
    assert {"user__f_price_level_30d", "user__f_active_days_30d", "ctx__f_user_category_affinity",
            "ctx__f_ctr_30d"} <= set(pre.columns["user"] + pre.columns["ctx"])
    inputs = [c for cols in pre.columns.values() for c in cols]
    assert not [c for c in inputs if any(latent in c for latent in LATENT)], inputs


def test_evaluate_reports_every_metric(settings, metrics):
    for variant in ("base_only", "with_uplift"):
        assert set(metrics[variant]) == {"mse", "ndcg"} and all(math.isfinite(v) for v in metrics[variant].values())
    assert set(metrics["uplift"]) == {"itemltv", *NON_ORACLE, "ref_zero", "ref_true_mean"}
    for m in metrics["uplift"].values():
        assert {"pehe", "pearson", "spearman", "within_item_spearman", "auuc", "auuc_random", "qini"} <= set(m)
        assert all(math.isfinite(v) for v in m.values()), m
    assert set(metrics["baseline_hyperparameters"]["ridge_clicks"]) == {"alpha", "val_mse"}
    assert metrics["n_truth_exposures"] == metrics["n_test_exposures"] > metrics["n_scored_exposures"] > 0
    assert set(metrics["uplift_every_exposure"]) == set(metrics["uplift"])
    lake = Lake.from_settings(settings)
    stored = json.loads(lake.store.get_bytes(f"reports/itemltv/ds={DS}/metrics.json"))
    assert stored["uplift"]["itemltv"]["pehe"] == pytest.approx(metrics["uplift"]["itemltv"]["pehe"])
    for png in ("uplift_vs_age.png", "qini.png"):
        assert lake.store.get_bytes(f"reports/itemltv/ds={DS}/{png}")[:4] == b"\x89PNG"


def test_learned_uplift_tracks_the_true_uplift(metrics):
    ours = metrics["uplift"]["itemltv"]
    assert ours["pearson"] > 0.1 and ours["qini"] > 0.05, ours
    assert metrics["with_uplift"]["mse"] < metrics["base_only"]["mse"]


def test_study_reports_mean_and_sd_over_seeds(settings, built):
    """`growthgr itemltv evaluate`: every model and baseline over 2 seeds, written to the reports zone."""
    lake = Lake.from_settings(settings)
    result = run_study(settings.itemltv, settings.trainer, lake, DAY, seeds=[0, 1])
    m = result["models"]
    assert {"itemltv", "itemltv_raw", "base_only", *NON_ORACLE, "ref_zero", "ref_true_mean_by_age"} <= set(m)
    assert m["itemltv"]["pehe"]["n"] == 2 and m["itemltv"]["pehe"]["sd"] > 0       # seeds differ
    assert m["ridge_clicks"]["pehe"]["sd"] == 0                                    # deterministic
    assert m["ref_zero"]["pehe"]["mean"] > 0 and "pehe" not in m["base_only"]
    assert set(result["verdict"]) >= {"pehe_ratio", "pehe_ratio_bootstrap95", "calibration_ratio", "pearson_mean",
                                      "pearson_sd", "qini_mean", "uplift_beats_base_mse"}
    # bootstrap intervals over test items bracket the point figure; the table says what it trained on
    lo, hi = m["ridge_clicks"]["bootstrap95"]["pehe"]
    assert lo < m["ridge_clicks"]["pehe"]["mean"] < hi
    assert result["trained_on"]["cohorts"] == len(result["cohorts"]["train"]) and result["trained_on"]["clicks"] > 0
    # the ratio is to the best of every baseline that reads no truth, the age heuristic included
    best = min(NON_ORACLE, key=lambda k: m[k]["pehe"]["mean"])
    assert result["verdict"]["best_baseline"] == best and "age_heuristic" in NON_ORACLE
    assert result["verdict"]["pehe_ratio"] == pytest.approx(m["itemltv"]["pehe"]["mean"] / m[best]["pehe"]["mean"])
    table = lake.store.get_bytes(f"reports/itemltv/ds={DS}/study.md").decode()
    assert table == study_table(result) and "| itemltv_raw |" in table and "±" in table and "trained on" in table
    # the pool each estimate would select, scored on truth; the age oracle's pool is no worse than predicting zero's
    pools = {k: m[k]["pool_true"]["mean"] for k in ("itemltv", "age_heuristic", "ref_true_mean_by_age", "ref_zero")}
    assert pools["ref_true_mean_by_age"] >= pools["ref_zero"] and "pool of the top 25%" in table
    assert set(result["verdict"]["pool_true"]) >= {"itemltv", "age_heuristic"}
    assert json.loads(lake.store.get_bytes(f"reports/itemltv/ds={DS}/study.json"))["seeds"] == [0, 1]


def test_pool_candidates_features_are_point_in_time_at_the_end_of_the_day(settings, built):
    lake = Lake.from_settings(settings)
    feats = lake.read_partition(*catalog.ITEMLTV_POOL_FEATURES, DS).to_pandas()
    assert feats["item_id"].tolist() == sorted(pool_candidates(lake, DAY)["item_id"]) and built["pool_candidates"] == len(feats)
    assert (feats["event_timestamp"] == pd.Timestamp("2026-02-14", tz="UTC")).all()
    assert feats["item_features__exposures_7d"].notna().mean() > 0.9      # today's snapshot is seen


def test_training_set_step_builds_only_what_is_missing_and_the_day_itself(settings, built, trained):
    again = pipeline.training_set(settings, date.fromisoformat(DS))
    assert again["built"] == [DS] and again["pool_candidates"] == built["pool_candidates"]


def test_pool_holds_unique_new_items_with_finite_scores(settings, trained):
    lake = Lake.from_settings(settings)
    pool = write_pool(settings.itemltv, lake, DAY)
    stored = lake.read_partition(*catalog.NEW_ITEM_POOL, DS).to_pandas()
    assert len(stored) == len(pool) == 15 and stored["item_id"].is_unique
    assert np.isfinite(stored["score"]).all() and stored["rank"].tolist() == list(range(1, 16))
    assert stored["score"].is_monotonic_decreasing and (stored["ds"] == DS).all()
    first_new = date.fromisoformat(DS) - timedelta(days=29)
    assert all(first_new <= d <= date.fromisoformat(DS) for d in stored["listing_date"])
    scores = lake.read_partition(*catalog.ITEM_UPLIFT, DS).to_pandas()     # every candidate, base and uplift
    assert scores["item_id"].tolist() == sorted(pool_candidates(lake, DAY)["item_id"])
    assert np.isfinite(scores[["base", "uplift"]].to_numpy()).all() and scores["uplift"].std() > 0
    top = scores.set_index("item_id").loc[stored["item_id"], "base"].to_numpy()
    assert top == pytest.approx(stored["score"].to_numpy(), abs=1e-6)


def test_pool_is_scored_in_each_candidates_real_context(settings, trained):
    """Pool candidates carry their exposures and clicks up to the day and their site-order rate
    so far, not zeros: the uplift tower sees the context it was trained with."""
    lake = Lake.from_settings(settings)
    inputs = pool_inputs(lake, DAY)
    first = DAY - timedelta(days=29)
    clicked = lake.read_range("raw", "clicks", first, DAY, ["item_id"]).to_pandas()["item_id"].value_counts()
    prior = inputs.samples.set_index("item_id")["prior_clicks"]
    assert prior.to_numpy() == pytest.approx(clicked.reindex(prior.index, fill_value=0).to_numpy())
    assert (prior > 0).mean() > 0.2
    rates = inputs.site_rates.set_index("item_id")
    listing = pd.to_datetime(inputs.items.set_index("item_id")["listing_date"]).dt.date
    assert (rates["site_days"] == [min(30, (DAY - listing[i]).days + 1) for i in rates.index]).all()


def test_checkpoint_round_trip_is_exact(settings, trained, metrics):
    lake = Lake.from_settings(settings)
    loaded = load_checkpoint(lake, FULL, DAY)
    save_checkpoint(lake, "itemltv_roundtrip", DAY, loaded)
    again = load_checkpoint(lake, "itemltv_roundtrip", DAY)
    assert again.spec == loaded.spec and again.pre == loaded.pre
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    splits, _ = prepare(load_inputs(lake, DAY, 10), settings.itemltv, loaded.pre)
    assert label_metrics(predict(again, splits.test).items) == pytest.approx(metrics["with_uplift"])
    assert loaded.spec["use_uplift"] and loaded.spec["objective"] == "item"


def test_checkpoints_are_scored_on_the_same_held_out_rows(settings, trained, metrics):
    """The model gate's figures: the candidate and a (bad) serving model with other preprocessing
    (hash buckets, feature columns, untrained weights) are scored on the same test rows of DS, the
    candidate exactly as the report scores it, and scoring is repeatable."""
    lake = Lake.from_settings(settings)
    good = load_checkpoint(lake, FULL, DAY)
    pre = replace(good.pre, hash_buckets=64, columns={g: c[:2] for g, c in good.pre.columns.items()},
                  mean={g: m[:2] for g, m in good.pre.mean.items()}, std={g: v[:2] for g, v in good.pre.std.items()})
    spec = model_spec(settings.itemltv, pre, use_uplift=True)
    torch.manual_seed(0)
    untrained = ItemLTV(**model_kwargs(spec)).eval()
    bad = lake.store.get_bytes(save_checkpoint(lake, "itemltv_untrained", DAY, Trained(untrained, pre, spec)))
    blob = lake.store.get_bytes(trained[FULL]["checkpoint"])
    out = score_checkpoints(settings.itemltv, lake, DAY, {"candidate": blob, "again": blob, "serving": bad})
    assert out["scores"]["candidate"] == out["scores"]["again"] == pytest.approx(metrics["with_uplift"])
    assert out["test_cohorts"] == metrics["cohorts"]["test"] and out["n_test_items"] == metrics["n_test_items"]
    assert out["scores"]["serving"]["mse"] > 1.5 * out["scores"]["candidate"]["mse"]
    assert score_checkpoints(settings.itemltv, lake, DAY, {"serving": bad})["rows"] == out["rows"]
