"""The simulated world: static structure, item and user state, counters; creation and persistence.

State is a struct of arrays (`dict[str, np.ndarray]`, one row per item or
user, in id order). Items and users are appended, never removed. The whole
state at the end of a day is saved as one `.npz` object under
`sim_state/state/ds=YYYY-MM-DD/state.npz` in the lake's store, so a later run
continues from it exactly.

Latent variables (never written to raw tables):
  items: `offset` (niche position inside the category, (n, D)), `niche` (-1 =
  mass-market item), `quality`, `base_demand` (B: expected orders/day after
  the new-item period with no growth), `growth` (G: the growth state built by
  clicks during days 0..29), `pop` (the platform's popularity signal).
  users: `offset` (taste inside the home category), `niche` (-1 = mass
  consumer), recent queries (for linking site-wide orders).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from foundation.calendar import NEW_ITEM_DAYS
from foundation.sections.simulator import SimulatorConfig
from simulator.text import ATTRIBUTES, N_CATEGORIES, NOUNS, make_brands, make_niche_attributes

US_PER_DAY = 86_400_000_000   # event times are microseconds since the epoch (UTC)
US = 1_000_000

EPOCH = date(1970, 1, 1)
RECENT_QUERIES = 3          # remembered per user (site-order links; the new-item channels' history words)
NICHE_SPREAD, MASS_SPREAD, NICHE_RADIUS = 0.35, 0.5, 1.6

Arrays = dict[str, np.ndarray]


def day_index(ds: str | date) -> int:
    d = date.fromisoformat(ds) if isinstance(ds, str) else ds
    return (d - EPOCH).days


def day_ds(day: int) -> str:
    return (EPOCH + timedelta(days=int(day))).isoformat()


def day_rng(seed: int, day: int, stream: int = 0) -> np.random.Generator:
    """The generator of one (day, stream): independent of the days before, so continuation is exact."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(day, stream)))


@dataclass
class Structure:
    """What does not change: categories, niches, brands, reference prices, demand effects."""

    cat_weight: np.ndarray       # (C,) share of items and intents per category
    cat_price: np.ndarray        # (C,) reference price
    cat_effect: np.ndarray       # (C,) log demand effect
    niche_centers: np.ndarray    # (C, K, D) float32
    niche_attrs: np.ndarray      # (C, K, 3) int32 attribute word ids
    brand_names: np.ndarray      # (C * B,) str
    brand_effect: np.ndarray     # (C * B,) log demand effect
    brands_per_category: int


@dataclass
class World:
    seed: int
    config: SimulatorConfig
    structure: Structure
    items: Arrays
    users: Arrays
    last_day: int                    # the last simulated day index
    next_request_id: int = 1
    next_order_id: int = 1
    pending: dict[str, bytes] = field(default_factory=dict)  # raw rows due in the next day's partitions

    @property
    def n_items(self) -> int:
        return len(self.items["item_id"])

    @property
    def n_users(self) -> int:
        return len(self.users["user_id"])


def make_structure(cfg: SimulatorConfig, rng: np.random.Generator) -> Structure:
    c, k, d, b = N_CATEGORIES, cfg.niches_per_category, cfg.taste_dim, cfg.brands_per_category
    directions = rng.normal(size=(c, k, d))
    centers = NICHE_RADIUS * directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    return Structure(
        cat_weight=rng.dirichlet(np.full(c, 4.0)),
        cat_price=np.exp(rng.uniform(np.log(8.0), np.log(300.0), size=c)),
        cat_effect=rng.normal(0.0, 0.3, size=c),
        niche_centers=centers.astype(np.float32),
        niche_attrs=make_niche_attributes(rng, c, k),
        brand_names=np.array([n for names in make_brands(rng, c, b) for n in names]),
        brand_effect=rng.normal(0.0, 0.4, size=c * b),
        brands_per_category=b,
    )


def positions(rng: np.random.Generator, s: Structure, category: np.ndarray, niche: np.ndarray) -> np.ndarray:
    """Positions inside the category: around a niche center, or around 0 (mass). float32 (n, D)."""
    d = s.niche_centers.shape[-1]
    noise = rng.normal(size=(len(category), d))
    is_niche = niche >= 0
    center = s.niche_centers[category, np.maximum(niche, 0)] * is_niche[:, None]
    spread = np.where(is_niche, NICHE_SPREAD, MASS_SPREAD)[:, None]
    return (center + spread * noise).astype(np.float32)


def cells(cfg: SimulatorConfig, centers: np.ndarray, category: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The retrieval-index cell of each position inside its category: int64 (n,).

    0..M-1 (M = 2^mass_cell_bits): near the mass center (origin), split by the signs of
    the first mass_cell_bits coordinates; M + k: nearest to niche center k. `centers` (C, K, D).
    """
    bits = min(cfg.mass_cell_bits, offset.shape[1])
    n_mass = 2**cfg.mass_cell_bits
    out = np.empty(len(category), dtype=np.int64)
    for c in np.unique(category):
        rows = np.flatnonzero(category == c)
        pos, ctr = offset[rows].astype(np.float64), centers[c].astype(np.float64)   # (n, D), (K, D)
        norm2 = (pos**2).sum(1)
        d2 = norm2[:, None] - 2.0 * pos @ ctr.T + (ctr**2).sum(1)[None, :]         # (n, K)
        orthant = (pos[:, :bits] > 0) @ (2 ** np.arange(bits))
        out[rows] = np.where(norm2 <= d2.min(1), orthant, n_mass + d2.argmin(1))
    return out


def new_items(
    rng: np.random.Generator, cfg: SimulatorConfig, s: Structure, first_id: int, n: int, listing_day: np.ndarray
) -> Arrays:
    """`n` items listed on `listing_day` (n,), with their title parts (`attrs`, `noun`)."""
    cat = rng.choice(N_CATEGORIES, size=n, p=s.cat_weight).astype(np.int32)
    niche = np.where(rng.random(n) < cfg.niche_item_share, rng.integers(0, cfg.niches_per_category, n), -1).astype(np.int32)
    brand = (cat * s.brands_per_category + rng.integers(0, s.brands_per_category, n)).astype(np.int32)
    price = np.round(s.cat_price[cat] * np.exp(0.5 * rng.normal(size=n)) * np.where(niche >= 0, 1.3, 1.0), 2) + 0.99
    quality = rng.normal(size=n)
    log_rel_price = np.log(price / s.cat_price[cat])
    base = np.exp(cfg.demand_intercept + 0.6 * quality - 0.5 * log_rel_price + s.cat_effect[cat] + s.brand_effect[brand])
    offset = positions(rng, s, cat, niche)
    rows = {
        "item_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "listing_day": listing_day.astype(np.int32),
        "category": cat,
        "niche": niche,
        "brand": brand,
        "offset": offset,
        "cell": cells(cfg, s.niche_centers, cat, offset),
        "price": price,
        "quality": quality,
        "base_demand": base,
        "growth": np.zeros(n),
        "pop": np.zeros(n),
        "cum_orders": np.zeros(n, dtype=np.int64),
        "cum_exposures": np.zeros(n, dtype=np.int64),
        "arm": np.full(n, -1, dtype=np.int8),              # traffic-support arm: -1 not assigned, 0 control, 1 support
        "support_shown": np.zeros(n, dtype=np.int64),      # traffic-support impressions delivered
    }
    own = s.niche_attrs[cat, np.maximum(niche, 0)]                        # (n, 3)
    pick = rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1)[:, :2]      # two of the niche's words
    random_attrs = rng.integers(0, len(ATTRIBUTES), size=(n, 3)).astype(np.int32)
    attrs = np.where((niche >= 0)[:, None], np.take_along_axis(own, pick, axis=1), random_attrs[:, :2])
    rows["attrs"] = np.concatenate([attrs, random_attrs[:, 2:]], axis=1)  # (n, 3): 2 title words + 1 more
    rows["noun"] = rng.integers(0, len(NOUNS[0]), n).astype(np.int32)
    return rows


def mature_catalog_state(rng: np.random.Generator, rows: Arrays) -> None:
    """Initial-catalog items are past their new-item period: give them a growth state, popularity, history."""
    n = len(rows["item_id"])
    rows["growth"] = rng.exponential(0.1, size=n)
    rate = (1.0 + rows["base_demand"]) * np.exp(rows["growth"]) - 1.0
    rows["pop"] = rate
    rows["cum_orders"] = rng.poisson(30.0 * rate).astype(np.int64)


def new_users(
    rng: np.random.Generator, cfg: SimulatorConfig, s: Structure, first_id: int, n: int, signup_day: np.ndarray
) -> Arrays:
    home = rng.choice(N_CATEGORIES, size=n, p=s.cat_weight).astype(np.int32)
    is_niche = rng.random(n) < cfg.niche_user_share
    niche = np.where(is_niche, rng.integers(0, cfg.niches_per_category, n), -1).astype(np.int32)
    sigma = 0.8
    activity = cfg.mean_activity * np.exp(sigma * rng.normal(size=n) - sigma**2 / 2) * np.where(is_niche, 1.3, 0.9)
    d = s.niche_centers.shape[-1]
    return {
        "user_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "signup_day": signup_day.astype(np.int32),
        "niche": niche,
        "home_cat": home,
        "offset": positions(rng, s, home, niche),
        "activity": activity,
        "price_sens": cfg.price_sensitivity_mean * rng.gamma(4.0, 0.25, size=n),
        "recent_req": np.full((n, RECENT_QUERIES), -1, dtype=np.int64),
        "recent_day": np.full((n, RECENT_QUERIES), -10**6, dtype=np.int32),
        "recent_cat": np.full((n, RECENT_QUERIES), -1, dtype=np.int32),
        "recent_qoff": np.zeros((n, RECENT_QUERIES, d), dtype=np.float32),
        "recent_attr": np.full((n, RECENT_QUERIES), -1, dtype=np.int32),   # the queries' attribute words
    }


def create_world(cfg: SimulatorConfig, seed: int, start_day: int) -> World:
    """The world at the end of `start_day - 1`: structure, initial users and an initial catalog of items
    aged 30..400 days (past their new-item period), all announced on `start_day`."""
    structure = make_structure(cfg, day_rng(seed, 0, 9))
    rng = day_rng(seed, start_day, 1)
    users = new_users(rng, cfg, structure, 1, cfg.n_users, start_day - rng.integers(1, 366, cfg.n_users))
    items = new_items(rng, cfg, structure, 1, cfg.n_items, start_day - rng.integers(NEW_ITEM_DAYS, 401, cfg.n_items))
    mature_catalog_state(rng, items)
    users["announce_day"] = np.full(cfg.n_users, start_day, dtype=np.int32)
    items["announce_day"] = np.full(cfg.n_items, start_day, dtype=np.int32)
    return World(seed=seed, config=cfg, structure=structure, items=items, users=users, last_day=start_day - 1)


def append(rows: Arrays, more: Arrays) -> Arrays:
    return {k: np.concatenate([rows[k], more[k]]) for k in rows}


# -- persistence ----------------------------------------------------------------------------------

def to_bytes(w: World) -> bytes:
    arrays = {f"items.{k}": v for k, v in w.items.items()}
    arrays |= {f"users.{k}": v for k, v in w.users.items()}
    arrays |= {f"structure.{k}": v for k, v in w.structure.__dict__.items() if isinstance(v, np.ndarray)}
    arrays |= {f"pending.{k}": np.frombuffer(v, dtype=np.uint8) for k, v in w.pending.items()}
    meta = {
        "seed": w.seed, "config": w.config.model_dump(mode="json"), "last_day": w.last_day,
        "next_request_id": w.next_request_id, "next_order_id": w.next_order_id,
        "brands_per_category": w.structure.brands_per_category,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def from_bytes(data: bytes) -> World:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    part = {p: {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(p + ".")}
            for p in ("items", "users", "structure", "pending")}
    structure = Structure(**part["structure"], brands_per_category=meta["brands_per_category"])
    return World(
        seed=meta["seed"], config=SimulatorConfig.model_validate(meta["config"]), structure=structure,
        items=part["items"], users=part["users"], last_day=meta["last_day"],
        next_request_id=meta["next_request_id"], next_order_id=meta["next_order_id"],
        pending={k: v.tobytes() for k, v in part["pending"].items()},
    )
