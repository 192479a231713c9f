"""Who gets the GrowthGR channel: the designs' buckets and the (user, item) pairs they allow.

Designs (buckets are the simulator's stable hashes, `channels.bucket`, USER_SALT / ITEM_SALT):
  user       users of the treated buckets get the channel (every pool item)
  item       new items hashed into buckets; the treated item buckets are served only to their
             coupled user buckets (the same bucket numbers on the user hash), control items
             never: an item sees one policy. `coupling_groups` > 1 splits the coupled market
             into exclusive groups (user bucket b serves item buckets b' with b' = b mod g).
  two-sided  a pair is treated only when user and item are both treated; estimated on the
             treated-user x treated-item cell vs the control x control cell (the naive
             two-sided-randomisation estimator of the marketplace-experiment literature).
With `coupling_groups` = 1 and equal shares the item and two-sided designs serve the same
pairs; they differ in the estimator (all items vs the 2x2 cells).

Besides the design's arm every test runs two global arms, fully treated (`TREATED`) and fully
untreated (`CONTROL`): their comparison is the true global effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foundation.sections.abtest import ABTestConfig
from simulator.channels import ITEM_SALT, USER_SALT, bucket

DESIGNS = ("user", "item", "two-sided")
TREATED, CONTROL = "global-treated", "global-control"

@dataclass(frozen=True)
class Assignment:
    """Which (user, item) pairs the GrowthGR channel may serve."""

    n_buckets: int
    user_buckets: tuple[int, ...] | None     # treated user buckets; None = every user
    item_buckets: tuple[int, ...] | None     # treated item buckets; None = every item
    groups: int = 1                          # coupling groups (see the module docstring)

    def treated_users(self, user_id: np.ndarray) -> np.ndarray:
        """bool, same shape as `user_id`."""
        return _in_buckets(user_id, USER_SALT, self.n_buckets, self.user_buckets)

    def treated_items(self, item_id: np.ndarray) -> np.ndarray:
        """bool, same shape as `item_id`."""
        return _in_buckets(item_id, ITEM_SALT, self.n_buckets, self.item_buckets)

    def pairs(self, user_id: np.ndarray, item_id: np.ndarray) -> np.ndarray:
        """Treated (request, candidate) pairs: user_id (R,), item_id (R, K) -> bool (R, K)."""
        ok = self.treated_users(user_id)[:, None] & self.treated_items(item_id)
        if self.groups > 1:
            ug = bucket(user_id, USER_SALT, self.n_buckets) % self.groups
            ig = bucket(item_id.ravel(), ITEM_SALT, self.n_buckets).reshape(item_id.shape) % self.groups
            ok &= ug[:, None] == ig
        return ok


def _in_buckets(ids: np.ndarray, salt: int, n_buckets: int, buckets: tuple[int, ...] | None) -> np.ndarray:
    if buckets is None:
        return np.ones(ids.shape, dtype=bool)
    flat = bucket(np.asarray(ids).ravel(), salt, n_buckets)
    return np.isin(flat, np.asarray(buckets, dtype=np.int64)).reshape(np.shape(ids))


def design_assignment(design: str, cfg: ABTestConfig) -> Assignment:
    """The assignment of a design, or of the two global arms (`TREATED`, `CONTROL`)."""
    treated = tuple(range(max(1, round(cfg.treated_share * cfg.n_buckets))))
    match design:
        case "user":
            return Assignment(cfg.n_buckets, treated, None)
        case "item":
            return Assignment(cfg.n_buckets, treated, treated, cfg.coupling_groups)
        case "two-sided":
            return Assignment(cfg.n_buckets, treated, treated)
        case "global-treated":
            return Assignment(cfg.n_buckets, None, None)
        case "global-control":
            return Assignment(cfg.n_buckets, (), ())
    raise ValueError(f"unknown design {design!r}: expected one of {', '.join(DESIGNS)}")
