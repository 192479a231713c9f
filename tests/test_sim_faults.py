"""Each injected fault is present exactly as named (`FAULTS`), on the chosen day only."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sim_fixtures import START, tiny_config
from test_sim_determinism import partition_bytes

from foundation.lake import Lake, parse_ds
from simulator.faults import FAULTS, check
from simulator.run import simulate

DAYS, BAD, NEXT = 3, "2026-01-02", "2026-01-03"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Lake:
    lake = Lake.open(str(tmp_path_factory.mktemp("clean")))
    simulate(lake, tiny_config(), seed=5, start=START, days=DAYS, progress=False)
    return lake


def injected(tmp_path, *faults: str) -> Lake:
    lake = Lake.open(str(tmp_path))
    simulate(lake, tiny_config(), seed=5, start=START, days=DAYS, inject=faults, inject_day=BAD, progress=False)
    return lake


def changed(clean: Lake, bad: Lake) -> set[str]:
    a, b = partition_bytes(clean), partition_bytes(bad)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def pairs(t: pa.Table) -> set[tuple]:
    return set(zip(t.column("request_id").to_pylist(), t.column("item_id").to_pylist(), strict=True))


def test_faults_are_documented_and_checked():
    assert set(FAULTS) == {"schema_drift", "nulls", "duplicates", "funnel_violation", "missing_partition", "late_data",
                           "price_units"}
    assert all(len(text) > 40 for text in FAULTS.values())
    with pytest.raises(ValueError, match="unknown fault"):
        check(["gremlins"])
    with pytest.raises(ValueError, match="not one of the simulated days"):
        simulate(Lake.open("/nonexistent-lake"), tiny_config(), start=START, days=1, inject=["nulls"],
                 inject_day=NEXT, progress=False)


def test_schema_drift(clean, tmp_path):
    bad = injected(tmp_path, "schema_drift")
    assert changed(clean, bad) == {f"raw/exposures/{BAD}"}
    drifted, good = bad.read_partition("raw", "exposures", BAD), clean.read_partition("raw", "exposures", BAD)
    assert drifted.column_names == [("slot" if c == "position" else c) for c in good.column_names]
    assert drifted.schema.field("slot").type == pa.int64()
    assert drifted.column("slot").to_pylist() == good.column("position").to_pylist()


def test_nulls(clean, tmp_path):
    bad = injected(tmp_path, "nulls")
    assert changed(clean, bad) == {f"raw/clicks/{BAD}"}
    t, good = bad.read_partition("raw", "clicks", BAD), clean.read_partition("raw", "clicks", BAD)
    assert t.num_rows == good.num_rows and t.schema.equals(good.schema)
    assert 1 <= t.column("item_id").null_count <= max(1, round(0.05 * t.num_rows))
    assert all(t.column(c).null_count == 0 for c in t.column_names if c != "item_id")
    assert t.drop_columns(["item_id"]).equals(good.drop_columns(["item_id"]))


def test_duplicates(clean, tmp_path):
    bad = injected(tmp_path, "duplicates")
    assert changed(clean, bad) == {f"raw/purchases/{BAD}"}
    t, good = bad.read_partition("raw", "purchases", BAD), clean.read_partition("raw", "purchases", BAD)
    assert t.slice(0, good.num_rows).equals(good)
    extra = t.slice(good.num_rows)
    assert extra.num_rows >= 1
    assert set(extra.column("order_id").to_pylist()) <= set(good.column("order_id").to_pylist())
    assert t.num_rows - len(pc.unique(t.column("order_id"))) == extra.num_rows


def test_funnel_violation(clean, tmp_path):
    bad = injected(tmp_path, "funnel_violation")
    assert changed(clean, bad) == {f"raw/clicks/{BAD}"}
    t, good = bad.read_partition("raw", "clicks", BAD), clean.read_partition("raw", "clicks", BAD)
    exposed = pairs(bad.read_partition("raw", "exposures", BAD))
    orphans = pairs(t) - exposed
    assert t.slice(0, good.num_rows).equals(good)
    assert len(orphans) == t.num_rows - good.num_rows >= 1
    requests = set(bad.read_partition("raw", "search_requests", BAD).column("request_id").to_pylist())
    assert {r for r, _ in orphans} <= requests
    assert not pairs(good) - exposed


def test_missing_partition(clean, tmp_path):
    bad = injected(tmp_path, "missing_partition")
    assert not bad.exists("raw", "exposures", BAD)
    assert bad.list_partitions("raw", "exposures") == [parse_ds("2026-01-01"), parse_ds(NEXT)]
    assert changed(clean, bad) == {f"raw/exposures/{BAD}"}


def test_late_data(clean, tmp_path):
    bad = injected(tmp_path, "late_data")
    assert changed(clean, bad) == {f"raw/clicks/{BAD}", f"raw/clicks/{NEXT}"}
    day, good = bad.read_partition("raw", "clicks", BAD), clean.read_partition("raw", "clicks", BAD)
    nxt, good_next = bad.read_partition("raw", "clicks", NEXT), clean.read_partition("raw", "clicks", NEXT)
    late = nxt.slice(good_next.num_rows)
    assert nxt.slice(0, good_next.num_rows).equals(good_next)
    assert late.num_rows >= 1 and day.num_rows + late.num_rows == good.num_rows
    assert pairs(late) | pairs(day) == pairs(good) and not pairs(late) & pairs(day)
    assert {ts.date().isoformat() for ts in late.column("ts").to_pylist()} == {BAD}
    assert not pairs(late) & pairs(bad.read_partition("raw", "purchases", BAD))


def test_price_units(clean, tmp_path):
    bad = injected(tmp_path, "price_units")
    tables = ("purchases", "site_orders")
    assert changed(clean, bad) <= {f"raw/{t}/{BAD}" for t in tables} and changed(clean, bad)
    scaled, ordered = set(), set()
    for t in tables:
        got, good = bad.read_partition("raw", t, BAD), clean.read_partition("raw", t, BAD)
        assert got.drop_columns(["price", "gmv"]).equals(good.drop_columns(["price", "gmv"]))
        items = good.column("item_id").to_numpy()
        for column in ("price", "gmv"):
            ratio = got.column(column).to_numpy() / good.column(column).to_numpy()
            assert set(ratio.round(9)) <= {1.0, 100.0}
            assert not set(items[ratio > 1]) & set(items[ratio == 1])     # every order row of a hit item
        scaled |= set(items[ratio > 1])
        ordered |= set(items)
    assert len(scaled) == max(1, round(0.05 * len(ordered)))


def test_faults_combine_on_one_day(clean, tmp_path):
    bad = injected(tmp_path, *FAULTS)
    assert {k.rsplit("/", 1)[1] for k in changed(clean, bad)} == {BAD, NEXT}
    assert not bad.exists("raw", "exposures", BAD)
    assert bad.read_partition("raw", "clicks", BAD).column("item_id").null_count >= 1
