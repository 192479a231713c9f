"""The dbt project on the tiny simulator's output (via the Spark jobs): build passes its
tests, docs generate, analysts can query the DuckDB file, and a duplicated label row
fails the build with a message naming the grain test."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow as pa
import pytest
from spark_fixtures import TINY_LAST
from typer.testing import CliRunner

from foundation.lake import Lake
from warehouse.runner import DbtError, build, docs, query

pytest_plugins = ("spark_fixtures",)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dbt_lake(tiny_lake, tmp_path_factory):
    """A copy of the tiny lake (dbt writes its warehouse there), built once."""
    settings, lake, _ = tiny_lake
    root = tmp_path_factory.mktemp("dbt_lake") / "lake"
    shutil.copytree(lake.store.uri, root)
    settings = settings.model_copy(update={"lake_root": str(root)})
    return settings, Lake.open(str(root)), build(settings.lake_root)


def test_build_passes_and_marts_hold_the_labels(dbt_lake):
    settings, lake, result = dbt_lake
    assert result.success and not result.failures and result.nodes > 40
    # one cohort per closed label day of the lake (tests sharing the session's tiny lake may add days)
    parts = lake.list_partitions("samples", "itemltv_labels")
    labels = lake.read_partition("samples", "itemltv_labels", TINY_LAST).to_pandas()
    cohorts = query(settings.lake_root, "select * from new_item_cohorts order by cohort_date").frame
    last = cohorts.iloc[-1]
    assert len(cohorts) == len(parts) >= 1 and parts[-1] == TINY_LAST and last.n_items == len(labels)
    assert last.mean_label == pytest.approx(labels.label.mean())
    assert last.share_with_orders == pytest.approx((labels.label_orders > 0).mean())
    fct = query(settings.lake_root, "select label_start_day, label_end_day, count(*) as n from fct_itemltv_labels group by 1, 2").frame
    total = sum(lake.read_partition("samples", "itemltv_labels", p).num_rows for p in parts)
    assert fct.to_dict("records") == [{"label_start_day": 30, "label_end_day": 36, "n": total}]
    funnel = query(settings.lake_root, "select sum(exposures) as e, sum(gmv) as g from fct_search_funnel_daily").frame
    stats = lake.read_partition("curated", "item_daily_stats", TINY_LAST).to_pandas()
    assert funnel.e[0] == stats.exposures.sum()
    assert funnel.g[0] == pytest.approx(stats.gmv.sum())


def test_docs_generate_and_sql_command(dbt_lake, monkeypatch):
    settings, _, _ = dbt_lake
    index = docs(settings.lake_root)
    assert index.exists() and (index.parent / "catalog.json").exists()
    from growthgr.cli import app

    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", settings.lake_root)
    res = CliRunner().invoke(app, ["--profile", "tiny", "sql", "select count(*) as n from dim_items"])
    assert res.exit_code == 0, res.output
    n_items = query(settings.lake_root, "select count(distinct item_id) as n from staging.stg_items").frame.n[0]
    assert str(n_items) in res.output


def test_duplicated_label_row_fails_with_a_readable_message(dbt_lake, tmp_path):
    settings, lake, _ = dbt_lake
    root = tmp_path / "dup"
    shutil.copytree(settings.lake_root, root)
    dup = settings.model_copy(update={"lake_root": str(root)})
    dup_lake = Lake.open(str(root))
    labels = dup_lake.read_partition("samples", "itemltv_labels", TINY_LAST)
    dup_lake.write_partition("samples", "itemltv_labels", TINY_LAST, pa.concat_tables([labels, labels.slice(0, 1)]))
    with pytest.raises(DbtError) as err:
        build(dup.lake_root, select="stg_itemltv_labels+")
    message = str(err.value)
    # The staging grain test fails first; the marts built on it are skipped, and the message says so.
    assert "test unique_combination_stg_itemltv_labels_item_id__cohort_date: fail: Got 1 result" in message
    assert "downstream nodes skipped" in message and "fct_itemltv_labels" in message
    assert isinstance(query(settings.lake_root, "select 1 as x").frame, pd.DataFrame)
