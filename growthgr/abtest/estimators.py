"""The designs' estimates and the true global effect, from the arms' logs.

Metrics (search logs of the test days; "new" = listing age 0..29 on the day):
  new_item_gmv  search GMV of items in their new-item period
  search_gmv    overall search GMV
  pvr           page-view ratio of new items: share of exposures going to new items
                (item and cell estimators: new-item exposures per unit; the total number of
                exposures is fixed by the scroll depth, which is paired across arms)
  ti30          per item, mean daily GMV (search + site-wide) over listing ages 30..36, for the
                cohort launched during the test (needs >= 37 days) and, reported apart, the
                cohort already in its new-item period when the test starts
  category      new-item PV and GMV per category (the paper's Table 6 shape)
  gini          Gini of exposure counts over the arm's items (point values, no interval)
  trajectory    per test day, the cumulative estimate of new_item_gmv, search_gmv and pvr with its
                interval, for the design and the global truth (`<design>_trajectory.png`)
Each estimate is rate_treated / rate_control - 1 (rate = total per unit of the arm) with a 95%
percentile bootstrap interval (`growthgr.abtest.bootstrap`): users resampled for user-side metrics,
items for item-side ones, users and items independently for two-sided cells. The true global effect
compares the fully treated with the fully untreated world, resampling the same units in both (paired).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from foundation.calendar import COHORT_OFFSET, LABEL_WINDOW, NEW_ITEM_DAYS
from foundation.sections.abtest import ABTestConfig
from growthgr.abtest.arms import ArmLog, Population
from growthgr.abtest.assignment import design_assignment
from growthgr.abtest.bootstrap import Panel, Side, effect, estimates, resample_counts, trajectory
from simulator.stats import gini

HEADLINE = ("new_item_gmv", "search_gmv", "pvr")
MIN_TI30_DAYS = COHORT_OFFSET + 1            # 37: the launch day's cohort reaches age 36


# -- panels of the designs --------------------------------------------------------------------------

def unit_index(ids: np.ndarray, all_ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(all_ids, ids)


def pair_columns(pairs: pd.DataFrame) -> dict[str, np.ndarray]:
    return {k: pairs[k].to_numpy(np.float64) for k in ("exposures", "new_exposures", "gmv", "new_gmv")}


def in_scope(pop: Population) -> np.ndarray:
    """Items in their new-item period on at least one test day."""
    return (pop.listing_day >= pop.start - NEW_ITEM_DAYS + 1) & (pop.listing_day <= pop.end)


def user_side(pairs: pd.DataFrame, pop: Population, treated_users: np.ndarray) -> Panel:
    """Rows assigned by their user's arm."""
    u = unit_index(pairs["user_id"].to_numpy(), pop.user_id)
    cat = pop.category[unit_index(pairs["item_id"].to_numpy(), pop.item_id)]
    side = Side(u, treated_users, ~treated_users, "users")
    return Panel(treated_users[u].astype(np.int8), cat, pair_columns(pairs), (side,))


def item_side(pairs: pd.DataFrame, pop: Population, treated_items: np.ndarray) -> Panel:
    """Rows of items in scope assigned by their item's arm; other rows out."""
    i = unit_index(pairs["item_id"].to_numpy(), pop.item_id)
    scope = in_scope(pop)
    arm = np.where(scope[i], treated_items[i].astype(np.int8), -1).astype(np.int8)
    side = Side(i, scope & treated_items, scope & ~treated_items, "items")
    return Panel(arm, pop.category[i], pair_columns(pairs), (side,))


def cell_side(pairs: pd.DataFrame, pop: Population, treated_users: np.ndarray, treated_items: np.ndarray) -> Panel:
    """Two-sided cells: treated x treated (1) vs control x control (0); mixed cells out."""
    up, ip = user_side(pairs, pop, treated_users), item_side(pairs, pop, treated_items)
    arm = np.where((up.arm == ip.arm) & (ip.arm >= 0), up.arm, -1).astype(np.int8)
    return Panel(arm, ip.group, ip.values, (up.sides[0], ip.sides[0]))


def global_side(treated: pd.DataFrame, control: pd.DataFrame, pop: Population, by: str) -> Panel:
    """Both worlds' rows (arm = world); the same units resampled in both (paired)."""
    both = pd.concat([treated.assign(_arm=1), control.assign(_arm=0)], ignore_index=True)
    i = unit_index(both["item_id"].to_numpy(), pop.item_id)
    if by == "users":
        unit, every = unit_index(both["user_id"].to_numpy(), pop.user_id), np.ones(len(pop.user_id), bool)
        arm = both["_arm"].to_numpy(np.int8)
    else:
        unit, every = i, in_scope(pop)
        arm = np.where(every[i], both["_arm"].to_numpy(np.int8), -1).astype(np.int8)
    return Panel(arm, pop.category[i], pair_columns(both), (Side(unit, every, every, by),))


def ti30_cohorts(pop: Population) -> dict[str, np.ndarray]:
    """Items whose ages 30..36 all fall in the test, by cohort: launched during the test, or
    already in their new-item period at its start. bool (I,) each."""
    complete = pop.listing_day + COHORT_OFFSET <= pop.end
    return {"launched_during_test": complete & (pop.listing_day >= pop.start),
            "new_at_start": complete & in_scope(pop) & (pop.listing_day < pop.start)}


def ti30_values(label_gmv: pd.DataFrame, pop: Population) -> np.ndarray:
    """Mean daily GMV over ages 30..36 per item of the population: float64 (I,)."""
    out = np.zeros(len(pop.item_id))
    out[unit_index(label_gmv["item_id"].to_numpy(), pop.item_id)] = label_gmv["gmv"].to_numpy(np.float64)
    return out / len(LABEL_WINDOW)


def ti30_estimate(values_t: np.ndarray, values_c: np.ndarray, arm_t: np.ndarray, arm_c: np.ndarray,
                  cohort: np.ndarray, cfg: ABTestConfig, seed_offset: int) -> dict:
    """Mean TI@30 of the cohort's treated vs control items (items resampled).

    Designs: values_t = values_c (one world), arm_t / arm_c the item arms. Global: the two
    worlds' values, arm_t = arm_c = the whole cohort (paired)."""
    n = int(cohort.sum())
    if n == 0:
        return {"available": False, "reason": "no item of this cohort reached listing age 36 inside the test"}
    rng = np.random.default_rng([cfg.seed, seed_offset])
    w = resample_counts(rng, n, cfg.bootstrap)
    vt, vc, at, ac = values_t[cohort], values_c[cohort], arm_t[cohort], arm_c[cohort]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t, mean_c = (w[:, at] @ vt[at]) / w[:, at].sum(1), (w[:, ac] @ vc[ac]) / w[:, ac].sum(1)
    out = effect(mean_t, mean_c)
    return out | {"available": True, "n_items": n, "n_treated": int(at.sum()), "n_control": int(ac.sum()),
                  "units": "items"}


def ti30_block(values_t: np.ndarray, values_c: np.ndarray, arm_t: np.ndarray, arm_c: np.ndarray,
               pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """TI@30 of both cohorts; the launch cohort is unavailable below `MIN_TI30_DAYS` days."""
    out = {}
    for k, (name, cohort) in enumerate(ti30_cohorts(pop).items()):
        if name == "launched_during_test" and days < MIN_TI30_DAYS:
            out[name] = {"available": False, "reason": f"needs --days >= {MIN_TI30_DAYS} (a cohort launched on the "
                         f"first test day reaches listing age 36 on day {MIN_TI30_DAYS}); ran {days}"}
        else:
            out[name] = ti30_estimate(values_t, values_c, arm_t, arm_c, cohort, cfg, 100 + k)
    return out


def exposure_gini(pairs: pd.DataFrame, item_rows: np.ndarray, pop: Population) -> float:
    """Gini of exposure counts over the given population item rows (zeros included)."""
    counts = np.bincount(unit_index(pairs["item_id"].to_numpy(), pop.item_id), weights=pairs["exposures"].to_numpy(),
                         minlength=len(pop.item_id))
    return gini(counts[item_rows])


# -- estimates of a design and of the global truth ---------------------------------------------------

def design_estimates(design: str, log_: ArmLog, pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """The design's estimate of every metric (see the module docstring for the sides)."""
    a = design_assignment(design, cfg)
    t_users, t_items = a.treated_users(pop.user_id), a.treated_items(pop.item_id)
    users = estimates(user_side(log_.pairs, pop, t_users), cfg, 1, ratio=True)
    scope = in_scope(pop)
    if design == "user":
        out = users
        out["ti30"] = {k: {"available": False, "reason": "user-side design: every item is served to both arms"}
                       for k in ti30_cohorts(pop)}
        out["gini"] = {"treated": exposure_gini(log_.pairs[_rows_of(log_.pairs, pop, t_users, "user_id")],
                                                np.arange(len(pop.item_id)), pop),
                       "control": exposure_gini(log_.pairs[_rows_of(log_.pairs, pop, ~t_users, "user_id")],
                                                np.arange(len(pop.item_id)), pop)}
        return out
    side = (item_side(log_.pairs, pop, t_items) if design == "item"
            else cell_side(log_.pairs, pop, t_users, t_items))
    out = estimates(side, cfg, 2, ratio=False)
    out["search_gmv"] = users["search_gmv"] | {"units": "users (coupled buckets)"}
    ti = ti30_values(log_.label_gmv, pop)
    out["ti30"] = ti30_block(ti, ti, t_items, ~t_items, pop, cfg, days)
    out["gini"] = {"treated": exposure_gini(log_.pairs, np.flatnonzero(scope & t_items), pop),
                   "control": exposure_gini(log_.pairs, np.flatnonzero(scope & ~t_items), pop)}
    return out


def _rows_of(pairs: pd.DataFrame, pop: Population, mask: np.ndarray, col: str) -> np.ndarray:
    ids = pop.user_id if col == "user_id" else pop.item_id
    return mask[unit_index(pairs[col].to_numpy(), ids)]


def global_estimates(treated: ArmLog, control: ArmLog, pop: Population, cfg: ABTestConfig, days: int) -> dict:
    """The true global effect: fully treated vs fully untreated world (paired units)."""
    out = estimates(global_side(treated.pairs, control.pairs, pop, "users"), cfg, 3, ratio=True)
    every = np.ones(len(pop.item_id), bool)
    out["ti30"] = ti30_block(ti30_values(treated.label_gmv, pop), ti30_values(control.label_gmv, pop),
                             every, every, pop, cfg, days)
    rows = np.arange(len(pop.item_id))
    out["gini"] = {"treated": exposure_gini(treated.pairs, rows, pop), "control": exposure_gini(control.pairs, rows, pop)}
    return out


def _test_day(daily: pd.DataFrame, pop: Population) -> np.ndarray:
    return daily["day"].to_numpy(np.int64) - pop.start


def design_trajectory(design: str, log_: ArmLog, pop: Population, cfg: ABTestConfig) -> dict:
    """Per test day, the design's cumulative estimates (the panels and seeds of `design_estimates`)."""
    a = design_assignment(design, cfg)
    t_users, t_items = a.treated_users(pop.user_id), a.treated_items(pop.item_id)
    daily, n_days = log_.daily, pop.end - pop.start + 1
    users = trajectory(user_side(daily, pop, t_users), _test_day(daily, pop), n_days, cfg, 1, ratio=True)
    if design == "user":
        return users
    side = (item_side(daily, pop, t_items) if design == "item" else cell_side(daily, pop, t_users, t_items))
    return trajectory(side, _test_day(daily, pop), n_days, cfg, 2, ratio=False,
                      metrics=("new_item_gmv", "pvr")) | {"search_gmv": users["search_gmv"]}


def global_trajectory(treated: ArmLog, control: ArmLog, pop: Population, cfg: ABTestConfig) -> dict:
    """Per test day, the true global effect's cumulative estimates (the panel and seed of `global_estimates`)."""
    day = np.concatenate([_test_day(treated.daily, pop), _test_day(control.daily, pop)])
    return trajectory(global_side(treated.daily, control.daily, pop, "users"), day, pop.end - pop.start + 1, cfg, 3,
                      ratio=True)


def bias_table(est: dict, truth: dict) -> dict:
    """Design estimate, true global effect and bias (estimate - truth, percentage points) per metric."""
    rows = {}
    for k in HEADLINE:
        rows[k] = {"estimate_pct": est[k]["rel_pct"], "true_pct": truth[k]["rel_pct"],
                   "bias_pp": est[k]["rel_pct"] - truth[k]["rel_pct"]}
    for cohort, e in est["ti30"].items():
        t = truth["ti30"][cohort]
        if e.get("available") and t.get("available"):
            rows[f"ti30_{cohort}"] = {"estimate_pct": e["rel_pct"], "true_pct": t["rel_pct"],
                                      "bias_pp": e["rel_pct"] - t["rel_pct"]}
    return rows
