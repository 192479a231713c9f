"""GrowthGR. Importing any part of it first turns library telemetry off and quiets third-party
warnings (`growthgr.core.logs`), in every process: CLI, Airflow task, test."""

from growthgr.core import logs as _logs  # noqa: F401
