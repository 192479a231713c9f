"""Prefix trie of valid semantic IDs (SIDs) as a dense transition table.

Used by constrained beam search: a decoder state is a trie node id; at each
level `valid_next` masks the logits and `step` follows the chosen code. Node 0
is the root; nodes at depth d (1..L) are numbered level by level, in the
sorted order of their prefixes, so the leaves (depth L) are nodes
`first_leaf .. first_leaf + N - 1` in the order of `sids`.

A single codebook size K for every level (the RQ-VAE uses the same K per
level; a 4th disambiguation level with a smaller range fits under the same K).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SidTrie:
    sids: np.ndarray        # (N, L) int64, unique valid SIDs, lexicographically sorted
    next_node: np.ndarray   # (num_nodes, K) int32, child node id or -1; root = 0
    codebook_size: int      # K

    @property
    def depth(self) -> int:
        """L, the number of codes in a SID."""
        return int(self.sids.shape[1])

    @property
    def num_nodes(self) -> int:
        return int(self.next_node.shape[0])

    @classmethod
    def from_sids(cls, sids: np.ndarray, codebook_size: int) -> SidTrie:
        """Build the trie of the distinct rows of `sids` (N, L); duplicates are merged."""
        sids = np.asarray(sids, dtype=np.int64)
        if sids.ndim != 2 or sids.shape[1] < 1:
            raise ValueError(f"sids must be (N, L) with L >= 1, got shape {sids.shape}")
        if sids.size and (sids.min() < 0 or sids.max() >= codebook_size):
            raise ValueError(f"codes must lie in [0, {codebook_size}), got [{sids.min()}, {sids.max()}]")
        uniq = np.unique(sids, axis=0) if len(sids) else sids.reshape(0, sids.shape[1])  # (N, L), sorted
        n, depth = uniq.shape
        # Per level d: distinct prefixes of length d+1, and for each the index of its parent prefix.
        parent_ids: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        level_sizes: list[int] = []
        for d in range(depth):
            if n == 0:
                parent_ids.append(np.zeros(0, np.int64))
                codes.append(np.zeros(0, np.int64))
                level_sizes.append(0)
                continue
            # rows are sorted, so a new prefix of length d+1 starts where any of the first d+1 codes changes
            changed = np.ones(n, bool)
            changed[1:] = (uniq[1:, : d + 1] != uniq[:-1, : d + 1]).any(axis=1)
            first_rows = np.flatnonzero(changed)                       # (P_d,)
            if d == 0:
                parent_ids.append(np.zeros(len(first_rows), np.int64))
            else:
                # parent prefix index = rank of this row among the level d-1 prefix starts
                prev_changed = np.ones(n, bool)
                prev_changed[1:] = (uniq[1:, :d] != uniq[:-1, :d]).any(axis=1)
                prefix_rank = np.cumsum(prev_changed) - 1                 # (N,)
                parent_ids.append(prefix_rank[first_rows])
            codes.append(uniq[first_rows, d])
            level_sizes.append(len(first_rows))
        offsets = np.concatenate([[1], 1 + np.cumsum(level_sizes)])  # node id of the first node per level
        next_node = np.full((int(offsets[-1]), codebook_size), -1, dtype=np.int32)
        for d in range(depth):
            parent_node = parent_ids[d] + (offsets[d - 1] if d > 0 else 0)
            child_node = offsets[d] + np.arange(level_sizes[d])
            next_node[parent_node, codes[d]] = child_node
        return cls(sids=uniq, next_node=next_node, codebook_size=int(codebook_size))

    @property
    def first_leaf(self) -> int:
        """Node id of the first leaf; leaf `first_leaf + i` is `sids[i]`."""
        return self.num_nodes - len(self.sids)

    def valid_next(self, nodes: np.ndarray) -> np.ndarray:
        """(B,) node ids -> (B, K) bool mask of the codes that extend a valid prefix.

        Invalid nodes (-1) and leaves get an all-False row.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        out = np.zeros((len(nodes), self.codebook_size), bool)
        ok = nodes >= 0
        out[ok] = self.next_node[nodes[ok]] >= 0
        return out

    def step(self, nodes: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(B,) node ids, (B,) codes -> (B,) child node ids (-1 where invalid)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        ok = (nodes >= 0) & (codes >= 0) & (codes < self.codebook_size)
        out = np.full(nodes.shape, -1, dtype=np.int32)
        out[ok] = self.next_node[nodes[ok], codes[ok]]
        return out

    def leaf_index(self, nodes: np.ndarray) -> np.ndarray:
        """(B,) leaf node ids -> (B,) row index into `sids` (-1 for non-leaves)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        idx = nodes - self.first_leaf
        return np.where((nodes >= self.first_leaf) & (idx < len(self.sids)), idx, -1)

    def contains(self, sid) -> bool:
        """True iff `sid` (length L) is one of the valid SIDs."""
        sid = np.asarray(sid, dtype=np.int64).reshape(-1)
        if len(sid) != self.depth:
            return False
        node = np.zeros(1, np.int64)
        for code in sid:
            node = self.step(node, np.array([code]))
            if node[0] < 0:
                return False
        return True

    def __len__(self) -> int:
        return len(self.sids)

    def save(self, path: str | Path) -> None:
        """Write an `.npz` file (sids, next_node, codebook_size)."""
        with open(path, "wb") as fh:
            np.savez_compressed(fh, sids=self.sids, next_node=self.next_node,
                                codebook_size=np.int64(self.codebook_size))

    @classmethod
    def load(cls, path: str | Path) -> SidTrie:
        with np.load(path) as z:
            return cls(sids=z["sids"], next_node=z["next_node"], codebook_size=int(z["codebook_size"]))
