"""Config section of the dense retriever (DR, MOPPR loss) and its FAISS index (models.dense)."""

from typing import Any, Literal

from pydantic import Field

from foundation.strict import StrictModel


class ObjectiveWeights(StrictModel):
    """Weights of the four MOPPR objectives in the summed loss (0 switches one off)."""

    relevance: float = Field(1.0, ge=0)     # positives: the top `relevance_top` rank candidates
    exposure: float = Field(1.0, ge=0)      # positives: the exposed items
    click: float = Field(1.0, ge=0)         # positives: the clicked items
    purchase: float = Field(1.0, ge=0)      # positives: the purchased items


class DenseIndexConfig(StrictModel):
    """How the item vectors are indexed (models.dense.index).

    Below `exact_max_items` items the index is exact (inner product, `IndexFlatIP`); above it,
    `kind` (IVF-Flat or HNSW-Flat) with nprobe / efSearch chosen as the smallest value whose
    recall@`recall_k` against exact search, measured on `recall_queries` sampled queries, is
    >= `target_recall`."""

    exact_max_items: int = Field(10_000, ge=1)
    kind: Literal["ivf", "hnsw"] = "ivf"
    ivf_nlist: int = Field(0, ge=0)               # 0 = about 4 * sqrt(n items)
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(80, ge=8)
    max_ef_search: int = Field(1024, ge=1)        # the largest efSearch tried
    target_recall: float = Field(0.95, gt=0, le=1)
    recall_k: int = Field(100, ge=1)
    recall_queries: int = Field(200, ge=1)
    threads: int = Field(1, ge=1)                 # FAISS OpenMP threads (1: byte-identical HNSW graphs)
    seed: int = 0


class DenseDailyConfig(StrictModel):
    """The daily DR step of the pipeline (growthgr.pipeline: dense_train / gate_dense).

    From scratch every day (no warm start) on the newest `train_days` days of `gr_samples` up to
    ds, for `epochs` epochs (the offline tables train `max_epochs`); the catalog as of ds is
    encoded and indexed (`index`), and the index's recall@`index.recall_k` against exact search is
    measured on the query vectors of `index.recall_queries` of ds's requests (a seeded sample)."""

    train_days: int = Field(2, ge=1)
    epochs: int = Field(3, ge=1)


class DenseConfig(StrictModel):
    """Defaults are the `demo` profile (CPU-trainable); `PROFILES` holds the per-profile overrides.

    Behaviour windows over `history_item_ids` (most recent last): the last `realtime_len`
    items (real-time), the `short_len` before them (short-term), the rest up to
    `max_history` (long-term).
    """

    seed: int = 0
    # -- inputs ----------------------------------------------------------------
    query_buckets: int = Field(4096, ge=1)        # hashed query words (MultiGR's `Vocab.query_tokens`)
    max_query_words: int = Field(8, ge=1)
    user_buckets: int = Field(4096, ge=1)         # hashed user ids (personalised query pooling)
    item_buckets: int = Field(65_536, ge=1)       # hashed item ids
    category_buckets: int = Field(64, ge=1)
    sid_levels: int = Field(3, ge=0)
    codebook_size: int = Field(256, ge=2)         # raised to the SID table's largest code + 1 on the platform
    max_history: int = Field(50, ge=1)
    realtime_len: int = Field(3, ge=1)
    short_len: int = Field(12, ge=1)
    # -- towers ----------------------------------------------------------------
    emb_dim: int = Field(64, ge=4)
    hidden_dim: int = Field(128, ge=4)
    attn_heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    init_temperature: float = Field(0.07, gt=0)
    learn_temperature: bool = True
    min_temperature: float = Field(0.01, gt=0)
    # -- samples and loss ------------------------------------------------------
    relevance_top: int = Field(10, ge=1)          # rank candidates at rank < this are relevance positives
    under_exposure_min_rank: int = Field(30, ge=0)  # never-exposed rank candidates at rank >= this: hard negatives
    under_exposures: int = Field(8, ge=0)         # hard negatives kept per request
    random_negatives: int = Field(256, ge=0)      # catalog items drawn per batch, shared by its requests
    loss: Literal["per_positive", "mass"] = "per_positive"
    weights: ObjectiveWeights = Field(default_factory=ObjectiveWeights)
    # -- training --------------------------------------------------------------
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    max_epochs: int = Field(10, ge=1)
    num_threads: int = Field(2, ge=1)
    # -- serving -------------------------------------------------------------
    two_stage_top_n: int = Field(100, ge=1)       # MultiGR top-N re-ranked by DR (the paper: 2000 of its top)
    index: DenseIndexConfig = Field(default_factory=DenseIndexConfig)
    daily: DenseDailyConfig = Field(default_factory=DenseDailyConfig)


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "query_buckets": 256, "max_query_words": 4, "user_buckets": 64, "item_buckets": 2048,
        "category_buckets": 16, "codebook_size": 16, "max_history": 10, "realtime_len": 2, "short_len": 4,
        "emb_dim": 32, "hidden_dim": 64, "dropout": 0.0, "relevance_top": 5, "under_exposure_min_rank": 10,
        "under_exposures": 4, "random_negatives": 64, "batch_size": 64, "lr": 3e-3, "max_epochs": 8,
        "num_threads": 1, "two_stage_top_n": 20,
        "index": {"exact_max_items": 2000, "recall_queries": 50},
        "daily": {"train_days": 2, "epochs": 2},
    },
    "demo": {},
    "large": {
        "query_buckets": 65_536, "user_buckets": 1_000_003, "item_buckets": 4_000_037, "emb_dim": 128,
        "hidden_dim": 512, "max_history": 200, "short_len": 30, "batch_size": 2048, "random_negatives": 4096,
        "max_epochs": 5, "num_threads": 16, "two_stage_top_n": 2000,
        "index": {"exact_max_items": 200_000, "kind": "hnsw", "recall_queries": 1000, "threads": 16},
    },
}
