"""Training samples of the dense retriever: item features, per-request positives per objective,
under-exposure negatives, and batches with in-batch and random negatives.

A `gr_samples` row (schema: `spark_jobs.gr_samples`) becomes one `Request`:

- query: the hashed query words (MultiGR's `Vocab.query_tokens`, the same hashing), a hashed
  user id, and `history_item_ids` (most recent last, the last `max_history` kept);
- positives per objective (`OBJECTIVES`): relevance = the top `relevance_top` rank candidates;
  exposure = `exposure_ids`; click = `click_ids`; purchase = `purchase_ids`;
- under-exposures (hard negatives): rank candidates at rank >= `under_exposure_min_rank` that
  were never exposed, the best-ranked `under_exposures` of them.

A batch scores every request against every distinct item of the batch (its own positives and
under-exposures, the other requests' items: in-batch negatives) plus `random_negatives` catalog
items drawn uniformly per batch (shared random negatives). For objective o of request i the
positives are P_o(i); every other column is a negative of o (so an exposed but unclicked item
is a negative of the click objective).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from foundation.sections.dense import DenseConfig
from models.multigr.model import Vocab

OBJECTIVES: tuple[str, ...] = ("relevance", "exposure", "click", "purchase")
SAMPLE_COLUMNS = ["request_id", "user_id", "query_text", "history_item_ids", "rank_candidate_ids", "exposure_ids",
                  "click_ids", "purchase_ids"]
_MIX = np.uint64(0x9E3779B97F4A7C15)


def hash_ids(ids: np.ndarray, buckets: int, salt: int = 0) -> np.ndarray:
    """Stable multiplicative hash of int64 ids into 1..buckets (0 is padding)."""
    x = (np.asarray(ids, dtype=np.int64).astype(np.uint64) + np.uint64(salt)) * _MIX
    return ((x >> np.uint64(29)) % np.uint64(buckets)).astype(np.int64) + 1


def query_vocab(cfg: DenseConfig) -> Vocab:
    """MultiGR's vocabulary with query buckets only: query words hash to 2 .. 2 + query_buckets."""
    return Vocab(n_user_buckets=0, n_query_buckets=cfg.query_buckets, sid_levels=0, codebook_size=2)


class ItemFeats(NamedTuple):
    """Item tower inputs, any leading shape S."""

    id_bucket: Tensor   # S long, 0 = padding
    sids: Tensor        # S + (L,) long, codebook_size = no SID
    category: Tensor    # S long, 0 = unknown
    log_price: Tensor   # S float


class ItemTable:
    """Side features of the catalog: item id -> (SID codes, category, log price); unknown items
    (and items without a SID) get padding codes, so a history item never fails a lookup."""

    def __init__(self, item_ids: np.ndarray, sids: np.ndarray, category: np.ndarray, price: np.ndarray):
        order = np.argsort(np.asarray(item_ids, dtype=np.int64), kind="stable")
        self.ids = np.asarray(item_ids, dtype=np.int64)[order]
        self.sids = np.asarray(sids, dtype=np.int64).reshape(len(order), -1)[order]   # (N, L), -1 = none
        self.category = np.asarray(category, dtype=np.int64)[order]                     # (N,), -1 = none
        self.log_price = np.log1p(np.clip(np.nan_to_num(np.asarray(price, float)[order]), 0, None))

    @classmethod
    def from_frames(cls, items: pd.DataFrame, item_sids: pd.DataFrame | None, code_columns: Sequence[str]) -> ItemTable:
        """`raw/items` rows (item_id, category_id, price; the latest row per item wins) and a
        `curated/item_sids` snapshot (item_id, c1..cL): items of either frame are in the table."""
        items = items.drop_duplicates("item_id", keep="last")
        if item_sids is not None and len(code_columns):
            items = items.merge(item_sids[["item_id", *code_columns]], on="item_id", how="outer")
        codes = items[list(code_columns)].fillna(-1).to_numpy(np.int64) if len(code_columns) else \
            np.zeros((len(items), 0), np.int64)
        return cls(items["item_id"].to_numpy(np.int64), codes, items["category_id"].fillna(-1).to_numpy(np.int64),
                   items["price"].fillna(0.0).to_numpy(float))

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, items: np.ndarray) -> np.ndarray:
        """Row of each item id, -1 where unknown."""
        items = np.asarray(items, dtype=np.int64)
        if not len(self.ids):
            return np.full(items.shape, -1, np.int64)
        pos = np.clip(np.searchsorted(self.ids, items), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == items, pos, -1)

    def feats(self, items: np.ndarray, cfg: DenseConfig) -> ItemFeats:
        """Tower inputs of item ids of any shape; ids < 0 are padding (id bucket 0)."""
        items = np.asarray(items, dtype=np.int64)
        row = self.rows(items)
        known = row >= 0
        r = np.maximum(row, 0)
        n_lv = cfg.sid_levels
        codes = self.sids[r][..., :n_lv] if self.sids.shape[1] >= n_lv else np.full(items.shape + (n_lv,), -1)
        codes = np.where(known[..., None] & (codes >= 0) & (codes < cfg.codebook_size), codes, cfg.codebook_size)
        cat = np.where(known & (self.category[r] >= 0), self.category[r] % cfg.category_buckets + 1, 0)
        return ItemFeats(
            torch.from_numpy(np.where(items >= 0, hash_ids(items, cfg.item_buckets), 0)),
            torch.from_numpy(codes.astype(np.int64)),
            torch.from_numpy(cat.astype(np.int64)),
            torch.from_numpy(np.where(known, self.log_price[r], 0.0).astype(np.float32)),
        )


class Request(NamedTuple):
    """One request's query side and its item sets (item ids)."""

    query: np.ndarray            # (W,) query word tokens (unpadded)
    user: int                    # hashed user bucket (1..user_buckets)
    history: np.ndarray          # (h,) item ids, most recent last, h <= max_history
    positives: tuple[np.ndarray, ...]   # one array per objective (OBJECTIVES order)
    under_exposures: np.ndarray  # (u,) hard negatives


def under_exposures(rank_candidates: np.ndarray, exposures: np.ndarray, min_rank: int, n: int) -> np.ndarray:
    """The best-ranked `n` rank candidates at rank >= `min_rank` never exposed in the request."""
    tail = np.asarray(rank_candidates, dtype=np.int64)[min_rank:]
    return tail[~np.isin(tail, exposures)][:n]


def request_query(cfg: DenseConfig, vocab: Vocab, user_id: int, query_text: str,
                  history: Sequence[int]) -> tuple[np.ndarray, int, np.ndarray]:
    """(query tokens, user bucket, last `max_history` history items) of one request."""
    tokens = np.asarray(vocab.query_tokens(str(query_text), cfg.max_query_words), dtype=np.int64)
    user = int(hash_ids(np.array([user_id]), cfg.user_buckets, salt=1)[0])
    return tokens, user, np.asarray(history, dtype=np.int64)[-cfg.max_history:]


def build_requests(samples: pd.DataFrame, cfg: DenseConfig) -> list[Request]:
    """`gr_samples` rows -> requests; rows without any positive are dropped."""
    vocab, out = query_vocab(cfg), []
    for row in samples.itertuples(index=False):
        ranked = np.asarray(row.rank_candidate_ids, dtype=np.int64)
        exposed = np.asarray(row.exposure_ids, dtype=np.int64)
        pos = (ranked[: cfg.relevance_top], exposed, np.asarray(row.click_ids, dtype=np.int64),
               np.asarray(row.purchase_ids, dtype=np.int64))
        if not any(len(p) for p in pos):
            continue
        query, user, history = request_query(cfg, vocab, row.user_id, row.query_text, row.history_item_ids)
        under = under_exposures(ranked, exposed, cfg.under_exposure_min_rank, cfg.under_exposures)
        out.append(Request(query, user, history, pos, under))
    return out


class QueryBatch(NamedTuple):
    tokens: Tensor      # (B, W) long, 0 = padding
    user: Tensor        # (B,) long
    history: ItemFeats  # (B, H) (id bucket 0 = padding), most recent last, left-padded


class Batch(NamedTuple):
    query: QueryBatch
    items: ItemFeats    # (M,) the batch's distinct items
    item_ids: Tensor    # (M,) long
    positives: Tensor   # (O, B, M) bool, per objective


def _pad_left(rows: Sequence[np.ndarray], fill: int, min_width: int = 1) -> np.ndarray:
    width = max([min_width, *(len(r) for r in rows)])
    out = np.full((len(rows), width), fill, np.int64)
    for i, r in enumerate(rows):
        if len(r):
            out[i, width - len(r):] = r
    return out


def query_batch(table: ItemTable, cfg: DenseConfig, queries: Sequence[np.ndarray], users: Sequence[int],
                histories: Sequence[np.ndarray]) -> QueryBatch:
    """Padded query-tower inputs of several requests."""
    tokens = np.zeros((len(queries), max([1, *(len(q) for q in queries)])), np.int64)
    for i, q in enumerate(queries):
        tokens[i, : len(q)] = q
    return QueryBatch(torch.from_numpy(tokens), torch.as_tensor(np.asarray(users, np.int64)),
                      table.feats(_pad_left(histories, -1), cfg))


def collate(requests: Sequence[Request], table: ItemTable, cfg: DenseConfig, random_items: np.ndarray) -> Batch:
    """One batch: the requests against the distinct items of all their sets plus `random_items`."""
    sets = [np.concatenate([*r.positives, r.under_exposures]) for r in requests]
    item_ids = np.unique(np.concatenate([*sets, np.asarray(random_items, np.int64)]))
    positives = np.zeros((len(OBJECTIVES), len(requests), len(item_ids)), bool)
    for i, r in enumerate(requests):
        for o, pos in enumerate(r.positives):
            positives[o, i, np.searchsorted(item_ids, pos)] = True
    query = query_batch(table, cfg, [r.query for r in requests], [r.user for r in requests],
                        [r.history for r in requests])
    return Batch(query, table.feats(item_ids, cfg), torch.from_numpy(item_ids), torch.from_numpy(positives))


class _Batches(torch.utils.data.IterableDataset):
    """Seeded shuffled batches; a new order and new random negatives every epoch."""

    def __init__(self, requests: Sequence[Request], table: ItemTable, cfg: DenseConfig):
        self.requests, self.table, self.cfg, self.epoch = requests, table, cfg, 0

    def __iter__(self):
        rng = np.random.default_rng([self.cfg.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.requests))
        n_rand = min(self.cfg.random_negatives, len(self.table))
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            rand = self.table.ids[rng.choice(len(self.table), n_rand, replace=False)] if n_rand else np.zeros(0, np.int64)
            yield collate([self.requests[i] for i in idx], self.table, self.cfg, rand)


class DenseDataModule(L.LightningDataModule):
    """In-memory requests -> shuffled batches (no validation loader: a fixed number of epochs)."""

    def __init__(self, requests: Sequence[Request], table: ItemTable, cfg: DenseConfig):
        super().__init__()
        if not requests:
            raise ValueError("no request with a positive item to train the dense retriever on")
        self.batches = _Batches(requests, table, cfg)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, num_workers=0)
