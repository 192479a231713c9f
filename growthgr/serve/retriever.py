"""The retriever of one release: its models, pool and user context, loaded once (package docstring)."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from foundation.catalog import ITEM_SIDS
from foundation.config import Settings
from foundation.lake import Lake, parse_ds
from foundation.releases import Release, ReleaseError, ReleaseStore, release_ds
from foundation.sections.dense import DenseConfig
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.serve import ServeConfig
from growthgr.serve.context import ContextRow, Query, UserContext, read_user_context
from models import checkpoint
from models.dense import train as dense_train
from models.dense.data import ItemTable
from models.dense.index import index_from_bytes, index_vectors
from models.dense.model import DenseRetriever
from models.dense.platform import item_table
from models.dense.rerank import ItemVectors, dr_reranker, two_stage
from models.multigr.beam import SidItems, beam_search, trie_table
from models.multigr.data import left_pad
from models.multigr.model import MultiGR
from models.multigr.platform import SidLookup, code_columns, request_prompt
from models.tokenizer.trie import SidTrie

log = logging.getLogger(__name__)

MULTIGR_FILES = ("multigr.safetensors", "multigr_config.json")
DENSE_FILES = ("dense.safetensors", "dense_config.json", "dense_index.faiss")
POOL_FILES = ("sid_trie.npz", "item_sids.parquet")


def _checkpoint(model_cls: type[torch.nn.Module], config_cls: type, weights: bytes, config: bytes) -> Any:
    """The model of a release's checkpoint pair (`models.checkpoint`: weights + config with their
    sha256); a mismatch is a `ReleaseError`."""
    try:
        return checkpoint.model_from_bytes(weights, config, model_cls, config_cls)
    except checkpoint.CheckpointMismatch as e:
        raise ReleaseError(f"checkpoint weights do not match the sha256 of their config: {e}") from e


@dataclass(frozen=True)
class DenseStage:
    """The release's dense retriever: query tower, item features (for histories), item vectors."""

    model: DenseRetriever
    table: ItemTable           # the catalog's features as of the release's ds (history items)
    vectors: ItemVectors       # item vectors of the release's FAISS index
    top_n: int                 # MultiGR items re-ranked per request (at least)

    def query_vectors(self, rows: Sequence[ContextRow]) -> np.ndarray:
        return dense_train.query_vectors(self.model, self.table, pd.DataFrame(rows, columns=ContextRow._fields))


def load_dense(store: ReleaseStore, release: Release, lake: Lake, ds: date) -> DenseStage | None:
    """The release's DR stage, or None when the release has no DR."""
    if not all(name in release.files for name in DENSE_FILES):
        return None
    weights, config, index = (store.read(release.release_id, name) for name in DENSE_FILES)
    model = _checkpoint(DenseRetriever, DenseConfig, weights, config)
    table, _, _ = item_table(lake, ds)
    return DenseStage(model, table, ItemVectors(*index_vectors(index_from_bytes(index))),
                      model.cfg.two_stage_top_n)


def _release_ds(release: Release) -> date:
    """The data date of a servable release (parsed here, at the edge): it must hold MultiGR and its pool."""
    missing = [n for n in (*MULTIGR_FILES, *POOL_FILES) if n not in release.files]
    if missing:
        raise ReleaseError(f"release {release.release_id} cannot be served: it has no {missing}")
    ds = release_ds(release)
    if ds is None:
        raise ReleaseError(f"release {release.release_id} has no ds: cannot tell which lake data it serves")
    return parse_ds(ds)


@dataclass(frozen=True)
class Retriever:
    """Everything one release answers with, loaded once (see the package docstring)."""

    release_id: str
    ds: date
    model: MultiGR
    trie_next: torch.Tensor    # (num_nodes, K) transition table of the pool's SIDs
    pool: SidLookup            # pool item -> SID
    items: SidItems            # pool SID -> items
    history_sids: SidLookup    # the catalog snapshot's SIDs (history items)
    context: UserContext
    dense: DenseStage | None
    depth: int                 # items returned at most (serve.top_k_max)
    candidates: int            # SIDs decoded and first-stage items (>= depth; >= DR's top_n with DR)
    beam_widths: list[int]
    loaded_at: str

    @classmethod
    def load(cls, settings: Settings, release_id: str = "current") -> Retriever:
        """Build the retriever of a release (`current` or an id) from the release store and the lake."""
        store, lake = ReleaseStore.from_settings(settings), Lake.from_settings(settings)
        release = store.get(release_id)
        ds = _release_ds(release)
        model = _checkpoint(MultiGR, MultiGRConfig, *(store.read(release.release_id, n) for n in MULTIGR_FILES))
        trie = SidTrie.load(io.BytesIO(store.read(release.release_id, "sid_trie.npz")))
        cfg = model.cfg
        if (trie.codebook_size, trie.depth) != (cfg.codebook_size, cfg.sid_levels):
            raise ReleaseError(f"release {release.release_id}: SID trie (K={trie.codebook_size}, L={trie.depth}) does "
                               f"not fit its MultiGR (K={cfg.codebook_size}, L={cfg.sid_levels})")
        pool_sids = pd.read_parquet(io.BytesIO(store.read(release.release_id, "item_sids.parquet")))
        pool = SidLookup(pool_sids, code_columns(pool_sids)[: cfg.sid_levels])
        snapshot = lake.list_partitions(*ITEM_SIDS, end=ds)
        if not snapshot:
            raise ReleaseError(f"no {ITEM_SIDS.key(ds)} or earlier in the lake: history SIDs unknown")
        catalog = lake.read_partition(*ITEM_SIDS, snapshot[-1]).to_pandas()
        dense = load_dense(store, release, lake, ds)
        depth = settings.serve.top_k_max
        candidates = max(depth, dense.top_n if dense else 0)
        widths = list(cfg.beam_widths[:-1]) + [max(cfg.beam_widths[-1], candidates)]
        log.info("loaded release %s (ds=%s): %d pool items, DR %s", release.release_id, ds, len(pool.ids),
                 "present" if dense else "absent (beam order)")
        return cls(release.release_id, ds, model.eval(), trie_table(trie), pool, pool.index(cfg.codebook_size),
                   SidLookup(catalog, code_columns(catalog)[: cfg.sid_levels]),
                   read_user_context(lake, ds, settings.serve.history_days), dense, depth, candidates, widths,
                   datetime.now(UTC).isoformat(timespec="seconds"))

    def warm_up(self) -> Retriever:
        """Run one retrieval (a registered user, a fixed query) so that no request pays torch's
        first-call costs; returns self."""
        user = min(self.context.users, default=None)
        if user is not None:
            self.retrieve([Query(user, "warm up", 1)])
        return self

    def describe(self) -> dict[str, Any]:
        """What `/healthz` says about the serving release."""
        cfg = self.model.cfg
        dense = self.dense and {"params": self.dense.model.num_params(), "items_with_vectors": len(self.dense.vectors.ids),
                                "two_stage_top_n": self.dense.top_n}
        return {
            "release_id": self.release_id, "ds": self.ds.isoformat(), "loaded_at": self.loaded_at,
            "models": {"multigr": {"params": self.model.num_params(), "sid_levels": cfg.sid_levels,
                                   "codebook_size": cfg.codebook_size, "beam_widths": self.beam_widths},
                       "dense": dense},
            "reranker": "dense retriever (two-stage)" if self.dense else "none: beam order (no DR in this release)",
            "pool_items": int(len(self.pool.ids)), "registered_users": len(self.context.users),
            "users_with_history": len(self.context.histories), "context_days": self.context.days,
        }

    def retrieve(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """Per query, its top-k pool items (best first): item id, SID, score (DR score with DR, else
        the SID's beam log-probability) and beam score. Raises 404 `RequestError` for unknown users.

        With DR: the first `candidates` items (items sharing a SID by DR score) re-ranked by DR."""
        rows = [self.context.row(q) for q in queries]
        cfg = self.model.cfg
        prompts = [request_prompt(self.model.vocab, r, self.history_sids, cfg.max_history, cfg.max_query_words)
                   for r in rows]
        with torch.inference_mode():
            result = beam_search(self.model, left_pad(prompts), self.beam_widths, self.candidates, self.trie_next)
        if self.dense is None:
            ranked = self.items.expand(result, self.depth)
            return [self._answer(items, beam, beam, q.k) for items, beam, q in zip(*ranked, queries, strict=True)]
        qv = self.dense.query_vectors(rows)
        first = self.items.expand(result, self.candidates, dr_reranker(qv, self.dense.vectors))
        second = two_stage(first.items, qv, self.dense.vectors, self.depth)
        out = []
        for i, q in enumerate(queries):
            beam = dict(zip(first.items[i].tolist(), first.scores[i].tolist(), strict=True))
            out.append(self._answer(second.items[i], second.scores[i],
                                    np.array([beam.get(int(x), -np.inf) for x in second.items[i]]), q.k))
        return out

    def _answer(self, items: np.ndarray, scores: np.ndarray, beam: np.ndarray, k: int) -> list[dict[str, Any]]:
        keep = items >= 0
        items, scores, beam = items[keep][:k], scores[keep][:k], beam[keep][:k]
        sids = self.pool.sids(items)
        return [{"item_id": int(i), "sid": s.tolist(), "score": _finite(sc), "beam_score": _finite(b)}
                for i, s, sc, b in zip(items, sids, scores, beam, strict=True)]


def load_warm(settings: Settings, release_id: str) -> Retriever:
    """`Retriever.load` then `warm_up`: what the service swaps to."""
    return Retriever.load(settings, release_id).warm_up()


def load_last_good(settings: Settings) -> tuple[Retriever, list[str]]:
    """What the service starts with: the current release, or, when it cannot be served, the newest
    release that was served before it (`ReleaseStore.served`) and can; with the ids that failed.
    Raises the current release's error when none can be served."""
    store = ReleaseStore.from_settings(settings)
    current = store.current_id()
    if current is None:
        raise ReleaseError("no CURRENT release: publish one first")
    failed: list[str] = []
    first_error: Exception | None = None
    for rid in [current, *(r for r in reversed(store.served()) if r != current)]:
        try:
            return load_warm(settings, rid), failed
        except Exception as err:  # noqa: BLE001 -- a bad release must not keep the service down
            log.error("release %s cannot be served (%s); trying the one served before it", rid, err)
            failed.append(rid)
            first_error = first_error or err
    raise first_error


def _finite(x: float) -> float | None:
    """JSON-safe score: None for -inf (an item the DR has no vector for)."""
    return round(float(x), 6) if np.isfinite(x) else None


def set_threads(cfg: ServeConfig) -> None:
    """Torch and FAISS intra-op threads of this process (`serve.torch_threads`, `serve.faiss_threads`)."""
    torch.set_num_threads(cfg.torch_threads)
    faiss.omp_set_num_threads(cfg.faiss_threads)
