"""GX gates on small hand-made raw data (per `foundation/schemas.py`), with defects the simulator
does not inject (a retyped column, a volume drop). The simulator's own faults are tested on its
real output in `test_gx_simulator.py`.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from expectations import frames
from expectations.gate import validate as validate_gate
from expectations.suites import price_change_share
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from foundation.schemas import RAW_SCHEMAS
from foundation.sections.gates import GatesConfig


def validate(settings, dataset: str, ds: str, **kwargs):
    """The gate as the application calls it: the effective gates section and the lake of `settings`."""
    return validate_gate(settings.gates_config(), Lake.from_settings(settings), dataset, parse_ds(ds), **kwargs)

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def make_raw_day(ds: str, day_index: int, n_requests: int = 300, seed: int = 0) -> dict[str, pa.Table]:
    """One consistent day of every raw table: requests -> candidates -> exposures -> clicks -> purchases."""
    rng = np.random.default_rng(seed + day_index)
    start = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    n_items, n_users = 60, 40
    item_ids = np.arange(day_index * 1000, day_index * 1000 + n_items)
    rid = np.arange(n_requests) + day_index * 100_000
    users = rng.integers(0, n_users, n_requests)
    ts = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 86_000, n_requests)]
    cand = [(r, int(i), k) for j, r in enumerate(rid) for k, i in enumerate(rng.choice(n_items, 6, replace=False))]
    expo = [(r, i, k) for r, i, k in cand if k < 4]
    clicks = [e for e in expo if (e[0] + e[1]) % 3 == 0]
    buys = [c for c in clicks if (c[0] + c[1]) % 2 == 0]
    req_user = dict(zip(rid, users, strict=True))
    req_ts = dict(zip(rid, ts, strict=True))
    price = 10.0 + np.arange(len(buys))
    tables = {
        "items": {"item_id": item_ids, "listing_date": [date.fromisoformat(ds)] * n_items,
                  "listed_at": [start] * n_items, "title": [f"item {i}" for i in item_ids],
                  "category_id": item_ids % 16, "category": [f"cat{i % 16}" for i in item_ids],
                  "brand": ["b"] * n_items, "attributes": ["red,big"] * n_items, "price": 5.0 + item_ids % 7},
        "users": {"user_id": np.arange(n_users) + day_index * 1000, "signup_date": [date.fromisoformat(ds)] * n_users,
                  "region": [f"region_{u % 8}" for u in range(n_users)], "age_band": ["25-34", "55+"] * (n_users // 2)},
        "search_requests": {"request_id": rid, "user_id": users, "ts": ts, "query_text": ["red shoe"] * n_requests,
                            "intent_category_id": rid % 16},
        "rank_candidates": {"request_id": [c[0] for c in cand], "item_id": [item_ids[c[1]] for c in cand],
                            "rank": [c[2] for c in cand], "score": [1.0 / (1 + c[2]) for c in cand],
                            "channel": ["main"] * len(cand), "propensity": [1.0] * len(cand)},
        "item_experiments": {"item_id": item_ids[::2], "experiment": ["traffic_support"] * (n_items // 2),
                             "arm": ["control", "support"] * (n_items // 4),
                             "assigned_date": [date.fromisoformat(ds)] * (n_items // 2)},
    }
    for name, rows in (("exposures", expo), ("clicks", clicks)):
        tables[name] = {"request_id": [r[0] for r in rows], "user_id": [req_user[r[0]] for r in rows],
                        "item_id": [item_ids[r[1]] for r in rows], "position": [r[2] for r in rows],
                        "ts": [req_ts[r[0]] for r in rows]}
    tables["exposures"] |= {"channel": ["main"] * len(expo), "propensity": [1.0] * len(expo)}
    tables["purchases"] = {
        "order_id": np.arange(len(buys)) + day_index * 100_000, "request_id": [b[0] for b in buys],
        "user_id": [req_user[b[0]] for b in buys], "item_id": [item_ids[b[1]] for b in buys],
        "ts": [req_ts[b[0]] for b in buys], "price": price, "quantity": np.ones(len(buys)), "gmv": price}
    tables["site_orders"] = {
        "order_id": np.arange(50) + day_index * 100_000 + 50_000, "user_id": users[:50],
        "item_id": item_ids[np.arange(50) % n_items], "ts": ts[:50], "price": np.full(50, 3.0),
        "quantity": np.full(50, 2), "gmv": np.full(50, 6.0),
        "linked_request_id": [int(r) if k % 2 else None for k, r in enumerate(rid[:50])],
        "link_score": [0.5 if k % 2 else None for k in range(50)]}
    return {t: pa.table(cols).cast(RAW_SCHEMAS[t]) for t, cols in tables.items()}


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("gx_lake")
    lake = Lake.open(str(root))
    for i, ds in enumerate(DAYS):
        lake.write_many("raw", ds, make_raw_day(ds, i))
    return root


def settings_for(root):
    return load_settings("tiny", overrides={"lake_root": str(root)})


def test_clean_day_passes(clean_lake):
    result = validate(settings_for(clean_lake), "raw", DAYS[1], build_docs=False)
    print(result.summary())
    assert result.passed, result.summary()
    assert len(result.suites) == 9 and result.n_expectations > 100


@pytest.fixture
def lake_copy(clean_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(clean_lake, root)
    return root


def _rewrite(root, table: str, ds: str, change) -> None:
    lake = Lake.open(str(root))
    lake.write_partition("raw", table, ds, change(lake.read_partition("raw", table, ds)))


def _failed(result) -> set[tuple[str, str, str, str]]:
    return {(f.table, f.partition, f.column, f.rule) for f in result.failures}



def test_schema_drift_retyped_column(lake_copy):
    _rewrite(lake_copy, "purchases", DAYS[1], lambda t: t.set_column(
        t.column_names.index("price"), "price", pc.cast(t["price"], pa.string())))
    result = validate(settings_for(lake_copy), "purchases", DAYS[1], build_docs=False)
    assert _failed(result) >= {("raw.purchases", "ds=2026-01-02", "price", "schema_type")}







def test_missing_or_out_of_range_propensity_is_named(lake_copy):
    def corrupt(t):
        p = t["propensity"].to_pylist()
        p[0], p[1], p[2] = None, 1.5, 0.0
        return t.set_column(t.column_names.index("propensity"), "propensity", pa.array(p, pa.float64()))

    _rewrite(lake_copy, "exposures", DAYS[1], corrupt)
    result = validate(settings_for(lake_copy), "exposures", DAYS[1], build_docs=False)
    failed = {f[2:] for f in _failed(result)}
    assert failed == {("propensity", "not_null"), ("propensity", "finite"), ("propensity", "propensity_in_0_1")}


def test_experiment_arm_outside_the_design_is_named(lake_copy):
    _rewrite(lake_copy, "item_experiments", DAYS[1], lambda t: t.set_column(
        t.column_names.index("arm"), "arm", pa.array(["boost"] + t["arm"].to_pylist()[1:])))
    result = validate(settings_for(lake_copy), "item_experiments", DAYS[1], build_docs=False)
    assert _failed(result) == {("raw.item_experiments", "ds=2026-01-02", "arm", "arm_values")}


def test_volume_drop_against_previous_day(lake_copy):
    _rewrite(lake_copy, "rank_candidates", DAYS[1], lambda t: t.slice(0, t.num_rows // 4))
    result = validate(settings_for(lake_copy), "rank_candidates", DAYS[1], build_docs=False)
    assert ("raw.rank_candidates", "ds=2026-01-02", "*", "volume_vs_previous_day") in _failed(result)


def test_price_change_share_counts_unit_errors_not_discounts_nor_new_items():
    before = pd.DataFrame({"item_id": [1, 1, 2, 3, 4, 5], "price": [10.0, 10.0, 20.0, 30.0, 40.0, 50.0]})
    today = pd.DataFrame({"item_id": pd.array([1, 1, 2, 3, 4, 6, None], "Int64"),
                          "price": [7.0, 10.0, 2000.0, 0.3, 40.0, 99.0, 1.0]})
    changes = frames.relative_median_change(today, before, "item_id", "price")
    # 1: one sale at a discount (median 8.5), 2: x100, 3: /100, 4: unchanged; 5 not sold today, 6 new
    assert changes.round(6).to_dict() == {1: 0.15, 2: 99.0, 3: 0.99, 4: 0.0}
    cfg = GatesConfig(price_change_min_items=4)
    assert price_change_share(changes, cfg) == 0.5
    assert price_change_share(changes.iloc[:3], cfg) is None      # too few items to compare


def test_results_json_and_data_docs_in_lake(lake_copy):
    result = validate(settings_for(lake_copy), "raw", DAYS[1])
    stored = json.loads(Path(result.results_uri.removeprefix("file://")).read_text())
    assert stored["passed"] is True and len(stored["suites"]) == 9
    html = Path(result.data_docs_uri.removeprefix("file://")).read_text()
    for table in ("raw.items", "raw.clicks", "raw.purchases", "raw.site_orders"):
        assert table in html


def test_gate_on_s3_lake_stores_results_and_docs(s3_bucket):
    endpoint, root = s3_bucket
    settings = load_settings("tiny", overrides={"lake_root": root, "storage": {"s3_endpoint_url": endpoint}})
    lake = Lake.from_settings(settings)
    lake.write_many("raw", DAYS[0], make_raw_day(DAYS[0], 0))
    result = validate(settings, "clicks", DAYS[0])
    assert result.passed, result.summary()
    assert json.loads(lake.store.get_bytes(f"validation/gate_results/ds={DAYS[0]}/clicks.json"))["passed"]
    assert b"raw.clicks" in lake.store.get_bytes(f"validation/data_docs/clicks/ds={DAYS[0]}/index.html")
