"""Smoke tests of the shared model plumbing: one `fast_dev_run` step of the RQ-VAE and of MultiGR
SFT on the `models.training` Trainer, faiss k-means initialisation, and `models.metrics`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score
from torch.utils.data import DataLoader, TensorDataset

from foundation.sections.multigr import PROFILES as MULTIGR_PROFILES
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.tokenizer import PROFILES as TOKENIZER_PROFILES
from foundation.sections.tokenizer import TokenizerConfig
from foundation.sections.trainer import TrainerConfig
from models.metrics import graded_ndcg, ranking_metrics
from models.multigr.data import SFTDataModule, sample_example
from models.multigr.model import Vocab
from models.multigr.train import fit
from models.tokenizer.rqvae import RQVAE, RQVAEModule, kmeans, kmeans_init
from models.training import build_trainer


def tokenizer_cfg(**kw) -> TokenizerConfig:
    return TokenizerConfig(**{**TOKENIZER_PROFILES["tiny"], **kw})


def test_rqvae_fast_dev_run():
    cfg = tokenizer_cfg()
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    model = RQVAE(x.shape[1], cfg)
    kmeans_init(model, x, cfg)
    trainer = build_trainer(TrainerConfig(), fast_dev_run=True)
    trainer.fit(RQVAEModule(model, cfg), DataLoader(TensorDataset(x), batch_size=16))
    assert trainer.global_step == 1
    codes, mse = model.encode_codes(x)
    assert codes.shape == (64, cfg.levels) and codes.min() >= 0 and codes.max() < cfg.codebook_size
    assert np.isfinite(mse)


def test_faiss_kmeans_is_seeded_and_falls_back_below_k():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 3)) * 10
    x = (centers[rng.integers(4, size=400)] + rng.normal(size=(400, 3)) * 0.1).astype(np.float32)
    a, b = kmeans(x, 4, 10, seed=3), kmeans(x, 4, 10, seed=3)
    assert a.shape == (4, 3) and np.array_equal(a, b)
    assign = ((x[:, None] - a[None]) ** 2).sum(2).argmin(1)                 # Lloyd's fixed point
    assert all(np.allclose(a[c], x[assign == c].mean(0), atol=1e-3) for c in np.unique(assign))
    few = kmeans(x[:5], 8, 10, seed=0)
    assert few.shape == (8, 3) and np.array_equal(few[:5], x[:5])


def test_multigr_sft_fast_dev_run():
    cfg = MultiGRConfig(**MULTIGR_PROFILES["tiny"])
    vocab, rng = Vocab.from_config(cfg), np.random.default_rng(0)
    examples = [sample_example(vocab, np.array([1]), rng.integers(0, cfg.codebook_size, cfg.sid_levels))
                for _ in range(40)]
    model, seconds = fit(cfg, SFTDataModule(examples, 8, cfg.seed), fast_dev_run=True)
    assert seconds >= 0 and model.num_params() > 0
    assert next(model.parameters()).device.type == "cpu"


def test_ranking_metrics():
    ranked = np.array([[3, 1, 2, -1], [5, 6, 7, 8], [4, 4, 9, 0]])
    m = ranking_metrics(ranked, np.array([1, 9, 4]), (1, 2), ("recall", "ndcg", "hit"))
    assert m["requests"] == 3
    assert m["recall@1"] == m["hit@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    # several relevant items; a repeated item counts once; rows without a relevant item are skipped
    m = ranking_metrics(ranked, [np.array([1, 2]), np.array([]), np.array([4, 0])], (4,))
    assert m["requests"] == 2
    assert m["recall@4"] == pytest.approx(1.0)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@4"] == pytest.approx(((1 / np.log2(3) + 1 / np.log2(4)) / ideal + (1 + 1 / np.log2(5)) / ideal) / 2)


def test_graded_ndcg_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        gains, scores = rng.random(12) * 3, rng.integers(0, 4, 12).astype(float)
        assert graded_ndcg(gains, scores) == pytest.approx(ndcg_score(gains[None], scores[None]))
        assert graded_ndcg(gains, scores, 5) == pytest.approx(ndcg_score(gains[None], scores[None], k=5))
    assert graded_ndcg(np.zeros(3), np.arange(3.0)) == 0.0
