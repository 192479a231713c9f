"""Config section of the item tokenizer: text encoder + RQ-VAE (models.tokenizer)."""

from typing import Any

from growthgr.strict import StrictModel


class TokenizerConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides."""

    seed: int = 0


PROFILES: dict[str, dict[str, Any]] = {"tiny": {}, "demo": {}, "large": {}}
