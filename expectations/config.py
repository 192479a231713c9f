"""Config section of the data-quality gates (`settings.gates`).

The SID bounds (K, collision rate) and the pool size bound are taken from `settings.tokenizer`
and `settings.itemltv` when those define them; the fields here are the fallbacks.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from growthgr.strict import StrictModel


class GatesConfig(StrictModel):
    """Bounds of the GX suites. Defaults are the `demo` profile."""

    # Volume of an event table vs its previous committed partition: rows_today / rows_previous.
    volume_min_ratio: float = Field(0.5, gt=0)
    volume_max_ratio: float = Field(2.0, gt=0)
    volume_min_rows: int = Field(200, ge=0)        # below this on the previous day, no volume check
    n_categories: int = Field(16, ge=1)
    # Funnel checks look up the parent table in the same ds and this many days before (midnight spill-over).
    funnel_lookback_days: int = Field(1, ge=0)
    # Feature tables.
    feature_max_null_rate: float = Field(0.05, ge=0, le=1)
    feature_max_age_hours: float = Field(24.0, gt=0)
    # Labels (DESIGN.md section 1: new-item period days 0..29, label window days 30..36).
    new_item_days: int = Field(30, ge=1)
    label_window_end_day: int = Field(36, ge=1)
    # Daily new-item pool.
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(100_000, ge=1)      # used when settings.itemltv has no pool_size
    # SID table.
    sid_codebook_size: int = Field(256, ge=2)      # used when settings.tokenizer has no codebook_size
    sid_max_collision_rate: float = Field(0.05, ge=0, le=1)  # used when settings.tokenizer has none
    build_data_docs: bool = True


PROFILES: dict[str, dict[str, Any]] = {
    # tiny codebooks (tokenizer tiny: K=16 per level) collide far more often on the prefix
    "tiny": {"volume_min_rows": 50, "pool_max_size": 1_000, "sid_max_collision_rate": 0.4},
    "demo": {},
    "large": {"volume_min_rows": 1_000, "pool_max_size": 1_000_000},
}


def gates_config(settings) -> GatesConfig:
    """The effective `GatesConfig` of `settings` (profile defaults for settings objects without one)."""
    section = getattr(settings, "gates", None)
    if isinstance(section, GatesConfig):
        return section
    return GatesConfig(**PROFILES.get(getattr(settings, "profile", "demo"), {}))
