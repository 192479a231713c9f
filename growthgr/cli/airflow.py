"""`growthgr airflow prepare|standalone`: a local Airflow home ready for GrowthGR's DAGs.

Both go through `growthgr.airflow_local.prepare`, the one path every local Airflow of the project
takes (`growthgr pipeline run`, the demo, the tests' schedulers): the metadata DB migrated, the
single-writer pools (`duckdb`, `feast_registry`) created, the DAG folder, lineage and logging set.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from growthgr.cli.pipeline import AIRFLOW_HOME

app = typer.Typer(help="A local Airflow home for the GrowthGR DAGs (the UI: `standalone`).", no_args_is_help=True)


@app.command("prepare")
def prepare_cmd(airflow_home: Path = AIRFLOW_HOME) -> None:
    """Migrate the home's metadata DB and create the pools the DAGs use (idempotent); print the
    environment that points `airflow` commands at this home."""
    from growthgr.airflow_local import prepare

    env = prepare(airflow_home)
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES"):
        typer.echo(f"export {key}={env[key]}")


@app.command("standalone")
def standalone_cmd(
    airflow_home: Path = AIRFLOW_HOME,
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="The API server's (and UI's) port."),
) -> None:
    """`prepare`, then `airflow standalone` on this home: API server and UI, scheduler, DAG
    processor and triggerer, on 127.0.0.1 (the login is printed at start-up). Runs until stopped."""
    import sys

    from growthgr.airflow_local import prepare

    bin_dir = Path(sys.executable).parent          # `airflow standalone` starts its components as `airflow ...`
    env = {**os.environ, **prepare(airflow_home), "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
           "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    os.execve(str(bin_dir / "airflow"), [str(bin_dir / "airflow"), "standalone"], env)
