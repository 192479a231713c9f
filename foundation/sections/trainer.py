"""Config section of every Lightning Trainer (`settings.trainer`, built by `models.training`)."""

from typing import Any

from pydantic import Field

from foundation.strict import StrictModel


class TrainerConfig(StrictModel):
    """Where and how models train. CPU defaults; scale out by config only, e.g.
    `accelerator: gpu, devices: 4, strategy: ddp, precision: bf16-mixed`."""

    accelerator: str = "cpu"            # "gpu" / "auto" to scale out
    devices: int | str = 1
    strategy: str = "auto"              # "ddp" on several GPUs
    precision: str = "32-true"          # "bf16-mixed" on GPUs
    num_workers: int = Field(0, ge=0)   # DataLoader workers
    deterministic: bool = True
    progress_bar: bool = False


PROFILES: dict[str, dict[str, Any]] = {"tiny": {}, "demo": {}, "large": {}}
