"""Config section of the retrieval service over the current release (growthgr.serve)."""

from typing import Any, Literal

from pydantic import Field, model_validator

from foundation.strict import StrictModel


class ServeConfig(StrictModel):
    """`growthgr serve` / `growthgr retrieve`. Defaults are the `demo` profile (2 CPU cores).

    `history_days`: the newest `samples/gr_samples` days (up to the release's ds) read at load for
    the users' histories and the queries' intent categories (`growthgr.serve.read_user_context`).
    Retrievals of concurrent requests are batched: up to `max_batch` queued requests, waiting at
    most `batch_wait_ms` for more after the first, run as one beam search on one worker thread
    that uses `torch_threads` intra-op threads (FAISS: `faiss_threads`).
    """

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    top_k_default: int = Field(20, ge=1)
    top_k_max: int = Field(100, ge=1)
    max_query_chars: int = Field(256, ge=1)
    history_days: int = Field(7, ge=1)
    cache: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_max_mb: float = Field(64.0, gt=0)      # bytes of answers in the in-process LRU (Redis: its own maxmemory)
    cache_ttl_s: float = Field(600.0, gt=0)
    cache_timeout_ms: float = Field(50.0, gt=0)  # every cache call (Redis connect, each reply): then a miss
    request_timeout_ms: float = Field(2000.0, gt=0)  # a /retrieve answer's deadline: then 503 + Retry-After
    max_queue: int = Field(256, ge=1)             # queries waiting for a batch; more are shed (503 + Retry-After)
    max_in_flight: int = Field(16, ge=1)          # /retrieve requests inside the process; more are shed (503)
    max_body_bytes: int = Field(4096, ge=256)     # a POST body over it is refused (413) before parsing
    reload_poll_s: float = Field(5.0, gt=0)
    max_batch: int = Field(32, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)
    torch_threads: int = Field(2, ge=1)
    faiss_threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> "ServeConfig":
        if self.top_k_default > self.top_k_max:
            raise ValueError(f"top_k_default {self.top_k_default} > top_k_max {self.top_k_max}")
        return self


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"top_k_default": 5, "top_k_max": 20, "history_days": 2, "cache_max_mb": 1.0, "reload_poll_s": 0.2,
             "max_batch": 8, "torch_threads": 1},
    "demo": {},
    "large": {"top_k_max": 1000, "history_days": 30, "max_batch": 64, "max_in_flight": 128, "torch_threads": 16,
              "faiss_threads": 16},
}
