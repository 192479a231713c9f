"""Config section of the MultiGR generative retriever (models.multigr)."""

from typing import Any

from growthgr.strict import StrictModel


class MultiGRConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides."""

    seed: int = 0


PROFILES: dict[str, dict[str, Any]] = {"tiny": {}, "demo": {}, "large": {}}
