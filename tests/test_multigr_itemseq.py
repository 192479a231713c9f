"""ItemSeqGR (MultiGR over item positions): windows, exact renormalised beam, it learns a sequence rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from foundation.sections.multigr import PROFILES, MultiGRConfig
from models.metrics import ranking_metrics
from models.multigr.beam import sid_keys, trie_table
from models.multigr.itemseq import ItemSeqGR, SASRec, pad_items, rank_items, windows
from models.tokenizer.trie import SidTrie


def tiny(levels: int = 3, k: int = 4, n_items: int = 20, seed: int = 0,
         sharp: bool = False, item_loss: float = 0.0) -> tuple[ItemSeqGR, np.ndarray, SidTrie]:
    """A tiny model over random SIDs; `sharp`: weights ~ N(0, 0.5) in eval mode (peaked distributions)."""
    rng = np.random.default_rng(seed)
    sids = np.array(sorted(set(map(tuple, rng.integers(0, k, size=(200, levels)))))[:n_items])
    cfg = MultiGRConfig(**{**PROFILES["tiny"], "sid_levels": levels, "codebook_size": k, "dropout": 0.0, "seed": seed})
    torch.manual_seed(seed)
    model = ItemSeqGR(cfg, sids, item_loss=item_loss)
    if sharp:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5)
        model.eval()
    return model, sids, SidTrie.from_sids(sids, k)


def leaf_items(trie: SidTrie, sids: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(sid_keys(trie.sids, trie.codebook_size), sid_keys(sids, trie.codebook_size))
    out = np.full(trie.num_nodes, -1, np.int64)
    out[trie.first_leaf + rows] = np.arange(len(sids))
    return out


def test_windows_supervise_every_target_once_with_at_most_max_history_items():
    seq = np.arange(47)
    ws = windows(seq, 20)
    targets = [t for w in ws for t in w[1:]]
    assert sorted(targets) == list(range(1, 47)) and all(len(w) <= 21 for w in ws)
    assert windows(np.arange(1), 20) == [] and [list(w) for w in windows(np.arange(3), 20)] == [[0, 1, 2]]


def test_renormalised_full_width_beam_equals_brute_force_over_the_catalogue():
    model, sids, trie = tiny(sharp=True)
    hist = pad_items([np.array([3, 1]), np.array([5]), np.array([], np.int64)], left=True)
    res = model.beam_search(hist, width=len(sids), top_k=len(sids), trie_next=trie_table(trie))
    with torch.no_grad():
        h = model.encode(hist)[:, -1]
    for b in range(hist.shape[0]):
        brute = {}
        for sid in sids:
            z, score, node = h[b], 0.0, 0
            for lv, c in enumerate(sid):
                valid = trie.next_node[node] >= 0
                with torch.no_grad():
                    logits = model.level_logits(z, lv).masked_fill(~torch.from_numpy(valid), float("-inf"))
                score += float(torch.log_softmax(logits, -1)[c])
                node = trie.next_node[node][c]
                z = z + model.prefix.weight[lv * model.cfg.codebook_size + c].detach()
            brute[tuple(sid)] = score
        got = {tuple(s.tolist()): float(v) for s, v in zip(res.sids[b], res.scores[b], strict=True)}
        assert got.keys() == brute.keys()
        assert all(abs(got[s] - brute[s]) < 1e-4 for s in brute)
        assert np.isclose(sum(np.exp(list(brute.values()))), 1.0, atol=1e-4)  # a distribution over the catalogue


@pytest.mark.parametrize("item_loss", [0.0, 1.0])
def test_it_learns_a_deterministic_next_item_rule_and_decodes_only_catalogue_items(item_loss):
    model, sids, trie = tiny(n_items=12, item_loss=item_loss)
    n = len(sids)
    seqs = [np.array([(s + j) % n for j in range(6)]) for s in range(n)]  # next item = item + 1 (mod n)
    batch = pad_items([w for s in seqs for w in windows(s, model.cfg.max_history)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = model.loss(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    histories = [s[:4] for s in seqs]
    ranked = rank_items(model, histories, 5, 3, trie_table(trie), leaf_items(trie, sids))
    assert ((ranked >= 0) & (ranked < n)).all()
    assert ranking_metrics(ranked, np.array([s[4] for s in seqs]), (1,))["recall@1"] >= 0.9
    assert len(set(itertools.chain.from_iterable(ranked.tolist()))) > 1


def test_trie_loss_is_the_nll_of_the_renormalised_beam_score():
    model, sids, trie = tiny(sharp=True)
    seq = torch.tensor([[3, 1, 7]])  # targets 1 (after [3]) and 7 (after [3, 1])
    table = trie_table(trie)
    with torch.no_grad():
        loss = model.loss(seq, table)
        assert float(loss) < float(model.loss(seq))  # the restricted softmax puts no mass outside the catalogue
        nll = []
        for hist, target in (([3], 1), ([3, 1], 7)):
            res = model.beam_search(pad_items([np.array(hist)], left=True), len(sids), len(sids), table)
            row = [i for i, s in enumerate(res.sids[0].tolist()) if s == sids[target].tolist()][0]
            nll.append(-float(res.scores[0, row]))
    assert abs(float(loss) - np.mean(nll) / model.cfg.sid_levels) < 1e-4


def test_item_head_rescores_the_beam_by_sid_plus_item_log_probability():
    model, sids, trie = tiny(sharp=True, item_loss=1.0)
    table, leaves = trie_table(trie), leaf_items(trie, sids)
    histories = [np.array([3, 1]), np.array([5])]
    hist = pad_items(histories, left=True)
    logp = model.item_logp(hist)
    assert torch.allclose(logp.exp().sum(1), torch.ones(2), atol=1e-5)
    beam = model.beam_search(hist, len(sids), len(sids), table)
    items = torch.from_numpy(leaves)[beam.nodes]
    expected = items.gather(1, (beam.scores + logp.gather(1, items)).topk(4, dim=1).indices).numpy()
    ranked = rank_items(model, histories, len(sids), 4, table, leaves)
    assert (ranked == expected).all()


@pytest.mark.parametrize("item_loss", [0.0, 1.0])
def test_exclude_history_drops_the_history_and_keeps_the_order_of_the_rest(item_loss):
    model, sids, trie = tiny(sharp=True, item_loss=item_loss)
    table, leaves = trie_table(trie), leaf_items(trie, sids)
    histories = [np.array([3, 1, 7]), np.array([5]), np.array([0, 2])]
    full = rank_items(model, histories, len(sids), len(sids), table, leaves)
    ranked = rank_items(model, histories, len(sids), 5, table, leaves, exclude_history=True)
    for h, f, r in zip(histories, full, ranked, strict=True):
        assert not np.isin(r, h).any()
        assert (r == f[~np.isin(f, h)][:5]).all()
    sasrec = SASRec(model.cfg, len(sids)).eval()
    full, ranked = sasrec.rank(histories, len(sids)), sasrec.rank(histories, 5, exclude_history=True)
    for h, f, r in zip(histories, full, ranked, strict=True):
        assert (r == f[~np.isin(f, h)][:5]).all()
