"""Process-level knobs for the tokenizer's torch work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads (0 = leave torch's setting), then restore it.

    On a small shared CPU box, one thread is often several times faster in wall time than
    two threads that spin against other processes.
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
