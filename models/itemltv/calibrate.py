"""The per-click scale of ItemLTV's uplift, calibrated on the randomised traffic-support arms.

    item_table(pred)             per item: label y, mean base, U = sum of the clicked exposures' uplifts, arm
    iv_calibration(items)        two-stage least squares of y on (1, base, U), U instrumented by the arm
    choose(train, val)           fit on the training items, keep it if the validation label MSE is
                                 no worse than the raw model's (criteria that need no truth)
    calibrate(trained, splits)   `choose` on a trained "+uplift" model; stored in its spec, applied
                                 by `models.itemltv.predict.predict`

Why. The uplift tower learns the per-click effect from observational clicks: whatever makes an
item clicked and also makes it sell later (and that the base tower does not see) leaks into the
uplift. The support arm is assigned at listing by a hash of the item id, so it moves an item's
clicks (the first stage) and touches its label only through them (the support channel adds
impressions in days 0..6; the label's orders, days 30..36, are drawn from base demand and the
growth state). Two-stage least squares of y_i = a + b base_i + c U_i + e_i with instruments
(1, base_i, support_i) therefore recovers the scale c of the summed predicted uplift; the calibrated
per-click uplift is c x uplift, and the item prediction a + b base + c U.

Departure from the paper: the paper fits base + T x uplift by least squares only; it has no
randomised arm to calibrate with.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from models.itemltv.data import Splits
from models.itemltv.predict import predict
from models.itemltv.train import Trained

log = logging.getLogger(__name__)

MIN_ITEMS_PER_ARM = 50
MIN_FIRST_STAGE_F = 10.0


def item_table(exposures: pd.DataFrame) -> pd.DataFrame:
    """item_id, y, base (mean over the item's exposures), u (sum of treatment x uplift), support
    (1 / 0 / NaN without an arm). `exposures`: `Predictions.exposures` of the raw model."""
    f = exposures.assign(tu=exposures["treatment"] * exposures["uplift"])
    if "support" not in f:
        f = f.assign(support=np.nan)
    return f.groupby("item_id", sort=True).agg(y=("y", "first"), base=("base", "mean"), u=("tu", "sum"),
                                               support=("support", "first")).reset_index()


def iv_calibration(items: pd.DataFrame) -> dict | None:
    """2SLS of y on (1, base, u) with instruments (1, base, support) over the items with an arm.
    Returns intercept, base_weight, scale (c), its standard error, the first-stage F of the arm on
    u given base, and the item counts; None when the arms are too small or the instrument weak."""
    d = items.dropna(subset=["support"])
    n1, n0 = int((d["support"] > 0.5).sum()), int((d["support"] <= 0.5).sum())
    if min(n1, n0) < MIN_ITEMS_PER_ARM:
        return None
    ones = np.ones(len(d))
    x = np.column_stack([ones, d["base"], d["u"]])
    z = np.column_stack([ones, d["base"], d["support"]])
    y = d["y"].to_numpy(float)
    # first stage: u on z; F of the arm's coefficient
    g, *_ = np.linalg.lstsq(z, x[:, 2], rcond=None)
    resid = x[:, 2] - z @ g
    s2 = resid @ resid / max(len(d) - 3, 1)
    cov_g = s2 * np.linalg.pinv(z.T @ z)
    first_f = float(g[2] ** 2 / cov_g[2, 2]) if cov_g[2, 2] > 0 else 0.0
    if first_f < MIN_FIRST_STAGE_F:
        return None
    xhat = np.column_stack([ones, d["base"], z @ g])
    beta, *_ = np.linalg.lstsq(xhat, y, rcond=None)
    e = y - x @ beta                                    # structural residuals (with the real u)
    bread = np.linalg.pinv(xhat.T @ xhat)
    meat = (xhat * e[:, None] ** 2).T @ xhat            # heteroskedasticity-robust (HC0)
    cov = bread @ meat @ bread
    return {"intercept": float(beta[0]), "base_weight": float(beta[1]), "scale": float(beta[2]),
            "scale_se": float(np.sqrt(cov[2, 2])), "first_stage_f": first_f,
            "n_support": n1, "n_control": n0}


def apply(items: pd.DataFrame, cal: dict | None) -> np.ndarray:
    """Item predictions a + b base + c u (the raw base + u without a calibration)."""
    if not cal:
        return (items["base"] + items["u"]).to_numpy(float)
    return (cal["intercept"] + cal["base_weight"] * items["base"] + cal["scale"] * items["u"]).to_numpy(float)


def choose(train: pd.DataFrame, val: pd.DataFrame) -> dict:
    """Fit the calibration on the training items; keep it when the validation label MSE of the
    calibrated predictions is no worse than the raw model's. Returns the calibration's figures
    with `kept`, and both validation MSEs; the arm contrast of the validation labels and of the
    summed calibrated uplift (their ratio should be ~1) for the report."""
    cal = iv_calibration(train)
    mse_raw = float(np.mean((apply(val, None) - val["y"]) ** 2)) if len(val) else float("nan")
    out: dict = {"kept": False, "val_mse_raw": mse_raw}
    if cal is None:
        return out
    mse_cal = float(np.mean((apply(val, cal) - val["y"]) ** 2))
    arm = val["support"] > 0.5
    has_arm = val["support"].notna()
    contrast = {"val_label": float(val.loc[arm, "y"].mean() - val.loc[has_arm & ~arm, "y"].mean()),
                "val_calibrated_uplift": float(cal["scale"] * (val.loc[arm, "u"].mean()
                                                               - val.loc[has_arm & ~arm, "u"].mean()))}
    return {**cal, **out, "val_mse_calibrated": mse_cal, "kept": bool(mse_cal <= mse_raw),
            "arm_contrast": contrast}


def calibrate(trained: Trained, splits: Splits) -> dict:
    """Calibrate a trained "+uplift" model of the `item` objective on its training and validation
    cohorts (`choose`); the result goes into `trained.spec["calibration"]` (saved with the
    checkpoint). Other models are left as they are."""
    if not trained.spec.get("use_uplift") or trained.spec.get("objective") != "item":
        return {}
    train = item_table(predict(trained, splits.train, raw=True).exposures)
    val = item_table(predict(trained, splits.val, raw=True).exposures)
    result = choose(train, val)
    trained.spec["calibration"] = result
    log.info("itemltv arm calibration: %s", {k: (round(v, 4) if isinstance(v, float) else v)
                                             for k, v in result.items() if k != "arm_contrast"})
    return result
