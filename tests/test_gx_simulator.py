"""GX gates on the real simulator's tiny output: clean days pass, every injected fault is caught by
the right suite, and `growthgr validate` prints a summary naming table, partition, column and rule."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from expectations.gate import validate as validate_gate
from foundation.config import load_settings
from foundation.lake import Lake, parse_ds
from foundation.schemas import RAW_SCHEMAS
from simulator import run as sim


def validate(settings, dataset: str, ds: str, **kwargs):
    """The gate as the application calls it: the effective gates section and the lake of `settings`."""
    return validate_gate(settings.gates_config(), Lake.from_settings(settings), dataset, parse_ds(ds), **kwargs)

FAULT_DAY, NEXT_DAY = "2026-01-03", "2026-01-04"


def simulated(root: Path, inject: tuple[str, ...] = ()):
    settings = load_settings("tiny", overrides={"lake_root": str(root)})
    sim.simulate(Lake.open(str(root)), settings.simulator, seed=1, start="2026-01-01", days=4,
                 inject=inject, inject_day=FAULT_DAY if inject else None, progress=False)
    return settings


def failed(result) -> set[tuple[str, str, str, str]]:
    return {(f.table, f.partition, f.column, f.rule) for f in result.failures}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("sim_clean"))


@pytest.mark.parametrize("ds", ["2026-01-01", FAULT_DAY, NEXT_DAY])   # the first day holds the initial catalog
def test_clean_simulator_days_pass_every_raw_suite(clean, ds):
    result = validate(clean, "raw", ds, build_docs=False)
    assert result.passed, result.summary()
    assert len(result.suites) == len(RAW_SCHEMAS)


def test_schema_drift_nulls_duplicates_late_data(tmp_path):
    settings = simulated(tmp_path, ("schema_drift", "nulls", "duplicates", "late_data"))
    day = failed(validate(settings, "raw", FAULT_DAY, build_docs=False))
    part = f"ds={FAULT_DAY}"
    assert ("raw.exposures", part, "position", "schema_column_exists") in day            # schema_drift
    assert ("raw.exposures", part, "*", "schema_columns") in day
    assert ("raw.clicks", part, "item_id", "not_null") in day                            # nulls
    assert ("raw.purchases", part, "order_id", "unique_key") in day                      # duplicates
    # late_data: rows of FAULT_DAY land in the next day's clicks partition.
    nxt = validate(settings, "raw", NEXT_DAY, build_docs=False)
    assert failed(nxt) == {("raw.clicks", f"ds={NEXT_DAY}", "ts", "ts_in_partition_day")}, nxt.summary()


def test_funnel_violation(tmp_path):
    result = validate(simulated(tmp_path, ("funnel_violation",)), "raw", FAULT_DAY, build_docs=False)
    assert failed(result) == {("raw.clicks", f"ds={FAULT_DAY}", "request_id,item_id", "funnel_click_has_exposure")}


def test_price_unit_error_on_a_few_items(tmp_path):
    result = validate(simulated(tmp_path, ("price_units",)), "raw", FAULT_DAY, build_docs=False)
    assert failed(result) == {("raw.site_orders", f"ds={FAULT_DAY}", "price", "price_change_vs_previous_days")}


def test_missing_partition_cli_summary(tmp_path, monkeypatch):
    from growthgr.cli import app

    simulated(tmp_path, ("missing_partition",))
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(tmp_path))
    out = CliRunner().invoke(app, ["--profile", "tiny", "validate", "raw", "--ds", FAULT_DAY, "--no-docs"])
    assert out.exit_code == 1, out.output
    assert f"FAIL raw.exposures [ds={FAULT_DAY}] column=* rule=partition_exists: no committed partition" in out.output
    assert "great_expectations" not in out.output          # libraries' INFO lines are off by default
    chatty = CliRunner().invoke(app, ["--profile", "tiny", "--lib-log-level", "INFO", "validate", "raw", "--ds",
                                      FAULT_DAY, "--no-docs"])
    assert chatty.exit_code == 1 and "INFO    great_expectations" in chatty.output
    ok = CliRunner().invoke(app, ["--profile", "tiny", "validate", "raw", "--ds", NEXT_DAY])
    assert ok.exit_code == 0, ok.output
    assert f"gate raw ds={NEXT_DAY}: PASSED" in ok.output
    html = (tmp_path / "validation" / "data_docs" / "raw" / f"ds={NEXT_DAY}" / "index.html").read_text()
    assert all(f"raw.{t}" in html for t in ("items", "users", "exposures", "clicks", "purchases"))


@pytest.fixture(scope="module")
def fortnight(tmp_path_factory):
    """14 clean tiny days (the drift rule needs previous days)."""
    root = tmp_path_factory.mktemp("sim_fortnight")
    settings = load_settings("tiny", overrides={"lake_root": str(root)})
    sim.simulate(Lake.open(str(root)), settings.simulator, seed=3, start="2026-01-01", days=14, progress=False)
    return settings


def test_ten_clean_days_raise_no_drift_alarm(fortnight):
    from expectations import frames
    from expectations.suites import PRICE_TABLES, add_drift_checks, add_price_change_checks

    lake, cfg = Lake.from_settings(fortnight), fortnight.gates_config()
    for day in range(5, 15):
        ds = f"2026-01-{day:02d}"
        result = validate(fortnight, "raw", ds, build_docs=False)
        assert result.passed, result.summary()
        today = {t: frames.read(lake, "raw", t, parse_ds(ds)) for t in ("exposures", "rank_candidates", *PRICE_TABLES)}
        checked = {t: len(add_drift_checks(lake, t, parse_ds(ds), today[t], cfg)[1])
                   for t in ("exposures", "purchases", "rank_candidates")}
        # every column and quantile of the tables with gates.drift_min_rows values a day (tiny purchases: ~30)
        assert checked == {"exposures": 6, "purchases": 0, "rank_candidates": 9}
        # the price rule is active (>= gates.price_change_min_items items ordered on earlier days too): no item moved
        prices = {t: add_price_change_checks(lake, t, parse_ds(ds), today[t], cfg) for t in PRICE_TABLES}
        assert {t: (len(rules), frame["_check_price_change_price"].max()) for t, (frame, rules) in prices.items()
                } == {"purchases": (1, 0.0), "site_orders": (1, 0.0)}


@pytest.mark.parametrize(("table", "column", "change"), [
    ("rank_candidates", "score", lambda f: f.assign(score=f["score"] * 3 + 5)),             # a ranker logging bug
    ("exposures", "position", lambda f: f.assign(position=f["position"] + 7)),              # a logging offset
])
def test_a_drifted_copy_of_a_clean_day_fails_naming_table_partition_column(fortnight, tmp_path, table, column, change):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(fortnight.lake_root, root)
    lake = Lake.open(str(root))
    ds = "2026-01-12"
    lake.write_partition("raw", table, ds, change(lake.read_partition("raw", table, ds).to_pandas()))
    settings = fortnight.model_copy(update={"lake_root": str(root)})
    result = validate(settings, "raw", ds, build_docs=False)
    assert ("raw." + table, f"ds={ds}", column, "drift_vs_previous_days") in failed(result), result.summary()


def _unit_error(factor: float):
    """Price and gmv of every fifth item (by id) x factor: a unit error that keeps gmv = price x quantity."""
    def change(f):
        scale = (f["item_id"] % 5 == 0).map({True: factor, False: 1.0})
        return f.assign(price=f["price"] * scale, gmv=f["gmv"] * scale)
    return change


@pytest.mark.parametrize(("table", "factor"), [("site_orders", 100.0), ("purchases", 0.01)])
def test_a_price_unit_error_on_some_items_of_a_clean_day_fails_naming_the_rule(fortnight, tmp_path, table, factor):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(fortnight.lake_root, root)
    lake = Lake.open(str(root))
    ds = "2026-01-12"
    changed = _unit_error(factor)(lake.read_partition("raw", table, ds).to_pandas())
    lake.write_partition("raw", table, ds, pa.Table.from_pandas(changed, RAW_SCHEMAS[table], preserve_index=False))
    result = validate(fortnight.model_copy(update={"lake_root": str(root)}), "raw", ds, build_docs=False)
    assert failed(result) == {("raw." + table, f"ds={ds}", "price", "price_change_vs_previous_days")}, result.summary()
    assert "of the items ordered today and on the previous days moved their median price" in result.summary()
