"""The dense retriever as MultiGR's collision re-ranker and as the second stage of GrowthGR-twoStage.

- `dr_reranker(query_vecs, lookup)`: a `models.multigr.beam.Reranker` -- (request index (M,),
  item id (M,)) -> DR score (M,) = <u_request, v_item> -- so that `SidItems.expand` orders the
  items sharing one generated SID by DR score (items without a vector come last).
- `two_stage(first_stage_items, query_vecs, lookup, top_n)`: MultiGR's top-N per request
  re-ordered by DR score, the best `top_n` kept (the paper's GrowthGR-twoStage re-ranks
  MultiGR's top 2000). Ties (and items without a vector, at the end) keep the first-stage order;
  -1 padding stays padding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from models.multigr.beam import Reranker

NO_VECTOR = -np.inf


class ItemVectors:
    """item id -> DR item vector, for the items of one encoded catalog."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray):
        order = np.argsort(np.asarray(item_ids, dtype=np.int64), kind="stable")
        self.ids = np.asarray(item_ids, dtype=np.int64)[order]
        self.vectors = np.asarray(vectors, dtype=np.float32)[order]

    def lookup(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors items.shape + (D,), found items.shape bool); unknown ids get zero vectors."""
        items = np.asarray(items, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(items.shape + (self.vectors.shape[-1],), np.float32), np.zeros(items.shape, bool)
        pos = np.clip(np.searchsorted(self.ids, items), 0, len(self.ids) - 1)
        found = self.ids[pos] == items
        return np.where(found[..., None], self.vectors[pos], 0.0).astype(np.float32), found


def dr_scores(query_vecs: np.ndarray, request: np.ndarray, items: np.ndarray, lookup: ItemVectors) -> np.ndarray:
    """<u_request, v_item> per (request, item) pair; -inf for items without a vector."""
    vecs, found = lookup.lookup(items)
    scores = np.einsum("md,md->m", np.asarray(query_vecs, np.float32)[np.asarray(request, np.int64)], vecs)
    return np.where(found, scores.astype(np.float64), NO_VECTOR)


def dr_reranker(query_vecs: np.ndarray, lookup: ItemVectors) -> Reranker:
    """The collision re-ranker of `SidItems.expand` for requests with query vectors (B, D)."""
    def rerank(request: np.ndarray, items: np.ndarray) -> np.ndarray:
        return dr_scores(query_vecs, request, items, lookup)
    return rerank


class Reranked(NamedTuple):
    items: np.ndarray    # (B, top_n) item ids, -1 padding
    scores: np.ndarray   # (B, top_n) DR scores, -inf for padding and items without a vector


def two_stage(first_stage_items: np.ndarray, query_vecs: np.ndarray, lookup: ItemVectors, top_n: int) -> Reranked:
    """Re-order each request's first-stage items (B, N) (-1 = padding) by DR score; keep `top_n`."""
    items = np.asarray(first_stage_items, dtype=np.int64)
    b, n = items.shape
    request = np.repeat(np.arange(b), n).reshape(b, n)
    scores = dr_scores(query_vecs, request.reshape(-1), items.reshape(-1), lookup).reshape(b, n)
    scores = np.where(items >= 0, scores, NO_VECTOR)
    # rank: real items with a vector by score, then real items without one, then padding (stable)
    tier = np.where(items < 0, 2, np.where(np.isfinite(scores), 0, 1))
    order = np.lexsort((np.arange(n)[None].repeat(b, 0), -np.where(np.isfinite(scores), scores, 0.0), tier), axis=1)
    keep = order[:, :top_n]
    out_items = np.take_along_axis(items, keep, 1)
    out_scores = np.take_along_axis(scores, keep, 1)
    if keep.shape[1] < top_n:
        pad = top_n - keep.shape[1]
        out_items = np.pad(out_items, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=NO_VECTOR)
    return Reranked(out_items, out_scores)
