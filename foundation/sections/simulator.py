"""Config section of the simulated platform (simulator).

Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides.
Every knob of the world is here, with its meaning; the equations that use them
are stated in `simulator.engine`'s docstring, and the README ("The simulated
platform") says which real platform practice each mechanism stands for. The null
world (clicks cause no growth) is `growth_kappa = 0`
(`GROWTHGR_SIMULATOR__GROWTH_KAPPA=0`).
"""

from typing import Any

from pydantic import Field

from foundation.strict import StrictModel


class SimulatorConfig(StrictModel):
    """The world's size and its structural parameters."""

    seed: int = 0
    start_date: str = "2026-01-01"               # first simulated day when the lake holds no state
    days: int = Field(60, ge=1)                  # default length of a `growthgr simulate` run
    # -- population
    n_users: int = Field(20_000, ge=10)          # initial users
    new_users_per_day: int = Field(20, ge=0)
    n_items: int = Field(40_000, ge=16)          # initial catalog (all older than the new-item period)
    new_items_per_day: int = Field(400, ge=1)
    taste_dim: int = Field(8, ge=2)              # dimension of tastes and niche positions
    niches_per_category: int = Field(8, ge=1)
    brands_per_category: int = Field(24, ge=1)
    niche_user_share: float = Field(0.3, ge=0.0, le=1.0)
    niche_item_share: float = Field(0.5, ge=0.0, le=1.0)
    mean_activity: float = Field(0.5, gt=0.0)    # searches per user per day (mean of a lognormal)
    # -- search engine
    n_candidates: int = Field(24, ge=2)          # rank candidates per request (organic)
    n_exposed: int = Field(10, ge=1)             # slots on the result page
    scroll_continue: float = Field(0.85, gt=0.0, lt=1.0)  # P(user looks at the next slot)
    position_decay: float = Field(0.7, ge=0.0)   # examination of a seen slot ~ (1 + position)^-decay
    pop_weight: float = Field(2.0, ge=0.0)       # ranker's popularity prior weight on log(1 + pop)
    pop_retrieval_weight: float = Field(1.0, ge=0.0)
    mass_cell_bits: int = Field(3, ge=0, le=8)   # the mass region of a category is split into 2^bits index cells
    retrieval_popular: int = Field(100, ge=1)    # most popular items of the category added to every query's cell
    # pop <- memory * pop + (1 - memory) * orders today: a ~30-day sales signal (mean age 1 / (1 - memory)
    # days), the "monthly sales" of e-commerce rankers; a ~10-day one (0.9) lets a new item that tops its
    # category snowball within its new-item period (thousands of clicks: the ranker's feedback, not demand)
    pop_memory: float = Field(0.97, ge=0.0, lt=1.0)
    ranker_noise: float = Field(0.3, ge=0.0)     # scale of the Gumbel noise of the ranker
    lookalike_weight: float = Field(0.5, ge=0.0)  # ranker weight of the growth state after day 29
    # -- users' responses
    base_ctr_logit: float = Field(-1.2)
    relevance_click_weight: float = Field(0.6, ge=0.0)
    base_cvr_logit: float = Field(-1.6)
    social_proof: float = Field(0.35, ge=0.0)    # conversion weight on log(1 + cumulative orders)
    price_sensitivity_mean: float = Field(0.8, ge=0.0)
    # -- demand after the new-item period and site-wide orders
    demand_intercept: float = Field(-2.5)        # log base demand (orders/day) of an average item
    new_item_site_share: float = Field(0.3, ge=0.0)  # site orders/day of a new item = share * base demand
    # -- the causal growth mechanism (see engine.growth_increment)
    growth_kappa: float = Field(0.3, ge=0.0)     # increment of a click at age 0 by a perfectly affine user
    growth_floor: float = Field(0.1, ge=0.0, le=1.0)  # share of the increment that needs no affinity
    growth_age_tau: float = Field(10.0, gt=0.0)  # increments decay as exp(-age / tau)
    growth_saturation: float = Field(20.0, gt=0.0)  # increments shrink as 1 / (1 + prior exposures / this)
    affinity_scale: float = Field(1.2, gt=0.0)   # affinity = exp(-|taste - niche|^2 / (2 scale^2))
    # -- the new-item slot: on a request bucket (a hash of the request id) one new item of the intent
    #    category is placed in `new_item_slot`; the buckets are disjoint
    new_item_share: float = Field(0.28, ge=0.0, le=1.0)  # relevance channel: softmax over new items
    new_item_temperature: float = Field(0.5, ge=0.05)   # of the softmax over the observable word score
    new_item_history_weight: float = Field(0.5, ge=0.0)  # score weight of the user's recent query words
    explore_share: float = Field(0.02, ge=0.0, le=1.0)   # uniform exploration bucket (propensity 1/N)
    new_item_slot: int = Field(3, ge=0)
    # -- the traffic-support experiment: new items randomised at listing (salted hash of the item id)
    support_share: float = Field(0.5, ge=0.0, le=1.0)    # share of new items in the support arm
    support_impressions: int = Field(10, ge=0)           # impressions guaranteed over ages 0..support_days-1
    support_days: int = Field(7, ge=1, le=30)
    support_slot: int = Field(1, ge=0)
    # -- faults and state
    fault_fraction: float = Field(0.05, gt=0.0, le=1.0)  # share of rows a fault touches (>= 1 row)
    state_keep_days: int = Field(7, ge=1)        # end-of-day states kept in the lake


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "days": 45,
        "n_users": 300,
        "new_users_per_day": 1,
        "n_items": 400,
        "new_items_per_day": 12,
        "niches_per_category": 3,
        "brands_per_category": 6,
        "mean_activity": 1.0,
        "n_candidates": 16,
        "n_exposed": 8,
    },
    "demo": {},
    # the demo world simulated long enough for ItemLTV to train on >= 100 closed cohorts
    # (165 days: cohorts of days 0..127 have their label window closed)
    "study": {"days": 165},
    "large": {
        "n_users": 200_000,
        "new_users_per_day": 200,
        "n_items": 400_000,
        "new_items_per_day": 4_000,
        "niches_per_category": 64,               # index cells grow with the catalog: cost ~ users x days
        "mass_cell_bits": 6,
        "brands_per_category": 96,
    },
}
