"""Config section of the MultiGR generative retriever (models.multigr)."""

from typing import Any, Literal

from pydantic import Field

from foundation.strict import StrictModel


class MoPOConfig(StrictModel):
    """MoPO alignment after SFT (models.multigr.mopo; DESIGN.md section 6).

    The ablation switches (`use_ltv`, `use_ciw`, `use_funnel`) and `reward="conversion"`
    (plain GRPO on purchases) produce the rows of the paper's Tables 3-5.

    Demo-world validation (train 02-22..02-28, validate 03-01, one seed, SFT 8 epochs
    n_layer=2 d_model=64: search R@10 9.72 vs popularity 3.12): without group augmentation the
    on-policy reward stays ~0.02 and MoPO moves nothing; lr 1e-3 x 300 steps hurt search R@10
    (8.5-9.6, conversion GRPO 4.0); `logged_per_group=4, logged_min_level="click",
    context_min_level="click", lr=3e-4` x 150 steps gave search R@10 11.98, long-term 1.72,
    long-term-true 2.13 (SFT 0 / 0). The offline tables use those (set through
    GROWTHGR_MULTIGR__MOPO__*); the defaults below stay the published behaviour (no
    augmentation) until the daily pipeline is re-validated with them.

    Why long-term Recall@10 stays ~0 (2026-12-02, same validation split, SFT seed 0, 200 decoded
    requests): the validation day's long-term label holds 57 items in 58 requests; 50 of them have an
    ItemLTV score on the last train day, but only 4 were clicked (2 purchased) in the 7 train days,
    39 were exposed and 50 were rank candidates. A long-term reward that needs a logged click (the
    paper's rule, `build_contexts`) therefore fires on 327 of ~75k training (request, SID) pairs.
    Tried, not kept (long-term R@10, one seed; SFT 0.00, search R@10 10.27): the long-term flag on
    exposed high-uplift items instead of clicked ones (7,374 pairs; 1.72 = one request, search
    10.13-10.53), with ltv_weight 3 (1.72) or 400 steps (0.00, search 12.40); half or all of each
    step's contexts drawn from those with a long-term SID (0.00; search R@10 fell to 3.9-9.1).

    A value prior, tried and reverted (2026-12-02, commits db26b9b / 2372ef0; same split, SFT seed 0,
    375 decoded requests, 58 with a long-term item): decoding added gain[level] * v(node) to each
    valid child's logit, v = the largest positive standardised ItemLTV uplift below the trie node,
    one gain per SID level learned by MoPO. Set by hand on the SFT model (gain on the third level;
    search R@10, long-term R@10 / R@100 / R@1000): 0 -> 10.27, 0 / 3.45 / 29.31; 3 -> 8.67,
    0 / 8.62 / 44.83; 6 -> 5.33, 1.72 / 10.34 / 56.90; 12 -> 4.53, 1.72 / 15.52 / 56.90; gain 2 on
    the first three levels -> 7.33, 1.72 / 6.90 / 43.10. Re-ranking that top 1000 with the dense
    retriever (the two_stage row): long-term R@10 0 at gain 0 and 6 (R@100 6.90 and 12.07); the dense
    retriever alone 0 / 1.72 / 25.86. Learned by MoPO, the gain went negative (third level ~-2.9 with
    ltv_weight 1, 5 or 20; long-term R@1000 29.3 -> 12-14, search R@10 10.27 -> 11.6-11.9): the
    logged funnel SIDs, mostly established items without an ItemLTV score, out-reward the sampled
    ones, and the rare long-term ones cannot outweigh them after group normalisation.
    Logged group members down to the exposure level
    (`logged_min_level="exposure"`, 4 or 8 per group; 39 of the 57 long-term items were exposed in
    the train days) left long-term R@10 at 0 too (R@100 1.72, search R@10 11.6 / 11.1).
    """

    steps: int = Field(150, ge=0)                  # optimiser steps; 0 = no alignment (SFT only)
    contexts_per_step: int = Field(32, ge=1)       # training contexts (requests) per step
    group_size: int = Field(8, ge=2)               # G SIDs drawn per context from pi_old
    rollout: Literal["top_p", "beam"] = "top_p"    # constrained top-p sampling or constrained beam search
    top_p: float = Field(0.95, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    refresh_every: int = Field(10, ge=1)           # K: pi_old <- pi_theta every K steps
    clip_eps: float = Field(0.2, gt=0)
    kl_coef: float = Field(0.0, ge=0)              # optional KL to the frozen SFT model
    lr: float = Field(1e-4, gt=0)
    ciw_floor: float = Field(1.0, gt=0)            # CIW = clip(-log pi_old(sid | x), floor, cap)
    ciw_cap: float = Field(20.0, gt=0)             # demo catalogs: -log pi_old of a sampled SID is 8-20 nats
    ltv_weight: float = Field(1.0, ge=0)           # weight of the long-term reward
    reward: Literal["mopo", "conversion"] = "mopo"
    # off-policy group augmentation (models.multigr.mopo.logged_members): this many of the request's
    # logged funnel SIDs (level >= logged_min_level, best first) join the G rollouts of each group
    logged_per_group: int = Field(0, ge=0)
    logged_min_level: Literal["exposure", "click", "purchase"] = "exposure"
    # MoPO draws its contexts from the requests whose funnel reached at least this level
    context_min_level: Literal["candidate", "exposure", "click", "purchase"] = "candidate"
    use_ltv: bool = True
    use_ciw: bool = True
    use_funnel: bool = True


class MultiGRDailyConfig(StrictModel):
    """The daily MultiGR step of the pipeline (growthgr.pipeline: multigr_train / _evaluate / gate).

    Sized so that the demo's daily step stays a few minutes on 2 CPU cores (`make demo` <= 15 min):
    the offline tables (`growthgr multigr evaluate`) train longer with their own arguments."""

    train_days: int = Field(2, ge=1)               # gr_samples days of the first (from-scratch) SFT
    scratch_epochs: int = Field(3, ge=1)           # SFT epochs of a from-scratch day
    refresh_epochs: int = Field(1, ge=1)           # SFT epochs on the new day's samples (warm start)
    # the warm start's SFT runs at lr * this: at the from-scratch lr one day's refresh dropped the demo's
    # held-out search Recall@10 from 0.121 to 0.005 (2026-03-01); at 0.1x it kept 0.121
    refresh_lr_factor: float = Field(0.1, gt=0, le=1)
    mopo_steps: int = Field(20, ge=0)              # MoPO steps of a day (mopo.steps is the offline tables')
    eval_days: int = Field(1, ge=1)                # fixed held-out days for the gate
    eval_requests: int = Field(500, ge=1)          # held-out requests scored at most (a fixed subset)
    max_recall_drop: float = Field(0.02, ge=0)     # gate: Recall@10 may drop at most this much (absolute)


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
    # constrained beam scores renormalised over each trie node's valid children (models.multigr.beam).
    # Off: on the demo lake (SFT n_layer=2 d_model=64, train 02-22..28, validate 03-01, 375 search
    # requests, beams of 1000, seeds 0-2) it moved search R@10 10.27/13.07/10.80 -> 12.27/13.60/10.93,
    # NDCG@10 6.32/7.16/6.10 -> 6.48/6.86/5.91 and R@1000 66.0/63.5/65.1 -> 64.8/63.1/61.9: no clear win.
    renormalize_beams: bool = False
    mopo: MoPOConfig = Field(default_factory=MoPOConfig)
    daily: MultiGRDailyConfig = Field(default_factory=MultiGRDailyConfig)


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
        # 8^3 = 512 SIDs: uniform -log p is 6.2 nats, so the cap sits just above it
        "mopo": {"steps": 20, "contexts_per_step": 8, "group_size": 4, "refresh_every": 5, "lr": 1e-3,
                 "ciw_cap": 8.0},
        "daily": {"train_days": 2, "eval_days": 1, "max_recall_drop": 0.05, "mopo_steps": 20},
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
