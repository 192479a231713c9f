"""MultiGR offline evaluation on held-out days of a real simulated lake: simulator -> Spark
`gr_samples` -> text encoder + RQ-VAE SIDs -> SFT -> Recall/NDCG, through `growthgr multigr platform`.

The lake: the tiny simulator for 18 days, `gr_samples` for the last 12 (10 train days,
2 test days), SIDs fitted on the last train day and assigned again on the last test day with the
frozen tokenizer (the snapshot of evaluation: items listed on the test days are retrievable).
"""

from __future__ import annotations

import json
from datetime import date

import lightning as L
import numpy as np
import pytest
from typer.testing import CliRunner

from foundation.catalog import report_key
from foundation.lake import Lake, ds_range
from models.multigr import platform
from models.multigr.beam import trie_table
from models.multigr.model import MultiGR
from models.tokenizer.trie import SidTrie

pytest_plugins = ("spark_fixtures",)
pytestmark = pytest.mark.slow

DAYS = 18          # of the shared tiny world (2026-01-01 ..): what this test reads
FIRST_SAMPLES, LAST_TRAIN, DS = "2026-01-07", "2026-01-16", "2026-01-18"
TRAIN_END, DAY = date(2026, 1, 16), date(2026, 1, 18)    # LAST_TRAIN, DS as the models take them
TRAIN_DAYS, TEST_DAYS, EPOCHS = 10, 2, 20


@pytest.fixture(scope="module")
def platform_lake(tmp_path_factory, spark_settings, copy_world):
    """The shared tiny world (its first DAYS days are what this test reads)."""
    from models.tokenizer import embed, sids
    from spark_jobs.jobs import run_job

    root = copy_world(tmp_path_factory.mktemp("multigr_lake") / "lake")
    settings = spark_settings.model_copy(update={"lake_root": str(root)})
    lake = Lake.open(str(root))
    for ds in ds_range(FIRST_SAMPLES, DS):
        run_job(lake, settings.spark, settings.storage, "gr_samples", ds)
    embed.embed_new_items(lake, TRAIN_END, settings.tokenizer)
    sids.fit(lake, TRAIN_END, settings.tokenizer)
    embed.embed_new_items(lake, DAY, settings.tokenizer)
    sids.assign(lake, DAY, settings.tokenizer)
    return settings, lake


def untrained_recall(settings, lake: Lake, label: str, k: int) -> float:
    """Recall@k of the same network as the trained one, before training, on the same test requests."""
    data = platform.load_platform_data(lake, DAY, TRAIN_DAYS, TEST_DAYS)
    cfg = platform.platform_config(settings.multigr, data.codes, data.codebook_size)
    L.seed_everything(cfg.seed, verbose=False)
    model = MultiGR(cfg)
    scored = data.test[[len(r) > 0 for r in platform.relevant_sets(data.test, data.eval_lookup)[label]]]
    trie_next = trie_table(SidTrie.from_sids(data.eval_lookup.codes, cfg.codebook_size))
    out = platform.evaluate_samples(model, scored, data.eval_lookup, trie_next, platform.KS,
                                   beam_widths=[max(platform.KS)] * cfg.sid_levels)
    return out[label][f"recall@{k}"]


def test_platform_evaluation_on_held_out_days(platform_lake):
    from growthgr.cli import app

    settings, lake = platform_lake
    args = ["-p", "tiny", "--log-level", "WARNING", "multigr", "platform", "--ds", DS,
            "--train-days", str(TRAIN_DAYS), "--test-days", str(TEST_DAYS), "--epochs", str(EPOCHS)]
    result = CliRunner().invoke(app, args, env={"GROWTHGR_LAKE_ROOT": settings.lake_root})
    assert result.exit_code == 0, result.output + repr(result.exception)
    print(result.stdout)
    assert "popularity" in result.stdout and f"reports/multigr/ds={DS}/metrics.json" in result.stdout

    report = json.loads(lake.store.get_bytes(report_key("multigr", DS)))
    assert report["train_days"] == [FIRST_SAMPLES, LAST_TRAIN] and report["test_days"] == ["2026-01-17", DS]
    assert report["sid_snapshot"] == LAST_TRAIN and report["sid_version"] == "sid-20260116"
    assert report["eval_sid_snapshot"] == DS and report["new_items_with_sid"] > 0
    assert report["train_examples"] > 100 and report["test_requests"] > 0 and report["epochs"] == EPOCHS
    metrics = report["metrics"]
    assert set(metrics) == {"multigr_sft", "popularity"}
    for per_label in metrics.values():
        assert set(per_label) == {"search", "all-net"}
        for m in per_label.values():
            assert m["requests"] > 0
            assert all(np.isfinite(v) for v in m.values())
            assert 0 <= m["recall@10"] <= m["recall@100"] <= m["recall@1000"] <= 1
            assert all(0 <= m[f"ndcg@{k}"] <= 1 for k in report["ks"])
    search, all_net = metrics["multigr_sft"]["search"], metrics["multigr_sft"]["all-net"]
    assert all_net["requests"] > search["requests"]   # site orders add requests (all-net includes search)
    for label in ("search", "all-net"):
        assert metrics["popularity"][label]["requests"] == metrics["multigr_sft"][label]["requests"]

    # SFT learns something: well above the same network before training (about 100 / 600 items)
    before = untrained_recall(settings, lake, "search", 100)
    print(f"search recall@100: trained {search['recall@100']:.4f}, untrained {before:.4f}, "
          f"popularity {metrics['popularity']['search']['recall@100']:.4f}")
    assert search["recall@100"] > before + 0.15
