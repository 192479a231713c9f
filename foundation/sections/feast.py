"""Config section of the Feast feature store (`features.store`)."""

from typing import Literal

from foundation.strict import StrictModel


class FeatureStoreConfig(StrictModel):
    """Which Feast environment to use (`settings.feast`)."""

    environment: Literal["local", "cluster"] = "local"
    online_store: Literal["default", "sqlite", "redis"] = "default"
    redis_connection: str = "127.0.0.1:6379"
