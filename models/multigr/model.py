"""MultiGR: a decoder-only transformer that generates the semantic ID (SID) of the next item.

nanoGPT-style: pre-norm blocks, learned absolute positions, GELU MLP, a KV cache,
and SID-token output weights tied to the input embedding.

Token layout of one sequence (one vocabulary, see `Vocab`):

    [BOS] [user feature tokens] [history SID tokens ...] [query word tokens] [target SID tokens]

A SID of L levels is L tokens, token id = sid_offset + level * K + code, so the
same code at two levels is two different tokens. Without user features and
without a query (the Amazon Beauty benchmark) a sequence is BOS followed by the
item history, and every item of it is the target of the items before it; with
them (the simulated platform) only the target SID is supervised.

Departures from the paper: the paper does not publish its architecture; this
one is the smallest standard decoder that covers its inputs. Query words are
hash-bucketed (no pretrained text tokenizer); user features are bucketed ids.
At position t the model predicts the SID token at t + 1 with a softmax over the
K codes of that token's level only (level-restricted logits).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundation.sections.multigr import MultiGRConfig

PAD, BOS = 0, 1


@dataclass(frozen=True)
class Vocab:
    """Token id ranges: PAD, BOS, user buckets, query buckets, SID codes (level-major)."""

    n_user_buckets: int
    n_query_buckets: int
    sid_levels: int
    codebook_size: int

    @classmethod
    def from_config(cls, cfg: MultiGRConfig) -> Vocab:
        return cls(cfg.n_user_buckets, cfg.n_query_buckets, cfg.sid_levels, cfg.codebook_size)

    @property
    def user_offset(self) -> int:
        return 2

    @property
    def query_offset(self) -> int:
        return self.user_offset + self.n_user_buckets

    @property
    def sid_offset(self) -> int:
        return self.query_offset + self.n_query_buckets

    @property
    def size(self) -> int:
        return self.sid_offset + self.sid_levels * self.codebook_size

    def sid_tokens(self, sids: Tensor) -> Tensor:
        """(..., L) codes -> (..., L) token ids."""
        levels = torch.arange(self.sid_levels, device=sids.device)
        return self.sid_offset + levels * self.codebook_size + sids

    def user_tokens(self, feature_ids: Sequence[int]) -> list[int]:
        return [self.user_offset + int(f) % max(self.n_user_buckets, 1) for f in feature_ids]

    def query_tokens(self, text: str, max_words: int) -> list[int]:
        """Hash-bucketed words (crc32, stable across processes)."""
        words = text.lower().split()[:max_words]
        return [self.query_offset + zlib.crc32(w.encode()) % max(self.n_query_buckets, 1) for w in words]


class KVCache(NamedTuple):
    """Keys/values of every layer for a batch of prompts, shared by all beams of a prompt."""

    keys: list[Tensor]  # n_layer x (B, H, T, Dh)
    values: list[Tensor]  # n_layer x (B, H, T, Dh)
    valid: Tensor  # (B, T) bool, False for left padding
    next_pos: Tensor  # (B,) long, position id of the first generated token


BeamKV = list[tuple[Tensor, Tensor]]
"""Per layer, keys and values of the tokens generated so far: (B, w, H, l, Dh) each."""


def select_beams(beam_kv: BeamKV, parent: Tensor) -> BeamKV:
    """Keep the generated-token cache of the parents (B, w') of the surviving beams."""
    idx = parent[:, :, None, None, None]
    return [
        (k.gather(1, idx.expand(-1, -1, *k.shape[2:])), v.gather(1, idx.expand(-1, -1, *v.shape[2:])))
        for k, v in beam_kv
    ]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: MultiGRConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (N, T, D), mask: (N, 1, T, T) bool or None (plain causal) -> (N, T, D), (k, v)."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (N, T, D)
        q, k, v = (z.view(n, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        # no dropout on attention weights: it forces the unfused attention path on CPU
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.drop(self.proj(y.transpose(1, 2).reshape(n, t, d))), (k, v)

    def decode(
        self, x: Tensor, prefix: tuple[Tensor, Tensor], prefix_valid: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One new token per beam. x: (B, w, D); prefix k/v (B, H, T, Dh) shared by the w beams;
        past: this beam's generated k/v (B, w, H, l, Dh). Returns (B, w, D) and the extended past.

        The prompt cache is never copied per beam: scores against it are one batched
        matmul per request, so wide beams cost O(w) small tensors, not O(w * T).
        """
        b, w, d = x.shape
        hd = d // self.n_head
        q, k, v = (z.view(b, w, self.n_head, 1, hd) for z in self.qkv(x).split(d, dim=2))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=3), torch.cat([past[1], v], dim=3)  # (B, w, H, l + 1, Dh)
        t = prefix[0].shape[2]
        s_prefix = torch.einsum("bwhqd,bhtd->bwhqt", q, prefix[0])  # (B, w, H, 1, T)
        s_prefix = s_prefix.masked_fill(~prefix_valid[:, None, None, None, :], float("-inf"))
        s_beam = q @ k.transpose(-1, -2)  # (B, w, H, 1, l + 1)
        att = torch.softmax(torch.cat([s_prefix, s_beam], dim=-1) / math.sqrt(hd), dim=-1)
        y = torch.einsum("bwhqt,bhtd->bwhqd", att[..., :t], prefix[1]) + att[..., t:] @ v  # (B, w, H, 1, Dh)
        return self.proj(y.reshape(b, w, d)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: MultiGRConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, hidden), nn.GELU(), nn.Linear(hidden, cfg.d_model), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: Tensor, mask: Tensor | None):
        a, kv = self.attn(self.ln1(x), mask)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv

    def decode(self, x: Tensor, prefix, prefix_valid: Tensor, past):
        a, kv = self.attn.decode(self.ln1(x), prefix, prefix_valid, past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


def attention_mask(key_valid: Tensor, n_query: int) -> Tensor:
    """(N, Tk) key validity -> (N, 1, Tq, Tk) bool mask: causal, no padded keys, self always allowed.

    The queries are the last `n_query` keys; allowing self-attention keeps padded
    query rows finite (their outputs are never used).
    """
    tk = key_valid.shape[1]
    q_idx = torch.arange(tk - n_query, tk, device=key_valid.device)[:, None]  # (Tq, 1)
    k_idx = torch.arange(tk, device=key_valid.device)[None, :]  # (1, Tk)
    allowed = (k_idx <= q_idx) & (key_valid[:, None, :] | (k_idx == q_idx))  # (N, Tq, Tk)
    return allowed[:, None]


class MultiGR(nn.Module):
    """Decoder-only transformer over the `Vocab` tokens."""

    def __init__(self, cfg: MultiGRConfig):
        super().__init__()
        self.cfg, self.vocab = cfg, Vocab.from_config(cfg)
        self.tok_emb = nn.Embedding(self.vocab.size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: Tensor, positions: Tensor, key_valid: Tensor | None = None) -> tuple[Tensor, KVCache]:
        """tokens, positions: (N, T); key_valid: (N, T) bool (left padding) or None (none).

        Returns the final hidden states (N, T, D) and the KV cache of these tokens.
        """
        n, t = tokens.shape
        mask = None if key_valid is None else attention_mask(key_valid, t)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(positions))  # (N, T, D)
        keys, values = [], []
        for block in self.blocks:
            x, (k, v) = block(x, mask)
            keys.append(k)
            values.append(v)
        valid = torch.ones(n, t, dtype=torch.bool) if key_valid is None else key_valid
        return self.ln_f(x), KVCache(keys, values, valid, positions[:, -1] + 1)

    def decode_step(
        self, tokens: Tensor, prefix: KVCache, past: BeamKV | None
    ) -> tuple[Tensor, BeamKV]:
        """One generated token per beam. tokens: (B, w) -> hidden (B, w, D) and the extended beam cache."""
        l_done = 0 if past is None else past[0][0].shape[3]
        positions = prefix.next_pos[:, None] + l_done  # (B, 1)
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (B, w, D)
        new_past = []
        for i, block in enumerate(self.blocks):
            x, kv = block.decode(x, (prefix.keys[i], prefix.values[i]), prefix.valid, None if past is None else past[i])
            new_past.append(kv)
        return self.ln_f(x), new_past

    def sid_logits(self, h: Tensor, level: int | None = None) -> Tensor:
        """Tied output head. h: (..., D) -> (..., L, K), or (..., K) for one `level`."""
        v = self.vocab
        w = self.tok_emb.weight[v.sid_offset :].view(v.sid_levels, v.codebook_size, -1)  # (L, K, D)
        if level is not None:
            return h @ w[level].T
        return torch.einsum("...d,lkd->...lk", h, w)

    def loss(self, tokens: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of the supervised SID tokens.

        tokens: (B, T) right-padded; targets: (B, T) the SID token id expected after
        position t, or -1 where position t is not supervised.
        """
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        h, _ = self(tokens, positions)  # (B, T, D)
        sel = targets >= 0
        h, rel = h[sel], targets[sel] - self.vocab.sid_offset  # (M, D), (M,)
        level, code = rel // self.vocab.codebook_size, rel % self.vocab.codebook_size
        total = h.new_zeros(())
        for lv in range(self.vocab.sid_levels):  # only the K logits of each target's own level
            rows = level == lv
            total = total + F.cross_entropy(self.sid_logits(h[rows], lv), code[rows], reduction="sum")
        return total / len(rel)
