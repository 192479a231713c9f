"""MultiGR on gr_samples-shaped requests: the query decides the purchase; SFT learns it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foundation.sections.multigr import PROFILES, MultiGRConfig
from models.metrics import ranking_metrics
from models.multigr.beam import trie_table
from models.multigr.data import SFTDataModule
from models.multigr.model import Vocab
from models.multigr.platform import SidLookup, evaluate_samples, sft_examples
from models.multigr.train import fit
from models.tokenizer.trie import SidTrie

N_ITEMS = 20


def world(seed: int, n_requests: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    codes = np.array(np.unravel_index(rng.choice(8**3, N_ITEMS, replace=False), (8, 8, 8))).T
    codes[1] = codes[0]  # items 100 and 101 share a SID
    item_ids = np.arange(100, 100 + N_ITEMS)
    sids = pd.DataFrame({"item_id": item_ids, "c1": codes[:, 0], "c2": codes[:, 1], "c3": codes[:, 2]})
    wanted = rng.integers(2, N_ITEMS, size=n_requests)
    samples = pd.DataFrame({
        "request_id": np.arange(n_requests),
        "user_id": rng.integers(0, 50, size=n_requests),
        "query_text": [f"brand{w} shoes" for w in wanted],
        "intent_category_id": wanted % 4,
        "history_item_ids": [list(rng.choice(item_ids, size=rng.integers(0, 4))) + [999] for _ in wanted],
        "purchase_ids": [[int(item_ids[w])] for w in wanted],
        "site_order_item_ids": [[int(rng.choice(item_ids))] for _ in wanted],
    })
    return samples, sids


def test_sft_on_requests_learns_query_to_item_and_evaluates_both_labels():
    cfg = MultiGRConfig(**{**PROFILES["tiny"], "lr": 5e-3, "max_epochs": 12})
    train, sids = world(0, 400)
    test, _ = world(1, 100)
    lookup = SidLookup(sids, ("c1", "c2", "c3"))
    examples = sft_examples(Vocab.from_config(cfg), train, lookup, cfg.max_history, cfg.max_query_words)
    assert len(examples) == 400
    model, _ = fit(cfg, SFTDataModule(examples, cfg.batch_size, cfg.seed))
    codes = sids[["c1", "c2", "c3"]].to_numpy()
    trie = SidTrie.from_sids(codes, cfg.codebook_size)
    out = evaluate_samples(model, test, lookup, trie_table(trie), ks=(1, 10))
    assert set(out) == {"search", "all-net"}
    assert out["search"]["requests"] == 100
    assert out["search"]["recall@10"] >= 0.9
    assert out["search"]["recall@1"] > 0.3
    assert out["all-net"]["recall@10"] <= out["search"]["recall@10"]


def test_multi_positive_metrics():
    ranked = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
    m = ranking_metrics(ranked, [np.array([2, 4]), np.array([8, 100]), np.array([])], (2, 4))
    assert m["requests"] == 2
    assert m["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["recall@4"] == pytest.approx((1.0 + 0.5) / 2)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@4"] == pytest.approx(((1 / np.log2(3) + 1 / np.log2(5)) / ideal + (1 / np.log2(5)) / ideal) / 2)
