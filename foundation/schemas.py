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
        ("channel", pa.string()),        # retrieval channel that proposed it
    ]),
    "exposures": pa.schema([
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("position", pa.int32()),        # 0 = top slot
        ("ts", TS),
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
    # One row per item, written on its listing day.
    "item_outcomes": pa.schema([
        ("item_id", pa.int64()),
        ("listing_date", pa.date32()),
        ("y0", pa.float64()),            # expected log(1 + mean daily orders, days 30..36) with no click
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
    ]),
}

RAW_TABLES: tuple[str, ...] = tuple(RAW_SCHEMAS)
