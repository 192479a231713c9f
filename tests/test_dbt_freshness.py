"""The dbt project's lake sources: the `dbt_build` step checks their freshness (`dbt source
freshness`) as of the run's day before it builds, and fails naming a stale raw table and its age;
the age is measured from `ds`, not the wall clock (the small lake's days are in 2026-03, long before
today). The analyst-facing metadata is complete: every mart column has a description, and the
report and the ItemLTV training set are exposures. A small hand-made lake written through the
Lake API (`test_dbt_stale_files.write_small_lake`: newest partition D2 of every table) stands in
for the simulator and the Spark jobs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from test_dbt_stale_files import D2, _items, _stats, write_small_lake
from typer.testing import CliRunner

from foundation.config import load_settings
from foundation.lake import Lake
from growthgr import pipeline
from warehouse.runner import DbtError, build, freshness, query, warehouse_dir

STALE_DS = D2 + timedelta(days=2)


def _settings(root, **warehouse):
    """tiny settings on the lake at `root`, with `warehouse` overrides (freshness thresholds)."""
    settings = load_settings("tiny", overrides={"lake_root": str(root)})
    return settings.model_copy(update={"warehouse": settings.warehouse.model_copy(update=warehouse)})


@pytest.fixture
def stale_lake(tmp_path):
    """The small lake, then a day STALE_DS of raw/items and curated/item_daily_stats only:
    raw/search_requests' newest partition (D2) is 2 days before STALE_DS."""
    lake = Lake.open(str(tmp_path / "lake"))
    write_small_lake(lake)
    lake.write_partition("raw", "items", STALE_DS, _items([(9, STALE_DS, 3, 15.0)]))
    lake.write_partition("curated", "item_daily_stats", STALE_DS, _stats([(9, 4)], STALE_DS))
    return lake


def test_a_stale_raw_table_fails_the_dbt_step_naming_the_source_and_its_age(stale_lake):
    with pytest.raises(DbtError) as err:
        pipeline.dbt(_settings(stale_lake.store.uri), STALE_DS)
    message = str(err.value)
    assert ("source raw.search_requests: error: stale, newest partition 2026-03-02 is 2 days before "
            f"ds {STALE_DS} (error after 1 days)") in message
    assert "raw.items" not in message and "curated.item_daily_stats" not in message   # fresh on STALE_DS
    with pytest.raises(DbtError, match="dim_items"):       # the step stopped before building the marts
        query(stale_lake, "select * from dim_items")
    # a larger threshold from the settings lets the same lake build
    out = pipeline.dbt(_settings(stale_lake.store.uri, freshness_error_after_days=2), STALE_DS)
    assert out["success"] and out["stale_warnings"] == [
        f"source raw.search_requests: warn: stale, newest partition 2026-03-02 is 2 days before ds {STALE_DS} "
        "(warn after 0 days)"]
    assert query(stale_lake, "select count(*) as n from dim_items").frame.n[0] == 4


def test_fresh_lake_builds_with_complete_analyst_metadata(tmp_path):
    lake = Lake.open(str(tmp_path / "lake"))
    write_small_lake(lake)
    out = pipeline.dbt(_settings(lake.store.uri), D2)       # the wall clock would call D2 stale
    assert out["success"] and not out["failures"] and out["stale_warnings"] == []
    # the sources are tables holding the committed rows
    tables = query(lake, "select table_schema || '.' || table_name as t, table_type from information_schema.tables "
                         "where table_schema in ('raw', 'curated', 'samples') order by 1").frame
    assert tables.to_dict("list") == {
        "t": ["curated.item_daily_stats", "raw.items", "raw.search_requests", "samples.itemltv_labels"],
        "table_type": ["BASE TABLE"] * 4}
    assert query(lake, "select count(*) as n from raw.search_requests").frame.n[0] == 3
    manifest = json.loads((warehouse_dir(lake) / "dbt_target" / "manifest.json").read_text())
    # every column of every mart (as built) has a description
    marts = query(lake, "select table_name, column_name from information_schema.columns "
                        "where table_schema = 'main'").frame
    described = {(n["name"], c) for n in manifest["nodes"].values() if n["resource_type"] == "model"
                 for c, col in n["columns"].items() if col.get("description")}
    missing = [(t, c) for t, c in marts.itertuples(index=False) if (t, c) not in described]
    assert len(marts) > 40 and not missing, missing
    exposures = {e["name"]: sorted(e["depends_on"]["nodes"]) for e in manifest["exposures"].values()}
    assert exposures == {
        "daily_report": ["source.growthgr.raw.items", "source.growthgr.samples.itemltv_labels"],
        "itemltv_training_set": ["model.growthgr.fct_itemltv_labels", "source.growthgr.raw.items",
                                 "source.growthgr.samples.itemltv_labels"]}


def test_freshness_command_exits_1_naming_the_stale_source(stale_lake, monkeypatch):
    from growthgr.cli import app

    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", stale_lake.store.uri)
    stale = CliRunner().invoke(app, ["--profile", "tiny", "dbt", "freshness", "--ds", f"{STALE_DS}"])
    assert stale.exit_code == 1 and "source raw.search_requests: error: stale" in stale.output, stale.output
    fresh = CliRunner().invoke(app, ["--profile", "tiny", "dbt", "freshness", "--ds", f"{STALE_DS - timedelta(days=1)}"])
    assert fresh.exit_code == 0, fresh.output
    assert f"dbt source freshness ok as of {STALE_DS - timedelta(days=1)}" in fresh.output
    assert "source raw.search_requests: warn" in fresh.output        # 1 day old: past warn_after_days=0


def test_a_lake_table_without_partitions_is_an_empty_typed_source(tmp_path):
    """Before the first cohort closes there are no labels (and here no search requests): each such
    source table is empty with the declared types, the marts build, and a freshness check names the
    missing raw table."""
    lake = Lake.open(str(tmp_path / "lake"))
    lake.write_partition("raw", "items", D2, _items([(1, D2, 3, 10.0)]))
    lake.write_partition("curated", "item_daily_stats", D2, _stats([(1, 4)], D2))
    assert build(lake).success
    labels = query(lake, "select * from samples.itemltv_labels").frame
    assert labels.empty and str(labels.dtypes["label_orders"]) == "int64"
    assert query(lake, "select count(*) as n from new_item_cohorts").frame.n[0] == 0
    funnel = query(lake, "select requests, exposures from fct_search_funnel_daily").frame
    assert funnel.to_dict("records") == [{"requests": 0, "exposures": 4}]
    with pytest.raises(DbtError) as err:
        freshness(lake, D2)
    assert str(err.value).splitlines()[1:] == [
        f"  source raw.search_requests: error: stale, no partition as of ds {D2} (error after 1 days)"]
