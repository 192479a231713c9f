"""Config section of the ItemLTV uplift model and new-item pool (models.itemltv)."""

from typing import Any, Literal

from pydantic import Field

from foundation.strict import StrictModel


class ItemLTVConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides.

    `objective` picks how the label is fitted (see `models.itemltv.model`):
    `exposure` is the paper's per-exposure MSE of base + T * uplift against the
    item's label; `item` sums the clicked exposures' uplifts per item first.
    """

    seed: int = 0
    # -- data ----------------------------------------------------------------
    train_cohorts: int = Field(60, ge=1)     # listing-day cohorts used for training
    val_cohorts: int = Field(5, ge=1)        # the next ones, for model selection
    test_cohorts: int = Field(5, ge=1)       # the newest ones, held out for the report
    history_len: int = Field(20, ge=1)       # clicked items per user history
    title_tokens: int = Field(16, ge=1)      # hashed title words per item
    hash_buckets: int = Field(4096, ge=16)   # vocabulary of the hashed title words
    min_feature_coverage: float = Field(0.5, ge=0.0, le=1.0)  # feature columns missing more often are left out
    # -- model ---------------------------------------------------------------
    objective: Literal["exposure", "item"] = "item"
    use_uplift: bool = True                  # False trains the "base only" model
    emb_dim: int = Field(32, ge=4)
    hidden_dim: int = Field(64, ge=4)
    attn_heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    uplift_link: Literal["tanh", "exp"] = "tanh"   # exp: bound * sigmoid(raw - 3), positive, log-additive factors
    factored_uplift: bool = True             # uplift = link(lifecycle(context) + match(user, item))
    match_item: bool = False                 # the match head also sees the item embedding alone
    uplift_bound: float = Field(0.5, ge=0.0)  # |uplift per click| <= bound (scaled tanh); 0 = unbounded
    # -- training ------------------------------------------------------------
    max_epochs: int = Field(30, ge=1)
    items_per_batch: int = Field(64, ge=1)   # a batch holds every exposure of these items
    huber_delta: float = Field(0.1, ge=0)    # Huber loss on the label (0 = MSE)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(6, ge=1)           # early stopping on validation loss
    grad_clip: float = Field(1.0, ge=0)      # gradient norm clipping (0 = off)
    lr_schedule: Literal["constant", "cosine"] = "cosine"   # cosine: linear warm-up, then decay to 5% over max_epochs
    warmup_epochs: float = Field(1.0, ge=0)
    ema_decay: float = Field(0.98, ge=0.0, lt=1.0)  # EMA of the weights per step, used for validation and kept (0 = off)
    arm_calibration: bool = True             # 2SLS scale of the uplift on the traffic-support arms (kept if val MSE no worse)
    # where and how it trains (accelerator, devices, precision, workers): `settings.trainer`
    # -- evaluation ----------------------------------------------------------
    gbm_max_iter: int = Field(200, ge=1)     # meta-learner baselines
    # -- pool ----------------------------------------------------------------
    pool_size: int = Field(500, ge=1)        # top N of the items in their new-item period (calendar)


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "train_cohorts": 60, "val_cohorts": 2, "test_cohorts": 2, "history_len": 8, "hash_buckets": 1024,
        "emb_dim": 16, "hidden_dim": 32, "max_epochs": 20, "items_per_batch": 32, "gbm_max_iter": 50,
        "pool_size": 20, "patience": 5,
    },
    "demo": {},
    "study": {"train_cohorts": 110},
    "large": {"emb_dim": 64, "hidden_dim": 256, "history_len": 50, "hash_buckets": 65536, "pool_size": 5000},
}
