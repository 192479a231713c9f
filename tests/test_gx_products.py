"""GX suites of the derived datasets (labels, samples, features, pool, SIDs) on hand-built
partitions that follow the producers' documented schemas exactly (`suites.DERIVED_SCHEMAS`; the
columns a case does not care about get plausible values): clean passes, each defect is named."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from expectations import frames, suites
from expectations.gate import validate as validate_gate
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds


def validate(settings, dataset: str, ds: str, **kwargs):
    """The gate as the application calls it: the effective gates section and the lake of `settings`."""
    return validate_gate(settings.gates_config(), Lake.from_settings(settings), dataset, parse_ds(ds), **kwargs)

DS = "2026-02-06"                 # label window of the cohort listed on DS - 36 = 2026-01-01 closes on DS
COHORT = date(2026, 1, 1)
END_OF_DS = datetime(2026, 2, 6, 23, 59, 59, 999_999, tzinfo=UTC)


def items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": np.arange(1, 7, dtype="int64"),
                         "listing_date": [COHORT] * 5 + [COHORT - timedelta(days=1)]})


LATER = date(2026, 1, 20)   # the other items (ids 0, 7..19) the pool and SIDs refer to, the users, the requests
RAW_LATER = {"items": pd.DataFrame({"item_id": np.array([0, *range(7, 20)], dtype="int64"), "listing_date": LATER}),
             "users": pd.DataFrame({"user_id": np.arange(40, dtype="int64")}),
             "search_requests": pd.DataFrame({"request_id": np.arange(4, dtype="int64")})}
_DEFAULTS = {pa.int64(): 0, pa.int32(): 0, pa.float64(): 0.0, pa.string(): "x", pa.date32(): LATER,
             pa.timestamp("us", tz="UTC"): END_OF_DS, pa.bool_(): False}


def conform(zone: str, table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` plus every other column of the table's documented schema, in order and exactly typed."""
    schema = suites.DERIVED_SCHEMAS[(zone, table)]
    for f in schema:
        if f.name not in frame.columns:
            frame[f.name] = [[] if pa.types.is_list(f.type) else _DEFAULTS[f.type]] * len(frame)
    return frames.to_frame(pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False))


def labels() -> pd.DataFrame:
    label = np.array([0.0, 0.5, 1.0, 0.0, 2.0])
    return conform("samples", "itemltv_labels", pd.DataFrame({
        "item_id": np.arange(1, 6, dtype="int64"), "listing_date": [COHORT] * 5, "label": label,
        "y": np.log1p(label), "label_window_start": date(2026, 1, 31), "label_window_end": date(2026, 2, 6)}))


def samples() -> pd.DataFrame:
    age = np.array([0, 3, 10, 29])
    return conform("samples", "itemltv_samples", pd.DataFrame({
        "item_id": np.array([1, 2, 3, 4], dtype="int64"), "listing_date": [COHORT] * 4,
        "request_id": np.arange(4, dtype="int64"), "user_id": np.arange(4, dtype="int64"),
        "query_text": ["red shoe"] * 4,
        "ts": [datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=int(a)) for a in age],
        "item_age_days": age.astype("int32"), "treatment": np.array([1, 0, 1, 0], dtype="int32")}))


def user_features() -> pd.DataFrame:
    return conform("features", "user_features", pd.DataFrame({
        "user_id": np.arange(40, dtype="int64"), "event_timestamp": [END_OF_DS] * 40,
        "price_level_30d": np.linspace(0, 3, 40), "region": ["region_0", "region_7"] * 20,
        "age_band": ["18-24", "55+"] * 20, "active_days_30d": np.arange(40, dtype="int64") % 31,
        "category_affinity": [[1.0 / 16] * 16] * 40, "recent_item_ids": [[1, 2]] * 40}))


def pool() -> pd.DataFrame:
    return conform("curated", "new_item_pool", pd.DataFrame({
        "ds": DS, "item_id": np.arange(10, dtype="int64"), "score": np.linspace(1, 0, 10),
        "rank": np.arange(10, dtype="int32"),
        "listing_date": [date(2026, 2, 6) - timedelta(days=i * 3) for i in range(10)]}))


def sids() -> pd.DataFrame:
    n = 20
    return conform("curated", "item_sids", pd.DataFrame({
        "item_id": np.arange(n, dtype="int64"), "sid_version": ["v1"] * n,
        "c1": np.arange(n, dtype="int32") % 4, "c2": np.arange(n, dtype="int32") // 4,
        "c3": np.arange(n, dtype="int32") % 3, "c4": pd.array([None] * n, dtype="Int32")}))   # "shared" mode


TABLES = {"itemltv_labels": ("samples", labels), "itemltv_samples": ("samples", samples),
          "user_features": ("features", user_features), "new_item_pool": ("curated", pool),
          "item_sids": ("curated", sids)}


@pytest.fixture
def lake_root(tmp_path):
    lake = Lake.open(str(tmp_path))
    lake.write_partition("raw", "items", "2026-01-01", pa.Table.from_pandas(items(), preserve_index=False))
    lake.write_many("raw", LATER.isoformat(), RAW_LATER)
    for table, (zone, make) in TABLES.items():
        lake.write_partition(zone, table, DS, make())
    return tmp_path


def run(root, dataset: str):
    return validate(load_settings("tiny", overrides={"lake_root": str(root)}), dataset, DS, build_docs=False)


@pytest.mark.parametrize("dataset", ["labels", "user_features", "pool", "sids"])
def test_clean_products_pass(lake_root, dataset):
    result = run(lake_root, dataset)
    assert result.passed, result.summary()
    assert result.n_expectations >= 5


def _negative_label(df):
    df.loc[0, "label"] = -1.0
    return df


def _stale_features(df):
    df["event_timestamp"] = END_OF_DS - timedelta(days=2)
    return df


def _sparse_feature(df):
    df.loc[::2, "price_level_30d"] = np.nan
    return df


def _old_item_in_pool(df):
    df.loc[3, "listing_date"] = date(2025, 12, 1)
    return df


def _nan_score(df):
    df.loc[2, "score"] = np.nan
    return df


def _code_out_of_range(df):
    df.loc[0, "c2"] = 300
    return df


def _all_same_sid(df):
    df[["c1", "c2", "c3"]] = 0
    return df


def _wrapped_c4(df):
    df["c4"] = np.zeros(len(df), dtype="int32")     # a disambiguation token that does not disambiguate
    df[["c1", "c2", "c3"]] = 0
    return df


def _late_sample(df):
    df.loc[0, "ts"] = datetime(2026, 2, 1, tzinfo=UTC)
    return df


CASES = [
    ("itemltv_labels", _negative_label, "labels", "label", "label_non_negative"),
    ("itemltv_labels", lambda df: df.iloc[:4], "labels", "item_id", "cohort_complete"),
    ("itemltv_labels", lambda df: pd.concat([df, df.iloc[:1]]), "labels", "item_id,listing_date", "unique_key"),
    ("itemltv_samples", _late_sample, "labels", "ts", "event_in_new_item_period"),
    ("user_features", _stale_features, "features", "event_timestamp", "freshness"),
    ("user_features", _sparse_feature, "user_features", "price_level_30d", "null_rate"),
    ("user_features", lambda df: df.assign(region="region_8"), "features", "region", "region_values"),
    ("user_features", lambda df: df.assign(age_band="17-"), "features", "age_band", "age_band_values"),
    ("user_features", lambda df: df.assign(active_days_30d=31), "features", "active_days_30d", "active_days_range"),
    ("new_item_pool", _old_item_in_pool, "pool", "listing_date", "only_new_items"),
    ("new_item_pool", _nan_score, "pool", "score", "finite"),
    ("new_item_pool", lambda df: pd.concat([df, df.iloc[:1]]), "pool", "item_id", "unique_key"),
    ("new_item_pool", lambda df: pd.concat([df] * 3, ignore_index=True), "pool", "*", "pool_size"),
    ("item_sids", _code_out_of_range, "sids", "c2", "code_in_range"),
    ("item_sids", lambda df: df.assign(c4=np.int32(16)), "sids", "c4", "code_in_range"),
    ("item_sids", _all_same_sid, "sids", "c1,c2,c3", "sid_collision_rate"),
    ("item_sids", lambda df: pd.concat([df, df.iloc[:1]]), "sids", "item_id", "unique_key"),
    ("item_sids", _wrapped_c4, "sids", "c1,c2,c3,c4", "sid_unique"),
    # bad inputs: no rows, schema drift of optional columns, text, non-finite, unknown ids, other days
    *[(t, lambda df: df.iloc[:0], t, "*", "row_count") for t in TABLES],
    ("itemltv_labels", lambda df: df.assign(extra=1), "labels", "*", "exact_schema"),
    ("itemltv_labels", lambda df: df.rename(columns={"y": "log_label"}), "labels", "*", "exact_schema"),
    ("itemltv_labels", lambda df: df.assign(y=df["y"].astype("float32")), "labels", "y", "exact_schema"),
    ("itemltv_samples", lambda df: df.assign(position=df["position"].astype("int64")), "labels", "position",
     "exact_schema"),
    ("user_features", lambda df: df.assign(tenure_days=df["tenure_days"].astype(float)), "features", "tenure_days",
     "exact_schema"),
    ("item_sids", lambda df: df.assign(c4=df["c4"].astype("Int64")), "sids", "c4", "exact_schema"),
    ("new_item_pool", lambda df: df.drop(columns=["ds"]), "pool", "*", "exact_schema"),
    ("itemltv_samples", lambda df: df.assign(query_text="red\tshoe"), "labels", "query_text", "text_control_chars"),
    ("user_features", lambda df: df.assign(region="m" * 101), "features", "region", "text_length"),
    ("itemltv_labels", lambda df: df.assign(label=np.inf), "labels", "label", "finite"),
    ("user_features", lambda df: df.assign(price_level_30d=-np.inf), "features", "price_level_30d", "finite"),
    ("new_item_pool", lambda df: df.assign(item_id=df["item_id"] + 1000), "pool", "item_id", "ref_items"),
    ("item_sids", lambda df: df.assign(item_id=df["item_id"] + 1000), "sids", "item_id", "ref_items"),
    ("user_features", lambda df: df.assign(user_id=df["user_id"] + 1000), "features", "user_id", "ref_users"),
    ("itemltv_samples", lambda df: df.assign(request_id=df["request_id"] + 1000), "labels", "request_id",
     "ref_search_requests"),
    ("new_item_pool", lambda df: df.assign(ds="2026-02-05"), "pool", "ds", "event_date_matches_partition"),
    ("itemltv_labels", lambda df: df.assign(label_window_end=date(2026, 2, 5)), "labels", "label_window_end",
     "event_date_matches_partition"),
]


@pytest.mark.parametrize(("table", "defect", "dataset", "column", "rule"), CASES,
                         ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_each_defect_is_named(lake_root, table, defect, dataset, column, rule):
    zone, make = TABLES[table]
    Lake.open(str(lake_root)).write_partition(zone, table, DS, defect(make()))
    result = run(lake_root, dataset)
    assert not result.passed
    failed = {(f.table, f.partition, f.column, f.rule) for f in result.failures}
    assert (f"{zone}.{table}", f"ds={DS}", column, rule) in failed, result.summary()


def test_missing_feature_partitions_fail_clearly(lake_root):
    result = run(lake_root, "features")
    lines = result.summary().splitlines()
    assert "FAIL features.item_features [ds=2026-02-06] column=* rule=partition_exists: no committed partition" in lines
    assert "FAIL features.query_features [ds=2026-02-06] column=* rule=partition_exists: no committed partition" in lines


@pytest.mark.parametrize("table", list(TABLES))
def test_unreadable_partition_is_named(lake_root, table):
    zone = TABLES[table][0]
    lake = Lake.open(str(lake_root))
    key = f"{zone}/{table}/ds={DS}/{lake.commit_info(zone, table, DS).files[0]}"
    lake.store.put_bytes(key, lake.store.get_bytes(key)[:64])                     # truncated
    result = run(lake_root, table)
    assert [(f.table, f.partition, f.column, f.rule) for f in result.failures] == [
        (f"{zone}.{table}", f"ds={DS}", "*", "readable")], result.summary()
    assert f"cannot read {zone}/{table}/ds={DS}" in result.summary()
