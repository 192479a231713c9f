"""MultiGR SFT: the loss falls, a synthetic next-item task is learnt, checkpoints and the CLI work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from foundation.sections.multigr import PROFILES, MultiGRConfig
from models.metrics import ranking_metrics
from models.multigr.beam import beam_search, trie_table
from models.multigr.data import (
    SequenceData,
    SFTDataModule,
    collate,
    leave_one_out,
    left_pad,
    sample_example,
    sequence_examples,
)
from models.multigr.model import MultiGR, Vocab
from models.multigr.train import fit, load_checkpoint, rank_items, save_checkpoint
from models.tokenizer.trie import SidTrie

N_ITEMS = 30


def synthetic(seed: int = 0, n_users: int = 300) -> SequenceData:
    """Unique random 3-level SIDs (K=8); each user walks a fixed random permutation of the items."""
    rng = np.random.default_rng(seed)
    codes = np.array(np.unravel_index(rng.choice(8**3, N_ITEMS, replace=False), (8, 8, 8))).T
    step = rng.permutation(N_ITEMS)
    seqs = []
    for _ in range(n_users):
        seq = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(4, 8)) - 1):
            seq.append(int(step[seq[-1]]))
        seqs.append(np.array(seq))
    return SequenceData(seqs, codes.astype(np.int64))


def tiny_cfg(**kw) -> MultiGRConfig:
    return MultiGRConfig(**{**PROFILES["tiny"], "lr": 3e-3, **kw})


@pytest.fixture(scope="module")
def trained():
    cfg = tiny_cfg(max_epochs=12)
    data = synthetic()
    split = leave_one_out(Vocab.from_config(cfg), data, cfg.max_history)
    model, _ = fit(cfg, SFTDataModule(split.train, cfg.batch_size, cfg.seed))
    return cfg, data, split, model


def test_training_loss_falls():
    cfg = tiny_cfg(max_epochs=1)
    data = synthetic()
    split = leave_one_out(Vocab.from_config(cfg), data, cfg.max_history)
    batch = collate(split.train[:64])
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        initial = float(MultiGR(cfg).loss(batch.tokens, batch.targets))
    model, _ = fit(cfg.model_copy(update={"max_epochs": 4}), SFTDataModule(split.train, cfg.batch_size, cfg.seed))
    with torch.no_grad():
        final = float(model.eval().loss(batch.tokens, batch.targets))
    assert initial == pytest.approx(np.log(8), rel=0.05)  # uniform over the K=8 codes at init
    assert final < 0.75 * initial


def test_fits_synthetic_next_item_task_to_high_recall(trained):
    cfg, data, split, model = trained
    trie = SidTrie.from_sids(data.item_sids, cfg.codebook_size)
    leaf_items = np.full(trie.num_nodes, -1)
    rows = [int(np.flatnonzero((trie.sids == s).all(1))[0]) for s in data.item_sids]
    leaf_items[trie.first_leaf + np.array(rows)] = np.arange(N_ITEMS)
    ranked = rank_items(model, split.test_prompts, cfg.beam_widths, cfg.top_k, trie_table(trie), leaf_items)
    m = ranking_metrics(ranked, split.test_targets, (1, 10))
    assert m["recall@10"] >= 0.95
    assert m["recall@1"] >= 0.6  # chance is 1/30


def test_training_is_seeded(trained):
    cfg, _, split, _ = trained
    again, _ = fit(cfg.model_copy(update={"max_epochs": 1}), SFTDataModule(split.train[:64], cfg.batch_size, cfg.seed))
    twice, _ = fit(cfg.model_copy(update={"max_epochs": 1}), SFTDataModule(split.train[:64], cfg.batch_size, cfg.seed))
    for (name, a), b in zip(again.state_dict().items(), twice.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoint_roundtrip_gives_identical_beams(trained, tmp_path):
    cfg, data, split, model = trained
    save_checkpoint(model, tmp_path / "ckpt", {"note": "x"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    prompts = left_pad(split.test_prompts[:20])
    a = beam_search(model, prompts, cfg.beam_widths, cfg.top_k)
    b = beam_search(loaded, prompts, cfg.beam_widths, cfg.top_k)
    assert torch.equal(a.sids, b.sids)
    torch.testing.assert_close(a.scores, b.scores)


def test_sequence_examples_cover_all_prefixes_with_capped_history():
    v = Vocab(0, 0, 2, 4)
    sids = np.arange(14).reshape(7, 2) % 4
    ex = sequence_examples(v, sids, max_history=3)
    # first window: 4 items, all supervised; then one window per later target (items 4, 5, 6)
    assert [len(e.tokens) for e in ex] == [9, 9, 9, 9]
    assert ex[0].supervise_from == 1 and all(e.supervise_from == 7 for e in ex[1:])
    batch = collate(ex)
    assert int((batch.targets[0] >= 0).sum()) == 8 and int((batch.targets[1] >= 0).sum()) == 2
    assert torch.equal(batch.targets[1, 6:8], torch.from_numpy(sample_example(v, ex[1].tokens[:7], sids[4]).tokens[7:]))
    strided = sequence_examples(v, sids, max_history=3, stride=2)  # windows end at items 4, 6, 7
    assert [(len(e.tokens), e.supervise_from) for e in strided] == [(9, 1), (9, 5), (9, 7)]
    supervised = sum((len(e.tokens) - e.supervise_from) // 2 for e in strided)
    assert supervised == 7  # every item is a target exactly once


def test_cli_train_and_evaluate(tmp_path):
    from growthgr.cli import app

    data = synthetic(n_users=120)
    inter = tmp_path / "inter.json"
    sids = tmp_path / "sids.json"
    inter.write_text(json.dumps({str(u): s.tolist() for u, s in enumerate(data.sequences)}))
    sids.write_text(json.dumps({str(i): c.tolist() for i, c in enumerate(data.item_sids)}))
    runner = CliRunner()
    res = runner.invoke(app, ["-p", "tiny", "multigr", "train", "--inter", str(inter), "--sids", str(sids),
                              "--out", str(tmp_path / "ck"), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["params"] > 0
    res = runner.invoke(app, ["-p", "tiny", "multigr", "evaluate-seq", "--checkpoint", str(tmp_path / "ck"),
                              "--inter", str(inter), "--sids", str(sids)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["users"] == 120 and 0.0 <= out["ndcg@10"] <= out["recall@10"] <= 1.0
