"""`growthgr dbt build|freshness|docs` and `growthgr sql`: the analysts' DuckDB marts."""

from __future__ import annotations

from datetime import date

import typer

from growthgr.cli.context import date_option
from warehouse.runner import DbtError, build, docs, freshness, query

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


@app.command("freshness")
def freshness_cmd(ds: date = date_option(..., "--ds", help="The run's day: each source's age is measured from it.")) -> None:
    """Check the lake sources' freshness (dbt source freshness) as of `--ds`: exit 1 naming each
    source whose newest partition is more than warehouse.freshness_error_after_days before it."""
    from growthgr.cli.context import settings

    try:
        res = freshness(_lake(), ds, settings().warehouse)
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    for warning in res.warnings:
        typer.secho(warning, fg="yellow", err=True)
    typer.echo(f"dbt source freshness ok as of {ds}")


@app.command("docs")
def docs_cmd() -> None:
    """Generate the dbt docs site (catalog + lineage)."""
    try:
        typer.echo(f"dbt docs: {docs(_lake())}")
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None


def sql(statement: str = typer.Argument(..., help="SQL over the marts, e.g. 'select * from new_item_cohorts'."),
        limit: int | None = typer.Option(None, "--limit", min=1,
                                         help="Most rows to print (default: warehouse.sql_row_limit).")) -> None:
    """Run ONE read-only SELECT on the analysts' DuckDB file, within the warehouse section's budget
    (time, memory, threads, no spill, rows). Files other than the lake tables the marts read, COPY,
    ATTACH, SET, several statements and an exceeded budget are refused: exit 1."""
    import pandas as pd

    from growthgr.cli.context import settings

    try:
        budget = settings().warehouse
        res = query(_lake(), statement, budget, budget.sql_row_limit if limit is None else limit)
    except DbtError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        typer.echo(res.frame.to_string(index=False))
    if res.truncated:
        typer.secho(f"(first {res.limit} rows; --limit N for more)", err=True)
