"""`growthgr validate <dataset> --ds YYYY-MM-DD`: run the GX gate, exit 1 when any rule fails.

Exit codes: 0 passed; 1 a rule failed (bad data of any kind, unreadable files included, or the
gate itself broke); 2 a usage error (unknown dataset, malformed date).
"""

from __future__ import annotations

from datetime import date

import typer

from growthgr.cli.context import date_option


def validate_cmd(
    dataset: str = typer.Argument(..., help="raw | labels | features | pool | sids | a table name"),
    ds: date = date_option(..., "--ds", help="Partition date YYYY-MM-DD."),
    docs: bool = typer.Option(True, "--docs/--no-docs", help="Build GX Data Docs into the lake."),
) -> None:
    """Validate one dataset's partition; print a summary naming table, partition, column and rule."""
    from expectations.gate import DATASETS, validate
    from foundation.lake import Lake
    from growthgr.cli.context import settings

    if dataset not in DATASETS:
        typer.secho(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}", fg="red", err=True)
        raise typer.Exit(2)
    s = settings()
    try:
        result = validate(s.gates_config(), Lake.from_settings(s), dataset, ds, build_docs=docs)
    except Exception as err:  # noqa: BLE001 -- whatever broke, the data did not pass: exit 1
        typer.secho(f"gate {dataset} ds={ds}: ERROR {type(err).__name__}: {err}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.summary())
    typer.echo(f"results: {result.results_uri}")
    if result.data_docs_uri:
        typer.echo(f"data docs: {result.data_docs_uri}")
    raise typer.Exit(0 if result.passed else 1)
