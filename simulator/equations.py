"""The structural equations of the simulated platform (the mechanisms `simulator.engine`'s docstring
states): click and conversion links, Poisson draws by inverse CDF (common random numbers), the
label-window order rate and the causal growth increment of a click. Pure numpy functions."""

from __future__ import annotations

import numpy as np

from foundation.calendar import NEW_ITEM_DAYS
from foundation.sections.simulator import SimulatorConfig


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def poisson_icdf(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Inverse CDF of Poisson(lam) at u: one uniform per draw, so common random numbers couple draws."""
    lam = np.minimum(lam, 500.0)
    k = np.zeros(len(u), dtype=np.int64)
    p = np.exp(-lam)
    cdf = p.copy()
    active = np.flatnonzero(u > cdf)
    limit = lam + 12.0 * np.sqrt(lam) + 30.0
    i = 0
    while len(active):
        i += 1
        p[active] *= lam[active] / i
        cdf[active] += p[active]
        k[active] += 1
        active = active[(u[active] > cdf[active]) & (i < limit[active])]
    return k


def label_rate(base_demand: np.ndarray, growth: np.ndarray) -> np.ndarray:
    """Expected orders/day after the new-item period: (1 + B) e^G - 1."""
    return (1.0 + base_demand) * np.exp(growth) - 1.0


def label_window_orders(base_demand: np.ndarray, growth: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Orders per item and day of the label window given the per-day uniforms U (n, days): int64 (n, days)."""
    lam = np.repeat(label_rate(base_demand, growth)[:, None], uniforms.shape[1], axis=1)
    return poisson_icdf(uniforms.ravel(), lam.ravel()).reshape(uniforms.shape)


def affinity(user_offset: np.ndarray, item_offset: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-((user_offset - item_offset) ** 2).sum(-1) / (2.0 * scale**2))


def growth_increment(cfg: SimulatorConfig, aff: np.ndarray, age: np.ndarray, prior_exposures: np.ndarray) -> np.ndarray:
    """delta(u, i, a): the growth-state increment of one click (see the module docstring)."""
    shape = cfg.growth_kappa * (cfg.growth_floor + (1.0 - cfg.growth_floor) * aff) * np.exp(-age / cfg.growth_age_tau)
    return shape / (1.0 + prior_exposures / cfg.growth_saturation) * (age < NEW_ITEM_DAYS)

