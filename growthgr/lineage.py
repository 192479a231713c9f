"""OpenLineage for the daily pipeline: what each step read and wrote, and what dbt built from what.

Two producers, one destination (`orchestration.lineage`):
- every Airflow task of both DAGs, through Airflow's OpenLineage provider: a task is a
  `growthgr.airflow_step.StepOperator`, whose inputs and outputs are its registry step's `reads`
  and `writes` (`growthgr.steps`) as lake datasets (`step_datasets`); `airflow_env` hands the
  provider its transport;
- dbt: after `dbt build` the `dbt_build` step turns dbt's run artefacts (manifest and run results)
  into one START and one COMPLETE/FAIL event per model, seed and test (`emit_dbt`, openlineage-dbt's
  artefact processor, as its `dbt-ol` wrapper does), each dbt run a child of the Airflow task's run
  when one is known.

Dataset names follow the OpenLineage naming spec: a local lake table is namespace `file`, name its
absolute path; on S3, namespace `s3://<bucket>`, name the key prefix. dbt's relations are
`duckdb://<file>` tables. Lineage is best effort: an event that cannot be written is logged, the
step goes on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from foundation.config import LineageConfig, Settings
from foundation.schemas import RAW_TABLES

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/growthgr/growthgr"
EVENTS_FILE = "openlineage.jsonl"


def events_file(cfg: LineageConfig, airflow_home: str | Path | None = None) -> Path:
    """The file events go to with the file transport: `cfg.file`, or `lineage/openlineage.jsonl`
    in the Airflow home (`airflow_home`, else `AIRFLOW_HOME`, else `.airflow`, the CLI's default)."""
    if cfg.file:
        return Path(cfg.file).absolute()
    home = airflow_home or os.environ.get("AIRFLOW_HOME", ".airflow")
    return Path(home).absolute() / "lineage" / EVENTS_FILE


def transport(cfg: LineageConfig, airflow_home: str | Path | None = None) -> dict | None:
    """The OpenLineage client's transport for `cfg` (None: lineage off). The file transport
    appends one JSON event per line (its folder is created here)."""
    if cfg.transport == "off":
        return None
    if cfg.transport == "http":
        return {"type": "http", "url": cfg.url, "timeout": cfg.timeout_s}
    path = events_file(cfg, airflow_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"type": "file", "log_file_path": str(path), "append": True}


def airflow_env(cfg: LineageConfig, airflow_home: str | Path) -> dict[str, str]:
    """The `[openlineage]` settings of Airflow's provider for `cfg` in the Airflow home
    `airflow_home`, as environment variables."""
    spec = transport(cfg, airflow_home)
    if spec is None:
        return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    return {"AIRFLOW__OPENLINEAGE__DISABLED": "False", "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(spec),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": cfg.namespace}


def lake_dataset(root: str, key: str = "") -> tuple[str, str]:
    """(namespace, name) of `key` (e.g. `zone/table`; "" for the root itself) under a store's
    root `root` (a local folder or `s3://bucket/prefix`)."""
    if root.startswith("s3://"):
        parsed = urlparse(root)
        return f"s3://{parsed.netloc}", "/".join(p for p in (parsed.path.strip("/"), key) if p)
    return "file", "/".join(p for p in (str(Path(root).absolute()), key) if p)


def expand(keys: tuple[str, ...]) -> list[str]:
    """A step's dataset keys with `raw` (every raw table) spelt out."""
    out: list[str] = []
    for key in keys:
        out += [f"raw/{t}" for t in RAW_TABLES] if key == "raw" else [key]
    return out


WAREHOUSE, RELEASES = "warehouse", "releases"      # registry keys: dbt's DuckDB marts; the release store


def dataset(settings: Settings, key: str) -> tuple[str, str]:
    """(namespace, name) of a registry key (`growthgr.steps`) on the stores of `settings`: the
    release store's root for `releases`, the lake's DuckDB file for `warehouse` (dbt's events
    name each of its relations), else the lake key under the lake's root."""
    if key == RELEASES:
        return lake_dataset(settings.releases_root)
    if key == WAREHOUSE:
        from foundation.lake import Lake
        from warehouse.runner import duckdb_path

        return "file", str(duckdb_path(Lake.from_settings(settings)))
    return lake_dataset(settings.lake_root, key)


def step_datasets(settings: Settings, reads: tuple[str, ...], writes: tuple[str, ...]):
    """The OpenLineage (inputs, outputs) of a registry step's `reads` and `writes` on the stores
    of `settings`."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    return ([InputDataset(*dataset(settings, k)) for k in expand(reads)],
            [OutputDataset(*dataset(settings, k)) for k in expand(writes)])


def client(cfg: LineageConfig):
    """An OpenLineage client writing to `cfg`'s transport (None when lineage is off)."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport import get_default_factory

    spec = transport(cfg)
    if spec is None:
        return None
    return OpenLineageClient(transport=get_default_factory().create(spec))


def airflow_parent():
    """The OpenLineage run of the Airflow task this process runs, as the parent of dbt's runs
    (openlineage-dbt's `ParentRunMetadata`, from the provider's macros); None outside a task."""
    try:
        from airflow.providers.openlineage.plugins.macros import lineage_job_name, lineage_run_id
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # noqa: BLE001 -- not in an Airflow task (CLI, tests of the step)
        return None
    from airflow.providers.openlineage.conf import namespace
    from openlineage.common.provider.dbt.facets import ParentRunMetadata

    return ParentRunMetadata(job_namespace=namespace(), job_name=lineage_job_name(ti), run_id=lineage_run_id(ti))


def emit_dbt(cfg: LineageConfig, lake) -> int:
    """One START and one COMPLETE/FAIL event per dbt node of the last dbt run on `lake` (its
    artefacts in the lake's warehouse folder), sent to `cfg`'s transport; returns how many were
    sent (0 when off). dbt's relations are named in the namespace `duckdb://<the lake's DuckDB
    file>` (the profile's path is a dbt var, which the artefact processor cannot render)."""
    lineage = client(cfg)
    if lineage is None:
        return 0
    try:
        from openlineage.common.provider.dbt.local import DbtLocalArtifactProcessor

        from warehouse.runner import PROJECT_DIR, duckdb_path, warehouse_dir

        warehouse = f"duckdb://{duckdb_path(lake)}"

        class Processor(DbtLocalArtifactProcessor):
            def extract_namespace(self, profile: dict) -> str:
                return warehouse

        processor = Processor(
            producer=PRODUCER, project_dir=str(PROJECT_DIR), target_path=str(warehouse_dir(lake) / "dbt_target"),
            job_namespace=cfg.namespace, dbt_command_line=["dbt", "build", "--profiles-dir", str(PROJECT_DIR)])
        processor.dbt_run_metadata = airflow_parent()
        events = processor.parse().events()
    except Exception as err:  # noqa: BLE001 -- lineage never fails the step
        log.warning("dbt lineage: the last run's artefacts could not be read: %s", err)
        return 0
    sent = 0
    for event in events:
        try:
            lineage.emit(event)
            sent += 1
        except Exception as err:  # noqa: BLE001
            log.warning("dbt lineage: an event was not sent: %s", err)
    log.info("dbt lineage: %d events -> %s", sent, cfg.transport)
    return sent


def read_events(path: Path) -> list[dict]:
    """The events of a file transport's file, oldest first."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
