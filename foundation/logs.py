"""Logging, telemetry and warning set-up, done once per process.

Third-party warnings that say nothing to a GrowthGR user (deprecations inside the libraries,
Lightning's advice about DataLoader workers on a 2-core machine, ...) are filtered here and only
here, by the module that raises them; the project's own warnings are never filtered.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import warnings

# Telemetry of every library off (DESIGN.md section 8); set before they are imported.
TELEMETRY_OFF = {
    "GX_ANALYTICS_ENABLED": "False",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "FEAST_USAGE": "False",
    "DO_NOT_TRACK": "1",
    "SCARF_ANALYTICS": "false",
}


# Libraries whose own deprecation / future warnings are not actionable for our users.
THIRD_PARTY = ("airflow", "feast", "great_expectations", "dbt", "pyspark", "lightning", "lightning_fabric",
               "pytorch_lightning", "torch", "pydantic", "sqlalchemy", "pandas", "sklearn", "faiss", "duckdb",
               "transformers", "sentence_transformers", "boto3", "botocore", "moto", "ibis", "dask", "typer",
               "altair", "marshmallow", "pkg_resources", "google", "jsonschema", "fsspec")
# Known third-party messages that are advice for other set-ups (matched as regular expressions).
THIRD_PARTY_MESSAGES = (
    r".*does not have many workers.*",              # Lightning: we use 0 workers on purpose (determinism)
    r".*LeafSpec.*",                                # torch pytree deprecation raised via Lightning
    r".*Consider setting `persistent_workers=True`.*",
    r".*GPU available but not used.*",
    r".*The number of training batches.*",
)


_QUIET = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning)
_STDLIB = sysconfig.get_paths()["stdlib"]


def _third_party(filename: str) -> bool:
    """Installed libraries (site-packages) and the standard library, not our code or scripts."""
    return "site-packages" in filename or "dist-packages" in filename or filename.startswith(_STDLIB)


class _ThirdPartyWarningRecords(logging.Filter):
    """Drops captured warnings ("<file>:<line>: <Category>: ...") of a quiet category raised in
    third-party code: Feast, for one, puts `once` filters for DeprecationWarning in front of ours
    when imported, and Airflow routes warnings through logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        head = str(record.args[0] if record.args else record.msg).split(":", 3)
        return not (len(head) > 2 and _third_party(head[0])
                    and head[2].strip() in {c.__name__ for c in _QUIET})


def quiet_third_party_warnings() -> None:
    """Ignore warnings raised inside third-party code (and the known messages above); keep ours.

    Filters alone do not hold: some libraries put their own `once`/`default` filters in front
    when imported. So the display hook also drops a quiet category whose frame is third-party
    code; a warning attributed to our own code (our use of a library) is still shown.
    """
    pattern = r"(" + "|".join(THIRD_PARTY) + r")(\..*)?$"
    for category in _QUIET:
        warnings.filterwarnings("ignore", category=category, module=pattern)
    for message in THIRD_PARTY_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    py_warnings = logging.getLogger("py.warnings")      # where `logging.captureWarnings` (Airflow) sends them
    if not any(isinstance(f, _ThirdPartyWarningRecords) for f in py_warnings.filters):
        py_warnings.addFilter(_ThirdPartyWarningRecords())
    if getattr(warnings.showwarning, "__name__", "") != "_show_unless_third_party":
        shown = warnings.showwarning

        def _show_unless_third_party(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, _QUIET) and _third_party(str(filename)):
                return
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = _show_unless_third_party


def disable_telemetry() -> None:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


# GrowthGR's own loggers (top-level packages); every other logger is a library's.
OWN_LOGGERS = ("foundation", "growthgr", "models", "features", "spark_jobs", "simulator", "expectations",
               "warehouse", "dags", "benchmarks", "__main__")


def setup_logging(level: str | int = "INFO", libraries: str | int = "WARNING") -> None:
    """Readable one-line logs on stderr: time, level, logger, message. GrowthGR's loggers log at
    `level`, third-party libraries (GX, Feast, dbt, Spark's Python side, ...) at `libraries`: their
    INFO lines are off by default (`growthgr --lib-log-level INFO` brings them back)."""
    logging.basicConfig(
        level=libraries,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # feast.infra.registry.registry: "Registry cache expired, so refreshing" on every query
    for noisy in ("py4j", "botocore", "urllib3", "filelock", "fsspec", "faiss.loader", "feast.infra.registry.registry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


disable_telemetry()
quiet_third_party_warnings()
