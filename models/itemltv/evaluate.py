"""Evaluation of ItemLTV on held-out cohorts, against the ground truth of the simulator.

- label quality (paper Table 2 shape): MSE on y = log1p(mean daily orders) and
  NDCG of the predicted ranking with the true mean daily orders as gains
  (per listing-day cohort, averaged), "base only" vs "+uplift"; both are item
  level: an item's prediction is the aggregate of its exposures' predictions;
- uplift quality against `truth/click_effects.true_uplift` on the clicked test exposures (the
  distribution the `item` objective trains the uplift on; every exposure in `uplift_every_exposure`):
  PEHE = sqrt(mean((uplift_hat - true)^2)), Pearson/Spearman correlation, and
  AUUC / Qini computed with the true effects (rank exposures by predicted
  uplift; the gain of targeting the top k is the sum of their true uplifts;
  AUUC = area under that curve / the oracle's; Qini = area above the random
  line / the oracle's; `auuc_random` is the random ranking's AUUC), and the mean
  within-item Spearman correlation across users (which users' clicks help an
  item most: the targeting decision), next to the baselines of
  `models.itemltv.baselines` fitted on the same training cohorts and references
  (predict zero; predict the true mean uplift, an oracle constant).

The daily report evaluates the day's checkpoints once; `models.itemltv.study` repeats
training over seeds and reports mean +- sd.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import date

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from foundation import catalog  # noqa: E402
from foundation.lake import Lake, PartitionNotFound  # noqa: E402
from models.itemltv.baselines import baseline_uplifts  # noqa: E402
from models.itemltv.data import Splits  # noqa: E402
from models.itemltv.predict import predict  # noqa: E402
from models.itemltv.train import Trained  # noqa: E402
from models.metrics import graded_ndcg  # noqa: E402

log = logging.getLogger(__name__)
REPORT = "itemltv"     # the reports' subsystem name (`reports/itemltv/ds=<ds>/`)


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


def within_item_spearman(pred: np.ndarray, true: np.ndarray, item: np.ndarray, min_rows: int = 3) -> float:
    """Mean over items with >= `min_rows` exposures and varying true uplift of the Spearman
    correlation between predicted and true uplift across the item's exposures (0 for an item
    whose predictions do not vary)."""
    f = pd.DataFrame({"p": pred, "t": true, "i": item})
    g = f.groupby("i")
    f = f.assign(p=g["p"].rank(), t=g["t"].rank())                       # Spearman = Pearson of ranks
    g = f.groupby("i")
    centred = f[["p", "t"]] - g[["p", "t"]].transform("mean")
    sums = centred.assign(pt=centred["p"] * centred["t"], pp=centred["p"] ** 2, tt=centred["t"] ** 2, n=1).groupby(
        f["i"])[["pt", "pp", "tt", "n"]].sum()
    sums = sums[(sums["n"] >= min_rows) & (sums["tt"] > 0)]
    if sums.empty:
        return float("nan")
    rho = np.where(sums["pp"] > 0, sums["pt"] / np.sqrt(sums["pp"] * sums["tt"]).where(sums["pp"] > 0, 1.0), 0.0)
    return float(np.mean(rho))


def uplift_metrics(pred: np.ndarray, true: np.ndarray, item: np.ndarray | None = None) -> dict[str, float]:
    model, oracle = uplift_curve(pred, true).mean(), uplift_curve(true, true).mean()
    random = true.mean() * (len(true) + 1) / (2 * len(true))
    out = {
        "pehe": float(np.sqrt(np.mean((pred - true) ** 2))),
        "pearson": float(pearsonr(pred, true)[0]) if np.ptp(pred) > 0 else 0.0,
        "spearman": float(spearmanr(pred, true)[0]) if np.ptp(pred) > 0 else 0.0,
        "auuc": float(model / oracle) if oracle else 0.0,
        "auuc_random": float(random / oracle) if oracle else 0.0,
        "qini": float((model - random) / (oracle - random)) if oracle != random else 0.0,
        "mean_pred": float(pred.mean()), "mean_true": float(true.mean()),
    }
    if item is not None:
        out["within_item_spearman"] = within_item_spearman(pred, true, item)
    return out


def references(true: np.ndarray) -> dict[str, np.ndarray]:
    """Reference predictions: zero, and the true mean uplift (an oracle constant)."""
    return {"ref_zero": np.zeros_like(true), "ref_true_mean": np.full_like(true, true.mean())}


def attach_truth(lake: Lake, exposures: pd.DataFrame, how: str = "inner") -> pd.DataFrame:
    """Exposures with `true_uplift` from truth/click_effects (inner join; `left` keeps every row,
    in order, NaN where the truth has none)."""
    days = exposures["ts"].dt.date
    truth = lake.read_range(*catalog.TRUTH["click_effects"], days.min(), days.max()).to_pandas()
    keys = ["request_id", "item_id"] if "request_id" in exposures else ["user_id", "item_id", "ts"]
    truth = truth.drop_duplicates(keys)[keys + ["true_uplift"]]
    return exposures.merge(truth, on=keys, how=how)


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
def evaluate_models(lake: Lake, full: Trained, base: Trained, splits: Splits, seed: int = 0,
                    gbm_max_iter: int = 200) -> tuple[dict, dict[str, bytes]]:
    """The metrics dict (JSON-able) and the PNG plots of one held-out split (baselines fitted on
    `splits.train`, tuned on `splits.val`)."""
    test = splits.test
    p_full, p_base = predict(full, test), predict(base, test)
    metrics: dict = {"n_test_items": len(p_full.items), "n_test_exposures": len(p_full.exposures),
                     "base_only": label_metrics(p_base.items), "with_uplift": label_metrics(p_full.items)}
    plots: dict[str, bytes] = {}
    try:
        ex = attach_truth(lake, p_full.exposures, how="left")
    except PartitionNotFound:
        log.warning("no truth/click_effects: uplift metrics skipped (real data)")
        return metrics, plots
    base_preds, chosen = baseline_uplifts(splits.train, splits.val, test, seed, gbm_max_iter, full.pre.hash_buckets)
    known = ex["true_uplift"].notna().to_numpy()
    ex = ex[known].reset_index(drop=True)
    true = ex["true_uplift"].to_numpy()
    preds = {"itemltv": ex["uplift"].to_numpy(), **{k: v[known] for k, v in base_preds.items()}}
    clicked = ex["treatment"].to_numpy() > 0.5       # scored rows: the distribution the uplift trains on
    if clicked.sum() < 2:                             # a young lake's test cohorts without clicks
        log.warning("itemltv evaluation: %d clicked test exposure(s); uplift scored on every exposure", clicked.sum())
        clicked = np.ones(len(ex), bool)
    metrics["uplift"] = {name: uplift_metrics(p, true[clicked], ex["item_id"].to_numpy()[clicked])
                         for name, p in {**{k: v[clicked] for k, v in preds.items()}, **references(true[clicked])}.items()}
    metrics["uplift_every_exposure"] = {name: uplift_metrics(p, true) for name, p in {**preds, **references(true)}.items()}
    metrics["baseline_hyperparameters"] = chosen
    metrics["n_truth_exposures"] = len(ex)
    metrics["n_scored_exposures"] = int(clicked.sum())
    metrics["uplift_by_age"] = ex.groupby("age_days")[["uplift", "true_uplift"]].mean().round(5).reset_index(
    ).to_dict("list")
    shown = {k: preds[k] for k in ("itemltv", "ridge_clicks", "gbm_clicks", "s_learner")}
    plots = {"uplift_vs_age.png": plot_uplift_vs_age(ex), "qini.png": plot_qini(true, shown)}
    return metrics, plots


def write_report(lake: Lake, ds: date, metrics: dict, plots: dict[str, bytes]) -> list[str]:
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
        lines += ["", f"{'uplift model':<16}{'PEHE':>9}{'pearson':>9}{'spearman':>9}{'in-item':>9}{'AUUC':>8}"
                      f"{'Qini':>8}"]
        lines += [f"{k:<16}{v['pehe']:>9.4f}{v['pearson']:>9.3f}{v['spearman']:>9.3f}"
                  f"{v.get('within_item_spearman', float('nan')):>9.3f}{v['auuc']:>8.3f}{v['qini']:>8.3f}"
                  for k, v in metrics["uplift"].items()]
        random = next(iter(metrics["uplift"].values())).get("auuc_random", float("nan"))
        lines.append(f"(random ranking AUUC {random:.3f})")
    return "\n".join(lines)
