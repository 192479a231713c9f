"""GX suites, defined in code, one per table: what each dataset must satisfy.

A suite here is a `TableCheck`: the partition read into pandas (plus `_check_*` columns computed by
`expectations.frames` for the cross-table rules) and the list of GX expectations to run on it.
Every expectation carries `meta = {"rule": ..., "column": ...}` so a failure summary can name
the table, partition, column and rule without parsing GX internals.

Column contracts: raw tables follow `foundation.schemas.RAW_SCHEMAS` exactly; label, sample,
feature, pool and SID tables follow their producers' documented schemas exactly (`DERIVED_SCHEMAS`
below: an extra, renamed or retyped column fails `exact_schema`).

Bad inputs every suite names (rule): a partition that cannot be read (`readable`), no rows
(`row_count`), an id missing from the catalog up to ds (`ref_items`, `ref_users`,
`ref_search_requests`), unbounded text (`text_length`, `text_control_chars`: control characters or
invalid UTF-8), a key reused from an earlier day where the schema promises uniqueness across days
(`unique_across_days`), a non-finite float (`finite`), rows dated another day than their partition
(`event_date_matches_partition`; raw event timestamps: `ts_in_partition_day`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa

from expectations import frames
from foundation import calendar, catalog
from foundation.lake import Lake
from foundation.schemas import AGE_BANDS, EXPERIMENT_ARMS, RAW_SCHEMAS, REGIONS
from foundation.sections.gates import GatesConfig

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
_I64, _I32, _F64, _STR, _DATE, _TS = pa.int64(), pa.int32(), pa.float64(), pa.string(), pa.date32(), pa.timestamp("us", tz="UTC")


def _schema(*columns: str, **types) -> pa.Schema:
    """Columns in order; each typed by `types` (by name), else int64."""
    return pa.schema([(c, types.get(c, _I64)) for c in columns])


_WINDOWS = [f"{m}_{w}d" for w in (1, 7, 30) for m in ("exposures", "clicks", "orders", "gmv", "ctr", "cvr")]
# Non-raw tables: (zone, table) -> the exact schema its producer documents and writes.
DERIVED_SCHEMAS: dict[tuple[str, str], pa.Schema] = {
    tuple(catalog.ITEMLTV_LABELS): _schema(        # spark_jobs.itemltv_labels
        "item_id", "listing_date", "category_id", "price", "label_window_start", "label_window_end",
        "label_orders", "label_gmv", "label", "y", "new_period_exposures", "new_period_clicks",
        listing_date=_DATE, category_id=_I32, price=_F64, label_window_start=_DATE, label_window_end=_DATE,
        label_gmv=_F64, label=_F64, y=_F64),
    tuple(catalog.ITEMLTV_SAMPLES): _schema(
        "item_id", "listing_date", "request_id", "user_id", "query_text", "query_id", "intent_category_id",
        "ts", "item_age_days", "position", "treatment", "label", "y",
        listing_date=_DATE, query_text=_STR, intent_category_id=_I32, ts=_TS, item_age_days=_I32,
        position=_I32, treatment=_I32, label=_F64, y=_F64),
    tuple(catalog.USER_FEATURES): _schema(         # spark_jobs.features
        "user_id", "event_timestamp", "region", "age_band", "tenure_days", "requests_1d", "requests_7d",
        "requests_30d", "active_days_30d", "clicks_7d", "clicks_30d", "orders_30d",
        "category_affinity", "price_level_30d", "recent_item_ids",
        event_timestamp=_TS, region=_STR, age_band=_STR,
        category_affinity=pa.list_(_F64), price_level_30d=_F64, recent_item_ids=pa.list_(_I64)),
    tuple(catalog.ITEM_FEATURES): _schema(
        "item_id", "event_timestamp", "category_id", "brand", "price", "listing_date", "age_days", "is_new",
        *_WINDOWS, event_timestamp=_TS, brand=_STR, price=_F64, listing_date=_DATE, is_new=pa.bool_(),
        **{c: _F64 for c in _WINDOWS if c.split("_")[0] in ("gmv", "ctr", "cvr")}),
    tuple(catalog.QUERY_FEATURES): _schema(
        "query_id", "event_timestamp", "query_text", "intent_category_id", "requests_1d", "requests_7d",
        "requests_30d", "exposures_30d", "clicks_30d", "orders_30d", "ctr_30d", "cvr_30d",
        "new_item_exposure_share_30d",
        event_timestamp=_TS, query_text=_STR, ctr_30d=_F64, cvr_30d=_F64, new_item_exposure_share_30d=_F64),
    tuple(catalog.NEW_ITEM_POOL): _schema(         # models.itemltv.pipeline
        "ds", "item_id", "score", "rank", "listing_date", ds=_STR, score=_F64, rank=_I32, listing_date=_DATE),
    tuple(catalog.ITEM_SIDS): _schema(             # models.tokenizer.sids (c4 null in "shared" mode)
        "item_id", "sid_version", "c1", "c2", "c3", "c4", sid_version=_STR, c1=_I32, c2=_I32, c3=_I32, c4=_I32),
}
FEATURE_KEYS = {t: d.keys[0] for t, d in catalog.FEATURE_TABLES.items()}
# Id columns and the raw catalog table that must hold every id up to ds (rule `ref_<table>`). A
# funnel table's request_id is covered by its funnel rule, a table's own key by its key rules.
ID_REFS = {"item_id": "items", "user_id": "users", "request_id": "search_requests",
           "linked_request_id": "search_requests"}
# Keys the schemas promise unique across all days, not only within a partition.
CROSS_DAY_KEYS = {"items": "item_id", "users": "user_id", "search_requests": "request_id"}
# Tables with a per-item price that recurs across days (rule `price_change_vs_previous_days`); raw/items
# carries the listing price too, but each item once (on its listing day), so it has no history there.
PRICE_TABLES = ("purchases", "site_orders")
# A raw partition with no rows fails `row_count`, except `users` after its first day: a day without
# signups is legitimate (the simulator draws Poisson(new_users_per_day) arrivals; tiny: mean 1).
MAY_BE_EMPTY_AFTER_FIRST_DAY = {"users"}
# Text bounds (characters); control characters (C0, DEL, C1) and U+FFFD (invalid UTF-8) never.
TEXT_MAX_CHARS = {"title": 500, "query_text": 500, "attributes": 500}
TEXT_DEFAULT_MAX_CHARS = 100
CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f\ufffd]"


@dataclass(frozen=True)
class TableCheck:
    """One partition to validate: its frame (None = missing) and the suite's expectations."""

    zone: str
    table: str
    ds: date
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


def day_bounds(ds: date) -> tuple[datetime, datetime]:
    """[start, end] of the UTC calendar day `ds` (end = the last microsecond)."""
    start = datetime.combine(ds, time(), tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def _days_before(ds: date, n: int) -> date:
    return ds - timedelta(days=n)


# -- building blocks ------------------------------------------------------------------------------
# The type name GX observes for each contract type once read by `frames.to_frame` ("Timestamp" is
# how GX names a tz-aware datetime column; a naive one reads "datetime64" and fails).
_GX_TYPES = {pa.int64(): "int64", pa.int32(): "int32", pa.float64(): "float64", pa.string(): "object",
             pa.date32(): "object", pa.bool_(): "bool", pa.timestamp("us", tz="UTC"): "Timestamp",
             pa.list_(pa.float64()): "object", pa.list_(pa.int64()): "object"}


def schema_rules(schema: pa.Schema, frame: pd.DataFrame, columns_rule: str = "schema_columns",
                 type_rule: str = "schema_type") -> list:
    """Exact column set (plus our `_check_*` columns), each column present, each of its contract type."""
    derived = [c for c in frame.columns if c.startswith("_check_")]
    out = [rule(gxe.ExpectTableColumnsToMatchSet, columns_rule, column_set=schema.names + derived,
                exact_match=True)]
    for f in schema:
        if f.name in frame.columns:   # the type rule of a present column implies it exists
            out.append(rule(gxe.ExpectColumnValuesToBeOfType, type_rule, f.name, type_=_GX_TYPES[f.type]))
        else:
            out.append(rule(gxe.ExpectColumnToExist, "schema_column_exists", f.name))
    return out


def exact_schema_rules(dataset, frame: pd.DataFrame) -> list:
    """A derived table's documented schema, exactly: no extra, renamed or retyped column (`exact_schema`)."""
    return schema_rules(DERIVED_SCHEMAS[tuple(dataset)], frame, "exact_schema", "exact_schema")


def row_count_rule() -> list:
    return [rule(gxe.ExpectTableRowCountToBeBetween, "row_count", min_value=1)]


def text_rules(schema: pa.Schema, frame: pd.DataFrame) -> list:
    """Every text column of the contract: 1..max characters, no control characters nor invalid UTF-8."""
    out = []
    for f in schema:
        if pa.types.is_string(f.type) and f.name in frame.columns and frame[f.name].dtype == object:
            out += [rule(gxe.ExpectColumnValueLengthsToBeBetween, "text_length", f.name, min_value=1,
                         max_value=TEXT_MAX_CHARS.get(f.name, TEXT_DEFAULT_MAX_CHARS)),
                    rule(gxe.ExpectColumnValuesToNotMatchRegex, "text_control_chars", f.name, regex=CONTROL_CHARS)]
    return out


def add_input_checks(lake: Lake, table: str, ds: date, frame: pd.DataFrame, nullable=()) -> pd.DataFrame:
    """The `_check_*` columns of `input_rules`: finite floats (nulls allowed in `nullable`), ids known
    to the raw catalog up to ds, keys not used on an earlier day."""
    frame = frame.copy()
    for c in list(frame.columns):
        if pd.api.types.is_float_dtype(frame[c]):
            frame[f"_check_finite_{c}"] = frames.check_finite(frame[c]) | (frame[c].isna() & (c in nullable))
    for c, ref in ID_REFS.items():
        own_key = ref == table or (c == "request_id" and table in FUNNEL)
        if c in frame.columns and not own_key:
            frame[f"_check_ref_{c}"] = frames.check_in(frame[c], catalog_ids(lake, ref, ds))
    if table in CROSS_DAY_KEYS and CROSS_DAY_KEYS[table] in frame.columns:
        key = CROSS_DAY_KEYS[table]
        frame[f"_check_new_{key}"] = frames.check_not_in(frame[key], catalog_ids(lake, table, ds, before=True))
    return frame


def input_rules(frame: pd.DataFrame) -> list:
    """`finite`, `ref_<table>` and `unique_across_days` on the columns `add_input_checks` made."""
    out = []
    for c in frame.columns:
        if c.startswith("_check_finite_"):
            out += all_true(frame, c, "finite", c.removeprefix("_check_finite_"))
        elif c.startswith("_check_ref_"):
            column = c.removeprefix("_check_ref_")
            out += all_true(frame, c, f"ref_{ID_REFS[column]}", column)
        elif c.startswith("_check_new_"):
            out += all_true(frame, c, "unique_across_days", c.removeprefix("_check_new_"))
    return out


def catalog_ids(lake: Lake, table: str, ds: date, before: bool = False):
    """The distinct keys of raw `table` (items, users, search_requests) over every day up to ds."""
    key = catalog.RAW[table].keys[0]
    return frames.read_up_to(lake, "raw", table, ds, [key], before=before)[key].dropna().unique()


def reports_unreadable(zone: str, table: str | None = None):
    """Builder decorator: an unreadable partition (its own or one it looks up) becomes the failed rule
    `readable` of the checked table, naming the file's partition and error, instead of a crash.
    Without `table` the builder's first argument after the lake is the table, the next one ds."""
    def wrap(build):
        @functools.wraps(build)
        def guarded(lake: Lake, *args, **kwargs) -> TableCheck:
            try:
                return build(lake, *args, **kwargs)
            except frames.Unreadable as err:
                name, ds = (table, args[0]) if table else (args[0], args[1])
                frame = pd.DataFrame({"error": [str(err)]})
                return TableCheck(zone, name, ds, frame, [rule(gxe.ExpectColumnValuesToBeNull, "readable",
                                                                "error", about="*")])
        return guarded
    return wrap


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


def ts_in_day(frame: pd.DataFrame, column: str, ds: date) -> list:
    """Every event timestamp lies in the partition's UTC day (late or early data fails)."""
    lo, hi = day_bounds(ds)
    return between(frame, column, "ts_in_partition_day", min_value=lo, max_value=hi)


def volume_rule(lake: Lake, zone: str, table: str, ds: date, cfg: GatesConfig) -> list:
    """Row count within [min_ratio, max_ratio] x the previous committed partition's row count."""
    prev = frames.previous_rows(lake, zone, table, ds)
    if prev is None or prev < cfg.volume_min_rows:
        return []
    return [rule(gxe.ExpectTableRowCountToBeBetween, "volume_vs_previous_day",
                 min_value=int(prev * cfg.volume_min_ratio), max_value=int(prev * cfg.volume_max_ratio) + 1)]


def drift_columns(schema: pa.Schema) -> list[str]:
    """The numeric measurement columns of a raw table: integers and floats that are not ids."""
    return [f.name for f in schema if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
            and not f.name.endswith("_id") and f.name != "id"]


def quantile_ranges(history: list[pd.Series], cfg: GatesConfig) -> list[list[float]] | None:
    """Allowed [lo, hi] per quantile of `cfg.drift_quantiles` from the previous days' values (see
    `GatesConfig`), or None with fewer than `drift_min_days` days of `drift_min_rows` values."""
    days = [h.dropna() for h in history]
    days = [d for d in days if len(d) >= cfg.drift_min_rows]
    if len(days) < cfg.drift_min_days:
        return None
    per_day = np.array([[float(d.quantile(q)) for q in cfg.drift_quantiles] for d in days])   # [days, Q]
    lo, hi = per_day.min(0), per_day.max(0)
    width = np.maximum.reduce([hi - lo, cfg.drift_rel_floor * np.abs(per_day).max(0), np.ones_like(lo)])
    return [[float(a), float(b)] for a, b in zip(lo - cfg.drift_tolerance * width, hi + cfg.drift_tolerance * width,
                                                  strict=True)]


def add_drift_checks(lake: Lake, table: str, ds: date, frame: pd.DataFrame, cfg: GatesConfig
                     ) -> tuple[pd.DataFrame, list]:
    """Rule `drift_vs_previous_days` per numeric column (`drift_columns`) and quantile: the day's
    quantile, held in a derived `_check_drift_<column>_q<q>` column, within the range of the previous
    `drift_days` committed partitions (`quantile_ranges`). (A derived column, not GX's quantile
    expectation, whose result GX 1.x cannot store: it holds NumPy booleans.)"""
    columns = [c for c in drift_columns(RAW_SCHEMAS[table]) if c in frame.columns]
    earlier = frames.earlier_partitions(lake, "raw", table, ds)[-cfg.drift_days:]
    if not columns or len(earlier) < cfg.drift_min_days:
        return frame, []
    history = frames.read_partitions(lake, "raw", table, earlier, columns)
    out, frame = [], frame.copy()
    for column in columns:
        ranges = quantile_ranges([h[column] for h in history], cfg)
        today = pd.to_numeric(frame[column], errors="coerce").dropna()
        if ranges is None or len(today) < cfg.drift_min_rows:
            continue
        for q, (lo, hi) in zip(cfg.drift_quantiles, ranges, strict=True):
            check = f"_check_drift_{column}_q{q:g}"
            frame[check] = float(today.quantile(q))
            out.append(rule(gxe.ExpectColumnValuesToBeBetween, "drift_vs_previous_days", check, about=column,
                            min_value=lo, max_value=hi))
    return frame, out



def price_change_share(changes: pd.Series, cfg: GatesConfig) -> float | None:
    """Share of the compared items whose price moved by more than `price_change_max_rel` (None with
    fewer than `price_change_min_items` items compared)."""
    if len(changes) < cfg.price_change_min_items:
        return None
    return float((changes > cfg.price_change_max_rel).mean())


def add_price_change_checks(lake: Lake, table: str, ds: date, frame: pd.DataFrame, cfg: GatesConfig
                            ) -> tuple[pd.DataFrame, list]:
    """Rule `price_change_vs_previous_days` of an order table (`PRICE_TABLES`): the share of items
    ordered today and on the previous `drift_days` committed partitions whose median price moved by
    more than `price_change_max_rel` (`frames.relative_median_change`), held in the derived
    `_check_price_change_price` column, is at most `price_change_max_share`."""
    if table not in PRICE_TABLES:
        return frame, []
    earlier = frames.earlier_partitions(lake, "raw", table, ds)[-cfg.drift_days:]
    if not earlier:
        return frame, []
    before = pd.concat(frames.read_partitions(lake, "raw", table, earlier, ["item_id", "price"]), ignore_index=True)
    share = price_change_share(frames.relative_median_change(frame, before, "item_id", "price"), cfg)
    if share is None:
        return frame, []
    frame = frame.assign(_check_price_change_price=share)
    return frame, [rule(gxe.ExpectColumnValuesToBeBetween, "price_change_vs_previous_days",
                        "_check_price_change_price", about="price", min_value=0,
                        max_value=cfg.price_change_max_share)]


# -- raw tables -----------------------------------------------------------------------------------
@reports_unreadable("raw")
def raw_check(lake: Lake, table: str, ds: date, cfg: GatesConfig) -> TableCheck:
    """Schema, keys, not-null, ranges, funnel consistency, bad inputs of one raw partition, and its
    volume, quantiles and per-item prices against the previous days."""
    frame = frames.read(lake, "raw", table, ds)
    if frame is None:
        return TableCheck("raw", table, ds, None)
    first_day = not frames.earlier_partitions(lake, "raw", table, ds)
    schema = RAW_SCHEMAS[table]
    nullable = RAW_NULLABLE.get(table, set())
    frame = add_input_checks(lake, table, ds, _add_raw_checks(lake, table, ds, frame, cfg), nullable)
    frame, drift = add_drift_checks(lake, table, ds, frame, cfg) if not first_day else (frame, [])
    frame, prices = add_price_change_checks(lake, table, ds, frame, cfg)
    exps = drift + prices + (schema_rules(schema, frame) + key_rules(frame, RAW_KEYS[table])
            + not_null_rules(frame, [c for c in schema.names if c not in nullable])
            + _raw_value_rules(table, frame, ds, cfg, first_day)
            + text_rules(schema, frame) + input_rules(frame))
    if first_day or table not in MAY_BE_EMPTY_AFTER_FIRST_DAY:
        exps += row_count_rule()
    if table in FUNNEL:
        parent, keys, name = FUNNEL[table]
        exps += all_true(frame, "_check_funnel", name, ",".join(keys))
    if table in EVENT_TABLES:
        exps += volume_rule(lake, "raw", table, ds, cfg)
    return TableCheck("raw", table, ds, frame, exps)


def _add_raw_checks(lake: Lake, table: str, ds: date, frame: pd.DataFrame, cfg: GatesConfig) -> pd.DataFrame:
    frame = frame.copy()
    if table in FUNNEL:
        parent, keys, _ = FUNNEL[table]
        parents = frames.read_days(lake, "raw", parent, ds, cfg.funnel_lookback_days, keys)
        has_null_key = frame[[k for k in keys if k in frame.columns]].isna().any(axis=1)
        # A row with a null key is reported by not_null, not as a funnel break.
        frame["_check_funnel"] = frames.check_has_parent(frame, parents, keys) | has_null_key
    if table == "rank_candidates" and "request_id" in frame.columns:
        # Candidates carry no timestamp: they belong to the day of their request.
        today = frames.read_days(lake, "raw", "search_requests", ds, 0, ["request_id"])
        frame["_check_same_day"] = frames.check_has_parent(frame, today, ["request_id"]) | frame["request_id"].isna()
    if table in ("purchases", "site_orders"):
        frame["_check_gmv"] = frames.check_gmv(frame)
    return frame


def _raw_value_rules(table: str, frame: pd.DataFrame, ds: date, cfg: GatesConfig, first_day: bool) -> list:
    day = ds
    day_start, day_end = day_bounds(ds)
    cat = {"min_value": 0, "max_value": cfg.n_categories - 1}
    # Catalog rows are written on their listing / signup day; the first day also holds the initial ones.
    listed = {"min_value": None if first_day else day, "max_value": day}
    listed_at = {"min_value": None if first_day else day_start, "max_value": day_end}
    rules = {
        "items": lambda: (between(frame, "category_id", "category_range", **cat)
                          + between(frame, "price", "price_positive", min_value=0, strict_min=True)
                          + between(frame, "listing_date", "listed_not_in_future", max_value=day)
                          + between(frame, "listed_at", "listed_not_in_future", max_value=day_end)
                          + between(frame, "listing_date", "event_date_matches_partition", **listed)
                          + between(frame, "listed_at", "event_date_matches_partition", **listed_at)),
        "users": lambda: (between(frame, "signup_date", "signup_not_in_future", max_value=day)
                          + between(frame, "signup_date", "event_date_matches_partition", **listed)
                          + profile_rules(frame)),
        "search_requests": lambda: (ts_in_day(frame, "ts", ds)
                                    + between(frame, "intent_category_id", "category_range", **cat)),
        "rank_candidates": lambda: (between(frame, "rank", "non_negative", min_value=0)
                                    + all_true(frame, "_check_same_day", "event_date_matches_partition",
                                               "request_id") + propensity_rules(frame)),
        "exposures": lambda: (ts_in_day(frame, "ts", ds) + between(frame, "position", "non_negative", min_value=0)
                              + propensity_rules(frame)),
        "item_experiments": lambda: (in_set(frame, "experiment", "experiment_values", list(EXPERIMENT_ARMS))
                                     + in_set(frame, "arm", "arm_values",
                                              sorted({a for arms in EXPERIMENT_ARMS.values() for a in arms}))
                                     + between(frame, "assigned_date", "event_date_matches_partition",
                                               min_value=day, max_value=day)),
        "clicks": lambda: ts_in_day(frame, "ts", ds) + between(frame, "position", "non_negative", min_value=0),
        "purchases": lambda: ts_in_day(frame, "ts", ds) + _order_rules(frame),
        "site_orders": lambda: ts_in_day(frame, "ts", ds) + _order_rules(frame),
    }
    return rules[table]()


def propensity_rules(frame: pd.DataFrame) -> list:
    """The logged propensity of a placement is a probability: in (0, 1] (null is reported by not_null)."""
    return between(frame, "propensity", "propensity_in_0_1", min_value=0, max_value=1, strict_min=True)


def profile_rules(frame: pd.DataFrame) -> list:
    """The declared profile fields of a user (raw/users, features/user_features) take known values."""
    return (in_set(frame, "region", "region_values", list(REGIONS))
            + in_set(frame, "age_band", "age_band_values", list(AGE_BANDS)))


def _order_rules(frame: pd.DataFrame) -> list:
    return (between(frame, "price", "price_positive", min_value=0, strict_min=True)
            + between(frame, "quantity", "quantity_positive", min_value=1)
            + all_true(frame, "_check_gmv", "gmv_equals_price_x_quantity", "gmv"))


def derived_rules(dataset, frame: pd.DataFrame) -> list:
    """What every derived table must satisfy: rows, its exact schema, bounded text, and the
    `input_rules` (finite floats, known ids) of the columns `add_input_checks` added."""
    return (row_count_rule() + exact_schema_rules(dataset, frame)
            + text_rules(DERIVED_SCHEMAS[tuple(dataset)], frame) + input_rules(frame))


# -- labels and samples ---------------------------------------------------------------------------
def cohort_items(lake: Lake, ds: date, cfg: GatesConfig) -> set[int]:
    """Items listed on the cohort day of `ds` (ds - calendar.COHORT_OFFSET), from the raw catalog."""
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    items = frames.read_up_to(lake, "raw", "items", cohort, ["item_id", "listing_date"])
    return set(items.loc[items["listing_date"] == cohort, "item_id"].astype(int)) if len(items) else set()


@reports_unreadable(*catalog.ITEMLTV_LABELS)
def labels_check(lake: Lake, ds: date, cfg: GatesConfig) -> TableCheck:
    """label >= 0 and finite, one row per item x cohort, every cohort item has its label."""
    frame = frames.read(lake, *catalog.ITEMLTV_LABELS, ds)
    if frame is None:
        return TableCheck(*catalog.ITEMLTV_LABELS, ds, None)
    frame = add_input_checks(lake, catalog.ITEMLTV_LABELS.table, ds, frame)
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    first, last = _days_before(ds, calendar.LABEL_DAYS - 1), ds   # the label window
    key = ["item_id", "listing_date"] if "listing_date" in frame.columns else ["item_id"]
    exps = (derived_rules(catalog.ITEMLTV_LABELS, frame) + key_rules(frame, [key])
            + not_null_rules(frame, ["item_id", "listing_date", "label"])
            + between(frame, "label", "label_non_negative", min_value=0)
            + between(frame, "y", "label_non_negative", min_value=0)
            + between(frame, "listing_date", "cohort_day", min_value=cohort, max_value=cohort)
            + between(frame, "label_window_start", "event_date_matches_partition", min_value=first, max_value=first)
            + between(frame, "label_window_end", "event_date_matches_partition", min_value=last, max_value=last)
            + [rule(gxe.ExpectTableRowCountToEqual, "cohort_complete", "item_id",
                    value=len(cohort_items(lake, ds, cfg)))])
    return TableCheck(*catalog.ITEMLTV_LABELS, ds, frame, exps)


@reports_unreadable(*catalog.ITEMLTV_SAMPLES)
def samples_check(lake: Lake, ds: date, cfg: GatesConfig) -> TableCheck:
    """Treatment in {0, 1}; events inside the items' new-item period; items belong to the cohort."""
    frame = frames.read(lake, *catalog.ITEMLTV_SAMPLES, ds)
    if frame is None:
        return TableCheck(*catalog.ITEMLTV_SAMPLES, ds, None)
    frame = add_input_checks(lake, catalog.ITEMLTV_SAMPLES.table, ds, frame)
    cohort = _days_before(ds, calendar.COHORT_OFFSET)
    start = datetime.combine(cohort, datetime.min.time(), UTC)
    end = start + timedelta(days=calendar.NEW_ITEM_DAYS) - timedelta(microseconds=1)
    exps = (derived_rules(catalog.ITEMLTV_SAMPLES, frame)
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
@reports_unreadable("features")
def feature_check(lake: Lake, table: str, ds: date, cfg: GatesConfig) -> TableCheck:
    """Entity key unique and not null, fresh event timestamps, bounded null rate per feature."""
    frame = frames.read(lake, "features", table, ds)
    if frame is None:
        return TableCheck("features", table, ds, None)
    key = FEATURE_KEYS[table]
    features = [c for c in frame.columns if c not in (key, "event_timestamp", "ds", "created")]
    frame = add_input_checks(lake, table, ds, frame, nullable=features)   # a null feature: null_rate
    _, day_end = day_bounds(ds)
    exps = (derived_rules(catalog.FEATURE_TABLES[table], frame) + key_rules(frame, [[key]])
            + not_null_rules(frame, [key, "event_timestamp"])
            + not_null_rules(frame, features, mostly=1.0 - cfg.feature_max_null_rate)
            + between(frame, "event_timestamp", "freshness", max_value=day_end + timedelta(microseconds=1)))
    if "event_timestamp" in frame.columns:
        exps.append(rule(gxe.ExpectColumnMinToBeBetween, "freshness", "event_timestamp",
                         min_value=day_end - timedelta(hours=cfg.feature_max_age_hours)))
    if table == catalog.USER_FEATURES.table:
        exps += profile_rules(frame) + between(frame, "active_days_30d", "active_days_range", min_value=0, max_value=30)
    return TableCheck("features", table, ds, frame, exps)


# -- daily pool and SIDs --------------------------------------------------------------------------
@reports_unreadable(*catalog.NEW_ITEM_POOL)
def pool_check(lake: Lake, ds: date, cfg: GatesConfig, max_size: int) -> TableCheck:
    """Pool size in [pool_min_size, max_size], unique items, only items in their new-item period, finite scores."""
    frame = frames.read(lake, *catalog.NEW_ITEM_POOL, ds)
    if frame is None:
        return TableCheck(*catalog.NEW_ITEM_POOL, ds, None)
    frame = add_input_checks(lake, catalog.NEW_ITEM_POOL.table, ds, frame)
    first_new = _days_before(ds, calendar.NEW_ITEM_DAYS - 1)
    exps = (derived_rules(catalog.NEW_ITEM_POOL, frame) + key_rules(frame, [["item_id"]])
            + not_null_rules(frame, ["item_id", "score", "rank", "listing_date"])
            + [rule(gxe.ExpectTableRowCountToBeBetween, "pool_size", min_value=cfg.pool_min_size,
                    max_value=max_size)]
            + between(frame, "listing_date", "only_new_items", min_value=first_new,
                      max_value=ds)
            + in_set(frame, "ds", "event_date_matches_partition", [ds.isoformat()])
            + between(frame, "rank", "non_negative", min_value=0))
    return TableCheck(*catalog.NEW_ITEM_POOL, ds, frame, exps)


@reports_unreadable(*catalog.ITEM_SIDS)
def sids_check(lake: Lake, ds: date, cfg: GatesConfig, codebook_size: int, max_collision_rate: float) -> TableCheck:
    """Every item exactly one row, codes int32 in [0, K), (c1, c2, c3) collision rate under a bound,
    and with the disambiguation token c4 the full SID unique (c4 wrapping over K breaks it)."""
    frame = frames.read(lake, *catalog.ITEM_SIDS, ds)
    if frame is None:
        return TableCheck(*catalog.ITEM_SIDS, ds, None)
    frame = add_input_checks(lake, catalog.ITEM_SIDS.table, ds, frame)
    codes = [c for c in ("c1", "c2", "c3") if c in frame.columns]
    by = ["sid_version"] if "sid_version" in frame.columns else []
    if len(codes) == 3:
        frame["_check_no_collision"] = frames.check_first_of_group(frame, codes, by)
        if "c4" in frame.columns and frame["c4"].notna().any():
            frame["_check_sid_unique"] = frames.check_first_of_group(frame, [*codes, "c4"], by)
    exps = (derived_rules(catalog.ITEM_SIDS, frame) + key_rules(frame, [["item_id"]])
            + not_null_rules(frame, ["item_id", "sid_version", *codes])
            + all_true(frame, "_check_no_collision", "sid_collision_rate", "c1,c2,c3", mostly=1.0 - max_collision_rate)
            + all_true(frame, "_check_sid_unique", "sid_unique", "c1,c2,c3,c4"))
    for c in [*codes, "c4"]:
        if c in frame.columns:
            exps += [rule(gxe.ExpectColumnValuesToBeBetween, "code_in_range", c, min_value=0,
                          max_value=codebook_size - 1)]
    return TableCheck(*catalog.ITEM_SIDS, ds, frame, exps)
