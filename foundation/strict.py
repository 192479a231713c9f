"""The base class of every typed config section."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors; values are validated on construction and assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
