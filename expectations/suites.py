"""GX suites, defined in code, one per table: what each dataset must satisfy.

A suite here is a `TableCheck`: the partition read into pandas (plus `_check_*` columns computed by
`expectations.frames` for the cross-table rules) and the list of GX expectations to run on it.
Every expectation carries `meta = {"rule": ..., "column": ...}` so a failure summary can name
the table, partition, column and rule without parsing GX internals.

Column contracts: raw tables follow `growthgr.core.schemas.RAW_SCHEMAS` exactly; label, sample,
feature, pool and SID tables follow the producers' documented columns (`REQUIRED_COLUMNS` below);
extra columns are allowed there, missing required ones fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import great_expectations.expectations as gxe
import pandas as pd
import pyarrow as pa

from expectations import frames
from growthgr.core import calendar, catalog
from growthgr.core.lake import Lake
from growthgr.core.schemas import RAW_SCHEMAS
from growthgr.core.sections.gates import GatesConfig

EVENT_TABLES = ("search_requests", "rank_candidates", "exposures", "clicks", "purchases", "site_orders")
RAW_KEYS: dict[str, list[list[str]]] = {t: d.unique_keys for t, d in catalog.RAW.items()}
RAW_NULLABLE = {"site_orders": {"linked_request_id", "link_score"}}
# (child table, parent table, join keys, rule): every child row must have a parent row.
FUNNEL: dict[str, tuple[str, list[str], str]] = {
    "rank_candidates": ("search_requests", ["request_id"], "funnel_candidate_has_request"),
    "exposures": ("rank_candidates", ["request_id", "item_id"], "funnel_exposure_has_rank_candidate"),
    "clicks": ("exposures", ["request_id", "item_id"], "funnel_click_has_exposure"),
    "purchases": ("clicks", ["request_id", "item_id"], "funnel_purchase_has_click"),
}
# Non-raw tables: (zone, table) -> required columns (the producers' contracts).
REQUIRED_COLUMNS: dict[tuple[str, str], list[str]] = {
    tuple(catalog.ITEMLTV_LABELS): ["item_id", "listing_date", "label"],
    tuple(catalog.ITEMLTV_SAMPLES): ["item_id", "user_id", "request_id", "treatment", "ts"],
    ("features", "user_features"): ["user_id", "event_timestamp"],
    ("features", "item_features"): ["item_id", "event_timestamp"],
    ("features", "query_features"): ["query_id", "event_timestamp"],
    tuple(catalog.NEW_ITEM_POOL): ["item_id", "score", "rank", "listing_date"],
    tuple(catalog.ITEM_SIDS): ["item_id", "sid_version", "c1", "c2", "c3"],
}
FEATURE_KEYS = {t: d.keys[0] for t, d in catalog.FEATURE_TABLES.items()}


@dataclass(frozen=True)
class TableCheck:
    """One partition to validate: its frame (None = missing) and the suite's expectations."""

    zone: str
    table: str
    ds: str
    frame: pd.DataFrame | None
    expectations: list = field(default_factory=list)

    @property
    def suite_name(self) -> str:
        return f"{self.zone}.{self.table}"


def rule(cls, name: str, column: str | None = None, about: str | None = None, **kwargs):
    """A GX expectation tagged with the rule name and the data column it is about (`about`
    overrides it when the expectation runs on a derived `_check_*` column)."""
    if column is not None and "column" in getattr(cls, "__fields__", {}):
        kwargs.setdefault("column", column)
    return cls(meta={"rule": name, "column": about or column or "*"}, **kwargs)


def day_bounds(ds: str) -> tuple[datetime, datetime]:
    """[start, end] of the UTC calendar day `ds` (end = the last microsecond)."""
    start = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def _days_before(ds: str, n: int) -> date:
    return date.fromisoformat(ds) - timedelta(days=n)


# -- building blocks ------------------------------------------------------------------------------
# The type name GX observes for each contract type once read by `frames.to_frame` ("Timestamp" is
# how GX names a tz-aware datetime column; a naive one reads "datetime64" and fails).
_GX_TYPES = {pa.int64(): "int64", pa.int32(): "int32", pa.float64(): "float64", pa.string(): "object",
             pa.date32(): "object", pa.bool_(): "bool", pa.timestamp("us", tz="UTC"): "Timestamp"}


def schema_rules(schema: pa.Schema, frame: pd.DataFrame) -> list:
    """Exact column set (plus our `_check_*` columns), each column present, each of its contract type."""
    derived = [c for c in frame.columns if c.startswith("_check_")]
    out = [rule(gxe.ExpectTableColumnsToMatchSet, "schema_columns", column_set=schema.names + derived,
                exact_match=True)]
    for f in schema:
        if f.name in frame.columns:   # the type rule of a present column implies it exists
            out.append(rule(gxe.ExpectColumnValuesToBeOfType, "schema_type", f.name, type_=_GX_TYPES[f.type]))
        else:
            out.append(rule(gxe.ExpectColumnToExist, "schema_column_exists", f.name))
    return out


def required_rules(required: list[str]) -> list:
    return [rule(gxe.ExpectColumnToExist, "schema_column_exists", c) for c in required]


def key_rules(frame: pd.DataFrame, keys: list[list[str]]) -> list:
    out = []
    for key in keys:
        if not set(key) <= set(frame.columns):
            continue
        if len(key) == 1:
            out.append(rule(gxe.ExpectColumnValuesToBeUnique, "unique_key", key[0]))
        else:
            out.append(rule(gxe.ExpectCompoundColumnsToBeUnique, "unique_key", ",".join(key), column_list=key))
    return out


def not_null_rules(frame: pd.DataFrame, columns, mostly: float = 1.0) -> list:
    extra = {"mostly": mostly} if mostly < 1.0 else {}
    name = "not_null" if mostly >= 1.0 else "null_rate"
    return [rule(gxe.ExpectColumnValuesToNotBeNull, name, c, **extra) for c in columns if c in frame.columns]


def between(frame: pd.DataFrame, column: str, name: str, **bounds) -> list:
    return [rule(gxe.ExpectColumnValuesToBeBetween, name, column, **bounds)] if column in frame.columns else []


def in_set(frame: pd.DataFrame, column: str, name: str, values: list) -> list:
    return [rule(gxe.ExpectColumnValuesToBeInSet, name, column, value_set=values)] if column in frame.columns else []


def all_true(frame: pd.DataFrame, check_column: str, name: str, column: str, mostly: float = 1.0) -> list:
    """Rule on a `_check_*` column: every (or `mostly`) value is True."""
    extra = {"mostly": mostly} if mostly < 1.0 else {}
    return [rule(gxe.ExpectColumnValuesToBeInSet, name, check_column, about=column, value_set=[True], **extra)
            ] if check_column in frame.columns else []


def ts_in_day(frame: pd.DataFrame, column: str, ds: str) -> list:
    """Every event timestamp lies in the partition's UTC day (late or early data fails)."""
    lo, hi = day_bounds(ds)
    return between(frame, column, "ts_in_partition_day", min_value=lo, max_value=hi)


def volume_rule(lake: Lake, zone: str, table: str, ds: str, cfg: GatesConfig) -> list:
    """Row count within [min_ratio, max_ratio] x the previous committed partition's row count."""
    prev = frames.previous_rows(lake, zone, table, ds)
    if prev is None or prev < cfg.volume_min_rows:
        return []
    return [rule(gxe.ExpectTableRowCountToBeBetween, "volume_vs_previous_day",
                 min_value=int(prev * cfg.volume_min_ratio), max_value=int(prev * cfg.volume_max_ratio) + 1)]


# -- raw tables -----------------------------------------------------------------------------------
def raw_check(lake: Lake, table: str, ds: str, cfg: GatesConfig) -> TableCheck:
    """Schema, keys, not-null, ranges, funnel consistency and volume of one raw partition."""
    frame = frames.read(lake, "raw", table, ds)
    if frame is None:
        return TableCheck("raw", table, ds, None)
    frame = _add_raw_checks(lake, table, ds, frame, cfg)
    schema = RAW_SCHEMAS[table]
    nullable = RAW_NULLABLE.get(table, set())
    exps = (schema_rules(schema, frame) + key_rules(frame, RAW_KEYS[table])
            + not_null_rules(frame, [c for c in schema.names if c not in nullable])
            + _raw_value_rules(table, frame, ds, cfg))
    if table in FUNNEL:
        parent, keys, name = FUNNEL[table]
        exps += all_true(frame, "_check_funnel", name, ",".join(keys))
    if table in EVENT_TABLES:
        exps += volume_rule(lake, "raw", table, ds, cfg)
    return TableCheck("raw", table, ds, frame, exps)


def _add_raw_checks(lake: Lake, table: str, ds: str, frame: pd.DataFrame, cfg: GatesConfig) -> pd.DataFrame:
    frame = frame.copy()
    if table in FUNNEL:
        parent, keys, _ = FUNNEL[table]
        parents = frames.read_days(lake, "raw", parent, ds, cfg.funnel_lookback_days, keys)
        has_null_key = frame[[k for k in keys if k in frame.columns]].isna().any(axis=1)
        # A row with a null key is reported by not_null, not as a funnel break.
        frame["_check_funnel"] = frames.check_has_parent(frame, parents, keys) | has_null_key
    if table in ("purchases", "site_orders"):
        frame["_check_gmv"] = frames.check_gmv(frame)
    if table == "rank_candidates" and "score" in frame.columns:
        frame["_check_finite_score"] = frames.check_finite(frame["score"]) | frame["score"].isna()
    return frame


def _raw_value_rules(table: str, frame: pd.DataFrame, ds: str, cfg: GatesConfig) -> list:
    day = date.fromisoformat(ds)
    _, day_end = day_bounds(ds)
    cat = {"min_value": 0, "max_value": cfg.n_categories - 1}
    rules = {
        "items": lambda: (between(frame, "category_id", "category_range", **cat)
                          + between(frame, "price", "price_positive", min_value=0, strict_min=True)
                          + between(frame, "listing_date", "listed_not_in_future", max_value=day)
                          + between(frame, "listed_at", "listed_not_in_future", max_value=day_end)),
        "users": lambda: (between(frame, "home_category_id", "category_range", **cat)
                          + between(frame, "activity", "non_negative", min_value=0)
                          + between(frame, "price_sensitivity", "non_negative", min_value=0)
                          + between(frame, "signup_date", "signup_not_in_future", max_value=day)
                          + in_set(frame, "segment", "segment_values", ["niche", "mass"])),
        "search_requests": lambda: (ts_in_day(frame, "ts", ds)
                                    + between(frame, "intent_category_id", "category_range", **cat)),
        "rank_candidates": lambda: (between(frame, "rank", "non_negative", min_value=0)
                                    + all_true(frame, "_check_finite_score", "finite", "score")),
        "exposures": lambda: ts_in_day(frame, "ts", ds) + between(frame, "position", "non_negative", min_value=0),
        "clicks": lambda: ts_in_day(frame, "ts", ds) + between(frame, "position", "non_negative", min_value=0),
        "purchases": lambda: ts_in_day(frame, "ts", ds) + _order_rules(frame),
        "site_orders": lambda: (ts_in_day(frame, "ts", ds) + _order_rules(frame)
                                + between(frame, "link_score", "finite", min_value=-1e300, max_value=1e300)),
    }
    return rules[table]()


def _order_rules(frame: pd.DataFrame) -> list:
    return (between(frame, "price", "price_positive", min_value=0, strict_min=True)
            + between(frame, "quantity", "quantity_positive", min_value=1)
            + all_true(frame, "_check_gmv", "gmv_equals_price_x_quantity", "gmv"))


# -- labels and samples ---------------------------------------------------------------------------
def cohort_items(lake: Lake, ds: str, cfg: GatesConfig) -> set[int]:
    """Items listed on the cohort day of `ds` (ds - calendar.COHORT_OFFSET), from the raw catalog."""
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    found: set[int] = set()
    for d in lake.list_partitions("raw", "items", end=cohort.isoformat()):
        items = lake.read_partition("raw", "items", d, columns=["item_id", "listing_date"]).to_pandas()
        found |= set(items.loc[items["listing_date"] == cohort, "item_id"].astype(int))
    return found


def labels_check(lake: Lake, ds: str, cfg: GatesConfig) -> TableCheck:
    """label >= 0 and finite, one row per item x cohort, every cohort item has its label."""
    frame = frames.read(lake, *catalog.ITEMLTV_LABELS, ds)
    if frame is None:
        return TableCheck(*catalog.ITEMLTV_LABELS, ds, None)
    frame = frame.copy()
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    key = ["item_id", "listing_date"] if "listing_date" in frame.columns else ["item_id"]
    if "label" in frame.columns:
        frame["_check_finite_label"] = frames.check_finite(frame["label"])
    exps = (required_rules(REQUIRED_COLUMNS[tuple(catalog.ITEMLTV_LABELS)]) + key_rules(frame, [key])
            + not_null_rules(frame, ["item_id", "listing_date", "label"])
            + between(frame, "label", "label_non_negative", min_value=0)
            + between(frame, "y", "label_non_negative", min_value=0)
            + all_true(frame, "_check_finite_label", "finite", "label")
            + between(frame, "listing_date", "cohort_day", min_value=cohort, max_value=cohort)
            + [rule(gxe.ExpectTableRowCountToEqual, "cohort_complete", "item_id",
                    value=len(cohort_items(lake, ds, cfg)))])
    return TableCheck(*catalog.ITEMLTV_LABELS, ds, frame, exps)


def samples_check(lake: Lake, ds: str, cfg: GatesConfig) -> TableCheck:
    """Treatment in {0, 1}; events inside the items' new-item period; items belong to the cohort."""
    frame = frames.read(lake, *catalog.ITEMLTV_SAMPLES, ds)
    if frame is None:
        return TableCheck(*catalog.ITEMLTV_SAMPLES, ds, None)
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    start = datetime.combine(cohort, datetime.min.time(), UTC)
    end = start + timedelta(days=calendar.NEW_ITEM_DAYS) - timedelta(microseconds=1)
    exps = (required_rules(REQUIRED_COLUMNS[tuple(catalog.ITEMLTV_SAMPLES)])
            + key_rules(frame, [["request_id", "item_id", "ts"]])
            + not_null_rules(frame, ["item_id", "user_id", "request_id", "treatment", "ts"])
            + between(frame, "ts", "event_in_new_item_period", min_value=start, max_value=end)
            + between(frame, "item_age_days", "event_in_new_item_period", min_value=0,
                      max_value=calendar.NEW_ITEM_DAYS - 1)
            + between(frame, "listing_date", "cohort_day", min_value=cohort, max_value=cohort))
    if "treatment" in frame.columns:
        exps.append(rule(gxe.ExpectColumnDistinctValuesToBeInSet, "treatment_binary", "treatment",
                         value_set=[0, 1, True, False]))
    return TableCheck(*catalog.ITEMLTV_SAMPLES, ds, frame, exps)


# -- feature tables -------------------------------------------------------------------------------
def feature_check(lake: Lake, table: str, ds: str, cfg: GatesConfig) -> TableCheck:
    """Entity key unique and not null, fresh event timestamps, bounded null rate per feature."""
    frame = frames.read(lake, "features", table, ds)
    if frame is None:
        return TableCheck("features", table, ds, None)
    key = FEATURE_KEYS[table]
    _, day_end = day_bounds(ds)
    features = [c for c in frame.columns if c not in (key, "event_timestamp", "ds", "created")]
    exps = (required_rules(REQUIRED_COLUMNS[("features", table)]) + key_rules(frame, [[key]])
            + not_null_rules(frame, [key, "event_timestamp"])
            + not_null_rules(frame, features, mostly=1.0 - cfg.feature_max_null_rate)
            + between(frame, "event_timestamp", "freshness", max_value=day_end + timedelta(microseconds=1)))
    if "event_timestamp" in frame.columns:
        exps.append(rule(gxe.ExpectColumnMinToBeBetween, "freshness", "event_timestamp",
                         min_value=day_end - timedelta(hours=cfg.feature_max_age_hours)))
    return TableCheck("features", table, ds, frame, exps)


# -- daily pool and SIDs --------------------------------------------------------------------------
def pool_check(lake: Lake, ds: str, cfg: GatesConfig, max_size: int) -> TableCheck:
    """Pool size in [pool_min_size, max_size], unique items, only items in their new-item period, finite scores."""
    frame = frames.read(lake, *catalog.NEW_ITEM_POOL, ds)
    if frame is None:
        return TableCheck(*catalog.NEW_ITEM_POOL, ds, None)
    frame = frame.copy()
    if "score" in frame.columns:
        frame["_check_finite_score"] = frames.check_finite(frame["score"])
    first_new = _days_before(ds, calendar.NEW_ITEM_DAYS - 1)
    exps = (required_rules(REQUIRED_COLUMNS[tuple(catalog.NEW_ITEM_POOL)]) + key_rules(frame, [["item_id"]])
            + not_null_rules(frame, ["item_id", "score", "rank", "listing_date"])
            + [rule(gxe.ExpectTableRowCountToBeBetween, "pool_size", min_value=cfg.pool_min_size,
                    max_value=max_size)]
            + between(frame, "listing_date", "only_new_items", min_value=first_new,
                      max_value=date.fromisoformat(ds))
            + all_true(frame, "_check_finite_score", "finite", "score")
            + between(frame, "rank", "non_negative", min_value=0))
    return TableCheck(*catalog.NEW_ITEM_POOL, ds, frame, exps)


def sids_check(lake: Lake, ds: str, cfg: GatesConfig, codebook_size: int, max_collision_rate: float) -> TableCheck:
    """Every item exactly one row, codes int32 in [0, K), (c1, c2, c3) collision rate under a bound,
    and with the disambiguation token c4 the full SID unique (c4 wrapping over K breaks it)."""
    frame = frames.read(lake, *catalog.ITEM_SIDS, ds)
    if frame is None:
        return TableCheck(*catalog.ITEM_SIDS, ds, None)
    frame = frame.copy()
    codes = [c for c in ("c1", "c2", "c3") if c in frame.columns]
    by = ["sid_version"] if "sid_version" in frame.columns else []
    if len(codes) == 3:
        frame["_check_no_collision"] = frames.check_first_of_group(frame, codes, by)
        if "c4" in frame.columns and frame["c4"].notna().any():
            frame["_check_sid_unique"] = frames.check_first_of_group(frame, [*codes, "c4"], by)
    exps = (required_rules(REQUIRED_COLUMNS[tuple(catalog.ITEM_SIDS)]) + key_rules(frame, [["item_id"]])
            + not_null_rules(frame, ["item_id", "sid_version", *codes])
            + all_true(frame, "_check_no_collision", "sid_collision_rate", "c1,c2,c3", mostly=1.0 - max_collision_rate)
            + all_true(frame, "_check_sid_unique", "sid_unique", "c1,c2,c3,c4"))
    for c in [*codes, "c4"]:
        if c in frame.columns:
            exps += [rule(gxe.ExpectColumnValuesToBeOfType, "schema_type", c, type_="int32"),
                     rule(gxe.ExpectColumnValuesToBeBetween, "code_in_range", c, min_value=0,
                          max_value=codebook_size - 1)]
    return TableCheck(*catalog.ITEM_SIDS, ds, frame, exps)
