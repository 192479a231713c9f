"""ItemLTV's evaluation table over seeds: every figure as mean +- sd.

    run_study(cfg, trainer_cfg, lake, ds, seeds)   -> dict (JSON-able), also written to
                                                     reports/itemltv/ds=<ds>/study.{json,md}
    study_table(result)                            -> markdown

On the cohorts of `ds` (the split of the daily report), for each seed it trains, from scratch and
without touching the day's checkpoints:
- `itemltv`          the configured model with the `item` objective (an item's label is its base
                     plus the sum of its clicked exposures' uplifts);
- `itemltv_exposure` the paper's per-exposure objective (MSE of base + T * uplift per exposure);
- `base_only`        the base tower alone (label metrics only);
and fits the baselines of `models.itemltv.baselines` with the same seed (fair ones tuned on
validation), then scores every uplift estimate against the simulator's truth on the test
cohorts, next to the references (predict zero; predict the true mean uplift, an oracle constant).
Models without randomness (ridge) give sd 0.
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
from models.itemltv.data import load_inputs, prepare
from models.itemltv.evaluate import REPORT, attach_truth, label_metrics, predict, references, uplift_metrics
from models.itemltv.train import fit_model

log = logging.getLogger(__name__)
UPLIFT_METRICS = ("pehe", "pearson", "spearman", "within_item_spearman", "auuc", "qini", "mean_pred")
LABEL_MODELS = ("base_only", "itemltv", "itemltv_exposure")


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def run_study(cfg: ItemLTVConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date, seeds: list[int],
              write: bool = True) -> dict:
    """Train and evaluate every variant and baseline for each seed; see the module doc."""
    started = time.perf_counter()
    splits, pre = prepare(load_inputs(lake, ds, cfg.train_cohorts + cfg.val_cohorts + cfg.test_cohorts), cfg)
    test = splits.test
    truth = attach_truth(lake, test.meta, how="left")["true_uplift"].to_numpy()
    known = ~np.isnan(truth)
    true, items = truth[known], test.meta["item_id"].to_numpy()[known]
    runs: dict[str, dict[str, list[float]]] = {}

    def record(model: str, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            runs.setdefault(model, {}).setdefault(k, []).append(v)

    for seed in seeds:
        t0 = time.perf_counter()
        for name, objective, uplift in (("itemltv", "item", True), ("itemltv_exposure", "exposure", True),
                                        ("base_only", "item", False)):
            trained = fit_model(splits, pre, cfg.model_copy(update={"seed": seed, "objective": objective}),
                                trainer_cfg, uplift)
            p = predict(trained, test)
            record(name, label_metrics(p.items))
            if uplift:
                record(name, uplift_metrics(p.exposures["uplift"].to_numpy()[known], true, items))
        preds, chosen = baseline_uplifts(splits.train, splits.val, test, seed, cfg.gbm_max_iter, pre.hash_buckets)
        for name, pred in {**{k: v[known] for k, v in preds.items()}, **references(true)}.items():
            record(name, uplift_metrics(pred, true, items))
        record("_hyperparameters", {f"{k}.{p}": v for k, c in chosen.items() for p, v in c.items()})
        log.info("itemltv study %s: seed %d done in %.0f s", ds, seed, time.perf_counter() - t0)

    hyper = runs.pop("_hyperparameters")
    result = {
        "ds": f"{ds}", "seeds": list(seeds), "cohorts": splits.cohorts, "n_test_items": int(test.n_groups),
        "n_test_exposures": int(len(test.y)), "n_truth_exposures": int(known.sum()),
        "config": cfg.model_dump(), "minutes": round((time.perf_counter() - started) / 60, 2),
        "models": {m: {k: _summary(v) for k, v in metrics.items()} for m, metrics in runs.items()},
        "baseline_hyperparameters": {k: sorted(set(map(str, v))) for k, v in hyper.items()},
    }
    result["verdict"] = verdict(result)
    if write:
        lake.store.put_bytes(catalog.report_key(REPORT, ds, "study.json"),
                             json.dumps(result, indent=2).encode())
        lake.store.put_bytes(catalog.report_key(REPORT, ds, "study.md"), study_table(result).encode())
    return result


def verdict(result: dict) -> dict:
    """The issue's acceptance figures: PEHE ratio to the best non-oracle baseline (`NON_ORACLE`), Pearson mean/sd,
    "+uplift" vs "base only" on MSE and NDCG."""
    m = result["models"]
    best = min((k for k in NON_ORACLE if k in m), key=lambda k: m[k]["pehe"]["mean"])
    return {
        "best_baseline": best,
        "pehe_ratio": m["itemltv"]["pehe"]["mean"] / m[best]["pehe"]["mean"],
        "pearson_mean": m["itemltv"]["pearson"]["mean"], "pearson_sd": m["itemltv"]["pearson"]["sd"],
        "uplift_beats_base_mse": m["itemltv"]["mse"]["mean"] < m["base_only"]["mse"]["mean"],
        "uplift_beats_base_ndcg": m["itemltv"]["ndcg"]["mean"] > m["base_only"]["ndcg"]["mean"],
    }


def _cell(s: dict | None, digits: int) -> str:
    if s is None:
        return ""
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def study_table(result: dict) -> str:
    """Markdown: label metrics, uplift metrics (mean ± sd over seeds), the verdict."""
    m, n = result["models"], len(result["seeds"])
    lines = [f"ItemLTV study ds={result['ds']}: {n} seeds, {result['n_test_items']} test items, "
             f"{result['n_truth_exposures']} test exposures with truth (test cohorts "
             f"{result['cohorts']['test'][0]}..{result['cohorts']['test'][-1]})", "",
             "| label model | MSE | NDCG |", "|---|---|---|"]
    lines += [f"| {k} | {_cell(m[k]['mse'], 4)} | {_cell(m[k]['ndcg'], 4)} |" for k in LABEL_MODELS if k in m]
    lines += ["", "| uplift model | PEHE | Pearson | Spearman | within-item Spearman | AUUC | Qini | mean pred |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in m.items():
        if "pehe" in v:
            lines.append(f"| {k} | " + " | ".join(_cell(v.get(x), 4 if x in ("pehe", "mean_pred") else 3)
                                                 for x in UPLIFT_METRICS) + " |")
    any_model = next(v for v in m.values() if "auuc_random" in v)
    lines.append(f"\nrandom ranking AUUC {any_model['auuc_random']['mean']:.3f}; true mean uplift "
                 f"{any_model['mean_true']['mean']:.4f}")
    v = result["verdict"]
    lines.append(f"ItemLTV PEHE / best non-oracle baseline ({v['best_baseline']}) = {v['pehe_ratio']:.2f}; "
                 f"Pearson {v['pearson_mean']:.3f} ± {v['pearson_sd']:.3f}; +uplift beats base only on "
                 f"MSE: {v['uplift_beats_base_mse']}, NDCG: {v['uplift_beats_base_ndcg']}")
    return "\n".join(lines)
