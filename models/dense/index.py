"""FAISS index over the dense retriever's item vectors, its manifest, and its gate.

    index, manifest = build_index(vectors, cfg.index, item_ids, queries)   # queries: optional (Q, D)
    failures = gate_index(vectors, manifest)                               # [] when it may be published
    blob = index_to_bytes(index); index = index_from_bytes(blob, manifest)
    ids, scores = search(index, query_vectors, k=100)
    ids, vectors = index_vectors(index)                                    # what a stored index holds
    recall = measure_recall(index, queries, k=100)                         # against exact search, again

Vectors are L2-normalised, so inner product (the model's score without its temperature) is the
metric. The index carries the item ids (`IndexIDMap2`), so a search returns item ids.

- n items <= `exact_max_items`: exact search (`IndexFlatIP`); measured recall is 1 by definition.
- above: `IndexIVFFlat` (spherical k-means with `nlist` lists, `ivf_nlist` or about 4 sqrt(n),
  at most n / 39 so every list has enough training points) or `IndexHNSWFlat` (`hnsw_m` links,
  `hnsw_ef_construction`). Its search parameter (nprobe / efSearch) is the smallest value whose
  recall@`recall_k` against exact search on the same vectors is >= `target_recall`, found by
  doubling then bisection (recall is taken as non-decreasing in the parameter), measured on
  `queries` (e.g. query vectors of real requests) or, without them, on `recall_queries` item
  vectors sampled with `seed`. Recall@k = |approximate top k intersect exact top k| / k
  averaged over the queries (`models.metrics.ranking_metrics`).

The manifest (JSON-able) records kind, metric, dim, n items, parameters, the measured recall,
target, k, number of queries and the recall of every parameter value tried. It holds no timing
so that the same inputs give the same manifest. HNSW graphs are byte-identical only with
`threads == 1` (parallel insertion order varies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

from foundation.sections.dense import DenseIndexConfig
from models.metrics import ranking_metrics

MIN_POINTS_PER_LIST = 39


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries -> (item ids (Q, k), inner products (Q, k)), best first; -1 pads short lists."""
    scores, ids = index.search(_as_f32(queries), k)
    return ids, scores


def recall_against_exact(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean |approx top k intersect exact top k| / |exact top k| (rows of (Q, k) ids)."""
    relevant = [row[row >= 0] for row in exact_ids]
    k = exact_ids.shape[1]
    return ranking_metrics(approx_ids, relevant, (k,), ("recall",))[f"recall@{k}"]


def exact_ids(vectors: np.ndarray, item_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) item ids of the exact inner-product top k of `queries` over `vectors`."""
    return search(_id_map(faiss.IndexFlatIP(vectors.shape[1]), _as_f32(vectors), np.asarray(item_ids, np.int64)),
                  queries, k)[0]


def index_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(item ids (N,), vectors (N, D) float32) stored in an index of `build_index` (flat, IVF or HNSW)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexIVF):
        inner.make_direct_map()
    return faiss.vector_to_array(index.id_map).astype(np.int64), inner.reconstruct_n(0, inner.ntotal)


def measure_recall(index: faiss.Index, queries: np.ndarray, k: int) -> float:
    """Recall@k of `index` (as its search parameter is set) against exact search over the vectors
    it stores, on `queries` (Q, D): what a stored index delivers, whatever its manifest says."""
    ids, vectors = index_vectors(index)
    k = min(k, len(ids))
    if not len(queries) or not k:
        return float("nan")
    return recall_against_exact(exact_ids(vectors, ids, queries, k), search(index, queries, k)[0])


def smallest_passing(recall_of: Callable[[int], float], lo: int, hi: int, target: float
                     ) -> tuple[int, float, list[tuple[int, float]]]:
    """The smallest v in [lo, hi] with recall_of(v) >= target (doubling, then bisection), its recall,
    and every (v, recall) measured; (hi, recall_of(hi), ...) when none passes."""
    tried: dict[int, float] = {}

    def measure(v: int) -> float:
        if v not in tried:
            tried[v] = recall_of(v)
        return tried[v]

    fail, v = lo - 1, lo
    while measure(v) < target:
        if v >= hi:
            return hi, tried[hi], sorted(tried.items())
        fail, v = v, min(2 * v, hi)
    while v - fail > 1:                       # invariant: fail fails (or is below lo), v passes
        mid = (fail + v) // 2
        if measure(mid) >= target:
            v = mid
        else:
            fail = mid
    return v, tried[v], sorted(tried.items())


def _id_map(base: faiss.Index, vectors: np.ndarray, item_ids: np.ndarray) -> faiss.IndexIDMap2:
    index = faiss.IndexIDMap2(base)
    index.add_with_ids(vectors, item_ids)
    return index


def set_search_param(index: faiss.Index, kind: str, value: int) -> None:
    """nprobe (IVF) or efSearch (HNSW) of an index (also inside its id map)."""
    if kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(value)
    elif kind == "hnsw":
        inner: Any = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
        inner.hnsw.efSearch = int(value)


def ivf_nlist(n: int, cfg: DenseIndexConfig) -> int:
    wanted = cfg.ivf_nlist or int(round(4 * math.sqrt(n)))
    return max(1, min(wanted, n // MIN_POINTS_PER_LIST))


def _approximate(vectors: np.ndarray, cfg: DenseIndexConfig) -> tuple[faiss.Index, str, dict[str, int], int, int]:
    """(unfilled base index, param name, fixed params, param search range lo, hi)."""
    n, d = vectors.shape
    if cfg.kind == "ivf":
        nlist = ivf_nlist(n, cfg)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed, ivf.cp.spherical = cfg.seed, True
        ivf.train(vectors)
        return ivf, "nprobe", {"nlist": nlist}, 1, nlist
    hnsw = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = cfg.hnsw_ef_construction
    lo = min(cfg.recall_k, cfg.max_ef_search)       # efSearch below k searches as k
    return hnsw, "efSearch", {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction}, lo, cfg.max_ef_search


def sample_queries(vectors: np.ndarray, cfg: DenseIndexConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    return vectors[rng.choice(len(vectors), min(cfg.recall_queries, len(vectors)), replace=False)]


def build_index(vectors: np.ndarray, cfg: DenseIndexConfig, item_ids: np.ndarray | None = None,
                queries: np.ndarray | None = None) -> tuple[faiss.Index, dict[str, Any]]:
    """The index of `vectors` (N, D) with ids `item_ids` (default 0..N-1), and its manifest."""
    vectors = _as_f32(vectors)
    n, d = vectors.shape
    ids = np.arange(n, dtype=np.int64) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    manifest: dict[str, Any] = {"metric": "inner_product", "dim": int(d), "n_items": int(n), "recall_k": cfg.recall_k,
                                "target_recall": cfg.target_recall}
    with faiss_threads(cfg.threads):
        if n <= cfg.exact_max_items:
            index = _id_map(faiss.IndexFlatIP(d), vectors, ids)
            return index, {**manifest, "kind": "flat", "params": {}, "measured_recall": 1.0, "n_queries": 0,
                           "recall_curve": []}
        base, name, fixed, lo, hi = _approximate(vectors, cfg)
        index = _id_map(base, vectors, ids)
        q = _as_f32(queries) if queries is not None and len(queries) else sample_queries(vectors, cfg)
        k = min(cfg.recall_k, n)
        exact = exact_ids(vectors, ids, q, k)

        def recall_of(value: int) -> float:
            set_search_param(index, cfg.kind, value)
            return recall_against_exact(exact, search(index, q, k)[0])

        value, recall, curve = smallest_passing(recall_of, lo, hi, cfg.target_recall)
        set_search_param(index, cfg.kind, value)
    return index, {**manifest, "kind": cfg.kind, "params": {**fixed, name: int(value)},
                   "measured_recall": round(float(recall), 6), "n_queries": int(len(q)),
                   "recall_curve": [[int(v), round(float(r), 6)] for v, r in curve]}


def gate_index(vectors: np.ndarray, manifest: dict[str, Any], min_recall: float = 0.95,
               norm_tolerance: float = 1e-3) -> list[str]:
    """Readable failures of an index build ([] = it may be published): vectors finite and
    L2-normalised, their count and dim as recorded, measured recall@k >= `min_recall`."""
    vectors = np.asarray(vectors)
    failures = []
    if vectors.ndim != 2:
        return [f"item vectors must be 2-D (items, dim), got shape {vectors.shape}"]
    n, d = vectors.shape
    if n != manifest.get("n_items") or d != manifest.get("dim"):
        failures.append(f"index manifest says {manifest.get('n_items')} items of dim {manifest.get('dim')}, "
                        f"the vectors are {n} x {d}")
    bad = ~np.isfinite(vectors).all(1)
    if bad.any():
        failures.append(f"{int(bad.sum())} of {n} item vectors are not finite (NaN or inf), e.g. rows "
                        f"{np.flatnonzero(bad)[:5].tolist()}")
    norms = np.linalg.norm(vectors[~bad].astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > norm_tolerance
    if off.any():
        failures.append(f"{int(off.sum())} finite item vectors are not L2-normalised (|norm - 1| > {norm_tolerance}; "
                        f"norms in [{norms.min():.4g}, {norms.max():.4g}])")
    recall = manifest.get("measured_recall")
    if recall is None or not np.isfinite(recall) or recall < min_recall:
        failures.append(f"{manifest.get('kind')} index recall@{manifest.get('recall_k')} against exact search is "
                        f"{recall} on {manifest.get('n_queries')} queries, below {min_recall} "
                        f"(params {manifest.get('params')})")
    return failures


def index_to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(blob: bytes, manifest: dict[str, Any] | None = None) -> faiss.Index:
    """The index back from `index_to_bytes`; with a manifest, its search parameter is set again."""
    index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    if manifest and manifest.get("kind") in ("ivf", "hnsw"):
        name = "nprobe" if manifest["kind"] == "ivf" else "efSearch"
        set_search_param(index, manifest["kind"], manifest["params"][name])
    return index
