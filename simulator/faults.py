"""Fault injection: defects the raw-data gates must catch, each on one chosen day only.

`FAULTS` (name -> what it does) is the contract with the GX suites. Each
fault touches `max(1, round(fault_fraction * rows))` rows of one table of the
injected day (`fault_fraction` is in `SimulatorConfig`, 5% by default;
`price_units`: that share of the day's ordered items, in both order tables);
other days and the `truth` zone are never touched. Rows are chosen with
`day_rng(seed, day, 3)`, so an injected run is reproducible too.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FAULTS: dict[str, str] = {
    "schema_drift": "raw/exposures: column `position` (int32) is renamed to `slot` and retyped to int64 "
                    "(same values); every other column unchanged.",
    "nulls": "raw/clicks: `item_id` is set to null in a sample of rows (the other columns are kept).",
    "duplicates": "raw/purchases: a sample of rows is appended again as exact copies (same order_id), "
                  "so order_id is no longer unique.",
    "funnel_violation": "raw/clicks: extra click rows are appended, each on a real request of the day but "
                        "for an item that request did not expose (position = 1 + the request's last "
                        "exposed position, ts = request ts + 5 s); no exposure, candidate or purchase added.",
    "missing_partition": "raw/exposures: the day's partition is not written at all (no _SUCCESS marker); "
                         "every other table of the day is written.",
    "late_data": "raw/clicks: a sample of the day's clicks that led to no purchase is removed from the day's "
                 "partition and written into the NEXT day's clicks partition with its original ts "
                 "(so the next partition holds rows whose ts is on the previous day).",
    "price_units": "raw/purchases and raw/site_orders: a sample of the day's ordered items (distinct item ids "
                   "of both tables) has its price logged in cents: price and gmv x 100 on every order row of "
                   "those items in both tables (gmv = price x quantity still holds); other columns unchanged.",
}

MISSING_TABLE = "exposures"
LATE_TABLE = "clicks"
ORDER_TABLES = ("purchases", "site_orders")


# Faults combine: they are applied in this order (e.g. the funnel violation is built from the
# exposures before a schema drift renames their column).
APPLY_ORDER = ("late_data", "funnel_violation", "price_units", "duplicates", "nulls", "schema_drift",
               "missing_partition")


def check(faults: Iterable[str]) -> list[str]:
    """The requested faults in application order; unknown names raise ValueError."""
    wanted = set(faults)
    unknown = sorted(wanted - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(FAULTS)}")
    return [f for f in APPLY_ORDER if f in wanted]


def sample(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Sorted row indices of a non-empty sample (empty only when n == 0)."""
    k = min(n, max(1, round(fraction * n)))
    return np.sort(rng.choice(n, size=k, replace=False)) if n else np.zeros(0, dtype=np.int64)


def schema_drift(raw: dict[str, pa.Table]) -> None:
    t = raw["exposures"]
    i = t.schema.get_field_index("position")
    raw["exposures"] = t.set_column(i, pa.field("slot", pa.int64()), t.column(i).cast(pa.int64()))


def nulls(raw: dict[str, pa.Table], rng: np.random.Generator, fraction: float) -> None:
    t = raw["clicks"]
    mask = np.zeros(t.num_rows, dtype=bool)
    mask[sample(rng, t.num_rows, fraction)] = True
    i = t.schema.get_field_index("item_id")
    ids = t.column(i).to_numpy()
    raw["clicks"] = t.set_column(i, t.schema.field(i), pa.array(ids, mask=mask, type=pa.int64()))


def duplicates(raw: dict[str, pa.Table], rng: np.random.Generator, fraction: float) -> None:
    t = raw["purchases"]
    raw["purchases"] = pa.concat_tables([t, t.take(sample(rng, t.num_rows, fraction))])


def price_units(raw: dict[str, pa.Table], rng: np.random.Generator, fraction: float) -> None:
    ordered = np.unique(np.concatenate([raw[t].column("item_id").to_numpy() for t in ORDER_TABLES]))
    hit = pa.array(ordered[sample(rng, len(ordered), fraction)])
    for name in ORDER_TABLES:
        t = raw[name]
        scale = pc.if_else(pc.is_in(t.column("item_id"), hit), 100.0, 1.0)
        for column in ("price", "gmv"):
            i = t.schema.get_field_index(column)
            t = t.set_column(i, t.schema.field(i), pc.multiply(t.column(i), scale))
        raw[name] = t


def funnel_violation(raw: dict[str, pa.Table], rng: np.random.Generator, fraction: float) -> None:
    exp, req, clicks = raw["exposures"], raw["search_requests"], raw["clicks"]
    exposed = exp.group_by("request_id").aggregate([("item_id", "list"), ("position", "max"), ("user_id", "min")])
    picked = exposed.take(sample(rng, exposed.num_rows, fraction))
    all_items = pc.unique(raw["rank_candidates"].column("item_id")).to_numpy()
    items = []
    for shown in picked.column("item_id_list").to_pylist():
        free = np.setdiff1d(all_items, shown)
        items.append(int(free[rng.integers(len(free))]))
    ts = pc.index_in(picked.column("request_id"), req.column("request_id"))
    req_ts = req.column("ts").take(ts).cast(pa.int64()).to_numpy() + 5_000_000
    extra = pa.table({
        "request_id": picked.column("request_id"), "user_id": picked.column("user_id_min"),
        "item_id": pa.array(items, pa.int64()),
        "position": pc.add(picked.column("position_max"), 1).cast(pa.int32()),
        "ts": pa.array(req_ts, pa.timestamp("us", tz="UTC")),
    }).cast(clicks.schema)
    raw["clicks"] = pa.concat_tables([clicks, extra])


def late_data(raw: dict[str, pa.Table], rng: np.random.Generator, fraction: float) -> bytes:
    """Move a sample of purchase-free clicks out of the day; returns them (Arrow IPC) for the next day."""
    clicks, buys = raw["clicks"], raw["purchases"]
    key = lambda t: pc.add(pc.multiply(t.column("request_id"), 2**31), t.column("item_id"))  # noqa: E731
    free = np.flatnonzero(~pc.is_in(key(clicks), key(buys)).to_numpy(zero_copy_only=False))
    late = np.zeros(clicks.num_rows, dtype=bool)
    late[free[sample(rng, len(free), fraction)]] = True
    raw["clicks"] = clicks.filter(pa.array(~late))
    return to_ipc(clicks.filter(pa.array(late)))


def to_ipc(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, t.schema) as writer:
        writer.write_table(t)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def inject(raw: dict[str, pa.Table], faults: Iterable[str], rng: np.random.Generator,
           fraction: float) -> tuple[dict[str, pa.Table], dict[str, bytes]]:
    """Apply `faults` to one day's raw tables. Returns (tables to write, rows due next day by table).
    A table missing from the returned dict must not be written (missing_partition)."""
    raw, pending = dict(raw), {}
    for fault in check(faults):
        if fault == "schema_drift":
            schema_drift(raw)
        elif fault == "late_data":
            pending[LATE_TABLE] = late_data(raw, rng, fraction)
        elif fault == "missing_partition":
            raw.pop(MISSING_TABLE, None)
        else:
            {"nulls": nulls, "duplicates": duplicates, "funnel_violation": funnel_violation,
             "price_units": price_units}[fault](raw, rng, fraction)
    return raw, pending
