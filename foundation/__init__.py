"""The foundation floor (DESIGN.md section 3): typed config, lake and storage, release store,
schemas, the dataset catalog, the label calendar and logging. Imports no Spark, Feast, torch,
Airflow or GX. Importing any project package imports this one first, so every process (CLI,
Airflow task, Spark driver, test) turns library telemetry off and quiets third-party warnings
(`foundation.logs`) before those libraries load."""

from foundation import logs as _logs  # noqa: F401
