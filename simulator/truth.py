"""Evaluation-only truth of the simulated platform: what any ranked list would have done.

`click_truth(lake, cfg, ds)` reads the truth zone of one simulated day (the latent query
positions of its requests), the static latents of items and users up to it, and the new-item
exposures of the 29 days before it (`truth/click_effects` holds one row per exposure of an item
in its new-item period, so their count is the growth mechanism's prior-exposure count), and
returns a `ClickTruth` that gives,
for any (request, item, slot) of that day,
  * `p_click`: the probability that the user clicks the item shown in that slot, from the
    simulator's own models (`simulator.engine`, steps 5-6): P(the slot is seen) =
    scroll_continue^slot for slot < n_exposed, times (1 + slot)^-position_decay x
    sigmoid(base_ctr_logit + relevance_click_weight x relevance + 0.5 x quality);
  * `uplift`: the growth increment a click would cause, delta(u, i, a) of the engine's
    step 8 (0 for an item past its new-item period or not yet listed), i.e. the click's
    effect on log(1 + expected mean daily orders, days 30..36), as in
    `truth/click_effects.true_uplift`.
Both hold for a list scored on its own against the day's state: a different list on every
request would change later states (exposure counts, popularity), which this does not follow.

Evaluation only: long-term retrieval evaluation and the simulator's statistics call it; no
feature, training or model-selection code may (tests/test_no_latents.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from foundation.calendar import NEW_ITEM_DAYS
from foundation.catalog import TRUTH
from foundation.lake import Lake
from foundation.sections.simulator import SimulatorConfig
from simulator.equations import affinity, growth_increment, sigmoid


def _up_to(lake: Lake, table: str, ds: date, columns: list[str]) -> pd.DataFrame:
    parts = [p for p in lake.list_partitions("truth", table) if p <= ds]
    if not parts:
        raise LookupError(f"truth/{table} has no partition up to {ds}: not a simulated lake")
    return lake.read_range(*TRUTH[table], parts[0], ds, columns).to_pandas()


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack(column.to_numpy()).astype(np.float64) if len(column) else np.zeros((0, 0))


@dataclass(frozen=True)
class ClickTruth:
    """The truth of one simulated day, indexed for lookups (see the module docstring)."""

    cfg: SimulatorConfig
    day: date
    request_id: np.ndarray     # (R,) sorted
    request_user: np.ndarray   # (R,) user row
    query_offset: np.ndarray   # (R, D)
    user_id: np.ndarray        # (U,) sorted
    home: np.ndarray           # (U,)
    taste: np.ndarray          # (U, D)
    item_id: np.ndarray        # (I,) sorted
    category: np.ndarray       # (I,)
    quality: np.ndarray        # (I,)
    offset: np.ndarray         # (I, D)
    age: np.ndarray            # (I,) age on the day (days since listing)
    prior_exposures: np.ndarray  # (I,) exposures in the new-item period before the day

    def _rows(self, ids: np.ndarray, known: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(known, ids)
        pos = np.minimum(pos, len(known) - 1)
        if len(ids) and not (known[pos] == ids).all():
            raise KeyError(f"{what} not in the truth of {self.day}: {ids[known[pos] != ids][:5].tolist()}")
        return pos

    def evaluate(self, request_id, item_id, slot) -> tuple[np.ndarray, np.ndarray]:
        """(p_click, uplift) of showing `item_id` in `slot` (0 = top) for `request_id` (arrays, broadcast)."""
        request_id, item_id, slot = np.broadcast_arrays(np.asarray(request_id, np.int64),
                                                        np.asarray(item_id, np.int64), np.asarray(slot, np.int64))
        shape = request_id.shape
        r = self._rows(request_id.ravel(), self.request_id, "request")
        i = self._rows(item_id.ravel(), self.item_id, "item")
        s = slot.ravel()
        cfg = self.cfg
        diff = self.query_offset[r] - self.offset[i]
        relevance = -0.5 * (diff * diff).sum(1)
        seen = np.where(s < cfg.n_exposed, cfg.scroll_continue ** s, 0.0)
        p_click = seen * (1.0 + s) ** -cfg.position_decay * sigmoid(
            cfg.base_ctr_logit + cfg.relevance_click_weight * relevance + 0.5 * self.quality[i])
        u = self.request_user[r]
        at_home = (self.home[u] == self.category[i])[:, None]
        aff = affinity(self.taste[u] * at_home, self.offset[i], cfg.affinity_scale)
        age = self.age[i]
        new = (age >= 0) & (age < NEW_ITEM_DAYS)
        uplift = np.where(new, growth_increment(cfg, aff, np.maximum(age, 0), self.prior_exposures[i]), 0.0)
        return p_click.reshape(shape), uplift.reshape(shape)


def click_truth(lake: Lake, cfg: SimulatorConfig, ds: date) -> ClickTruth:
    """The truth of simulated day `ds` (`cfg`: the world's simulator section)."""
    req = lake.read_partition(*TRUTH["requests"], ds, ["request_id", "user_id", "query_offset"]).to_pandas()
    req = req.sort_values("request_id")
    users = _up_to(lake, "users", ds, ["user_id", "home_category_id", "taste"]).sort_values("user_id")
    items = _up_to(lake, "item_outcomes", ds, ["item_id", "listing_date", "category_id", "quality", "offset"])
    items = items.sort_values("item_id")
    user_id = users["user_id"].to_numpy(np.int64)
    item_id = items["item_id"].to_numpy(np.int64)
    prior = np.zeros(len(item_id), np.int64)
    before = [d for d in lake.list_partitions("truth", "click_effects") if ds - timedelta(days=NEW_ITEM_DAYS) < d < ds]
    if before:
        seen = lake.read_range(*TRUTH["click_effects"], before[0], before[-1], ["item_id"]).column("item_id")
        ids, counts = np.unique(seen.to_numpy(), return_counts=True)
        prior[np.searchsorted(item_id, ids)] = counts
    listing = pd.to_datetime(items["listing_date"]).dt.date
    return ClickTruth(
        cfg=cfg, day=ds, request_id=req["request_id"].to_numpy(np.int64),
        request_user=np.searchsorted(user_id, req["user_id"].to_numpy(np.int64)),
        query_offset=_matrix(req["query_offset"]), user_id=user_id,
        home=users["home_category_id"].to_numpy(), taste=_matrix(users["taste"]), item_id=item_id,
        category=items["category_id"].to_numpy(), quality=items["quality"].to_numpy(np.float64),
        offset=_matrix(items["offset"]), age=np.array([(ds - d).days for d in listing], dtype=np.int64),
        prior_exposures=prior,
    )
