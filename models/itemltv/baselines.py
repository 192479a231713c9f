"""Uplift baselines of ItemLTV, fitted on the same training cohorts and encoded inputs.

Fair baselines estimate the same estimand as ItemLTV - the effect of one click of this user in
this context on the item's label y = log1p(mean daily orders, days 30..36) - from the same item
labels, and pick their hyper-parameters on the validation cohorts (item-level MSE of y):

- `ridge_clicks`: an item-level ridge regression y_i = a . content_i + b . sum over the item's
  clicked exposures of phi(z_e), where content = hashed title words + category + item numerics
  and phi(z) = degree-2 polynomial of the exposure's user/context/history features; the uplift
  of an exposure is b . phi(z_e), the marginal effect of one more click with those features;
- `gbm_clicks`: an item-level gradient-boosted model f(content, n_clicks, mean z of the clicks);
  the uplift of an exposure is f(with that click added) - f(as observed);
- `age_heuristic`: the `ridge_clicks` machinery with one click feature, 1 - age / 30 (a click
  helps a younger item more), so its scale is fitted, not assumed.

- `r_learner`: Robinson's partialling-out (the R-learner) at the item level for the
  multi-dimensional click "dose" S_i = sum over the item's clicked exposures of phi(z_e) (phi as
  in `ridge_clicks`): m(x) = E[y | content] and e(x) = E[S | content] are fitted by ridge with
  2-fold cross-fitting over items, then theta by ridge of y - m(x) on S - e(x) (alpha on
  validation); the uplift of an exposure is phi(z_e) . theta.

The meta-learners of the literature (`s_learner`, `t_learner`, `dr_learner`) treat an exposure's
click as a binary treatment and regress the item-constant label per exposure: f(x, 1) - f(x, 0)
is a cross-item association, confounded by whatever makes clicked items better; they are kept for
comparison with the literature's defaults and are not tuned. `dr_learner` is the DR-learner
(Kennedy 2023): 2-fold cross-fitted propensity P(click | x) and outcome models, the doubly robust
pseudo-outcome regressed on x. EconML and causalml are not used: their releases pin older
scikit-learn / NumPy than the lock's (and causalml builds from source); the learners here are the
same algorithms on scikit-learn's estimators.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from threadpoolctl import threadpool_limits

from models.itemltv.data import Encoded

RIDGE_ALPHAS = (0.3, 3.0, 30.0, 300.0)
GBM_GRID = ({"max_iter": 100, "learning_rate": 0.1}, {"max_iter": 300, "learning_rate": 0.05},
            {"max_iter": 300, "learning_rate": 0.1, "max_leaf_nodes": 15})


# -- features ------------------------------------------------------------------
def history_summaries(enc: Encoded, chunk: int = 20_000) -> np.ndarray:
    """[N, 3] share of history items of the exposed item's category, title-word overlap with the
    history, history length (the flat stand-ins of ItemLTV's attention over the history)."""
    cat = enc.category[enc.item_row]
    hist_cat, valid = enc.category[enc.hist_rows], enc.hist_rows > 0                  # [N, L]
    n_valid = valid.sum(1).clip(min=1)
    same_cat = ((hist_cat == cat[:, None]) & valid).sum(1) / n_valid
    overlap = np.zeros(len(cat))
    for s in range(0, len(cat), chunk):
        it, ht = enc.tokens[enc.item_row[s:s + chunk]], enc.tokens[enc.hist_rows[s:s + chunk]]  # [n,W], [n,L,W]
        hits = ((it[:, None, :, None] == ht[:, :, None, :]) & (it[:, None, :, None] > 0)).any(-1).sum(-1)
        overlap[s:s + chunk] = (hits * valid[s:s + chunk]).sum(1) / n_valid[s:s + chunk]   # [n]
    return np.column_stack([same_cat, overlap, valid.sum(1)])


def flat_features(enc: Encoded) -> np.ndarray:
    """[N, F] item/user/context numerics + category + the history summaries (meta-learners)."""
    return np.column_stack([enc.x["item"], enc.x["user"], enc.x["ctx"], enc.category[enc.item_row],
                            history_summaries(enc)])


def click_context(enc: Encoded) -> np.ndarray:
    """[N, F] what an exposure's click effect may depend on: user/context numerics + history summaries."""
    return np.column_stack([enc.x["user"], enc.x["ctx"], history_summaries(enc)])


def _first_rows(enc: Encoded) -> np.ndarray:
    """[G] one exposure row per item group."""
    first = np.full(enc.n_groups, -1)
    first[enc.group[::-1]] = np.arange(len(enc.group))[::-1]
    return first


def _content(enc: Encoded, buckets: int) -> sp.csr_matrix:
    """[G, buckets + 64 + Fi] bag of hashed title words, category one-hot, item numerics per item."""
    rows = _first_rows(enc)
    tokens = enc.tokens[enc.item_row[rows]]                                         # [G, W]
    r, c = np.nonzero(tokens)
    words = sp.csr_matrix((np.ones(len(r)), (r, tokens[r, c])), shape=(len(rows), buckets))
    cat = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), enc.category[enc.item_row[rows]])),
                        shape=(len(rows), 64))
    return sp.hstack([words.minimum(1), cat, sp.csr_matrix(enc.x["item"][rows])]).tocsr()


def _item_y(enc: Encoded) -> np.ndarray:
    return enc.y[_first_rows(enc)]


def _click_sums(enc: Encoded, phi: np.ndarray) -> np.ndarray:
    """[G, P] sum of phi over each item's clicked exposures."""
    out = np.zeros((enc.n_groups, phi.shape[1]))
    np.add.at(out, enc.group, phi * enc.treatment[:, None])
    return out


def _fit(model, x, y):
    """Fit single-threaded: OpenMP spin-waiting on a shared small machine costs more than it gains."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(x, y)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


# -- fair baselines ------------------------------------------------------------
def _ridge(train: Encoded, val: Encoded, tests: list[Encoded], phi_of: Callable[[Encoded], np.ndarray],
           buckets: int) -> tuple[list[np.ndarray], dict]:
    """Item-level ridge of y on content + click sums of phi; returns per-exposure uplifts of `tests`
    and the chosen alpha (by validation MSE)."""
    phis = {id(e): phi_of(e) for e in (train, val, *tests)}
    design = {id(e): sp.hstack([_content(e, buckets), sp.csr_matrix(_click_sums(e, phis[id(e)]))]).tocsr()
              for e in (train, val)}
    scores = {}
    for alpha in RIDGE_ALPHAS:
        m = _fit(Ridge(alpha=alpha), design[id(train)], _item_y(train))
        scores[alpha] = _mse(m.predict(design[id(val)]), _item_y(val))
    best = min(scores, key=scores.get)
    m = _fit(Ridge(alpha=best), design[id(train)], _item_y(train))
    b = m.coef_[-phis[id(train)].shape[1]:]
    return [phis[id(e)] @ b for e in tests], {"alpha": best, "val_mse": scores[best]}


def ridge_clicks(train: Encoded, val: Encoded, tests: list[Encoded], buckets: int) -> tuple[list[np.ndarray], dict]:
    scaler = StandardScaler().fit(click_context(train))
    poly = PolynomialFeatures(degree=2, include_bias=True).fit(scaler.transform(click_context(train)))
    return _ridge(train, val, tests, lambda e: poly.transform(scaler.transform(click_context(e))), buckets)


def age_heuristic(train: Encoded, val: Encoded, tests: list[Encoded], buckets: int) -> tuple[list[np.ndarray], dict]:
    def phi(e: Encoded) -> np.ndarray:
        return (1.0 - e.meta["age_days"].to_numpy(float) / 30.0)[:, None]
    return _ridge(train, val, tests, phi, buckets)


def _gbm_design(enc: Encoded, rows: np.ndarray, n_clicks: np.ndarray, mean_z: np.ndarray) -> np.ndarray:
    """Item-level GBM inputs of `rows` (one exposure row per design row): item numerics, category,
    click count, mean click features."""
    return np.column_stack([enc.x["item"][rows], enc.category[enc.item_row[rows]], n_clicks, mean_z])


def _click_stats(enc: Encoded, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.bincount(enc.group, weights=enc.treatment, minlength=enc.n_groups)
    return n, _click_sums(enc, z) / np.maximum(n, 1)[:, None]


def gbm_clicks(train: Encoded, val: Encoded, tests: list[Encoded], seed: int) -> tuple[list[np.ndarray], dict]:
    z = {id(e): click_context(e) for e in (train, val, *tests)}
    stats = {id(e): _click_stats(e, z[id(e)]) for e in (train, val, *tests)}
    x = {id(e): _gbm_design(e, _first_rows(e), *stats[id(e)]) for e in (train, val)}
    scores, models = {}, {}
    for i, params in enumerate(GBM_GRID):
        models[i] = _fit(HistGradientBoostingRegressor(random_state=seed, early_stopping=False, **params),
                         x[id(train)], _item_y(train))
        scores[i] = _mse(models[i].predict(x[id(val)]), _item_y(val))
    best = min(scores, key=scores.get)
    out = []
    for e in tests:
        n, mean = stats[id(e)]
        g = e.group
        n_e = n[g] + 1 - e.treatment                      # clicks with this exposure's click added
        sum_e = mean[g] * n[g][:, None] + z[id(e)] * (1 - e.treatment)[:, None]
        rows = _first_rows(e)[g]
        with_click = _gbm_design(e, rows, n_e, sum_e / n_e[:, None])
        without = _gbm_design(e, rows, n_e - 1, (sum_e - z[id(e)]) / np.maximum(n_e - 1, 1)[:, None])
        out.append(models[best].predict(with_click) - models[best].predict(without))
    return out, {**GBM_GRID[best], "val_mse": scores[best]}


# -- the meta-learners as they were ----------------------------------------------
def _gbm(seed: int, max_iter: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed, early_stopping=False)


def s_learner(train: Encoded, test: Encoded, seed: int, max_iter: int) -> np.ndarray:
    """One model f(x, T) per exposure; uplift = f(x, 1) - f(x, 0)."""
    x, xt = flat_features(train), flat_features(test)
    f = _fit(_gbm(seed, max_iter), np.column_stack([x, train.treatment]), train.y)
    ones, zeros = np.ones(len(xt)), np.zeros(len(xt))
    return f.predict(np.column_stack([xt, ones])) - f.predict(np.column_stack([xt, zeros]))


def t_learner(train: Encoded, test: Encoded, seed: int, max_iter: int) -> np.ndarray:
    """Two models fitted on treated / control exposures; uplift = f1(x) - f0(x)."""
    x, xt, t = flat_features(train), flat_features(test), train.treatment > 0.5
    f1, f0 = _fit(_gbm(seed, max_iter), x[t], train.y[t]), _fit(_gbm(seed, max_iter), x[~t], train.y[~t])
    return f1.predict(xt) - f0.predict(xt)


def r_learner(train: Encoded, val: Encoded, tests: list[Encoded], buckets: int, seed: int
              ) -> tuple[list[np.ndarray], dict]:
    """Item-level R-learner (see the module doc); returns per-exposure uplifts of `tests` and the
    chosen alpha (validation MSE of y)."""
    scaler = StandardScaler().fit(click_context(train))
    poly = PolynomialFeatures(degree=2, include_bias=False).fit(scaler.transform(click_context(train)))
    s_of = {id(e): _click_sums(e, poly.transform(scaler.transform(click_context(e)))) for e in (train, val, *tests)}
    x, y, s_train = _content(train, buckets), _item_y(train), s_of[id(train)]
    fold = np.random.default_rng(seed).integers(0, 2, len(y))
    m_hat, e_hat = np.zeros(len(y)), np.zeros_like(s_train)
    for k in (0, 1):
        fit, out = fold != k, fold == k
        m_hat[out] = _fit(Ridge(alpha=30.0), x[fit], y[fit]).predict(x[out])
        e_hat[out] = _fit(Ridge(alpha=30.0), x[fit], s_train[fit]).predict(x[out])
    m_all, e_all = _fit(Ridge(alpha=30.0), x, y), _fit(Ridge(alpha=30.0), x, s_train)
    xv = _content(val, buckets)
    rv = s_of[id(val)] - e_all.predict(xv)
    scores, thetas = {}, {}
    for alpha in RIDGE_ALPHAS:
        thetas[alpha] = _fit(Ridge(alpha=alpha, fit_intercept=False), s_train - e_hat, y - m_hat).coef_
        scores[alpha] = _mse(m_all.predict(xv) + rv @ thetas[alpha], _item_y(val))
    best = min(scores, key=scores.get)
    return ([poly.transform(scaler.transform(click_context(e))) @ thetas[best] for e in tests],
            {"alpha": best, "val_mse": scores[best]})


def dr_learner(train: Encoded, test: Encoded, seed: int, max_iter: int) -> np.ndarray:
    """DR-learner on exposures (see the module doc): cross-fitted nuisances, pseudo-outcome on x."""
    x, xt, t, y = flat_features(train), flat_features(test), train.treatment > 0.5, train.y
    fold = np.random.default_rng(seed).integers(0, 2, len(y))
    psi = np.zeros(len(y))
    for k in (0, 1):
        fit, out = fold != k, fold == k
        e = _fit(HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed, early_stopping=False),
                 x[fit], t[fit]).predict_proba(x[out])[:, 1].clip(0.01, 0.99)
        mu1 = _fit(_gbm(seed, max_iter), x[fit & t], y[fit & t]).predict(x[out])
        mu0 = _fit(_gbm(seed, max_iter), x[fit & ~t], y[fit & ~t]).predict(x[out])
        to, yo = t[out], y[out]
        psi[out] = mu1 - mu0 + to * (yo - mu1) / e - (~to) * (yo - mu0) / (1 - e)
    return _fit(_gbm(seed, max_iter), x, psi).predict(xt)


def baseline_uplifts(train: Encoded, val: Encoded, test: Encoded, seed: int, gbm_max_iter: int,
                     buckets: int) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Every baseline's per-exposure uplift on `test`, and the hyper-parameters validation chose."""
    preds, chosen = {}, {}
    for name, fit in (("ridge_clicks", lambda: ridge_clicks(train, val, [test], buckets)),
                      ("gbm_clicks", lambda: gbm_clicks(train, val, [test], seed)),
                      ("age_heuristic", lambda: age_heuristic(train, val, [test], buckets)),
                      ("r_learner", lambda: r_learner(train, val, [test], buckets, seed))):
        (preds[name],), chosen[name] = fit()
    preds["s_learner"] = s_learner(train, test, seed, gbm_max_iter)
    preds["t_learner"] = t_learner(train, test, seed, gbm_max_iter)
    preds["dr_learner"] = dr_learner(train, test, seed, gbm_max_iter)
    return preds, chosen


# Every baseline that reads no truth: ItemLTV is compared with the best of them (the age heuristic
# and the untuned meta-learners included), the references (`ref_*`) are shown apart.
NON_ORACLE = ("ridge_clicks", "gbm_clicks", "age_heuristic", "r_learner", "s_learner", "t_learner", "dr_learner")
