"""SidTrie: the trie accepts exactly the given SIDs (property test against a set)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.tokenizer.trie import SidTrie


@st.composite
def sid_sets(draw):
    k = draw(st.integers(1, 5))
    depth = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(st.integers(0, k - 1), min_size=depth, max_size=depth), max_size=40))
    return k, depth, np.array(rows, dtype=np.int64).reshape(len(rows), depth)


@settings(max_examples=150, deadline=None)
@given(sid_sets())
def test_trie_accepts_exactly_the_given_sids(case):
    k, depth, sids = case
    trie = SidTrie.from_sids(sids, codebook_size=k)
    truth = {tuple(r) for r in sids.tolist()}
    assert len(trie) == len(truth)
    assert trie.depth == depth and trie.codebook_size == k
    assert [tuple(r) for r in trie.sids.tolist()] == sorted(truth)
    # Every SID of the full grid: contains() agrees with set membership.
    for sid in itertools.product(range(k), repeat=depth):
        assert trie.contains(sid) == (sid in truth)
    # valid_next at every reachable prefix equals the brute-force set of next codes.
    prefixes = {(): 0}
    for d in range(depth):
        nxt = {}
        for prefix, node in prefixes.items():
            mask = trie.valid_next(np.array([node]))[0]
            expected = {s[d] for s in truth if s[:d] == prefix}
            assert set(np.flatnonzero(mask).tolist()) == expected
            children = trie.step(np.full(k, node), np.arange(k))
            assert ((children >= 0) == mask).all()
            for code in expected:
                nxt[prefix + (code,)] = int(children[code])
        prefixes = nxt
    # Leaves map back to their SID row.
    for prefix, node in prefixes.items():
        assert tuple(trie.sids[trie.leaf_index(np.array([node]))[0]].tolist()) == prefix
    assert not trie.valid_next(np.array([-1])).any()
    assert (trie.step(np.array([-1, 0]), np.array([0, k])) == -1).all()


def test_trie_save_load_roundtrip(tmp_path):
    sids = np.array([[3, 1, 2], [3, 1, 0], [0, 0, 0], [3, 1, 2]])
    trie = SidTrie.from_sids(sids, codebook_size=4)
    trie.save(tmp_path / "trie.npz")
    back = SidTrie.load(tmp_path / "trie.npz")
    assert len(back) == 3 and back.depth == 3 and back.codebook_size == 4
    np.testing.assert_array_equal(back.next_node, trie.next_node)
    assert back.contains([3, 1, 0]) and not back.contains([3, 1, 1])
    assert back.valid_next(np.array([0]))[0].tolist() == [True, False, False, True]


def test_trie_rejects_out_of_range_codes():
    with pytest.raises(ValueError):
        SidTrie.from_sids(np.array([[0, 5]]), codebook_size=4)
