"""Learning curves (`models.training.learning_curves`): inside the block every training logs with
Lightning's CSVLogger; the lake gets each model's raw log and one row per epoch; training results
are the same as without the block; the day's report plots one chart per trained model."""

from __future__ import annotations

import copy
import io

import numpy as np
import pandas as pd
import pytest
import torch
from test_dense import CODES, tiny_cfg
from test_dense import world as dense_world
from test_itemltv_units import _tiny
from test_multigr_mopo import CFG, trained, uplift  # noqa: F401  (`trained` is a fixture)

from foundation import catalog
from foundation.catalog import CURVES
from foundation.lake import Lake
from foundation.sections.tokenizer import TokenizerConfig
from foundation.sections.trainer import TrainerConfig
from growthgr.report import page_stats, write_report
from models.dense.data import ItemTable, build_requests
from models.dense.train import fit as dense_fit
from models.itemltv.train import FULL, fit_model
from models.multigr.data import SFTDataModule
from models.multigr.model import Vocab
from models.multigr.mopo import align, build_contexts
from models.multigr.platform import sft_examples
from models.multigr.train import fit as multigr_fit
from models.tokenizer.rqvae import train_rqvae
from models.training import build_trainer, epoch_table, learning_curves

DS = "2026-02-16"
FOLDER = catalog.report_prefix(CURVES, DS)


def _table(lake: Lake, model: str, name: str = "epochs.csv") -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(lake.store.get_bytes(f"{FOLDER}/{model}/{name}")))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_epoch_table_means_each_metric_within_its_epoch():
    nan = float("nan")
    raw = pd.DataFrame({"epoch": [0, 0, 0, 1, 1, 1], "step": [0, 1, 1, 2, 3, 3],
                        "val_loss": [nan, nan, 1.5, nan, nan, 0.9], "train_loss": [2.0, 1.0, nan, 0.5, 0.25, nan]})
    table = epoch_table(raw)
    assert list(table.columns) == ["epoch", "train_loss", "val_loss"]
    assert table["epoch"].tolist() == [0, 1]
    assert table["train_loss"].tolist() == pytest.approx([1.5, 0.375])
    assert table["val_loss"].tolist() == pytest.approx([1.5, 0.9])


def test_nothing_is_logged_outside_a_block():
    assert build_trainer(TrainerConfig(), curve="dense").logger is None


def test_itemltv_and_dense_curves_one_row_per_epoch_same_results_and_in_the_report(tmp_path):
    lake = Lake.open(str(tmp_path / "lake"))
    splits, pre, cfg = _tiny()
    plain = fit_model(splits, pre, cfg, TrainerConfig(), use_uplift=True)
    with learning_curves(lake, FOLDER):
        logged = fit_model(splits, pre, cfg, TrainerConfig(), use_uplift=True)
    dcfg = tiny_cfg(max_epochs=3)                 # (the dense fit sets torch's threads: trained after ItemLTV)
    train, items, sids = dense_world(0, 300)
    table = ItemTable.from_frames(items, sids, CODES)
    dense_plain, dense_stats = dense_fit(dcfg, build_requests(train, dcfg), table)
    with learning_curves(lake, FOLDER):
        dense_logged, logged_stats = dense_fit(dcfg, build_requests(train, dcfg), table)

    # the same training results with the logger
    assert _same_weights(plain.model, logged.model) and _same_weights(dense_plain, dense_logged)
    assert (plain.train_loss, plain.val_loss) == (logged.train_loss, logged.val_loss)
    assert dense_stats["epoch_losses"] == logged_stats["epoch_losses"]

    # ItemLTV logs per epoch: one row per epoch, the losses its own callback recorded
    itemltv = _table(lake, FULL)
    assert list(itemltv.columns) == ["epoch", "train_loss", "val_loss"]
    assert itemltv["epoch"].tolist() == list(range(len(logged.train_loss))) == [0, 1]
    assert itemltv["train_loss"].tolist() == pytest.approx(logged.train_loss, rel=1e-6)
    assert itemltv["val_loss"].tolist() == pytest.approx(logged.val_loss, rel=1e-6)
    assert {"step", "epoch", "train_loss", "val_loss"} <= set(_table(lake, FULL, "metrics.csv").columns)

    # the dense retriever logs every step: its epoch rows are the epoch means it reports itself
    dense = _table(lake, "dense")
    assert dense.columns[0] == "epoch" and "train_loss" in dense.columns and len(dense.columns) > 2
    assert dense["epoch"].tolist() == [0, 1, 2]
    assert dense["train_loss"].tolist() == pytest.approx(logged_stats["epoch_losses"], abs=1e-4)
    assert len(_table(lake, "dense", "metrics.csv")) > 3                   # the raw log has every step

    page = lake.store.get_bytes(write_report(lake, DS)).decode()
    section = page[page.index(f'<section id="{CURVES}">'):]
    section = section[:section.index("</section>")]
    assert "Learning curves" in section and section.count("<figure") == 2
    assert f'alt="{FULL}"' in section and 'alt="dense"' in section
    assert page_stats(page) == {"tables": 0, "images": 2, "sections": 1}


def test_rqvae_multigr_sft_and_mopo_curves(tmp_path, trained):  # noqa: F811
    lake = Lake.open(str(tmp_path / "lake"))
    model, lookup, train, trie_next = trained
    examples = sft_examples(Vocab.from_config(CFG), train, lookup, CFG.max_history, CFG.max_query_words)
    ctx = build_contexts(CFG, train, lookup, uplift())
    mopo_cfg = CFG.mopo.model_copy(update={"steps": 4, "refresh_every": 2})
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    tcfg = TokenizerConfig(levels=2, codebook_size=4, latent_dim=4, hidden_dims=[8], epochs=2, warmup_epochs=1,
                           batch_size=32, kmeans_iters=5)
    plain, _ = align(copy.deepcopy(model), ctx, trie_next, mopo_cfg, seed=3)
    with learning_curves(lake, FOLDER):
        multigr_fit(CFG.model_copy(update={"max_epochs": 2}), SFTDataModule(examples, CFG.batch_size, CFG.seed))
        aligned, stats = align(copy.deepcopy(model), ctx, trie_next, mopo_cfg, seed=3)
        train_rqvae(x, tcfg)
    assert _same_weights(plain, aligned)

    sft = _table(lake, "multigr_sft")
    assert list(sft.columns) == ["epoch", "train_loss"] and sft["epoch"].tolist() == [0, 1]
    mopo = _table(lake, "multigr_mopo")
    assert list(mopo.columns) == ["epoch", "reward", "train_loss"] and mopo["epoch"].tolist() == [0, 1]
    assert mopo["reward"].tolist() == pytest.approx(stats["mean_reward"])   # windows of equal-size steps
    assert list(_table(lake, "rqvae_warmup").columns) == ["epoch", "recon"]
    rqvae = _table(lake, "rqvae")
    assert list(rqvae.columns) == ["epoch", "loss", "recon"] and rqvae["epoch"].tolist() == [0, 1]
