"""Feast on hand-built feature tables: point-in-time joins, TTL, online == latest offline, Redis."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
import pandas as pd
import pytest

from features.store import (
    historical_features,
    item_features_at,
    load_definitions,
    materialize,
    online_features,
    open_store,
)
from foundation.config import load_settings
from foundation.lake import Lake
from foundation.sections.feast import FeatureStoreConfig

DAYS = [date(2026, 1, 1), date(2026, 1, 2)]
N = 5  # entities per table


def end_of(ds: date) -> datetime:
    return datetime.combine(ds, time(23, 59, 59, 999_999), tzinfo=UTC)


def snapshot(view, key: str, ds: date, day_index: int) -> pd.DataFrame:
    """One daily snapshot of a feature view: every feature = f(entity, day), so a value names its day."""
    ids = np.arange(N, dtype="int64")
    data: dict = {key: ids, "event_timestamp": [end_of(ds)] * N}
    for f in view.features:
        kind = str(f.dtype)
        if "Array" in kind:
            data[f.name] = [[float(i + day_index)] * 3 if "Float" in kind else [int(i), day_index] for i in ids]
        elif "String" in kind:
            data[f.name] = [f"s{i}-{day_index}" for i in ids]
        elif "Bool" in kind:
            data[f.name] = day_index == 0
        elif "Float" in kind:
            data[f.name] = ids * 10.0 + day_index + 0.5
        else:
            data[f.name] = ids * 10 + day_index
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def feast_settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("feast_lake")
    settings = load_settings("tiny", overrides={"lake_root": str(root)})
    lake = Lake.open(str(root))
    views = {o.name: o for o in load_definitions(lake, "duckdb") if hasattr(o, "ttl")}
    for i, ds in enumerate(DAYS):
        for table, key in (("user_features", "user_id"), ("item_features", "item_id"), ("query_features", "query_id")):
            lake.write_partition("features", table, ds, snapshot(views[table], key, ds, i))
    return settings


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def store_args(settings, cfg: FeatureStoreConfig | None = None) -> tuple:
    """(feast section, lake) of `settings`, with another feast section if given."""
    return cfg or settings.feast, Lake.open(settings.lake_root)


def test_point_in_time_join_sees_only_past_values_and_respects_ttl(feast_settings):
    store = open_store(*store_args(feast_settings))
    entity_df = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 1],
        "event_timestamp": [ts("2026-01-01 12:00"),                # before any snapshot -> missing
                            ts("2026-01-02 10:00"),                # sees day 0 (01-01 23:59:59.999999)
                            ts("2026-01-02 23:59:59.999998"),      # 1 us before the day-1 snapshot: day 0
                            ts("2026-01-03 10:00"),                # sees day 1
                            ts("2026-01-05 10:00")],               # day 1 snapshot is > 2 days (TTL) old -> missing
        "row": [0, 1, 2, 3, 4],
    })
    out = historical_features(store, entity_df, ["user_features:price_level_30d", "user_features:requests_7d"])
    out = out.sort_values("row").reset_index(drop=True)
    assert out["user_features__price_level_30d"].isna().tolist() == [True, False, False, False, True]
    assert out["user_features__price_level_30d"].tolist()[1:4] == [10.5, 10.5, 11.5]
    assert out["user_features__requests_7d"].tolist()[1:4] == [10, 10, 11]


def test_feature_service_training_rows_keep_their_own_time(feast_settings):
    store = open_store(*store_args(feast_settings))
    entity_df = pd.DataFrame({"user_id": [2, 2], "item_id": [3, 3], "query_id": [4, 4],
                              "event_timestamp": [ts("2026-01-02 08:00"), ts("2026-01-03 08:00")]})
    out = historical_features(store, entity_df, "itemltv_v1").sort_values("event_timestamp")
    assert out["item_features__price"].tolist() == [30.5, 31.5]           # item 3, day 0 then day 1
    assert out["query_features__ctr_30d"].tolist() == [40.5, 41.5]       # query 4
    assert out["item_features__ctr_30d"].tolist() == [30.5, 31.5]
    assert out["user_features__price_level_30d"].tolist() == [20.5, 21.5]


def test_item_features_at_one_time_are_point_in_time_per_item(feast_settings):
    out = item_features_at(*store_args(feast_settings), "itemltv_v1", [3, 1, 9], ts("2026-01-03 00:00")).to_pandas()
    assert out["item_id"].tolist() == [1, 3, 9]                               # sorted, one row per item
    assert out["item_features__price"].tolist()[:2] == [11.5, 31.5] and np.isnan(out["item_features__price"][2])
    assert all(c == "item_id" or c == "event_timestamp" or c.startswith("item_features__") for c in out.columns)


def _latest_offline(store, key: str, refs: list[str]) -> pd.DataFrame:
    entity_df = pd.DataFrame({key: np.arange(N), "event_timestamp": [end_of(DAYS[-1])] * N})
    return historical_features(store, entity_df, refs).sort_values(key).reset_index(drop=True)


def _check_online_equals_offline(settings, cfg):
    store = open_store(*store_args(settings, cfg))
    for ds in DAYS:
        materialize(*store_args(settings, cfg), ds)
    offline = _latest_offline(store, "item_id", ["item_features:price", "item_features:clicks_7d"])
    for item in range(N):
        online = online_features(*store_args(settings, cfg), "dr_v1", user_id=1, item_id=item, query_id=2)
        assert online["item_features__price"] == offline.loc[item, "item_features__price"] == item * 10 + 1.5
    online = online_features(*store_args(settings, cfg), "itemltv_v1", user_id=3, item_id=4, query_id=0)
    assert online["user_features__recent_item_ids"] == [3, 1]
    assert online["user_features__category_affinity"] == [4.0] * 3
    assert online["item_features__clicks_7d"] == offline.loc[4, "item_features__clicks_7d"] == 41


def test_online_equals_latest_offline_after_materialize_sqlite(feast_settings):
    _check_online_equals_offline(feast_settings, FeatureStoreConfig(online_store="sqlite"))


def test_online_equals_latest_offline_after_materialize_redis(feast_settings, redis_endpoint):
    _check_online_equals_offline(feast_settings, FeatureStoreConfig(online_store="redis", redis_connection=redis_endpoint))


def test_apply_runs_once_per_definitions_change(feast_settings):
    from features.store import feast_dir

    cfg = FeatureStoreConfig(online_store="sqlite")
    open_store(*store_args(feast_settings, cfg))
    stamp = feast_dir(Lake.open(feast_settings.lake_root)) / "applied.sha256"
    before = (stamp.stat().st_mtime_ns, stamp.read_text())
    open_store(*store_args(feast_settings, cfg))
    assert (stamp.stat().st_mtime_ns, stamp.read_text()) == before          # unchanged: no apply
    open_store(*store_args(feast_settings, FeatureStoreConfig(online_store="redis", redis_connection="127.0.0.1:1")))
    assert stamp.read_text() != before[1]                                    # another online store: re-applied


def test_cli_training_set_materialize_online(feast_settings, monkeypatch):
    from typer.testing import CliRunner

    from growthgr.cli import app

    lake = Lake.open(feast_settings.lake_root)
    samples = pd.DataFrame({
        "item_id": np.array([1, 1, 2], dtype="int64"), "user_id": np.array([0, 0, 3], dtype="int64"),
        "query_id": np.array([2, 2, 2], dtype="int64"), "request_id": np.array([7, 8, 9], dtype="int64"),
        "ts": [ts("2026-01-02 09:00"), ts("2026-01-03 09:00"), ts("2026-01-03 10:00")],
        "treatment": np.array([1, 0, 1], dtype="int32"), "label": [0.5, 0.5, 1.0]})
    lake.write_partition("samples", "itemltv_samples", "2026-01-03", samples)
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", feast_settings.lake_root)
    runner = CliRunner()
    out = runner.invoke(app, ["--profile", "tiny", "features", "training-set", "--service", "itemltv_v1",
                              "--ds", "2026-01-03"])
    assert out.exit_code == 0, out.output
    assert "samples/training_itemltv_v1/ds=2026-01-03: 3 rows" in out.output
    written = lake.read_partition("samples", "training_itemltv_v1", "2026-01-03").to_pandas()
    assert written["item_features__price"].tolist() == [10.5, 11.5, 21.5]   # day 0, then day 1 snapshots
    assert written["label"].tolist() == [0.5, 0.5, 1.0] and written["treatment"].tolist() == [1, 0, 1]
    assert runner.invoke(app, ["--profile", "tiny", "features", "materialize", "--ds", str(DAYS[1])]).exit_code == 0
    online = runner.invoke(app, ["--profile", "tiny", "features", "online", "--user", "3", "--item", "2",
                                 "--query-id", "4"])
    assert online.exit_code == 0, online.output
    assert "item_features__price: 21.5" in online.output and "query_features__ctr_30d: 41.5" in online.output


def test_frozen_heap_hides_live_objects_from_the_gc_only_inside():
    import gc

    from features.store import frozen_heap

    before = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == before
