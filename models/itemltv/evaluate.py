"""Evaluation of ItemLTV on held-out cohorts, against the ground truth of the simulator.

- label quality (paper Table 2 shape): MSE on y = log1p(mean daily orders) and
  NDCG of the predicted ranking with the true mean daily orders as gains
  (per listing-day cohort, averaged), "base only" vs "+uplift"; both are item
  level: an item's prediction is the aggregate of its exposures' predictions;
- uplift quality against `truth/click_effects.true_uplift` (per exposure):
  PEHE = sqrt(mean((uplift_hat - true)^2)), Pearson/Spearman correlation, and
  AUUC / Qini computed with the true effects (rank exposures by predicted
  uplift; the gain of targeting the top k is the sum of their true uplifts;
  AUUC = area under that curve / the oracle's; Qini = area above the random
  line / the oracle's), next to S- and T-learners (HistGradientBoosting) fitted
  on the same training cohorts and the same flat features (item/user/context
  numerics, category, and two history summaries in place of attention).
"""

from __future__ import annotations

import io
import json
import logging
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402
from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from growthgr.core import catalog  # noqa: E402
from growthgr.core.lake import Lake, PartitionNotFound, to_ds  # noqa: E402
from models.itemltv.data import Encoded  # noqa: E402
from models.itemltv.lit import ItemGroups  # noqa: E402
from models.itemltv.model import item_labels, item_predictions  # noqa: E402
from models.itemltv.train import Trained  # noqa: E402
from models.metrics import graded_ndcg  # noqa: E402

log = logging.getLogger(__name__)
REPORT = "itemltv"     # the reports' subsystem name (`reports/itemltv/ds=<ds>/`)


class Predictions(NamedTuple):
    exposures: pd.DataFrame    # meta + base, uplift, treatment
    items: pd.DataFrame        # item_id, listing_date, y, pred


@torch.no_grad()
def predict(trained: Trained, enc: Encoded, items_per_batch: int = 256) -> Predictions:
    """Per-exposure base/uplift and per-item predicted label of one model."""
    ds, objective = ItemGroups(enc), trained.spec["objective"]
    base, uplift, item_pred, item_y, rows_all, first = [], [], [], [], [], []
    for start in range(0, len(ds), items_per_batch):
        groups = list(range(start, min(start + items_per_batch, len(ds))))
        rows = np.concatenate([ds.order[ds.bounds[g]:ds.bounds[g + 1]] for g in groups])
        b = ds.collate(groups)
        out = trained.model(b)
        base.append(out.base.numpy()), uplift.append(out.uplift.numpy()), rows_all.append(rows)
        item_pred.append(item_predictions(out, b, objective).numpy()), item_y.append(item_labels(b).numpy())
        first.append(ds.order[ds.bounds[groups]])
    rows, first = np.concatenate(rows_all), np.concatenate(first)
    exposures = enc.meta.iloc[rows].reset_index(drop=True).assign(
        base=np.concatenate(base), uplift=np.concatenate(uplift), treatment=enc.treatment[rows])
    items = enc.meta.iloc[first][["item_id", "listing_date"]].reset_index(drop=True).assign(
        y=np.concatenate(item_y), pred=np.concatenate(item_pred))
    return Predictions(exposures, items)


# -- label metrics -----------------------------------------------------------
def label_metrics(items: pd.DataFrame) -> dict[str, float]:
    """MSE on y and mean per-cohort NDCG with true mean daily orders as gains."""
    ndcgs = [graded_ndcg(np.expm1(g["y"].to_numpy()), g["pred"].to_numpy())
             for _, g in items.groupby("listing_date") if len(g) > 1]
    return {"mse": float(np.mean((items["pred"] - items["y"]) ** 2)), "ndcg": float(np.mean(ndcgs))}


# -- uplift metrics ----------------------------------------------------------
def uplift_curve(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Cumulative true uplift of the top-k exposures by predicted uplift, k = 1..N, over N."""
    order = np.argsort(-pred, kind="stable")
    return np.cumsum(true[order]) / len(true)


def uplift_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    model, oracle = uplift_curve(pred, true).mean(), uplift_curve(true, true).mean()
    random = true.mean() * (len(true) + 1) / (2 * len(true))
    return {
        "pehe": float(np.sqrt(np.mean((pred - true) ** 2))),
        "pearson": float(pearsonr(pred, true)[0]) if np.std(pred) > 0 else 0.0,
        "spearman": float(spearmanr(pred, true)[0]) if np.std(pred) > 0 else 0.0,
        "auuc": float(model / oracle) if oracle else 0.0,
        "qini": float((model - random) / (oracle - random)) if oracle != random else 0.0,
        "mean_pred": float(pred.mean()), "mean_true": float(true.mean()),
    }


def attach_truth(lake: Lake, exposures: pd.DataFrame) -> pd.DataFrame:
    """Exposures with `true_uplift` from truth/click_effects (inner join)."""
    days = exposures["ts"].dt.date
    truth = lake.read_range(*catalog.TRUTH["click_effects"], to_ds(days.min()), to_ds(days.max())).to_pandas()
    keys = ["request_id", "item_id"] if "request_id" in exposures else ["user_id", "item_id", "ts"]
    truth = truth.drop_duplicates(keys)[keys + ["true_uplift"]]
    return exposures.merge(truth, on=keys, how="inner")


# -- meta-learner baselines --------------------------------------------------
def flat_features(enc: Encoded, chunk: int = 20_000) -> np.ndarray:
    """[N, F] numerics + category + share of history items of the same category and title-word overlap."""
    cat = enc.category[enc.item_row]
    hist_cat, valid = enc.category[enc.hist_rows], enc.hist_rows > 0                  # [N, L]
    n_valid = valid.sum(1).clip(min=1)
    same_cat = ((hist_cat == cat[:, None]) & valid).sum(1) / n_valid
    overlap = np.zeros(len(cat))
    for s in range(0, len(cat), chunk):
        it, ht = enc.tokens[enc.item_row[s:s + chunk]], enc.tokens[enc.hist_rows[s:s + chunk]]  # [n,W], [n,L,W]
        hits = ((it[:, None, :, None] == ht[:, :, None, :]) & (it[:, None, :, None] > 0)).any(-1).sum(-1)
        overlap[s:s + chunk] = (hits * valid[s:s + chunk]).sum(1) / n_valid[s:s + chunk]   # [n]
    return np.column_stack([enc.x["item"], enc.x["user"], enc.x["ctx"], cat, same_cat, overlap, valid.sum(1)])


def _gbm(seed: int, max_iter: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed, early_stopping=False)


def _fit(model: HistGradientBoostingRegressor, x: np.ndarray, y: np.ndarray) -> HistGradientBoostingRegressor:
    """Fit single-threaded: OpenMP spin-waiting on a shared small machine costs more than it gains."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(x, y)


def s_learner(train: Encoded, test: Encoded, seed: int, max_iter: int) -> np.ndarray:
    """One model f(x, T); uplift = f(x, 1) - f(x, 0)."""
    x, xt = flat_features(train), flat_features(test)
    f = _fit(_gbm(seed, max_iter), np.column_stack([x, train.treatment]), train.y)
    ones, zeros = np.ones(len(xt)), np.zeros(len(xt))
    return f.predict(np.column_stack([xt, ones])) - f.predict(np.column_stack([xt, zeros]))


def t_learner(train: Encoded, test: Encoded, seed: int, max_iter: int) -> np.ndarray:
    """Two models fitted on treated / control exposures; uplift = f1(x) - f0(x)."""
    x, xt, t = flat_features(train), flat_features(test), train.treatment > 0.5
    f1, f0 = _fit(_gbm(seed, max_iter), x[t], train.y[t]), _fit(_gbm(seed, max_iter), x[~t], train.y[~t])
    return f1.predict(xt) - f0.predict(xt)


# -- plots -------------------------------------------------------------------
def plot_uplift_vs_age(exposures: pd.DataFrame) -> bytes:
    """Mean predicted and true uplift by listing age (the paper's Figure 6)."""
    by_age = exposures.groupby("age_days")[["uplift", "true_uplift"]].mean()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(by_age.index, by_age["uplift"], marker="o", label="predicted uplift (ItemLTV)")
    ax.plot(by_age.index, by_age["true_uplift"], marker="s", label="true uplift (simulator)")
    ax.set(xlabel="listing age at exposure (days)", ylabel="mean uplift of a click on y", title="Uplift vs age")
    ax.legend()
    return _png(fig)


def plot_qini(true: np.ndarray, preds: dict[str, np.ndarray]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, len(true) + 1) / len(true)
    for name, p in {**preds, "oracle": true}.items():
        ax.plot(x, uplift_curve(p, true), label=name)
    ax.plot([0, 1], [0, true.mean()], "k--", label="random")
    ax.set(xlabel="fraction of exposures targeted", ylabel="cumulative true uplift / N", title="Qini curve")
    ax.legend()
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# -- the report --------------------------------------------------------------
def evaluate_models(lake: Lake, full: Trained, base: Trained, train: Encoded, test: Encoded,
                    seed: int = 0, gbm_max_iter: int = 200) -> tuple[dict, dict[str, bytes]]:
    """The metrics dict (JSON-able) and the PNG plots of one held-out split."""
    p_full, p_base = predict(full, test), predict(base, test)
    metrics: dict = {"n_test_items": len(p_full.items), "n_test_exposures": len(p_full.exposures),
                     "base_only": label_metrics(p_base.items), "with_uplift": label_metrics(p_full.items)}
    plots: dict[str, bytes] = {}
    try:
        ex = attach_truth(lake, p_full.exposures.assign(s_learner=s_learner(train, test, seed, gbm_max_iter),
                                                        t_learner=t_learner(train, test, seed, gbm_max_iter)))
    except PartitionNotFound:
        log.warning("no truth/click_effects: uplift metrics skipped (real data)")
        return metrics, plots
    true = ex["true_uplift"].to_numpy()
    preds = {"itemltv": ex["uplift"].to_numpy(), "s_learner": ex["s_learner"].to_numpy(),
             "t_learner": ex["t_learner"].to_numpy()}
    metrics["uplift"] = {name: uplift_metrics(p, true) for name, p in preds.items()}
    metrics["pehe_reference"] = {"zero": float(np.sqrt(np.mean(true**2))), "constant_true_mean": float(true.std())}
    metrics["n_truth_exposures"] = len(ex)
    metrics["uplift_by_age"] = ex.groupby("age_days")[["uplift", "true_uplift"]].mean().round(5).reset_index(
    ).to_dict("list")
    plots = {"uplift_vs_age.png": plot_uplift_vs_age(ex), "qini.png": plot_qini(true, preds)}
    return metrics, plots


def write_report(lake: Lake, ds: str, metrics: dict, plots: dict[str, bytes]) -> list[str]:
    """metrics.json + PNGs under `catalog.report_prefix("itemltv", ds)`; returns the keys written."""
    keys = [catalog.report_key(REPORT, ds)]
    lake.store.put_bytes(keys[0], json.dumps(metrics, indent=2, default=float).encode())
    for name, png in plots.items():
        keys.append(catalog.report_key(REPORT, ds, name))
        lake.store.put_bytes(keys[-1], png)
    return keys


def metrics_table(metrics: dict) -> str:
    """A plain-text table of the headline numbers."""
    lines = [f"{'variant':<14}{'MSE':>8}{'NDCG':>8}",
             *(f"{k:<14}{metrics[k]['mse']:>8.4f}{metrics[k]['ndcg']:>8.4f}" for k in ("base_only", "with_uplift"))]
    if "uplift" in metrics:
        lines += ["", f"{'uplift model':<14}{'PEHE':>9}{'pearson':>9}{'spearman':>9}{'AUUC':>8}{'Qini':>8}"]
        lines += [f"{k:<14}{v['pehe']:>9.4f}{v['pearson']:>9.3f}{v['spearman']:>9.3f}{v['auuc']:>8.3f}{v['qini']:>8.3f}"
                  for k, v in metrics["uplift"].items()]
    return "\n".join(lines)
