"""Process-level knobs for the tokenizer's torch and faiss work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss
import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads for torch and faiss (0 = leave their settings),
    then restore them.

    On a small shared CPU box, one thread is often several times faster in wall time than
    two threads that spin against other processes.
    """
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    if n > 0:
        torch.set_num_threads(n)
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
