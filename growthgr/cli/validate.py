"""`growthgr validate <dataset> --ds YYYY-MM-DD`: run the GX gate, exit 1 when any rule fails."""

from __future__ import annotations

import typer


def validate_cmd(
    dataset: str = typer.Argument(..., help="raw | labels | features | pool | sids | a table name"),
    ds: str = typer.Option(..., "--ds", help="Partition date YYYY-MM-DD."),
    docs: bool = typer.Option(True, "--docs/--no-docs", help="Build GX Data Docs into the lake."),
) -> None:
    """Validate one dataset's partition; print a summary naming table, partition, column and rule."""
    from expectations.gate import validate
    from growthgr.cli.context import settings
    from growthgr.core.lake import Lake

    s = settings()
    try:
        result = validate(s.gates_config(), Lake.from_settings(s), dataset, ds, build_docs=docs)
    except ValueError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary())
    typer.echo(f"results: {result.results_uri}")
    if result.data_docs_uri:
        typer.echo(f"data docs: {result.data_docs_uri}")
    raise typer.Exit(0 if result.passed else 1)
