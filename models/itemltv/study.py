"""ItemLTV's evaluation table over seeds: every figure as mean +- sd, with bootstrap intervals.

    run_study(cfg, trainer_cfg, lake, ds, seeds)   -> dict (JSON-able), also written to
                                                     reports/itemltv/ds=<ds>/study.{json,md}
    study_table(result)                            -> markdown

On the cohorts of `ds` (the split of the daily report), for each seed it trains, from scratch and
without touching the day's checkpoints:
- `itemltv`          the configured model (objective `item`: an item's label is its base plus the
                     sum of its clicked exposures' uplifts, fitted on all of its exposure rows with
                     the treatment indicator), with its arm calibration (`models.itemltv.calibrate`)
                     when validation kept it; `itemltv_raw` is the same fit without the calibration;
- `base_only`        the base tower alone (label metrics only);
and fits the baselines of `models.itemltv.baselines` with the same seed (fair ones tuned on
validation), then scores every uplift estimate against the simulator's truth on the clicked
exposures of the test cohorts, the distribution the item objective trains the uplift on (the issue's
rule for an item-level objective; its gradient reaches the uplift through clicked exposures only),
and, as a labelled second table, on every exposure (an unclicked exposure's uplift, the effect its
click would have had, is extrapolated there), next to the references (predict zero; the true mean uplift; the true mean uplift per listing age:
oracle rows, `ref_*`). The pool each estimate would select (`pool_truth`: the top quarter of the
test items by mean predicted uplift) is scored by its items' mean true uplift per exposure.

Uncertainty: sd over seeds, and a bootstrap over test items (`BOOTSTRAP` draws per seed, pooled
over seeds) for PEHE, Pearson and the ratio of ItemLTV's PEHE to each baseline's. The table says how
many cohorts, items, exposures and clicks the models trained on. Models without randomness (ridge)
give sd 0. The paper's per-exposure objective (`objective: exposure`) is not run here.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date

import numpy as np

from foundation import catalog
from foundation.lake import Lake
from foundation.sections.itemltv import ItemLTVConfig
from foundation.sections.trainer import TrainerConfig
from models.itemltv.baselines import NON_ORACLE, baseline_uplifts
from models.itemltv.calibrate import calibrate
from models.itemltv.data import load_inputs, prepare
from models.itemltv.evaluate import REPORT, attach_truth, label_metrics, references, uplift_metrics
from models.itemltv.predict import predict
from models.itemltv.train import fit_model

log = logging.getLogger(__name__)
UPLIFT_METRICS = ("pehe", "pearson", "spearman", "within_item_spearman", "auuc", "qini", "mean_pred")
LABEL_MODELS = ("base_only", "itemltv_raw", "itemltv")
ALL_METRICS = ("pehe", "pearson", "qini", "mean_pred", "mean_true")
POOL_SHARE = 0.25      # the study's pool: the top quarter of the test items by mean predicted uplift
BOOTSTRAP = 200


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def bootstrap_stats(pred: np.ndarray, true: np.ndarray, item: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """PEHE and Pearson of `pred` against `true` under item bootstrap `weights` ([B, G] resample
    counts of the G items, in `np.unique(item)` order): {"pehe": [B], "pearson": [B]}."""
    _, g = np.unique(item, return_inverse=True)
    n = np.bincount(g, minlength=weights.shape[1])
    sums = {k: np.bincount(g, weights=v, minlength=weights.shape[1])
            for k, v in {"se": (pred - true) ** 2, "p": pred, "t": true, "pp": pred ** 2, "tt": true ** 2,
                         "pt": pred * true}.items()}
    w = {k: weights @ v for k, v in sums.items()}
    m = weights @ n
    cov = w["pt"] / m - w["p"] * w["t"] / m ** 2
    var_p, var_t = w["pp"] / m - (w["p"] / m) ** 2, w["tt"] / m - (w["t"] / m) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.where(var_p > 0, cov / np.sqrt(var_p * var_t), 0.0)
    return {"pehe": np.sqrt(w["se"] / m), "pearson": pearson}


def _interval(draws: list[float] | np.ndarray) -> list[float]:
    d = np.asarray(draws, float)
    d = d[np.isfinite(d)]
    return [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))] if len(d) else [float("nan")] * 2


def age_reference(true: np.ndarray, age: np.ndarray) -> np.ndarray:
    """The oracle reference: the true mean uplift of the test exposures of the same listing age."""
    _, a = np.unique(age, return_inverse=True)
    return (np.bincount(a, weights=true) / np.bincount(a))[a]


def pool_truth(pred: np.ndarray, true: np.ndarray, item: np.ndarray, share: float = POOL_SHARE) -> float:
    """Mean true uplift per exposure of the items a model would pool: the top `share` of items by
    their exposures' mean predicted uplift (the daily pool's rule, on the test cohorts)."""
    _, inv = np.unique(item, return_inverse=True)
    count = np.bincount(inv)
    score, value = np.bincount(inv, pred) / count, np.bincount(inv, true) / count
    top = np.argsort(-score, kind="stable")[:max(1, int(round(share * len(count))))]
    return float(value[top].mean())


def training_counts(splits) -> dict[str, int]:
    """How much the models trained on: cohorts, items, exposures, clicks (the training split)."""
    t = splits.train
    return {"cohorts": len(splits.cohorts["train"]), "items": int(t.n_groups), "exposures": int(len(t.y)),
            "clicks": int(t.treatment.sum())}


def run_study(cfg: ItemLTVConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date, seeds: list[int],
              write: bool = True) -> dict:
    """Train and evaluate every variant and baseline for each seed; see the module doc."""
    started = time.perf_counter()
    splits, pre = prepare(load_inputs(lake, ds, cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts), cfg)
    test = splits.test
    truth = attach_truth(lake, test.meta, how="left")["true_uplift"].to_numpy()
    known = ~np.isnan(truth)
    true_all, items_all = truth[known], test.meta["item_id"].to_numpy()[known]
    ages_all = test.meta["age_days"].to_numpy()[known]
    clicked = test.treatment[known] > 0.5              # the scored rows: the distribution trained on
    true, items, ages = true_all[clicked], items_all[clicked], ages_all[clicked]
    runs: dict[str, dict[str, list[float]]] = {}
    draws: dict[str, dict[str, list[float]]] = {}
    calibrations: list[dict] = []

    def record(model: str, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            runs.setdefault(model, {}).setdefault(k, []).append(v)

    for seed in seeds:
        t0 = time.perf_counter()
        weights = np.stack([np.bincount(r, minlength=len(np.unique(items))) for r in
                            np.random.default_rng(seed).integers(0, len(np.unique(items)),
                                                                 (BOOTSTRAP, len(np.unique(items))))]).astype(float)
        uplifts: dict[str, np.ndarray] = {}
        for name, uplift in (("itemltv", True), ("base_only", False)):
            trained = fit_model(splits, pre, cfg.model_copy(update={"seed": seed}), trainer_cfg, uplift)
            if uplift:
                raw = predict(trained, test, raw=True)
                record("itemltv_raw", label_metrics(raw.items))
                uplifts["itemltv_raw"] = raw.exposures["uplift"].to_numpy()[known]
                if cfg.arm_calibration:
                    calibrations.append(calibrate(trained, splits))
            p = predict(trained, test)
            record(name, label_metrics(p.items))
            if uplift:
                uplifts[name] = p.exposures["uplift"].to_numpy()[known]
        preds, chosen = baseline_uplifts(splits.train, splits.val, test, seed, cfg.gbm_max_iter, pre.hash_buckets)
        uplifts.update({k: v[known] for k, v in preds.items()})
        every = {**uplifts, **references(true_all), "ref_true_mean_by_age": age_reference(true_all, ages_all)}
        for name, pred in every.items():     # every exposure: an unclicked one's uplift is extrapolated
            record(name, {f"{k}_all": v for k, v in uplift_metrics(pred, true_all).items() if k in ALL_METRICS}
                   | {"pool_true": pool_truth(pred, true_all, items_all)})
        uplifts = {k: v[clicked] for k, v in uplifts.items()}
        uplifts.update({**references(true), "ref_true_mean_by_age": age_reference(true, ages)})
        boot = {name: bootstrap_stats(pred, true, items, weights) for name, pred in uplifts.items()}
        for name, pred in uplifts.items():
            record(name, uplift_metrics(pred, true, items))
            for k, v in boot[name].items():
                draws.setdefault(name, {}).setdefault(k, []).extend(v.tolist())
            draws[name].setdefault("pehe_ratio", []).extend((boot["itemltv"]["pehe"] / boot[name]["pehe"]).tolist())
        record("_hyperparameters", {f"{k}.{p}": v for k, c in chosen.items() for p, v in c.items()})
        log.info("itemltv study %s: seed %d done in %.0f s", ds, seed, time.perf_counter() - t0)

    hyper = runs.pop("_hyperparameters")
    models = {m: {k: _summary(v) for k, v in metrics.items()} for m, metrics in runs.items()}
    for m, d in draws.items():
        models[m]["bootstrap95"] = {k: _interval(v) for k, v in d.items()}
    result = {
        "ds": f"{ds}", "seeds": list(seeds), "cohorts": splits.cohorts, "trained_on": training_counts(splits),
        "n_test_items": int(test.n_groups), "n_test_exposures": int(len(test.y)),
        "n_truth_exposures": int(known.sum()), "n_scored_exposures": int(clicked.sum()), "bootstrap_draws": BOOTSTRAP * len(seeds),
        "config": cfg.model_dump(), "minutes": round((time.perf_counter() - started) / 60, 2),
        "models": models, "calibration": calibrations,
        "baseline_hyperparameters": {k: sorted(set(map(str, v))) for k, v in hyper.items()},
    }
    result["verdict"] = verdict(result)
    if write:
        lake.store.put_bytes(catalog.report_key(REPORT, ds, "study.json"),
                             json.dumps(result, indent=2).encode())
        lake.store.put_bytes(catalog.report_key(REPORT, ds, "study.md"), study_table(result).encode())
    return result


def verdict(result: dict) -> dict:
    """The acceptance figures: PEHE ratio to the best non-oracle baseline (`NON_ORACLE`, by mean
    PEHE) with its bootstrap interval, mean predicted / mean true uplift, Pearson, Qini, and
    "+uplift" vs "base only" on MSE and NDCG."""
    m = result["models"]
    best = min((k for k in NON_ORACLE if k in m), key=lambda k: m[k]["pehe"]["mean"])
    it = m["itemltv"]
    return {
        "best_baseline": best,
        "pehe_ratio": it["pehe"]["mean"] / m[best]["pehe"]["mean"],
        "pehe_ratio_bootstrap95": m[best].get("bootstrap95", {}).get("pehe_ratio"),
        "calibration_ratio": it["mean_pred"]["mean"] / it["mean_true"]["mean"] if it["mean_true"]["mean"] else None,
        "pearson_mean": it["pearson"]["mean"], "pearson_sd": it["pearson"]["sd"], "qini_mean": it["qini"]["mean"],
        "uplift_beats_base_mse": it["mse"]["mean"] < m["base_only"]["mse"]["mean"],
        "uplift_beats_base_ndcg": it["ndcg"]["mean"] > m["base_only"]["ndcg"]["mean"],
        "pool_true": {k: m[k]["pool_true"]["mean"] for k in ("itemltv", "age_heuristic", best) if "pool_true" in m.get(k, {})},
    }


def _cell(s: dict | None, digits: int) -> str:
    if s is None:
        return ""
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def study_table(result: dict) -> str:
    """Markdown: what the models trained on, label metrics, uplift metrics (mean ± sd over seeds,
    bootstrap 95% intervals), the verdict."""
    m, n = result["models"], len(result["seeds"])
    tr = result.get("trained_on", {})
    lines = [f"ItemLTV study ds={result['ds']}: {n} seeds; trained on {tr.get('cohorts', '?')} cohorts "
             f"({result['cohorts']['train'][0]}..{result['cohorts']['train'][-1]}), {tr.get('items', '?')} items, "
             f"{tr.get('exposures', '?')} exposures, {tr.get('clicks', '?')} clicks; tested on "
             f"{result['n_test_items']} items, scored on their {result.get('n_scored_exposures', '?')} clicked exposures (cohorts "
             f"{result['cohorts']['test'][0]}..{result['cohorts']['test'][-1]}); bootstrap over test items, "
             f"{result.get('bootstrap_draws', 0)} draws", "",
             "| label model | MSE | NDCG |", "|---|---|---|"]
    lines += [f"| {k} | {_cell(m[k]['mse'], 4)} | {_cell(m[k]['ndcg'], 4)} |" for k in LABEL_MODELS if k in m]
    lines += ["", "| uplift model | PEHE | PEHE 95% | Pearson | Spearman | within-item Spearman | AUUC | Qini | "
                  "mean pred | ItemLTV PEHE / this (95%) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in m.items():
        if "pehe" in v:
            b = v.get("bootstrap95", {})
            ci = " ".join(f"[{lo:.4f}, {hi:.4f}]" for lo, hi in [b["pehe"]]) if "pehe" in b else ""
            ratio = (f"{m['itemltv']['pehe']['mean'] / v['pehe']['mean']:.2f} "
                     f"[{b['pehe_ratio'][0]:.2f}, {b['pehe_ratio'][1]:.2f}]"
                     ) if "pehe_ratio" in b and v["pehe"]["mean"] > 0 else ""   # an exact row (null world): no ratio
            cells = [_cell(v.get(x), 4 if x in ("pehe", "mean_pred") else 3) for x in UPLIFT_METRICS]
            lines.append(f"| {k} | {cells[0]} | {ci} | " + " | ".join(cells[1:]) + f" | {ratio} |")
    lines += ["", f"Every test exposure ({result.get('n_truth_exposures', '?')}, clicked or not; an unclicked "
                  "exposure's uplift is extrapolated):", "",
              f"| uplift model | PEHE | Pearson | Qini | mean pred | pool: mean true uplift (top {POOL_SHARE:.0%} of items) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {_cell(v['pehe_all'], 4)} | {_cell(v['pearson_all'], 3)} | {_cell(v['qini_all'], 3)} | "
              f"{_cell(v['mean_pred_all'], 4)} | {_cell(v.get('pool_true'), 4)} |" for k, v in m.items() if "pehe_all" in v]
    any_model = next(v for v in m.values() if "auuc_random" in v)
    lines.append(f"\nrandom ranking AUUC {any_model['auuc_random']['mean']:.3f}; true mean uplift "
                 f"{any_model['mean_true']['mean']:.4f}")
    for c in result.get("calibration", [])[:1]:
        if "scale" in c:
            lines.append(f"arm calibration (seed {result['seeds'][0]}): scale {c['scale']:.3f} ± {c['scale_se']:.3f}, "
                         f"first-stage F {c['first_stage_f']:.0f}, val MSE {c['val_mse_raw']:.4f} -> "
                         f"{c['val_mse_calibrated']:.4f}, kept: {c['kept']}")
    v = result["verdict"]
    ci = v.get("pehe_ratio_bootstrap95") or [float("nan")] * 2
    lines.append(f"ItemLTV PEHE / best non-oracle baseline ({v['best_baseline']}) = {v['pehe_ratio']:.2f} "
                 f"[{ci[0]:.2f}, {ci[1]:.2f}]; mean predicted / true uplift "
                 f"{'n/a (true mean 0)' if v['calibration_ratio'] is None else format(v['calibration_ratio'], '.2f')}; Pearson "
                 f"{v['pearson_mean']:.3f} ± {v['pearson_sd']:.3f}; Qini {v['qini_mean']:.3f}; +uplift beats base "
                 f"only on MSE: {v['uplift_beats_base_mse']}, NDCG: {v['uplift_beats_base_ndcg']}")
    if v.get("pool_true"):
        lines.append(f"pool of the top {POOL_SHARE:.0%} of test items, mean true uplift per exposure: "
                     + ", ".join(f"{k} {x:.4f}" for k, x in v["pool_true"].items()))
    return "\n".join(lines)
