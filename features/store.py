"""The Feast feature store of GrowthGR: apply (once per change), point-in-time training sets,
daily materialisation, online reads. Definitions live in `feature_repo/definitions.py`.

    store = open_store(cfg, lake)                      # applies definitions if their hash changed
    df = training_set(cfg, lake, "itemltv_v1", ds)     # -> lake samples/training_itemltv_v1/ds=...
    materialize(cfg, lake, ds)                         # the data interval [ds, ds+1) -> online store
    item_features_at(cfg, lake, "itemltv_v1", ids, at)  # the items' features as of one time
    online_features(cfg, lake, "itemltv_v1", user_id=1, item_id=2, query_id=3)

Every function takes the `settings.feast` section (`FeatureStoreConfig`), the `Lake` and, where
the Spark offline store may be used, the Spark master URL (`settings.spark.master`).

Environments (`FeatureStoreConfig.environment`): `local` = `feature_repo/feature_store.yaml`
(DuckDB over the lake's committed Parquet, local or `s3://`; SQLite online store and registry file
under `<state>/feast/`, where `<state>` = `Lake.state_dir`, the root of a local lake), `cluster`
= `feature_store.cluster.yaml` (Spark offline store, Redis online store). `online_store: redis`
swaps only the online store (the Redis test uses it). Every Feast writer (apply, materialize) holds
`<state>/feast/.writer.lock`: the file registry and the SQLite store are single-writer.
Timestamps handed to Feast are microsecond UTC (nanosecond ones break DuckDB 2.x materialise).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import logging
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml
from filelock import FileLock

from foundation import catalog
from foundation.lake import Lake
from foundation.sections.feast import FeatureStoreConfig

log = logging.getLogger(__name__)
REPO_DIR = Path(__file__).resolve().parents[1] / "feature_repo"
YAML_FILES = {"local": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}
LAKE_OFFLINE = "features.offline_store.LakeOfflineStore"   # the type name; the module loads Feast


# -- configuration -----------------------------------------------------------------------------------
def feast_dir(lake: Lake) -> Path:
    """`<state>/feast` (`Lake.state_dir`: the lake root of a local lake, a local directory for an
    `s3://` lake): registry, SQLite online store, apply hash and writer lock."""
    path = lake.state_dir / "feast"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lake_root(lake: Lake) -> str:
    """The root the feature views' sources name: the `s3://` URI, or the resolved local path."""
    uri = lake.store.uri
    return uri if "://" in uri else str(Path(uri).resolve())


def repo_config_dict(cfg: FeatureStoreConfig, lake: Lake, spark_master: str = "local[*]") -> dict[str, Any]:
    """The environment's feature_store.yaml with `${...}` filled in; for an `s3://` lake the lake
    offline store also gets the endpoint and region it reads the files with (no credentials)."""
    text = (REPO_DIR / YAML_FILES[cfg.environment]).read_text()
    values = {"LAKE_ROOT": lake_root(lake), "FEAST_DIR": str(feast_dir(lake)),
              "REDIS_CONNECTION": cfg.redis_connection, "SPARK_MASTER": spark_master}
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    data = yaml.safe_load(text)
    if data["offline_store"]["type"] == LAKE_OFFLINE and lake.store.uri.startswith("s3://"):
        data["offline_store"].update(s3_endpoint_url=lake.store.files.endpoint_url, s3_region=lake.store.files.region)
    if cfg.online_store == "redis":
        data["online_store"] = {"type": "redis", "connection_string": cfg.redis_connection}
    elif cfg.online_store == "sqlite":
        data["online_store"] = {"type": "sqlite", "path": str(feast_dir(lake) / "online.db")}
    return data


def load_definitions(lake: Lake, offline: str) -> list:
    """Build the objects of `feature_repo/definitions.py` for this lake root."""
    spec = importlib.util.spec_from_file_location("growthgr_feature_repo", REPO_DIR / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(lake_root(lake), offline)


def definitions_hash(config: dict[str, Any]) -> str:
    """Hash of the definitions file and the effective config: apply again only when it changes."""
    blob = (REPO_DIR / "definitions.py").read_bytes() + yaml.safe_dump(config, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


@contextmanager
def writer_lock(lake: Lake, timeout: float = 600):
    """Serialise Feast writers of one lake (registry file and SQLite are single-writer)."""
    with FileLock(str(feast_dir(lake) / ".writer.lock"), timeout=timeout):
        yield


def open_store(cfg: FeatureStoreConfig, lake: Lake, spark_master: str = "local[*]"):
    """A FeatureStore over `lake`, applying the definitions first if they changed since last apply."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    data = repo_config_dict(cfg, lake, spark_master)
    store = FeatureStore(config=RepoConfig(repo_path=REPO_DIR, **data))
    # One stamp per registry: switching environment or online store changes the hash and re-applies.
    stamp = feast_dir(lake) / "applied.sha256"
    digest = definitions_hash(data)
    if not stamp.exists() or stamp.read_text() != digest:
        with writer_lock(lake):
            objects = load_definitions(lake, data["offline_store"]["type"])
            store.apply(objects)
            stamp.write_text(digest)
            log.info("feast apply: %d objects (definitions hash %s)", len(objects), digest[:12])
    return store


# -- training sets -----------------------------------------------------------------------------------
def utc_us(values: pd.Series) -> pd.Series:
    """Timestamps as microsecond UTC (naive ones are taken as UTC)."""
    ts = pd.to_datetime(values)
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    return ts.astype("datetime64[us, UTC]")


def entity_frame(lake: Lake, service: str, ds: date) -> pd.DataFrame:
    """The rows a training set is built for, with `event_timestamp` = the event's own time.

    itemltv_v1: one row per ItemLTV sample (an exposure of a cohort item, label and treatment kept);
    multigr_v1: one row per search request; dr_v1: one row per exposed (request, item) pair.
    """
    if service == "itemltv_v1":
        df = lake.read_partition(*catalog.ITEMLTV_SAMPLES, ds).to_pandas()
    else:
        cols = ["request_id", "user_id", "query_id", "ts"] + (["exposure_ids"] if service == "dr_v1" else [])
        df = lake.read_partition(*catalog.GR_SAMPLES, ds, columns=cols).to_pandas()
        if service == "dr_v1":
            df = df.explode("exposure_ids").dropna(subset=["exposure_ids"]).rename(columns={"exposure_ids": "item_id"})
            df["item_id"] = df["item_id"].astype("int64")
    df = df.rename(columns={"ts": "event_timestamp"})
    df["event_timestamp"] = utc_us(df["event_timestamp"])
    return df.reset_index(drop=True)


def historical_features(store, entity_df: pd.DataFrame, features: str | list[str], arrow: bool = False):
    """Point-in-time join: each row gets the latest feature values at or before its own
    `event_timestamp` and not older than the view's TTL (missing otherwise). `features` is a
    feature service name or a list of `view:feature` references. Columns are named
    `<view>__<feature>` (user, item and query views share feature names such as `ctr_30d`).
    A pandas frame, or with `arrow` a pyarrow Table (integer features stay integers with nulls)."""
    refs = store.get_feature_service(features) if isinstance(features, str) else features
    entity_df = entity_df.assign(event_timestamp=utc_us(entity_df["event_timestamp"]))
    try:
        job = store.get_historical_features(entity_df=entity_df, features=refs, full_feature_names=True)
        return job.to_arrow() if arrow else job.to_df()
    finally:
        release_duckdb()


def service_refs(store, service: str, views: set[str] | None = None) -> list[str]:
    """`view:feature` references of a feature service, optionally only those of `views`."""
    return [f"{p.name}:{f.name}" for p in store.get_feature_service(service).feature_view_projections
            if views is None or p.name in views for f in p.features]


def training_set(cfg: FeatureStoreConfig, lake: Lake, service: str, ds: date, spark_master: str = "local[*]") -> pa.Table:
    """Build and write `samples/training_<service>/ds=<ds>` (entity rows + their PIT features),
    with the column types Feast declares (so partitions concatenate)."""
    store = open_store(cfg, lake, spark_master)
    out = historical_features(store, entity_frame(lake, service, ds), service, arrow=True)
    keys = [(c, "ascending") for c in ("event_timestamp", "request_id", "item_id") if c in out.column_names]
    out = out.sort_by(keys)
    lake.write_partition(*catalog.training_set(service), ds, out)
    log.info("training set %s ds=%s: %d rows, %d columns", service, ds, out.num_rows, out.num_columns)
    return out


def item_features_at(cfg: FeatureStoreConfig, lake: Lake, service: str, item_ids, at: datetime,
                     spark_master: str = "local[*]") -> pa.Table:
    """The item-view features of `service` for each of `item_ids` as of `at` (point in time, one
    row per item: `item_id`, `event_timestamp` = `at`, `item_features__<feature>`), sorted by item."""
    store = open_store(cfg, lake, spark_master)
    entities = pd.DataFrame({"item_id": pd.Series(item_ids, dtype="int64"), "event_timestamp": pd.Timestamp(at)})
    refs = service_refs(store, service, {"item_features"})
    return historical_features(store, entities, refs, arrow=True).sort_by("item_id")


# -- online ------------------------------------------------------------------------------------------
def release_duckdb() -> None:
    """Close the in-memory DuckDB connection Feast's offline store opens through ibis (its default
    backend), so a process does not end with DuckDB objects alive (DuckDB 2 then prints a
    nanobind leak dump at exit). The next query opens a fresh one."""
    import sys

    ibis = sys.modules.get("ibis")
    backend = ibis and ibis.options.default_backend
    if backend is not None:
        backend.disconnect()
        ibis.options.default_backend = None


@contextmanager
def frozen_heap():
    """Keep the objects alive now out of the cyclic GC while the body allocates millions of small
    ones (Feast builds a proto per feature value): in a long-lived process such as an Airflow
    worker running the whole DAG, the collector otherwise rescans that heap over and over
    (a demo day's materialise: 50 s -> 38 s)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def materialize(cfg: FeatureStoreConfig, lake: Lake, ds: date, spark_master: str = "local[*]") -> None:
    """Load the feature rows of the data interval [ds 00:00, ds+1 00:00) UTC into the online store."""
    start = datetime.combine(ds, time(), tzinfo=UTC)
    store = open_store(cfg, lake, spark_master)
    with writer_lock(lake), frozen_heap():
        try:
            store.materialize(start_date=start, end_date=start + timedelta(days=1))
        finally:
            release_duckdb()


def online_features(cfg: FeatureStoreConfig, lake: Lake, service: str, spark_master: str = "local[*]",
                    **entities: int | None) -> dict:
    """Online feature values of one entity row (`user_id`, `item_id`, `query_id` as the service
    needs), keyed `<view>__<feature>` like the training sets."""
    store = open_store(cfg, lake, spark_master)
    features = store.get_feature_service(service)
    needed = {key for p in features.feature_view_projections
              for key in store.get_feature_view(p.name).join_keys}
    row = {k: int(v) for k, v in entities.items() if k in needed and v is not None}
    return {k: v[0] for k, v in store.get_online_features(features=features, entity_rows=[row],
                                                                  full_feature_names=True).to_dict().items()}
