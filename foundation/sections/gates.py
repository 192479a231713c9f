"""Config section of the data-quality gates (`settings.gates`).

The SID bounds (K, collision rate) and the pool size bound follow the tokenizer and ItemLTV
sections: `Settings.gates_config()` fills them in. Day numbers come from `foundation.calendar`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from foundation.strict import StrictModel


class GatesConfig(StrictModel):
    """Bounds of the GX suites. Defaults are the `demo` profile."""

    # Volume of an event table vs its previous committed partition: rows_today / rows_previous.
    volume_min_ratio: float = Field(0.5, gt=0)
    volume_max_ratio: float = Field(2.0, gt=0)
    volume_min_rows: int = Field(200, ge=0)        # below this on the previous day, no volume check
    # Distribution drift of a raw table's numeric columns vs its previous committed partitions: the
    # day's quantiles `drift_quantiles` must lie within the range the previous `drift_days` days
    # spanned, widened by `drift_tolerance` x (that range's width, at least `drift_rel_floor` x the
    # largest |value| and at least 1 unit); no check with fewer than `drift_min_days` previous days
    # of at least `drift_min_rows` values each, or a day with fewer (tail quantiles of a few rows are noise).
    drift_days: int = Field(7, ge=1)
    drift_min_days: int = Field(3, ge=1)
    drift_min_rows: int = Field(200, ge=1)
    drift_quantiles: list[float] = Field(default_factory=lambda: [0.05, 0.5, 0.95])
    drift_tolerance: float = Field(1.0, ge=0)
    drift_rel_floor: float = Field(0.1, ge=0)
    # Per-item price changes of the order tables (purchases, site_orders) vs their previous `drift_days`
    # committed partitions: of the items ordered both today and on those days, at most the share
    # `price_change_max_share` may have today's median price differ from their earlier median by more
    # than `price_change_max_rel` (|today / earlier - 1|); no check with fewer than
    # `price_change_min_items` such items. A unit error (x100 or /100) on a few items fails it.
    price_change_max_rel: float = Field(0.5, gt=0)
    price_change_max_share: float = Field(0.02, ge=0, le=1)
    price_change_min_items: int = Field(10, ge=1)
    n_categories: int = Field(16, ge=1)
    # Funnel checks look up the parent table in the same ds and this many days before (midnight spill-over).
    funnel_lookback_days: int = Field(1, ge=0)
    # Feature tables.
    feature_max_null_rate: float = Field(0.05, ge=0, le=1)
    feature_max_age_hours: float = Field(24.0, gt=0)
    # Daily new-item pool.
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(100_000, ge=1)      # Settings.gates_config(): itemltv.pool_size
    # SID table.
    sid_codebook_size: int = Field(256, ge=2)      # Settings.gates_config(): tokenizer.codebook_size
    sid_max_collision_rate: float = Field(0.05, ge=0, le=1)  # Settings.gates_config(): tokenizer's
    # Model gate of publish: the candidate ItemLTV's MSE on the day's test cohorts may exceed the
    # serving release's model's MSE on the same rows by at most this fraction.
    publish_max_regression: float = Field(0.10, ge=0)
    build_data_docs: bool = True


PROFILES: dict[str, dict[str, Any]] = {
    # tiny codebooks (tokenizer tiny: K=16 per level) collide far more often on the prefix
    # tiny: ~20-30 test items; retraining one day later scored 0.70-1.13x the previous model's
    # MSE on the same rows (6 consecutive days measured), so 10% would refuse ordinary days
    "tiny": {"volume_min_rows": 50, "pool_max_size": 1_000, "sid_max_collision_rate": 0.4,
             "publish_max_regression": 0.25},
    "demo": {},
    "large": {"volume_min_rows": 1_000, "pool_max_size": 1_000_000},
}
