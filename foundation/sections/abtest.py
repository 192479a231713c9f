"""Config section of the closed-loop A/B tests in the simulated platform (`settings.abtest`).

Used by `growthgr.abtest` / `growthgr abtest`. Defaults are the `demo` profile; `PROFILES`
holds the per-profile overrides.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from foundation.strict import StrictModel


class ABTestConfig(StrictModel):
    """Where and how often the GrowthGR channel serves, how units are bucketed, how intervals are drawn."""

    # -- the GrowthGR new-item channel
    # what it retrieves from: the release's ItemLTV pool, or its MultiGR (the retrieval service's beam
    # search over the pool's SID trie; the pool where the release has no MultiGR or the user is unknown)
    channel: Literal["pool", "multigr"] = "pool"
    slots: tuple[int, ...] = (3,)                 # result positions it fills (0 = top), one item each
    share: float = Field(1.0, ge=0.0, le=1.0)     # share of a treated user's requests it serves
    candidates: int = Field(64, ge=1)             # per request: the retriever's top-K (per intent category)
    affinity_weight: float = Field(1.0, ge=0.0)   # re-rank: z(pool score) + w * z(query-item relevance)
    # -- bucketing (stable hashes of the simulator's `channels.bucket`)
    n_buckets: int = Field(100, ge=2)
    treated_share: float = Field(0.5, gt=0.0, lt=1.0)   # share of the buckets that are treated
    # item design: treated item buckets and their coupled user buckets form this many exclusive
    # groups (a user of group g is served only items of group g); 1 = one pooled treated market
    coupling_groups: int = Field(1, ge=1)
    # -- statistics
    bootstrap: int = Field(200, ge=10)            # resamples of the 95% percentile intervals
    seed: int = 0                                 # bootstrap seed


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"n_buckets": 10, "bootstrap": 50, "candidates": 16},
    "demo": {},
    "large": {"n_buckets": 1_000, "bootstrap": 500, "candidates": 256},
}
