"""Trie-constrained beam search over semantic IDs, batched over requests and beams.

One Python loop over the L SID levels; everything inside is tensor ops over
(requests, beams, codes). At each level the log-probabilities of the K codes of
that level are added to the beam scores, codes that do not extend a valid SID
prefix (the `SidTrie` transition table says -1) are masked to -inf, and the top
`beam_widths[level]` (request, beam, code) triples survive. The KV cache is
of the generated tokens is re-indexed to the parents of the survivors (the
prompt's cache is shared by all beams of a request, never copied), so each
level costs one decoder step of one token per beam.

Scores are the model's log p(sid | prompt), not renormalised over the valid
codes (masking only removes candidates), unless `renormalize` (default: the
model's `cfg.renormalize_beams`): then each level's log-softmax runs over the
valid children of the beam's trie node only, so a score is log q(sid | prompt)
of the distribution restricted to the catalogue's SIDs (a forced code, the only
child of its node, costs nothing). With `trie_next=None` the same code
runs unconstrained (renormalising changes nothing there). Beam widths may
differ per level (the paper's dynamic width, narrow at the first levels); with
widths >= K**(level+1) the search is exhaustive.

Items sharing one SID are expanded by `SidItems.expand`, ordered within the SID
by a pluggable re-ranker (the dense retriever in production).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from models.multigr.data import Prompts
from models.multigr.model import MultiGR, select_beams
from models.tokenizer.trie import SidTrie

NEG_INF = float("-inf")


class BeamResult(NamedTuple):
    sids: Tensor  # (B, k, L) long codes, -1 where fewer than k valid SIDs exist
    scores: Tensor  # (B, k) float, log p(sid | prompt), sorted descending; -inf where invalid
    nodes: Tensor  # (B, k) long trie leaf node ids (-1 when unconstrained or invalid)


def trie_table(trie: SidTrie) -> Tensor:
    """The trie's dense transition table as a tensor (num_nodes, K) int32 (-1 = invalid)."""
    return torch.from_numpy(np.ascontiguousarray(trie.next_node))


def trie_children(trie_next: Tensor, nodes: Tensor) -> Tensor:
    """(B, w) node ids (-1 = dead) -> (B, w, K) child node ids (-1 = invalid)."""
    child = trie_next[nodes.clamp(min=0)].long()
    return child.masked_fill((nodes < 0)[..., None], -1)


@torch.no_grad()
def beam_search(
    model: MultiGR,
    prompts: Prompts,
    beam_widths: Sequence[int],
    top_k: int,
    trie_next: Tensor | None = None,
    renormalize: bool | None = None,
) -> BeamResult:
    """Top-`top_k` SIDs per prompt. `beam_widths`: one width per level, the last >= top_k.
    `renormalize`: scores over the trie's valid children only (None: `model.cfg.renormalize_beams`)."""
    vocab = model.vocab
    n_lv, k_codes = vocab.sid_levels, vocab.codebook_size
    if len(beam_widths) != n_lv or beam_widths[-1] < top_k:
        raise ValueError(f"need {n_lv} beam widths with the last >= top_k={top_k}, got {list(beam_widths)}")
    renormalize = model.cfg.renormalize_beams if renormalize is None else renormalize
    model.eval()
    dev = next(model.parameters()).device  # search runs where the model is (CPU or GPU); results on CPU
    trie_next = trie_next.to(dev) if trie_next is not None else None
    h, prefix = model(prompts.tokens.to(dev), prompts.positions.to(dev), prompts.valid.to(dev))  # (B, T, D)
    b = h.shape[0]
    h = h[:, -1:]  # (B, w=1, D)
    past = None  # generated-token cache, (B, w, H, l, Dh) per layer
    scores = torch.zeros(b, 1, device=dev)  # (B, w)
    nodes = torch.zeros(b, 1, dtype=torch.long, device=dev)  # (B, w) trie node of each beam, root = 0
    sids = torch.zeros(b, 1, 0, dtype=torch.long, device=dev)  # (B, w, level)
    for level in range(n_lv):
        w = scores.shape[1]
        logits = model.sid_logits(h, level)  # (B, w, K)
        if trie_next is not None:
            child = trie_children(trie_next, nodes)  # (B, w, K)
            if renormalize:
                logits = logits.masked_fill(child < 0, NEG_INF)
            logp = torch.log_softmax(logits, dim=-1).masked_fill(child < 0, NEG_INF)  # dead beams: all -inf
        else:
            logp = torch.log_softmax(logits, dim=-1)
        cand = scores[:, :, None] + logp
        width = min(beam_widths[level], w * k_codes)
        scores, flat = cand.view(b, -1).topk(width, dim=1)  # (B, w'), ties broken by index order
        parent, code = flat // k_codes, flat % k_codes  # (B, w')
        sids = torch.cat([sids.gather(1, parent[..., None].expand(-1, -1, level)), code[..., None]], dim=2)
        nodes = child.view(b, -1).gather(1, flat) if trie_next is not None else torch.full_like(flat, -1)
        if level < n_lv - 1:
            past = None if past is None else select_beams(past, parent)
            h, past = model.decode_step(vocab.sid_offset + level * k_codes + code, prefix, past)  # (B, w', D)
    scores, sids, nodes = scores[:, :top_k], sids[:, :top_k], nodes[:, :top_k]
    dead = torch.isinf(scores)
    return BeamResult(sids.masked_fill(dead[..., None], -1).cpu(), scores.cpu(), nodes.masked_fill(dead, -1).cpu())


Reranker = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(request index (M,), item id (M,)) -> score (M,); higher is first within a shared SID."""


class ItemList(NamedTuple):
    items: np.ndarray  # (B, n) item ids, -1 padding
    scores: np.ndarray  # (B, n) the SID's beam score of each item, -inf padding


def sid_keys(sids: np.ndarray, k_codes: int) -> np.ndarray:
    """(..., L) codes -> (...,) int64 mixed-radix keys (-1 for any negative code)."""
    keys = np.zeros(sids.shape[:-1], dtype=np.int64)
    for level in range(sids.shape[-1]):
        keys = keys * k_codes + sids[..., level]
    return np.where((sids < 0).any(-1), -1, keys)


class SidItems:
    """The items behind each SID (several items may share one), in CSR form."""

    def __init__(self, item_sids: np.ndarray, codebook_size: int, item_ids: np.ndarray | None = None):
        """item_sids: (N, L) codes of items `item_ids` (N,) (default 0..N-1)."""
        keys = sid_keys(np.asarray(item_sids, dtype=np.int64), codebook_size)  # (N,)
        order = np.argsort(keys, kind="stable")
        self.order = order if item_ids is None else np.asarray(item_ids, dtype=np.int64)[order]  # grouped by SID
        self.keys, self.starts = np.unique(keys[order], return_index=True)  # (S,), (S,)
        self.ends = np.append(self.starts[1:], len(keys))
        self.codebook_size = codebook_size

    def expand(
        self, result: BeamResult, top_n: int, reranker: Reranker | None = None
    ) -> ItemList:
        """SIDs in beam order -> up to `top_n` items per request; ties inside a SID by `reranker`."""
        b, k = result.scores.shape
        keys = sid_keys(result.sids.numpy(), self.codebook_size)  # (B, k)
        pos = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        found = self.keys[pos] == keys
        counts = np.where(found, self.ends[pos] - self.starts[pos], 0).reshape(-1)  # (B * k,)
        slot = np.repeat(np.arange(b * k), counts)  # (M,) which (request, beam) each item comes from
        within = np.arange(len(slot)) - np.repeat(np.cumsum(counts) - counts, counts)
        items = self.order[self.starts[pos.reshape(-1)][slot] + within]  # (M,)
        request = slot // k
        rerank = np.zeros(len(items)) if reranker is None else np.asarray(reranker(request, items), float)
        perm = np.lexsort((items, -rerank, slot))  # by request, then beam rank, then re-ranker
        slot, items = slot[perm], items[perm]
        request = slot // k
        rank = np.arange(len(items)) - np.searchsorted(request, request)  # rank within its request
        keep = rank < top_n
        out_items = np.full((b, top_n), -1, dtype=np.int64)
        out_scores = np.full((b, top_n), NEG_INF)
        out_items[request[keep], rank[keep]] = items[keep]
        out_scores[request[keep], rank[keep]] = result.scores.numpy().reshape(-1)[slot[keep]]
        return ItemList(out_items, out_scores)
