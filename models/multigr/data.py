"""Training examples, batches and the datamodule of MultiGR supervised fine-tuning (SFT).

An `Example` is one token sequence (see `models.multigr.model` for the layout)
and the index from which its SID tokens are supervised. Sequence data such as
Amazon Beauty becomes one example per user window (all prefixes supervised at
once); a platform sample (user, query, history, purchased item) becomes one
example supervised on its target SID only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from models.multigr.model import BOS, PAD, Vocab


class Example(NamedTuple):
    tokens: np.ndarray  # (T,) int64
    supervise_from: int  # SID tokens at positions >= this index are targets


class SeqBatch(NamedTuple):
    tokens: Tensor  # (B, T) long, right-padded with PAD
    targets: Tensor  # (B, T) long, SID token expected after position t, -1 if unsupervised


class Prompts(NamedTuple):
    """Left-padded decoding prompts."""

    tokens: Tensor  # (B, T) long
    positions: Tensor  # (B, T) long, 0 at the first real token
    valid: Tensor  # (B, T) bool, False on left padding


def sid_tokens(vocab: Vocab, sids: np.ndarray) -> np.ndarray:
    """(n, L) codes -> (n * L,) token ids, item-major."""
    levels = np.arange(vocab.sid_levels)
    return (vocab.sid_offset + levels * vocab.codebook_size + sids).reshape(-1)


def context_tokens(
    vocab: Vocab,
    history: np.ndarray,
    user_features: Sequence[int] = (),
    query: str = "",
    max_query_words: int = 0,
) -> np.ndarray:
    """BOS, user features, history SIDs (n, L), query words -> (T,) int64 (the prompt)."""
    parts = [[BOS], vocab.user_tokens(user_features), sid_tokens(vocab, history), vocab.query_tokens(query, max_query_words)]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def sample_example(vocab: Vocab, context: np.ndarray, target: np.ndarray) -> Example:
    """Prompt tokens + the target SID (L,), supervised on the target only."""
    return Example(np.concatenate([context, sid_tokens(vocab, target[None])]), len(context))


def sequence_examples(vocab: Vocab, sids: np.ndarray, max_history: int, stride: int = 1) -> list[Example]:
    """All next-item targets of one item sequence (n, L), each seen after at most `max_history` items.

    The first window (up to max_history + 1 items) supervises every item in it; each
    later window is the last max_history + 1 items up to `stride` new targets and
    supervises only those. stride=1 is exact (every target sees min(position,
    max_history) items); stride s > 1 shows the first s - 1 targets of a window
    fewer items (down to max_history - s + 1) for s times less compute on long sequences.
    """
    n, n_lv = sids.shape
    out, done = [], 0
    while done < n:
        end = min(n, max_history + 1 if done == 0 else done + stride)
        window = sids[max(0, end - max_history - 1) : end]
        out.append(Example(np.concatenate([[BOS], sid_tokens(vocab, window)]), 1 + (len(window) - (end - done)) * n_lv))
        done = end
    return out


def collate(examples: Sequence[Example]) -> SeqBatch:
    """Right-pad a list of examples into a batch with next-token SID targets."""
    t = max(len(e.tokens) for e in examples)
    tokens = torch.full((len(examples), t), PAD, dtype=torch.long)
    targets = torch.full((len(examples), t), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        seq = torch.from_numpy(e.tokens)
        tokens[i, : len(seq)] = seq
        start = max(e.supervise_from, 1)
        targets[i, start - 1 : len(seq) - 1] = seq[start:]
    return SeqBatch(tokens, targets)


def left_pad(prompts: Sequence[np.ndarray]) -> Prompts:
    """Left-pad prompt token arrays for batched decoding."""
    t = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), t), PAD, dtype=torch.long)
    valid = torch.zeros((len(prompts), t), dtype=torch.bool)
    for i, p in enumerate(prompts):
        tokens[i, t - len(p) :] = torch.from_numpy(np.asarray(p, dtype=np.int64))
        valid[i, t - len(p) :] = True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    return Prompts(tokens, positions, valid)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of indices with similar lengths (less padding), in random order."""
    order = np.argsort(lengths + rng.random(len(lengths)), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int):
        self.examples, self.batch_size, self.seed, self.epoch = examples, batch_size, seed, 0
        self.lengths = np.array([len(e.tokens) for e in examples])

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for idx in length_bucketed_batches(self.lengths, self.batch_size, rng):
            yield collate([self.examples[i] for i in idx])

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)


class SFTDataModule(L.LightningDataModule):
    """A plain datamodule over in-memory examples: seeded, length-bucketed shuffled batches.

    `val`: optional (prompts, target item ids) for ranking validation, in batches of
    (list of prompt arrays, targets (B,)) (see `train.MultiGRModule`).
    """

    def __init__(self, train: Sequence[Example], batch_size: int, seed: int = 0,
                 val: tuple[Sequence[np.ndarray], np.ndarray] | None = None, val_batch_size: int = 256):
        super().__init__()
        self.batches = _Batches(train, batch_size, seed)
        prompts, targets = val if val is not None else ([], np.zeros(0, np.int64))
        self.val = [(list(prompts[i : i + val_batch_size]), np.asarray(targets[i : i + val_batch_size]))
                    for i in range(0, len(targets), val_batch_size)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=None, num_workers=0, collate_fn=_as_is)


def _as_is(batch):
    return batch


class SequenceData(NamedTuple):
    """Item sequences with per-item SIDs (the Amazon datasets' format)."""

    sequences: list[np.ndarray]  # per user, item ids in time order
    item_sids: np.ndarray  # (n_items, L) int64


def load_sequences(inter_json: str | Path, sid_json: str | Path) -> SequenceData:
    """Read `{user: [item, ...]}` and `{item: [c1, ..., cL]}` JSON files."""
    inter = json.loads(Path(inter_json).read_text())
    index = json.loads(Path(sid_json).read_text())
    item_sids = np.array([index[str(i)] for i in range(len(index))], dtype=np.int64)
    users = sorted(inter, key=int)
    return SequenceData([np.asarray(inter[u], dtype=np.int64) for u in users], item_sids)


class LeaveOneOut(NamedTuple):
    train: list[Example]
    val_prompts: list[np.ndarray]
    val_targets: np.ndarray  # (U,) item ids
    test_prompts: list[np.ndarray]
    test_targets: np.ndarray  # (U,)


def leave_one_out(vocab: Vocab, data: SequenceData, max_history: int, stride: int = 1) -> LeaveOneOut:
    """Last item = test, second-to-last = validation, the rest = training (all prefixes, see
    `sequence_examples` for `stride`)."""
    train, vp, vt, tp, tt = [], [], [], [], []
    for seq in data.sequences:
        if len(seq) < 3:
            continue
        sids = data.item_sids[seq]
        train.extend(sequence_examples(vocab, sids[:-2], max_history, stride))
        vp.append(context_tokens(vocab, sids[:-2][-max_history:]))
        vt.append(seq[-2])
        tp.append(context_tokens(vocab, sids[:-1][-max_history:]))
        tt.append(seq[-1])
    return LeaveOneOut(train, vp, np.array(vt), tp, np.array(tt))
