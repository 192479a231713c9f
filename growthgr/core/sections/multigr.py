"""Config section of the MultiGR generative retriever (models.multigr)."""

from typing import Any

from pydantic import Field

from growthgr.core.strict import StrictModel


class MultiGRConfig(StrictModel):
    """Defaults are the `demo` profile (CPU-trainable); `PROFILES` holds the per-profile overrides.

    The token vocabulary is: PAD, BOS, user-feature buckets, query-word buckets,
    then `sid_levels * codebook_size` level-specific SID code tokens.
    """

    seed: int = 0
    # vocabulary
    sid_levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)
    n_user_buckets: int = Field(64, ge=0)
    n_query_buckets: int = Field(2048, ge=0)
    max_query_words: int = Field(8, ge=0)
    max_history: int = Field(20, ge=1)
    max_len: int = Field(128, ge=8)
    # transformer
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    d_model: int = Field(128, ge=8)
    mlp_ratio: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # supervised training
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(200, ge=0)
    max_epochs: int = Field(20, ge=1)
    num_threads: int = Field(2, ge=1)
    # decoding: one beam width per SID level (narrow first, the paper's dynamic beam)
    beam_widths: list[int] = Field(default_factory=lambda: [20, 50, 100])
    top_k: int = Field(100, ge=1)


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "sid_levels": 3,
        "codebook_size": 8,
        "n_user_buckets": 8,
        "n_query_buckets": 32,
        "max_query_words": 4,
        "max_history": 5,
        "max_len": 32,
        "n_layer": 2,
        "n_head": 2,
        "d_model": 32,
        "dropout": 0.0,
        "batch_size": 32,
        "warmup_steps": 10,
        "max_epochs": 3,
        "num_threads": 1,
        "beam_widths": [4, 8, 10],
        "top_k": 10,
    },
    "demo": {},
    "large": {
        "n_layer": 8,
        "n_head": 8,
        "d_model": 512,
        "dropout": 0.1,
        "batch_size": 1024,
        "lr": 1e-3,
        "max_epochs": 50,
        "num_threads": 16,
        "beam_widths": [100, 300, 1000],
        "top_k": 1000,
    },
}
