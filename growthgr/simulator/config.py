"""Config section of the simulated platform (growthgr.simulator)."""

from typing import Any

from growthgr.strict import StrictModel


class SimulatorConfig(StrictModel):
    """Defaults are the `demo` profile; `PROFILES` holds the per-profile overrides."""

    seed: int = 0


PROFILES: dict[str, dict[str, Any]] = {"tiny": {}, "demo": {}, "large": {}}
