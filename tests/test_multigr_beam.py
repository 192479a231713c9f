"""Constrained beam search: validity against the trie, exactness against brute force, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.sections.multigr import PROFILES, MultiGRConfig
from models.multigr.beam import SidItems, beam_search, trie_table
from models.multigr.data import context_tokens, left_pad, sid_tokens
from models.multigr.model import MultiGR, Vocab
from models.tokenizer.trie import SidTrie


def tiny_model(seed: int, levels: int = 3, k: int = 4) -> MultiGR:
    cfg = MultiGRConfig(**{**PROFILES["tiny"], "sid_levels": levels, "codebook_size": k, "seed": seed})
    torch.manual_seed(seed)
    model = MultiGR(cfg)
    with torch.no_grad():  # sharper, seed-dependent distributions than the 0.02-std init
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def random_prompts(model: MultiGR, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Prompts of different lengths, with user features and query words (left padding is exercised)."""
    v = model.vocab
    out = []
    for _ in range(n):
        hist = rng.integers(0, v.codebook_size, size=(rng.integers(0, 4), v.sid_levels))
        words = " ".join(f"w{i}" for i in rng.integers(0, 50, size=rng.integers(0, 3)))
        out.append(context_tokens(v, hist, rng.integers(0, 100, size=rng.integers(0, 3)), words, 4))
    return out


def exhaustive_scores(model: MultiGR, prompt: np.ndarray, candidates: np.ndarray) -> torch.Tensor:
    """log p(sid | prompt) of every candidate SID (C, L) by full forward passes without any cache."""
    v = model.vocab
    seqs = torch.from_numpy(np.stack([np.concatenate([prompt, sid_tokens(v, c[None])]) for c in candidates]))
    positions = torch.arange(seqs.shape[1]).expand_as(seqs)
    with torch.no_grad():
        h, _ = model(seqs, positions)  # (C, T, D)
        t0 = len(prompt) - 1
        total = torch.zeros(len(candidates))
        for level in range(v.sid_levels):
            logp = torch.log_softmax(model.sid_logits(h[:, t0 + level], level), dim=-1)  # (C, K)
            total += logp[torch.arange(len(candidates)), torch.from_numpy(candidates[:, level])]
    return total


def all_sids(levels: int, k: int) -> np.ndarray:
    return np.array(list(itertools.product(range(k), repeat=levels)), dtype=np.int64)


@pytest.mark.parametrize("constrained", [False, True])
def test_full_width_beam_equals_exhaustive_top_k(constrained):
    model = tiny_model(seed=3, levels=3, k=3)
    rng = np.random.default_rng(0)
    prompts = random_prompts(model, rng, 5)
    trie = SidTrie.from_sids(all_sids(3, 3)[rng.random(27) < 0.5], 3)
    top_k = 6
    res = beam_search(model, left_pad(prompts), [3, 9, 27], top_k, trie_table(trie) if constrained else None)
    cands = trie.sids if constrained else all_sids(3, 3)
    for i, prompt in enumerate(prompts):
        scores = exhaustive_scores(model, prompt, cands)
        best = torch.argsort(scores, descending=True, stable=True)[:top_k]
        torch.testing.assert_close(res.scores[i], scores[best], atol=1e-4, rtol=1e-4)
        assert {tuple(s) for s in res.sids[i].tolist()} == {tuple(c) for c in cands[best.numpy()]}


def renormalized_scores(model: MultiGR, prompt: np.ndarray, candidates: np.ndarray) -> torch.Tensor:
    """log q(sid | prompt) of every candidate, q being the model's distribution restricted at each level
    to the codes that extend a prefix of some candidate (brute force, no cache)."""
    v = model.vocab
    seqs = torch.from_numpy(np.stack([np.concatenate([prompt, sid_tokens(v, c[None])]) for c in candidates]))
    with torch.no_grad():
        h, _ = model(seqs, torch.arange(seqs.shape[1]).expand_as(seqs))
        t0 = len(prompt) - 1
        total = torch.zeros(len(candidates))
        for level in range(v.sid_levels):
            logits = model.sid_logits(h[:, t0 + level], level)  # (C, K)
            for i, c in enumerate(candidates):
                allowed = sorted({int(o[level]) for o in candidates if tuple(o[:level]) == tuple(c[:level])})
                total[i] += torch.log_softmax(logits[i, allowed], dim=-1)[allowed.index(int(c[level]))]
    return total


def test_renormalized_full_width_beam_equals_exhaustive_restricted_scores():
    model = tiny_model(seed=5, levels=3, k=3)
    rng = np.random.default_rng(2)
    prompts = random_prompts(model, rng, 4)
    trie = SidTrie.from_sids(all_sids(3, 3)[rng.random(27) < 0.4], 3)
    top_k = min(6, len(trie.sids))
    res = beam_search(model, left_pad(prompts), [3, 9, 27], top_k, trie_table(trie), renormalize=True)
    plain = beam_search(model, left_pad(prompts), [3, 9, 27], top_k, trie_table(trie), renormalize=False)
    assert torch.all(res.scores >= plain.scores - 1e-6)             # restricting the softmax only raises scores
    for i, prompt in enumerate(prompts):
        scores = renormalized_scores(model, prompt, trie.sids)
        best = torch.argsort(scores, descending=True, stable=True)[:top_k]
        torch.testing.assert_close(res.scores[i], scores[best], atol=1e-4, rtol=1e-4)
        assert {tuple(s) for s in res.sids[i].tolist()} == {tuple(c) for c in trie.sids[best.numpy()]}
    # a catalogue of one SID: every code is forced, its score is log 1 = 0
    single = beam_search(model, left_pad(prompts), [1, 1, 1], 1, trie_table(SidTrie.from_sids(all_sids(3, 3)[[7]], 3)),
                         renormalize=True)
    assert torch.allclose(single.scores, torch.zeros_like(single.scores))
    # unconstrained, there is nothing to renormalise over
    free = [beam_search(model, left_pad(prompts), [3, 9, 27], 5, renormalize=r) for r in (True, False)]
    assert torch.equal(free[0].scores, free[1].scores) and torch.equal(free[0].sids, free[1].sids)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 5),
    levels=st.integers(1, 3),
    density=st.floats(0.02, 1.0),
    widths=st.lists(st.integers(1, 12), min_size=3, max_size=3),
)
def test_constrained_decoding_only_returns_valid_distinct_sids(seed, k, levels, density, widths):
    rng = np.random.default_rng(seed)
    model = tiny_model(seed, levels, k)
    pool = all_sids(levels, k)
    valid = pool[rng.random(len(pool)) < density]
    if len(valid) == 0:
        valid = pool[:1]
    trie = SidTrie.from_sids(valid, k)
    widths = sorted(widths[:levels])
    top_k = widths[-1]
    renormalize = bool(seed % 2)                                   # both scorings obey the trie
    res = beam_search(model, left_pad(random_prompts(model, rng, 3)), widths, top_k, trie_table(trie), renormalize)
    for i in range(3):
        ok = torch.isfinite(res.scores[i])
        got = res.sids[i][ok].numpy()
        assert all(trie.contains(s) for s in got)
        assert len({tuple(s) for s in got}) == len(got)
        assert np.array_equal(trie.sids[trie.leaf_index(res.nodes[i][ok].numpy())], got)
        assert (res.sids[i][~ok] == -1).all()
        assert torch.all(res.scores[i][ok][:-1] >= res.scores[i][ok][1:])
        # when no level prunes a valid prefix, every valid SID reaches the last level: never under-filled
        # (narrower early beams may legitimately keep prefixes with fewer than top_k completions)
        prefixes = [len({tuple(s[: lvl + 1]) for s in valid.tolist()}) for lvl in range(levels)]
        if all(w >= n for w, n in zip(widths[:-1], prefixes[:-1], strict=False)):
            assert ok.sum() == min(top_k, len(valid))


def test_decoding_is_deterministic_for_a_fixed_seed():
    runs = []
    for _ in range(2):
        model = tiny_model(seed=11, levels=3, k=8)
        prompts = left_pad(random_prompts(model, np.random.default_rng(5), 4))
        runs.append(beam_search(model, prompts, [4, 8, 10], 10))
    assert torch.equal(runs[0].sids, runs[1].sids)
    assert torch.equal(runs[0].scores, runs[1].scores)


def test_unconstrained_mode_can_leave_the_trie_and_constraint_costs_little_quality():
    model = tiny_model(seed=2, levels=3, k=4)
    prompts = left_pad(random_prompts(model, np.random.default_rng(1), 4))
    trie = SidTrie.from_sids(all_sids(3, 4)[::7], 4)
    free = beam_search(model, prompts, [4, 16, 64], 5)
    bound = beam_search(model, prompts, [4, 16, 64], 5, trie_table(trie))
    assert not all(trie.contains(s) for s in free.sids.reshape(-1, 3).numpy())
    assert all(trie.contains(s) for s in bound.sids.reshape(-1, 3).numpy())
    assert torch.all(free.scores[:, 0] >= bound.scores[:, 0])


def test_items_sharing_a_sid_are_ordered_by_the_reranker():
    model = tiny_model(seed=4, levels=2, k=3)
    item_sids = np.array([[0, 0], [0, 0], [1, 2], [0, 0], [2, 1]])  # items 0, 1, 3 share (0, 0)
    trie = SidTrie.from_sids(item_sids, 3)
    res = beam_search(model, left_pad(random_prompts(model, np.random.default_rng(0), 2)), [3, 3], 3, trie_table(trie))
    index = SidItems(item_sids, 3)
    by_id = index.expand(res, top_n=5)
    reranked = index.expand(res, top_n=5, reranker=lambda req, items: items.astype(float))  # highest id first
    for i in range(2):
        order = [tuple(s) for s in res.sids[i].tolist()]
        expected_by_id = [it for sid in order for it in np.flatnonzero((item_sids == sid).all(1))]
        assert by_id.items[i].tolist() == expected_by_id
        pos = order.index((0, 0))
        start = sum(int((item_sids == s).all(1).sum()) for s in order[:pos])
        assert reranked.items[i, start : start + 3].tolist() == [3, 1, 0]
        assert np.all(np.diff(by_id.scores[i]) <= 0)


def test_vocab_layout_is_disjoint():
    v = Vocab(n_user_buckets=4, n_query_buckets=8, sid_levels=3, codebook_size=5)
    toks = context_tokens(v, np.array([[0, 1, 2]]), [7], "red shoe", 4)
    assert toks[0] == 1
    assert v.user_offset <= toks[1] < v.query_offset
    assert list(toks[2:5]) == [v.sid_offset + 0, v.sid_offset + 5 + 1, v.sid_offset + 10 + 2]
    assert all(v.query_offset <= t < v.sid_offset for t in toks[5:])
    assert v.size == v.sid_offset + 15
