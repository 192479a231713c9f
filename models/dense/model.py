"""The dense retriever (DR): a two-tower user-query / item model in the spirit of MOPPR.

Query tower (one request -> one L2-normalised vector u):

- query semantic unit over the hashed query words (MultiGR's `Vocab.query_tokens` hashing):
  mean pooling, self-attention pooling (one multi-head self-attention layer, then the masked
  mean) and user-personalised pooling (attention over the words with the hashed user id's
  embedding as the attention query);
- user behaviour: the history items (`history_item_ids`, most recent last) split into a
  real-time window (the last `realtime_len`), a short-term window (the `short_len` before) and a
  long-term window (the rest, up to `max_history`); each is attended by the query semantic
  vector (one target-attention per window, an empty window gives zeros);
- the user id embedding; all concatenated -> MLP -> u / |u|.

Item tower (one item -> v / |v|): hashed item id, one embedding per SID level (the
`curated/item_sids` codes c1..cL; a missing SID has its own code), category and log price,
concatenated -> linear (the item embedding, shared with the history) -> residual MLP.

Score: <u, v> / temperature, with a learnable temperature (bounded below by `min_temperature`).

Departures from the paper (MOPPR, Taobao search):
- query words are hash-bucketed (no pretrained segmenter, no character n-grams); no query
  rewriting or multi-granular query terms;
- the item side features come from the lake (`raw/items` category and price, the SID table),
  not from Feast's `dr_v1` feature service (not required this round); no item title tower;
- user profile features are a hashed user id only; behaviours are the ids in `gr_samples`'
  history (clicks and orders together), without per-behaviour type or time embeddings;
- negatives are in-batch items, shared uniform random catalog items and the request's own
  under-exposures (no global negative queue, no logQ correction);
- the loss is `models.dense.loss.moppr_loss` (its docstring states the formula used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundation.sections.dense import DenseConfig
from models.dense.data import ItemFeats, QueryBatch, query_vocab


def masked_attention(query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """Single-head scaled dot-product attention of one query per row.
    query (B, D), keys / values (B, T, D), mask (B, T) bool (True = real) -> (B, D); 0 for empty rows."""
    if keys.shape[1] == 0:
        return query.new_zeros(query.shape[0], values.shape[-1])
    scores = torch.einsum("bd,btd->bt", query, keys) / math.sqrt(query.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    weights = torch.nan_to_num(weights) * mask.any(-1, keepdim=True)
    return torch.einsum("bt,btd->bd", weights, values)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T, D), mask (B, T) -> (B, D), 0 for empty rows."""
    m = mask.float()[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class ItemEmbedding(nn.Module):
    """Item features -> (..., D): hashed id, SID codes per level, category, log price."""

    def __init__(self, cfg: DenseConfig):
        super().__init__()
        d = cfg.emb_dim
        self.id_emb = nn.Embedding(cfg.item_buckets + 1, d, padding_idx=0)
        self.sid_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size + 1, d) for _ in range(cfg.sid_levels))
        self.cat_emb = nn.Embedding(cfg.category_buckets + 1, d)
        self.price = nn.Linear(1, d)
        self.proj = nn.Linear(d * (3 + cfg.sid_levels), d)

    def forward(self, f: ItemFeats) -> Tensor:
        parts = [self.id_emb(f.id_bucket), self.cat_emb(f.category), self.price(f.log_price[..., None])]
        parts += [emb(f.sids[..., level]) for level, emb in enumerate(self.sid_emb)]
        return self.proj(torch.cat(parts, dim=-1))


class DenseRetriever(nn.Module):
    """Both towers and the temperature (see the module docstring)."""

    def __init__(self, cfg: DenseConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.emb_dim
        self.word_emb = nn.Embedding(query_vocab(cfg).size, d, padding_idx=0)
        self.self_attn = nn.MultiheadAttention(d, cfg.attn_heads, batch_first=True)
        self.user_emb = nn.Embedding(cfg.user_buckets + 1, d)
        self.user_query = nn.Linear(d, d)
        self.semantic = nn.Linear(3 * d, d)
        self.window_q = nn.ModuleList(nn.Linear(d, d) for _ in range(3))   # real-time, short-term, long-term
        self.window_k = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
        self.item_emb = ItemEmbedding(cfg)
        self.query_mlp = mlp(7 * d, cfg.hidden_dim, d, cfg.dropout)
        self.item_mlp = mlp(d, cfg.hidden_dim, d, cfg.dropout)
        scale = torch.tensor(math.log(1.0 / cfg.init_temperature))
        if cfg.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    # -- query tower -----------------------------------------------------------------------------
    def query_units(self, tokens: Tensor, user: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, self-attention and user-personalised pooling of the query words, each (B, D)."""
        mask = tokens > 0
        x = self.word_emb(tokens)                                            # (B, W, D)
        mean = masked_mean(x, mask)
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(1)                                         # an empty query attends its padding
        att, _ = self.self_attn(x, x, x, key_padding_mask=~attend, need_weights=False)
        personal = masked_attention(self.user_query(self.user_emb(user)), x, x, mask)
        return mean, masked_mean(att, mask), personal

    def behaviour(self, semantic: Tensor, history: ItemFeats) -> list[Tensor]:
        """Attention of the query semantic vector over the real-time, short-term, long-term windows."""
        h = self.item_emb(history)                                           # (B, H, D)
        mask = history.id_bucket > 0
        width = h.shape[1]
        rt = max(width - self.cfg.realtime_len, 0)
        st = max(rt - self.cfg.short_len, 0)
        out = []
        for (lo, hi), wq, wk in zip(((rt, width), (st, rt), (0, st)), self.window_q, self.window_k, strict=True):
            out.append(masked_attention(wq(semantic), wk(h[:, lo:hi]), h[:, lo:hi], mask[:, lo:hi]))
        return out

    def encode_query(self, q: QueryBatch) -> Tensor:
        """(B, D) L2-normalised query vectors."""
        mean, att, personal = self.query_units(q.tokens, q.user)
        semantic = self.semantic(torch.cat([mean, att, personal], dim=-1))
        x = torch.cat([mean, att, personal, *self.behaviour(semantic, q.history), self.user_emb(q.user)], dim=-1)
        return F.normalize(self.query_mlp(x), dim=-1)

    # -- item tower ------------------------------------------------------------------------------
    def encode_items(self, f: ItemFeats) -> Tensor:
        """(..., D) L2-normalised item vectors."""
        e = self.item_emb(f)
        return F.normalize(e + self.item_mlp(e), dim=-1)

    # -- scores ----------------------------------------------------------------------------------
    def scale(self) -> Tensor:
        """1 / temperature, at most 1 / min_temperature."""
        return self.logit_scale.clamp(max=math.log(1.0 / self.cfg.min_temperature)).exp()

    def logits(self, u: Tensor, v: Tensor) -> Tensor:
        """(B, D) x (M, D) -> (B, M) inner products / temperature."""
        return self.scale() * (u @ v.T)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
