"""`growthgr dbt build|docs` and `growthgr sql`: the analysts' DuckDB marts."""

from __future__ import annotations

import typer

from warehouse.runner import DbtError, build, docs, query

app = typer.Typer(help="dbt models for analysts (dbt-duckdb over the lake).", no_args_is_help=True)


def _lake():
    """The configured lake (root, S3 endpoint, local state directory)."""
    from foundation.lake import Lake
    from growthgr.cli.context import settings

    return Lake.from_settings(settings())


@app.command("build")
def build_cmd(select: str | None = typer.Option(None, "--select", "-s", help="dbt node selection.")) -> None:
    """Run and test every model (dbt build)."""
    try:
        res = build(_lake(), select)
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"dbt build ok: {res.nodes} nodes; DuckDB file {res.warehouse}")


@app.command("docs")
def docs_cmd() -> None:
    """Generate the dbt docs site (catalog + lineage)."""
    try:
        typer.echo(f"dbt docs: {docs(_lake())}")
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None


def sql(statement: str = typer.Argument(..., help="SQL over the marts, e.g. 'select * from new_item_cohorts'.")) -> None:
    """Run ONE read-only SELECT on the analysts' DuckDB file (files outside the lake, COPY,
    ATTACH, SET and several statements are refused: exit 1)."""
    import pandas as pd

    try:
        frame = query(_lake(), statement)
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        typer.echo(frame.to_string(index=False))
