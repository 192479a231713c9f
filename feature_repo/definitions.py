"""Feast definitions of GrowthGR: entities, feature views over the Spark feature tables, and
one versioned feature service per model.

The feature tables are the lake partitions written by `spark_jobs.features` (columns documented
there): `<lake>/features/<table>/ds=YYYY-MM-DD/`, one snapshot per entity and day with
`event_timestamp` = the last microsecond of `ds` (UTC). A source's path names the lake table,
`<lake>/features/<table>`: the offline store `features.offline_store.LakeOfflineStore`
(feature_store.yaml) reads it as the table's committed files (`Lake.committed_files`), never a
glob, so uncommitted writes and stray copies of a partition are not seen.

The lake root comes from `GROWTHGR_LAKE_ROOT` (default `lake`), so `feast apply` inside this
folder and `features.store` (which calls `build(lake_root)`) see the same objects.
Changing this file changes its hash, and the next `growthgr features ...` re-applies it once.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Array, Bool, Float64, Int64, String

# A daily snapshot stays valid for one more day (a request on ds+1 joins the ds snapshot) plus slack.
FEATURE_TTL = timedelta(days=2)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A searching user.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="A catalog item.")
query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.INT64,
               description="A query text, by its stable 60-bit hash (foundation.catalog.query_id).")

# Declared profile fields and behaviour only: the simulator's latent user parameters live in the
# truth zone, which no feature reads.
USER_FIELDS = [
    Field(name="region", dtype=String), Field(name="age_band", dtype=String),
    Field(name="tenure_days", dtype=Int64), Field(name="requests_1d", dtype=Int64),
    Field(name="requests_7d", dtype=Int64), Field(name="requests_30d", dtype=Int64),
    Field(name="active_days_30d", dtype=Int64), Field(name="clicks_7d", dtype=Int64), Field(name="clicks_30d", dtype=Int64),
    Field(name="orders_30d", dtype=Int64), Field(name="category_affinity", dtype=Array(Float64)),
    Field(name="price_level_30d", dtype=Float64), Field(name="recent_item_ids", dtype=Array(Int64)),
]
ITEM_FIELDS = [
    Field(name="category_id", dtype=Int64), Field(name="brand", dtype=String), Field(name="price", dtype=Float64),
    Field(name="age_days", dtype=Int64), Field(name="is_new", dtype=Bool),
    *[Field(name=f"{m}_{w}d", dtype=Int64) for w in (1, 7, 30) for m in ("exposures", "clicks", "orders")],
    *[Field(name=f"{m}_{w}d", dtype=Float64) for w in (1, 7, 30) for m in ("gmv", "ctr", "cvr")],
]
QUERY_FIELDS = [
    Field(name="intent_category_id", dtype=Int64), Field(name="requests_1d", dtype=Int64),
    Field(name="requests_7d", dtype=Int64), Field(name="requests_30d", dtype=Int64),
    Field(name="exposures_30d", dtype=Int64), Field(name="clicks_30d", dtype=Int64),
    Field(name="orders_30d", dtype=Int64), Field(name="ctr_30d", dtype=Float64), Field(name="cvr_30d", dtype=Float64),
    Field(name="new_item_exposure_share_30d", dtype=Float64),
]


def source(lake_root: str, table: str, offline: str = "duckdb") -> FileSource | SparkSource:
    """The committed Parquet files of every `ds` partition of `features/<table>`: a `FileSource`
    naming the lake table for the lake offline store (local), a `SparkSource` for the Spark one.

    The Spark offline store (cluster, not exercised here) can only take a glob: it matches every
    `ds=YYYY-MM-DD` folder but also the `_w*` folders of uncommitted writes, so a cluster
    deployment needs the same lake-resolving reader before it is trusted with training sets."""
    root = lake_root if "://" in lake_root else str(Path(lake_root).resolve())
    if offline == "spark":
        root = root.replace("s3://", "s3a://", 1)
        return SparkSource(name=f"{table}_source", path=f"{root}/features/{table}/ds=????-??-??/_w*/*.parquet",
                           file_format="parquet", timestamp_field="event_timestamp")
    return FileSource(name=f"{table}_source", path=f"{root}/features/{table}", timestamp_field="event_timestamp")


def build(lake_root: str, offline: str = "duckdb") -> list:
    """Every Feast object of the project, with sources under `lake_root` for the `offline` store type."""
    views = {
        "user_features": FeatureView(name="user_features", entities=[user], ttl=FEATURE_TTL, schema=USER_FIELDS,
                                     source=source(lake_root, "user_features", offline), online=True),
        "item_features": FeatureView(name="item_features", entities=[item], ttl=FEATURE_TTL, schema=ITEM_FIELDS,
                                     source=source(lake_root, "item_features", offline), online=True),
        "query_features": FeatureView(name="query_features", entities=[query], ttl=FEATURE_TTL,
                                      schema=QUERY_FIELDS, source=source(lake_root, "query_features", offline), online=True),
    }
    u, i, q = views["user_features"], views["item_features"], views["query_features"]
    services = [
        # ItemLTV: item tower (static + rolling item stats), uplift tower (user and query context).
        FeatureService(name="itemltv_v1", features=[
            i, u[["category_affinity", "price_level_30d", "recent_item_ids", "requests_30d", "clicks_30d",
                  "orders_30d", "active_days_30d", "age_band"]],
            q[["intent_category_id", "requests_30d", "ctr_30d", "cvr_30d"]]],
            description="ItemLTV v1: item, user and query features at the exposure time."),
        # MultiGR: user/query feature tokens (the history SIDs come from gr_samples).
        FeatureService(name="multigr_v1", features=[
            u[["region", "age_band", "category_affinity", "requests_30d", "active_days_30d"]],
            q[["intent_category_id", "requests_30d", "ctr_30d", "new_item_exposure_share_30d"]]],
            description="MultiGR v1: user and query context tokens."),
        # Dense retriever: user-query tower and item tower.
        FeatureService(name="dr_v1", features=[
            u[["requests_30d", "category_affinity", "price_level_30d", "active_days_30d"]],
            q[["intent_category_id", "ctr_30d", "cvr_30d"]],
            i[["category_id", "price", "age_days", "ctr_7d", "cvr_7d", "orders_30d"]]],
            description="DR v1: user-query tower and item tower features."),
    ]
    return [user, item, query, *views.values(), *services]


# Module-level objects, so `feast apply` / `feast plan` run inside this folder find them.
_, _, _, user_features, item_features, query_features, itemltv_v1, multigr_v1, dr_v1 = build(
    os.environ.get("GROWTHGR_LAKE_ROOT", "lake"), os.environ.get("GROWTHGR_FEAST_OFFLINE", "duckdb"))
