"""Schemas of the raw tables the platform (simulated or real) emits: the contract
between the simulator, the Spark jobs and the GX raw suites.

Every raw table is partitioned by `ds` (the UTC calendar day of its events;
`items` and `users` by the day the row first appears). Ids are int64,
timestamps microsecond UTC. A `request_id` is unique across all days.

Raw tables hold only what a real platform logs (ids, declared profile fields,
texts, prices, events); every latent parameter of the simulator is in the
`truth` zone (TRUTH_SCHEMAS), which training code never reads.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# Declared profile fields of raw/users (what a user states at signup; coarse, not the latent traits).
REGIONS: tuple[str, ...] = tuple(f"region_{r}" for r in range(8))
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")

# Retrieval channels of the platform: "main" (the organic ranking: deterministic retrieval,
# propensity 1), "new_item" (relevance softmax over new items), "explore" (uniform over new items,
# propensity 1/N), "support" (the traffic-support programme's paced impressions).
CHANNELS: tuple[str, ...] = ("main", "new_item", "explore", "support")
EXPERIMENT_ARMS: dict[str, tuple[str, ...]] = {"traffic_support": ("control", "support")}

RAW_SCHEMAS: dict[str, pa.Schema] = {
    # Catalog rows, written on the day the item is listed (the first simulated
    # day also carries the initial catalog, with listing dates before it).
    "items": pa.schema([
        ("item_id", pa.int64()),
        ("listing_date", pa.date32()),   # day 0 of the item's life
        ("listed_at", TS),
        ("title", pa.string()),          # words carry category, brand, attributes
        ("category_id", pa.int32()),     # 0..15
        ("category", pa.string()),
        ("brand", pa.string()),
        ("attributes", pa.string()),     # comma-separated attribute words
        ("price", pa.float64()),
    ]),
    "users": pa.schema([
        ("user_id", pa.int64()),
        ("signup_date", pa.date32()),
        ("region", pa.string()),         # declared, one of REGIONS
        ("age_band", pa.string()),       # declared, one of AGE_BANDS
    ]),
    "search_requests": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("ts", TS),
        ("query_text", pa.string()),
        ("intent_category_id", pa.int32()),
    ]),
    # What the platform's ranking stage scored for the request (superset of exposures).
    "rank_candidates": pa.schema([
        ("request_id", pa.int64()),
        ("item_id", pa.int64()),
        ("rank", pa.int32()),            # 0 = best
        ("score", pa.float64()),
        ("channel", pa.string()),        # retrieval channel that placed it (CHANNELS, or a plug-in's name)
        ("propensity", pa.float64()),    # P(this item | request, channel serves it) under the channel's policy
    ]),
    "exposures": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("position", pa.int32()),        # 0 = top slot
        ("ts", TS),
        ("channel", pa.string()),        # as in rank_candidates
        ("propensity", pa.float64()),
    ]),
    "clicks": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("position", pa.int32()),
        ("ts", TS),
    ]),
    "purchases": pa.schema([
        ("order_id", pa.int64()),
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("ts", TS),
        ("price", pa.float64()),
        ("quantity", pa.int32()),
        ("gmv", pa.float64()),
    ]),
    # Purchases outside search ("all-net"), linked to the user's most relevant recent query.
    "site_orders": pa.schema([
        ("order_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("ts", TS),
        ("price", pa.float64()),
        ("quantity", pa.int32()),
        ("gmv", pa.float64()),
        ("linked_request_id", pa.int64()),  # null when the user has no recent query
        ("link_score", pa.float64()),
    ]),
    # Randomised experiments on new items: one row per (item, experiment), written on the day the
    # item is assigned (its listing day). The traffic-support programme assigns each new item to an
    # arm by a salted hash of its id (EXPERIMENT_ARMS).
    "item_experiments": pa.schema([
        ("item_id", pa.int64()),
        ("experiment", pa.string()),     # one of EXPERIMENT_ARMS
        ("arm", pa.string()),            # one of EXPERIMENT_ARMS[experiment]
        ("assigned_date", pa.date32()),
    ]),
}

# Ground truth (zone "truth"): never read by training code.
TRUTH_SCHEMAS: dict[str, pa.Schema] = {
    # One row per exposure of an item in its new-item period (age 0..29).
    "click_effects": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("ts", TS),
        ("item_age_days", pa.int32()),
        ("clicked", pa.bool_()),
        ("true_uplift", pa.float64()),   # effect of a click on log(1 + mean daily orders, days 30..36)
    ]),
    # The latent query position of each request.
    "requests": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("ts", TS),
        ("query_offset", pa.list_(pa.float32())),
    ]),
    # One row per item, written on the day its raw/items row first appears: its latent traits and
    # its outcome with no click.
    "item_outcomes": pa.schema([
        ("item_id", pa.int64()),
        ("listing_date", pa.date32()),
        ("y0", pa.float64()),            # expected log(1 + mean daily orders, days 30..36) with no click
        ("category_id", pa.int32()),
        ("quality", pa.float64()),
        ("offset", pa.list_(pa.float32())),   # position inside the category (taste space)
    ]),
    # The latent parameters of each user, written on the day the user's raw/users row first appears.
    "users": pa.schema([
        ("user_id", pa.int64()),
        ("signup_date", pa.date32()),
        ("segment", pa.string()),        # "niche" | "mass"
        ("home_category_id", pa.int32()),
        ("niche_id", pa.int32()),        # niche within the home category; -1 for mass users
        ("activity", pa.float64()),      # expected searches per day
        ("price_sensitivity", pa.float64()),
        ("taste", pa.list_(pa.float32())),     # taste inside the home category (taste space)
    ]),
}

RAW_TABLES: tuple[str, ...] = tuple(RAW_SCHEMAS)
