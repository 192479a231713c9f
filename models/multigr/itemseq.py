"""MultiGR over item positions (`ItemSeqGR`): one input position per history item, a per-position
SID head; the sequence-data benchmarks' architecture (Amazon Beauty, Industrial).

    x_t   = sum_l E[l, c_l(item_t)] + pos_t                     one position per history item
    h     = causal pre-norm transformer (the `model.Block` of the token-level MultiGR)
    z_1   = h_t ;  z_(l+1) = z_l + P[l, c_l]                     the prefix of the generated SID
    log p(c_l | h_t, c_<l) = log_softmax(LN(z_l + MLP_l(z_l)) @ E[l]^T)   (output tied to the input codes)

Why (measured on Amazon Beauty, 2 cores, `benchmarks/multigr_beauty.py`): the token-level
MultiGR spends L = 4 positions per history item and its per-window examples covered ~25k targets
an epoch at ~200-470 s an epoch (test Recall@10 0.0252 after ~1,650 s). Here a window of up to
`max_history + 1` items supervises every item of it in one pass, the sequence is 4x shorter and a
level costs one small MLP instead of a decoder step, so an epoch over every training target
(~131k) takes ~9 s at d_model 128: the model sees ~50x more targets in the same time (one thread: ~15 s an epoch).
Decoding needs no KV cache: the beam state of a request is z_l (B, w, D). Training renormalises
each level over the valid children of the target's trie node (`loss(..., trie_next)`), the same
distribution the renormalised beam decodes: with it the validation-subset Recall@10 (3,000 users)
after 8 epochs was 0.050 instead of 0.030 (d_model 128, lr 2e-3, seed 0); the plain softmax spends
capacity on codes that name no item (most 4th-level nodes have one child).

The item-level head (`item_loss`, the benchmarks' `--item-loss`): a per-item embedding added to
each history position and a full softmax over it trained jointly with the SID levels; `rank_items`
re-scores the beam's `width` candidates by log p(SID) + log p_item(item). Measured on Beauty (seed 0,
d_model 128, 30-epoch schedule): test Recall@10 / NDCG@10 0.0631 / 0.0324 against 0.0489 / 0.0245
without it; the per-item input alone did not help (0.0478); the jointly trained model's beam without
the re-score gave 0.0546, the item head alone over the beam's candidates 0.0613; the re-score weight
1 was best on validation among 0.5-3. It costs ~3x the training FLOPs of an epoch (the softmax over
all items).

`rank_items(..., exclude_history=True)` never ranks an item of the request's history (the beam's
`width` candidates minus those); on Amazon Beauty, which has no repeat interactions, ~3% of the
beam's candidates were history items and dropping them raised test Recall@10 / NDCG@10 from
0.0625 / 0.0326 to 0.0694 / 0.0393 (seed 0). Data with repeat purchases (Industrial) loses by it.

Departures from the paper / TIGER: TIGER is an encoder-decoder over SID tokens, the paper a
decoder-only MultiGR over tokens (`models.multigr.model`, which the daily pipeline keeps because
its prompts mix user, query and history tokens); this variant covers history-only sequences.
The beam renormalises each level over the valid children of the beam's trie node (a forced code
costs nothing), the constant width is `width` at every level. The item head's re-score is the
paper's dense re-rank of the generated candidates done by a head that shares MultiGR's encoder
instead of a separate two-tower model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundation.sections.multigr import MultiGRConfig
from models import checkpoint
from models.metrics import ranking_metrics
from models.multigr.beam import NEG_INF, BeamResult, trie_children
from models.multigr.model import Block, attention_mask
from models.multigr.train import lr_factor


class ItemSeqGR(nn.Module):
    """Causal transformer over item positions with a hierarchical SID head; `item_sids` (N, L) is a buffer."""

    def __init__(self, cfg: MultiGRConfig, item_sids: np.ndarray | Tensor, item_input: bool = False,
                 item_loss: float = 0.0):
        """`item_input`: add a per-item embedding to each history position (the codes' sum alone
        cannot tell apart items that share codes' embeddings); `item_loss` > 0 (implies `item_input`):
        also train an item-level softmax over that table with this weight, which `rank_items` adds to
        the beam's SID log-probability to re-score the beam's candidates (the paper's dense re-rank,
        here sharing the encoder)."""
        super().__init__()
        self.cfg, k, d = cfg, cfg.codebook_size, cfg.d_model
        self.item_loss = float(item_loss)
        self.register_buffer("item_sids", torch.as_tensor(np.asarray(item_sids), dtype=torch.long))
        self.items = nn.Embedding(len(self.item_sids), d) if item_input or item_loss > 0 else None
        self.register_buffer("level_offset", torch.arange(cfg.sid_levels) * k)
        self.code = nn.Embedding(cfg.sid_levels * k, d)          # input codes, tied to the output
        self.prefix = nn.Embedding(cfg.sid_levels * k, d)        # the generated prefix's codes
        self.pos = nn.Embedding(cfg.max_history + 1, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * d, d))
            for _ in range(cfg.sid_levels))
        self.head_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.sid_levels))
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02 / (math.sqrt(2 * cfg.n_layer) if name.endswith("proj.weight") else 1.0))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, items: Tensor) -> Tensor:
        """items (B, T) item ids, -1 = padding (left or right) -> hidden states (B, T, D)."""
        valid = items >= 0
        codes = self.item_sids[items.clamp(min=0)] + self.level_offset  # (B, T, L)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0, max=self.cfg.max_history)
        x = self.code(codes).sum(-2)
        if self.items is not None:
            x = x + self.items(items.clamp(min=0))
        x = self.drop(x * valid[..., None] + self.pos(positions))
        mask = attention_mask(valid, items.shape[1])
        for block in self.blocks:
            x, _ = block(x, mask)
        return self.ln_f(x)

    def item_logp(self, history: Tensor, h: Tensor | None = None) -> Tensor:
        """Left-padded histories (B, T) -> (B, N) log-softmax of the item-level head (`item_loss` > 0);
        `h` (B, D): the histories' last hidden states when the caller already has them."""
        h = self.encode(history)[:, -1] if h is None else h
        return torch.log_softmax(h @ self.items.weight.T, -1)

    def level_logits(self, z: Tensor, level: int) -> Tensor:
        """z (..., D) -> (..., K) logits of the codes of `level`."""
        k = self.cfg.codebook_size
        u = self.head_ln[level](z + self.heads[level](z))
        return u @ self.code.weight[level * k : (level + 1) * k].T

    def loss(self, items: Tensor, trie_next: Tensor | None = None) -> Tensor:
        """Mean per-level cross-entropy of every next item of right-padded windows (B, T). With the
        catalogue's trie (`trie_next`), each level's softmax runs over the valid children of the
        target's prefix only: the training objective of the renormalised beam (a forced code costs
        nothing and the model need not learn which codes exist)."""
        h, target = self.encode(items)[:, :-1], items[:, 1:]
        sel = target >= 0
        z, codes = h[sel], self.item_sids[target[sel]]  # (M, D), (M, L)
        node = torch.zeros(len(codes), dtype=torch.long)
        total = z.new_zeros(())
        for level in range(self.cfg.sid_levels):
            logits = self.level_logits(z, level)
            if trie_next is not None:
                child = trie_next[node].long()  # (M, K)
                logits = logits.masked_fill(child < 0, NEG_INF)
                node = child.gather(1, codes[:, level : level + 1]).squeeze(1)
            total = total + F.cross_entropy(logits, codes[:, level])
            z = z + self.prefix(codes[:, level] + level * self.cfg.codebook_size)
        total = total / self.cfg.sid_levels
        if self.item_loss > 0:
            total = total + self.item_loss * F.cross_entropy(h[sel] @ self.items.weight.T, target[sel])
        return total

    @torch.no_grad()
    def beam_search(self, history: Tensor, width: int, top_k: int, trie_next: Tensor | None,
                    renormalize: bool = True, h: Tensor | None = None) -> BeamResult:
        """Top-`top_k` SIDs after each left-padded history (B, T); width `width` at every level; `h`
        (B, D): the histories' last hidden states when the caller already has them."""
        if width < top_k:
            raise ValueError(f"beam width {width} < top_k {top_k}")
        self.eval()
        k = self.cfg.codebook_size
        z = (self.encode(history)[:, -1] if h is None else h)[:, None]  # (B, 1, D)
        b = z.shape[0]
        scores = torch.zeros(b, 1)
        nodes = torch.zeros(b, 1, dtype=torch.long)
        sids = torch.zeros(b, 1, 0, dtype=torch.long)
        for level in range(self.cfg.sid_levels):
            logits = self.level_logits(z, level)  # (B, w, K)
            if trie_next is None:
                logp = torch.log_softmax(logits, -1)
            else:
                child = trie_children(trie_next, nodes)
                if renormalize:
                    logits = logits.masked_fill(child < 0, NEG_INF)
                logp = torch.log_softmax(logits, -1).masked_fill(child < 0, NEG_INF)
            cand = (scores[:, :, None] + logp).view(b, -1)
            scores, flat = cand.topk(min(width, cand.shape[1]), dim=1)
            parent, code = flat // k, flat % k
            sids = torch.cat([sids.gather(1, parent[..., None].expand(-1, -1, level)), code[..., None]], 2)
            nodes = child.view(b, -1).gather(1, flat) if trie_next is not None else torch.full_like(flat, -1)
            z = z.gather(1, parent[..., None].expand(-1, -1, z.shape[-1])) + self.prefix(code + level * k)
        scores, sids, nodes = scores[:, :top_k], sids[:, :top_k], nodes[:, :top_k]
        dead = torch.isinf(scores)
        return BeamResult(sids.masked_fill(dead[..., None], -1), scores, nodes.masked_fill(dead, -1))


def pad_items(seqs: Sequence[np.ndarray], left: bool = False) -> Tensor:
    """Item-id arrays -> (B, T) long, -1 padding (left for decoding, right for training)."""
    t = max(max(len(s) for s in seqs), 1)
    out = np.full((len(seqs), t), -1, dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            if left:
                out[i, t - len(s):] = s
            else:
                out[i, : len(s)] = s
    return torch.from_numpy(out)


def windows(seq: np.ndarray, max_history: int) -> list[np.ndarray]:
    """Training windows of one item sequence: up to max_history + 1 items each, every item after the
    first of a window is a target seeing <= max_history items; windows step back by max_history so
    every target of the sequence is supervised once."""
    out, end = [], len(seq)
    while end > 1:
        out.append(seq[max(0, end - max_history - 1): end])
        end -= max_history
    return out


def seen_items(history: Tensor, n_items: int) -> Tensor:
    """(B, n_items) bool: the items of each left-padded (B, T) history (-1 = padding); the rankers'
    `exclude_history` mask."""
    counts = torch.zeros(history.shape[0], n_items, dtype=torch.long)
    return counts.scatter_add_(1, history.clamp(min=0), (history >= 0).long()) > 0


def rank_items(model: ItemSeqGR, histories: Sequence[np.ndarray], width: int, top_k: int, trie_next: Tensor,
               leaf_items: np.ndarray, batch_size: int = 512, rescore: bool = True,
               exclude_history: bool = False) -> np.ndarray:
    """(U, top_k) item ids by constrained beam search (`leaf_items`: trie leaf node -> item). A model
    with an item-level head (`item_loss` > 0) ranks the beam's `width` candidates by the SID
    log-probability plus the item head's log-probability (unless `rescore` is False).
    `exclude_history` drops the candidates that occur in the request's history from the beam's
    `width` (for data without repeat interactions); fewer than `top_k` left pad with -1."""
    out, leaves = [], torch.as_tensor(leaf_items)
    rescore = rescore and model.item_loss > 0
    for i in range(0, len(histories), batch_size):
        history = pad_items(histories[i: i + batch_size], left=True)
        with torch.no_grad():
            h = model.eval().encode(history)[:, -1]  # encoded once for the beam and the item head
        beam = model.beam_search(history, width, width if rescore or exclude_history else top_k, trie_next, h=h)
        items = torch.where(beam.nodes >= 0, leaves[beam.nodes.clamp(min=0)], -1)
        score = beam.scores
        if rescore:
            score = score + model.item_logp(history, h).gather(1, items.clamp(min=0))
        drop = items < 0
        if exclude_history:
            drop |= seen_items(history, len(model.item_sids)).gather(1, items.clamp(min=0))
        order = score.masked_fill(drop, NEG_INF).topk(min(top_k, items.shape[1]), dim=1).indices
        items = items.gather(1, order).masked_fill(drop.gather(1, order), -1)
        out.append(items.numpy())
    return np.concatenate(out) if out else np.zeros((0, top_k), np.int64)


class ItemSeqModule(L.LightningModule):
    """Lightning training of a model over item windows: AdamW, linear warm-up then cosine decay to 10% of `lr` over the trainer's real number of steps
    (`estimated_stepping_batches`, so a run capped by epochs decays fully); validation ranks a fixed
    set of (history, target) pairs and logs `val_recall@10` (the checkpoint's monitor)."""

    def __init__(self, cfg: MultiGRConfig, model: nn.Module, rank=None, **loss_kwargs):
        """`model`: an `ItemSeqGR` or any module with `loss(items (B, T), **loss_kwargs) -> scalar` (the
        benchmarks' SASRec baseline); `rank(model, histories) -> (U, 10)` item ids."""
        super().__init__()
        self.cfg, self.rank, self.model, self.loss_kwargs = cfg, rank, model, loss_kwargs

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.model.loss(batch, **self.loss_kwargs)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: tuple[list[np.ndarray], np.ndarray], batch_idx: int) -> None:
        histories, targets = batch
        m = ranking_metrics(self.rank(self.model, histories), np.asarray(targets), (10,))
        self.log("val_recall@10", m["recall@10"], prog_bar=True, batch_size=len(targets))

    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and not n.startswith("pos")]
        rest = [p for n, p in self.model.named_parameters() if p.dim() < 2 or n.startswith("pos")]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.cfg.lr, betas=(0.9, 0.98))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, self.cfg.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class WindowBatches(torch.utils.data.IterableDataset):
    """Seeded, length-bucketed, shuffled batches of right-padded training windows."""

    def __init__(self, train: Sequence[np.ndarray], batch_size: int, seed: int):
        self.train, self.batch_size, self.seed, self.epoch = list(train), batch_size, seed, 0
        self.lengths = np.array([len(w) for w in self.train])

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = np.argsort(self.lengths + rng.random(len(self.lengths)), kind="stable")
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for j in rng.permutation(len(batches)):
            yield pad_items([self.train[i] for i in batches[j]])

    def __len__(self) -> int:
        return -(-len(self.train) // self.batch_size)


class SASRec(nn.Module):
    """The baseline of the sequence benchmarks: SASRec (Kang & McAuley 2018) with a full softmax
    cross-entropy over every item (not the paper's sampled BCE) on the same encoder (`model.Block`),
    item-id embeddings tied to the output. `rank` scores all items."""

    def __init__(self, cfg: MultiGRConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(n_items, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_history + 1, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, items: Tensor) -> Tensor:
        valid = items >= 0
        positions = (valid.long().cumsum(1) - 1).clamp(min=0, max=self.cfg.max_history)
        x = self.drop(self.items(items.clamp(min=0)) * valid[..., None] + self.pos(positions))
        mask = attention_mask(valid, items.shape[1])
        for block in self.blocks:
            x, _ = block(x, mask)
        return self.ln_f(x)

    def loss(self, items: Tensor) -> Tensor:
        h, target = self.encode(items)[:, :-1], items[:, 1:]
        sel = target >= 0
        return F.cross_entropy(h[sel] @ self.items.weight.T, target[sel])

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], top_k: int, batch_size: int = 512,
             exclude_history: bool = False) -> np.ndarray:
        """(U, top_k) item ids by the full softmax; `exclude_history` as `rank_items`."""
        self.eval()
        out = []
        for i in range(0, len(histories), batch_size):
            history = pad_items(histories[i: i + batch_size], left=True)
            logits = self.encode(history)[:, -1] @ self.items.weight.T
            if exclude_history:
                logits = logits.masked_fill(seen_items(history, logits.shape[1]), NEG_INF)
            out.append(logits.topk(top_k, dim=1).indices.numpy())
        return np.concatenate(out)


def load(path) -> nn.Module:
    """An `ItemSeqGR` or `SASRec` checkpoint written by `models.checkpoint.save_model` with the extra
    fields `arch` ("item" | "sasrec") and `n_items` (the benchmarks' `--checkpoint`)."""
    meta = json.loads((Path(path) / checkpoint.CONFIG).read_text())
    n = int(meta["n_items"])
    build = {"item": lambda c: ItemSeqGR(c, np.zeros((n, c.sid_levels), np.int64), bool(meta.get("item_input")),
                                         float(meta.get("item_loss", 0.0))),
             "sasrec": lambda c: SASRec(c, n)}[meta["arch"]]
    return checkpoint.load_model(path, build, MultiGRConfig)
