"""`growthgr tokenizer ...` through the real CLI, and a check on the real Amazon item texts."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_tokenizer_sids import catalog, write_items
from typer.testing import CliRunner

from foundation.config import load_settings
from foundation.lake import Lake
from growthgr.cli.tokenizer import dataset_report
from models.tokenizer import embed

AMAZON = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-industrial"


@pytest.fixture(scope="module")
def encoder():
    return embed.load_encoder(32)


def run(args: list[str], lake_root: Path) -> str:
    from growthgr.cli import app

    result = CliRunner().invoke(app, ["-p", "tiny", "--log-level", "WARNING", "tokenizer", *args],
                                env={"GROWTHGR_LAKE_ROOT": str(lake_root)})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def last_json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_cli_fit_assign_report(tmp_path, encoder):
    root = tmp_path / "lake"
    lake = Lake.open(str(root))
    write_items(lake, catalog(0, 80, "2026-02-01", 3), "2026-02-01")
    write_items(lake, catalog(500, 10, "2026-02-02", 4), "2026-02-02")
    fit = last_json(run(["fit", "--ds", "2026-02-01", "--json"], root))
    assert fit["items"] == 80 and fit["sid_version"] == "sid-20260201"
    assert set(fit) >= {"collisions", "level1_codes_used", "levels", "reconstruction_mse"}
    assert last_json(run(["assign", "--ds", "2026-02-02"], root))["new_items"] == 10
    rep = last_json(run(["report", "--ds", "2026-02-02", "--json"], root))
    assert rep["items"] == 90 and rep["ds"] == "2026-02-02"
    assert 0 < rep["level1_purity_category"] <= 1
    # report --dataset on an item file writes nothing to the lake
    items = catalog(0, 60, "2026-02-01", 5)
    items[["item_id", "title", "category", "brand", "attributes", "price"]].to_parquet(tmp_path / "items.parquet")
    rep = last_json(run(["report", "--dataset", str(tmp_path / "items.parquet"), "--json"], root))
    assert rep["items"] == 60 and rep["collisions"] == 60 - rep["distinct_sids"]
    assert [lv["level"] for lv in rep["levels"]] == [1, 2, 3]
    assert lake.list_partitions("curated", "item_sids") == [date(2026, 2, 1), date(2026, 2, 2)]


@pytest.mark.slow
@pytest.mark.skipif(not (AMAZON / "items.json").exists(), reason=f"real dataset folder {AMAZON} is missing")
def test_real_amazon_texts_give_semantic_prefixes(encoder):
    """400 real product texts: few collisions, many level-1 codes, and nearest neighbours (by text)
    share their first code far more often than random pairs."""
    items = embed.read_item_file(AMAZON / "items.json").head(400)
    cfg = load_settings("tiny", env={}, overrides={"tokenizer": {"codebook_size": 64, "epochs": 20}}).tokenizer
    rep = dataset_report(items, cfg)
    assert rep["items"] == 400
    assert rep["collision_rate"] < 0.05
    assert rep["level1_codes_used"] >= 48
    assert rep["nn_shares_level1"] > 3 * rep["random_shares_level1"]
    assert rep["same_brand_shares_level1"] > 2 * rep["random_pair_shares_level1_brand_items"]
    assert np.isfinite(rep["reconstruction_mse"]) and isinstance(pd.Series(rep["levels"]).iloc[0], dict)
