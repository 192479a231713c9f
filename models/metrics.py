"""Ranking metrics of every model and benchmark (pure numpy): Recall@K, NDCG@K, hit rate.

    ranking_metrics(ranked, relevant, ks=(10, 100))   # {"requests", "recall@10", "ndcg@10", ...}

`ranked` is (U, n) item ids, best first (-1 or any non-item id pads short lists); `relevant`
is either (U,) single relevant item ids (next-item retrieval, leave-one-out) or U arrays of
relevant ids (several purchases per request). A ranked item counts once, at its first
position. Rows without a relevant item are skipped (`requests` counts the scored rows).

- Recall@K = |relevant in top K| / |relevant|;
- NDCG@K with binary gains: DCG@K / ideal DCG@K (min(|relevant|, K) hits at the top);
- hit rate@K = share of rows with at least one relevant item in the top K (= Recall@K with
  one relevant item per row).

`graded_ndcg` is NDCG of one ranking by scores against graded (non-negative) gains, tied
scores sharing their average gain (as `sklearn.metrics.ndcg_score`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n) + 2.0)


def relevance(ranked: np.ndarray, relevant: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hits (U, n) bool: relevant and first occurrence in its row, relevant counts (U,) distinct)."""
    ranked = np.asarray(ranked)
    if isinstance(relevant, np.ndarray) and relevant.dtype != object and relevant.ndim == 1:
        hits, n_rel = ranked == relevant[:, None], np.ones(len(ranked), np.int64)
    else:
        hits = np.zeros(ranked.shape, bool)
        for i, rel in enumerate(relevant):
            hits[i] = np.isin(ranked[i], rel)
        n_rel = np.array([len(np.unique(r)) for r in relevant], np.int64)
    if ranked.shape[1] > 1:  # an item repeated in a row counts once
        order = np.argsort(ranked, axis=1, kind="stable")
        srt = np.take_along_axis(ranked, order, 1)
        repeat = np.zeros(ranked.shape, bool)
        np.put_along_axis(repeat, order, np.pad(srt[:, 1:] == srt[:, :-1], ((0, 0), (1, 0))), 1)
        hits &= ~repeat
    return hits, n_rel


def ranking_metrics(ranked: np.ndarray, relevant: np.ndarray | Sequence[np.ndarray], ks: Sequence[int],
                    metrics: Sequence[str] = ("recall", "ndcg")) -> dict[str, float]:
    """Mean `metrics` (of "recall", "ndcg", "hit") @k for every k of `ks` over the rows with a relevant item."""
    hits, n_rel = relevance(ranked, relevant)
    rows = n_rel > 0
    hits, n_rel = hits[rows], n_rel[rows]
    out = {"requests": float(rows.sum())}
    for k in ks:
        top, disc = hits[:, :k], _discounts(k)
        per_row = {
            "recall": top.sum(1) / n_rel,
            "ndcg": (top * disc[: top.shape[1]]).sum(1) / np.cumsum(disc)[np.minimum(n_rel, k) - 1],
            "hit": top.any(1),
        }
        for m in metrics:
            out[f"{m}@{k}"] = float(per_row[m].mean()) if len(top) else 0.0
    return out


def graded_ndcg(gains: np.ndarray, scores: np.ndarray, k: int | None = None) -> float:
    """NDCG(@k) of the ranking by `scores` (descending) with gains `gains` (>= 0); 0 if all gains are 0."""
    gains, scores = np.asarray(gains, float), np.asarray(scores, float)
    disc = _discounts(len(gains))
    if k is not None:
        disc[k:] = 0.0
    cum = np.concatenate([[0.0], np.cumsum(disc)])
    _, group, size = np.unique(-scores, return_inverse=True, return_counts=True)  # tie groups, best first
    end = np.cumsum(size)
    dcg = float((np.bincount(group, weights=gains) / size * (cum[end] - cum[end - size])).sum())
    ideal = float((np.sort(gains)[::-1] * disc).sum())
    return dcg / ideal if ideal > 0 else 0.0
