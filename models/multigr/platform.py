"""MultiGR on the simulated platform: `samples/gr_samples` rows -> examples, and offline evaluation.

A request's prompt is BOS, two user feature tokens (hashed user id and the
query's intent category), the SIDs of the user's last `max_history` history
items, and the query words. SFT targets are the items purchased through the
request (one example per purchased item). Items without a SID on that day are
dropped from histories and targets.

Labels (DESIGN.md section 7): `search` = `purchase_ids`; `all-net` = the
site-wide orders linked to the request (`site_order_item_ids`) plus the
search purchases. Recall@k = |relevant in top k| / |relevant|, averaged over the
requests with at least one relevant item that has a SID; NDCG@k with binary gains.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.multigr.beam import SidItems, beam_search
from models.multigr.data import Example, context_tokens, left_pad, sample_example
from models.multigr.model import MultiGR, Vocab

LABELS = {"search": ("purchase_ids",), "all-net": ("purchase_ids", "site_order_item_ids")}


def _hash(kind: str, value: object) -> int:
    return zlib.crc32(f"{kind}:{value}".encode())


class SidLookup:
    """item id -> (L,) SID codes for the items of one `curated/item_sids` snapshot."""

    def __init__(self, item_sids: pd.DataFrame, code_columns: Sequence[str]):
        self.ids = item_sids["item_id"].to_numpy(np.int64)
        order = np.argsort(self.ids)
        self.ids = self.ids[order]
        self.codes = item_sids[list(code_columns)].to_numpy(np.int64)[order]  # (N, L)

    def known(self, items: np.ndarray) -> np.ndarray:
        """The items of `items` that have a SID, in their order."""
        items = np.asarray(items, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, items), 0, max(len(self.ids) - 1, 0))
        return items[(len(self.ids) > 0) & (self.ids[pos] == items)]

    def sids(self, items: np.ndarray) -> np.ndarray:
        """(n,) known item ids -> (n, L) codes."""
        return self.codes[np.searchsorted(self.ids, np.asarray(items, dtype=np.int64))]

    def index(self, codebook_size: int) -> SidItems:
        """The SID -> items index of this snapshot (for `SidItems.expand`)."""
        return SidItems(self.codes, codebook_size, self.ids)


def request_prompt(vocab: Vocab, row, lookup: SidLookup, max_history: int, max_query_words: int) -> np.ndarray:
    history = lookup.known(np.asarray(row.history_item_ids, dtype=np.int64))[-max_history:]
    feats = [_hash("user", row.user_id), _hash("intent", row.intent_category_id)]
    return context_tokens(vocab, lookup.sids(history), feats, str(row.query_text), max_query_words)


def sft_examples(model_vocab: Vocab, samples: pd.DataFrame, lookup: SidLookup, max_history: int,
                 max_query_words: int) -> list[Example]:
    """One example per (request, purchased item with a SID)."""
    out = []
    for row in samples.itertuples(index=False):
        targets = lookup.known(np.asarray(row.purchase_ids, dtype=np.int64))
        if len(targets):
            prompt = request_prompt(model_vocab, row, lookup, max_history, max_query_words)
            out.extend(sample_example(model_vocab, prompt, sid) for sid in lookup.sids(targets))
    return out


def ranking_metrics_multi(ranked: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    """ranked: (U, n) item ids; relevant: U arrays of relevant ids (requests with none are skipped)."""
    rows = [i for i, r in enumerate(relevant) if len(r)]
    out = {"requests": float(len(rows))}
    for k in ks:
        rec, ndcg = [], []
        for i in rows:
            hit = np.isin(ranked[i, :k], relevant[i])
            rel = np.unique(relevant[i])
            rec.append(hit.sum() / len(rel))
            ideal = (1.0 / np.log2(np.arange(min(len(rel), k)) + 2)).sum()
            ndcg.append((hit / np.log2(np.arange(len(hit)) + 2)).sum() / ideal)
        out[f"recall@{k}"] = float(np.mean(rec)) if rows else 0.0
        out[f"ndcg@{k}"] = float(np.mean(ndcg)) if rows else 0.0
    return out


def evaluate_samples(
    model: MultiGR,
    samples: pd.DataFrame,
    lookup: SidLookup,
    trie_next,
    ks: Sequence[int] = (10, 100, 1000),
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Full-pool retrieval metrics per label set; the last beam width must cover max(ks) SIDs."""
    cfg = model.cfg
    index = lookup.index(cfg.codebook_size)
    top = max(ks)
    prompts = [request_prompt(model.vocab, r, lookup, cfg.max_history, cfg.max_query_words)
               for r in samples.itertuples(index=False)]
    widths = list(cfg.beam_widths[:-1]) + [max(cfg.beam_widths[-1], top)]
    ranked = np.concatenate([
        index.expand(beam_search(model, left_pad(prompts[i : i + batch_size]), widths, top, trie_next), top).items
        for i in range(0, len(prompts), batch_size)
    ])
    out = {}
    for name, cols in LABELS.items():
        relevant = [lookup.known(np.concatenate([np.asarray(getattr(r, c), dtype=np.int64) for c in cols]))
                    for r in samples.itertuples(index=False)]
        out[name] = ranking_metrics_multi(ranked, relevant, ks)
    return out
