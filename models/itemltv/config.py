"""Config section of the ItemLTV uplift model and new-item pool (models.itemltv)."""

from typing import Any

from growthgr.strict import StrictModel


class ItemLTVConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides."""

    seed: int = 0


PROFILES: dict[str, dict[str, Any]] = {"tiny": {}, "demo": {}, "large": {}}
