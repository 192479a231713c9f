"""Logging and telemetry set-up, done once per process."""

from __future__ import annotations

import logging
import os

# Telemetry of every library off (DESIGN.md section 8); set before they are imported.
TELEMETRY_OFF = {
    "GX_ANALYTICS_ENABLED": "False",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "FEAST_USAGE": "False",
    "DO_NOT_TRACK": "1",
    "SCARF_ANALYTICS": "false",
}


def disable_telemetry() -> None:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def setup_logging(level: str | int = "INFO") -> None:
    """Readable one-line logs on stderr: time, level, logger, message."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in ("py4j", "botocore", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


disable_telemetry()
