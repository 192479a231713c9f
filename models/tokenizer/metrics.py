"""Quality figures of a SID assignment: collisions, per-level usage and perplexity, prefix semantics."""

from __future__ import annotations

import numpy as np
import pandas as pd


def perplexity(codes: np.ndarray) -> float:
    """exp(entropy) of the code distribution (= number of codes if used uniformly)."""
    if not len(codes):
        return 0.0
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def collisions(codes: np.ndarray) -> int:
    """Items minus distinct SIDs ((N, L) codes, no disambiguation token)."""
    return int(len(codes) - len(np.unique(codes, axis=0))) if len(codes) else 0


def purity(codes: np.ndarray, labels: np.ndarray) -> float:
    """Weighted purity of the clusters `codes` (N,) against `labels` (N,): share of items
    whose label is the majority label of their code."""
    df = pd.DataFrame({"c": codes, "y": labels})
    return float(df.groupby(["c", "y"]).size().groupby(level=0).max().sum() / len(df)) if len(df) else 0.0


def same_label_prefix_share(codes: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(P[same first code | two distinct items with the same label], same for two random items).

    Computed exactly from counts; items with a missing/empty label are ignored.
    """
    df = pd.DataFrame({"c": codes, "y": labels})
    df = df[df["y"].notna() & (df["y"].astype(str) != "")]
    n = len(df)
    if n < 2:
        return float("nan"), float("nan")
    pairs = lambda s: float((s * (s - 1)).sum())  # noqa: E731  ordered pairs of distinct items
    same_label = pairs(df.groupby("y").size())
    same_both = pairs(df.groupby(["y", "c"]).size())
    random_pairs = pairs(df.groupby("c").size()) / (n * (n - 1))
    return (same_both / same_label if same_label else float("nan")), random_pairs


def neighbour_prefix_share(x: np.ndarray, codes: np.ndarray, depth: int = 1, chunk: int = 2048) -> float:
    """Share of items whose nearest neighbour (cosine, in `x`) has the same first `depth` codes."""
    if len(x) < 2:
        return float("nan")
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    nn = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        sim = xn[s:s + chunk] @ xn.T                                       # (chunk, N)
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        nn[s:s + chunk] = sim.argmax(1)
    return float((codes[:, :depth] == codes[nn, :depth]).all(1).mean())


def sid_report(codes: np.ndarray, recon_mse: float | None = None, *, x: np.ndarray | None = None,
               categories: np.ndarray | None = None, brands: np.ndarray | None = None,
               codebook_size: int | None = None) -> dict:
    """The figures of one SID assignment: codes (N, L) before any disambiguation token."""
    n, depth = codes.shape
    out: dict = {
        "items": int(n),
        "distinct_sids": int(n - collisions(codes)),
        "collisions": collisions(codes),
        "collision_rate": collisions(codes) / n if n else 0.0,
        "max_items_per_sid": int(np.unique(codes, axis=0, return_counts=True)[1].max()) if n else 0,
        "level1_codes_used": int(len(np.unique(codes[:, 0]))) if n else 0,
        "levels": [],
    }
    for lvl in range(depth):
        prefix_groups = np.unique(codes[:, : lvl + 1], axis=0) if n else codes[:0]
        out["levels"].append({
            "level": lvl + 1,
            "codes_used": int(len(np.unique(codes[:, lvl]))),
            "codebook_size": codebook_size,
            "perplexity": perplexity(codes[:, lvl]),
            "distinct_prefixes": int(len(prefix_groups)),
        })
    if recon_mse is not None:
        out["reconstruction_mse"] = float(recon_mse)  # per dimension, on standardised inputs
    if x is not None and n > 1:
        out["nn_shares_level1"] = neighbour_prefix_share(x, codes, 1)
        out["nn_shares_level12"] = neighbour_prefix_share(x, codes, min(2, depth))
        out["random_shares_level1"] = float((np.bincount(codes[:, 0]) ** 2).sum() / n**2)
    for name, labels in (("category", categories), ("brand", brands)):
        if labels is None:
            continue
        labels = np.asarray(labels, dtype=object)
        known = pd.Series(labels).notna().to_numpy() & (pd.Series(labels).astype(str) != "").to_numpy()
        if known.sum() < 2:
            continue
        same, rnd = same_label_prefix_share(codes[:, 0], labels)
        out[f"level1_purity_{name}"] = purity(codes[known, 0], labels[known])
        out[f"same_{name}_shares_level1"] = same
        out[f"random_pair_shares_level1_{name}_items"] = rnd
    return out
