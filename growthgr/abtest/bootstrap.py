"""Relative effects with percentile-bootstrap intervals over the units of a panel.

A `Panel` holds the rows of one comparison (arm, group, values) and its resampled sides (users,
items, or both independently for two-sided cells). Each estimate is rate_treated / rate_control - 1
(rate = total per unit of the arm) with a 95% percentile bootstrap interval; row 0 of every
resample matrix is the point estimate (all weights one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from foundation.sections.abtest import ABTestConfig
from simulator.text import N_CATEGORIES


@dataclass(frozen=True)
class Side:
    """One resampled side of a panel: each row's unit, and which units count in each arm."""

    unit: np.ndarray          # int64 (P,) unit index of each row
    in_treated: np.ndarray    # bool (n,) units counted in the treated arm
    in_control: np.ndarray    # bool (n,) units counted in the control arm
    name: str                 # "users" / "items"


@dataclass(frozen=True)
class Panel:
    """Rows of one comparison: arm (1 treated, 0 control, -1 out), group (category), values."""

    arm: np.ndarray
    group: np.ndarray
    values: dict[str, np.ndarray]
    sides: tuple[Side, ...]


def resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """Row 0: all ones (the point estimate); rows 1..b: multinomial resample counts. float64 (b+1, n)."""
    out = np.ones((b + 1, n))
    for i in range(1, b + 1):
        out[i] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def panel_totals(panel: Panel, weights: Sequence[np.ndarray], n_groups: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weighted totals per (resample, arm, group) of each value, and the unit count per (resample, arm).

    weights[s]: (B+1, n_s) unit weights of side s. Returns {value: (B+1, 2, G)}, (B+1, 2)."""
    keep = panel.arm >= 0
    cell = panel.arm[keep].astype(np.int64) * n_groups + panel.group[keep]
    n_b = weights[0].shape[0]
    totals = {k: np.zeros((n_b, 2, n_groups)) for k in panel.values}
    counts = np.ones((n_b, 2))
    for side, w in zip(panel.sides, weights, strict=True):
        counts[:, 1] *= w[:, side.in_treated].sum(1)
        counts[:, 0] *= w[:, side.in_control].sum(1)
    for b in range(n_b):
        row_w = np.ones(int(keep.sum()))
        for side, w in zip(panel.sides, weights, strict=True):
            row_w = row_w * w[b, side.unit[keep]]
        for k, v in panel.values.items():
            totals[k][b] = np.bincount(cell, weights=row_w * v[keep], minlength=2 * n_groups).reshape(2, n_groups)
    return totals, counts


def effect(treated: np.ndarray, control: np.ndarray) -> dict:
    """Point (index 0) and 95% percentile interval (indices 1..) of treated / control - 1, in %."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * (treated / control - 1.0)
    point, boot = float(rel[0]), rel[1:][np.isfinite(rel[1:])]
    lo, hi = (np.percentile(boot, [2.5, 97.5]).tolist() if len(boot) else [float("nan")] * 2)
    return {"treated": float(treated[0]), "control": float(control[0]), "rel_pct": point,
            "ci95_pct": [lo, hi], "significant": bool(len(boot) and (lo > 0 or hi < 0))}


def estimates(panel: Panel, cfg: ABTestConfig, seed_offset: int, ratio: bool) -> dict:
    """new_item_gmv, search_gmv, pvr and category-wise new-item PV / GMV of one panel.

    `ratio`: PVR as new-item exposures / exposures of the arm (user-side panels); otherwise
    new-item exposures per unit."""
    rng = np.random.default_rng([cfg.seed, seed_offset])
    weights = [resample_counts(rng, len(s.in_treated), cfg.bootstrap) for s in panel.sides]
    tot, n = panel_totals(panel, weights, N_CATEGORIES)
    per = {k: v.sum(2) / n for k, v in tot.items()}                    # (B+1, 2) rate per unit
    pvr_t = tot["new_exposures"].sum(2) / (tot["exposures"].sum(2) if ratio else n)
    categories: dict[str, dict] = {}
    for c in range(N_CATEGORIES):
        pv = tot["new_exposures"][:, :, c] / n
        gmv = tot["new_gmv"][:, :, c] / n
        categories[str(c)] = {"pv": effect(pv[:, 1], pv[:, 0]), "gmv": effect(gmv[:, 1], gmv[:, 0])}
    units = " x ".join(s.name for s in panel.sides)
    return {"new_item_gmv": effect(per["new_gmv"][:, 1], per["new_gmv"][:, 0]) | {"units": units},
            "search_gmv": effect(per["gmv"][:, 1], per["gmv"][:, 0]) | {"units": units},
            "pvr": effect(pvr_t[:, 1], pvr_t[:, 0]) | {"units": units},
            "category": categories, "units": units}


def trajectory(panel: Panel, day: np.ndarray, n_days: int, cfg: ABTestConfig, seed_offset: int, ratio: bool,
               metrics: Sequence[str] = ("new_item_gmv", "search_gmv", "pvr")) -> dict[str, dict[str, list[float]]]:
    """The cumulative estimate of each headline metric after each test day, with its 95% interval:
    {metric: {rel_pct, lo, hi}: lists of `n_days`}. `day` (P,) is each row's test-day index 0..n-1.

    The same units, denominators and bootstrap weights as `estimates` with the same `seed_offset`
    (units: the test's population at its end, so a unit that arrives later counts with zeros on the
    earlier days), so the last day's point and interval are the final estimate's."""
    rng = np.random.default_rng([cfg.seed, seed_offset])
    weights = [resample_counts(rng, len(s.in_treated), cfg.bootstrap) for s in panel.sides]
    tot, n = panel_totals(replace(panel, group=day.astype(np.int64)), weights, n_days)
    cum = {k: np.cumsum(v, axis=2) for k, v in tot.items()}              # (B+1, 2, D)
    out: dict[str, dict[str, list[float]]] = {m: {"rel_pct": [], "lo": [], "hi": []} for m in metrics}
    for d in range(n_days):
        rates = {"new_item_gmv": cum["new_gmv"][:, :, d] / n, "search_gmv": cum["gmv"][:, :, d] / n,
                 "pvr": cum["new_exposures"][:, :, d] / (cum["exposures"][:, :, d] if ratio else n)}
        for m in metrics:
            e = effect(rates[m][:, 1], rates[m][:, 0])
            out[m]["rel_pct"].append(e["rel_pct"])
            out[m]["lo"].append(e["ci95_pct"][0])
            out[m]["hi"].append(e["ci95_pct"][1])
    return out
