"""GrowthGR's application floor: CLI, step registry, publish, service, A/B tests, report, demo and
the Airflow helpers. Importing it sets up logging and telemetry first (`foundation.logs`)."""

import foundation as _foundation  # noqa: F401
