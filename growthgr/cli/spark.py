"""`growthgr spark <job> --ds D` or `--start A --end B` (backfill); `<job>` (a job name in kebab case,
e.g. `itemltv-labels`) may be `all`."""

from __future__ import annotations

import json
from datetime import date

import typer

from growthgr.cli.context import date_option

app = typer.Typer(help="Spark jobs: item stats, features, ItemLTV labels, GR samples.", no_args_is_help=True)


def _days(ds: date | None, start: date | None, end: date | None) -> tuple[date, date]:
    if ds and not (start or end):
        return ds, ds
    if start and end and not ds:
        return start, end
    raise typer.BadParameter("give either --ds D or both --start A and --end B")


def _command(name: str):
    def command(
        ds: date | None = date_option(None, "--ds", help="Logical date YYYY-MM-DD."),
        start: date | None = date_option(None, "--start", help="First day of a backfill."),
        end: date | None = date_option(None, "--end", help="Last day of a backfill (inclusive)."),
    ) -> None:
        from foundation.lake import Lake
        from growthgr.cli.context import settings
        from spark_jobs.common import InputError
        from spark_jobs.jobs import backfill

        first, last = _days(ds, start, end)
        cfg = settings()
        try:
            rows = backfill(Lake.from_settings(cfg), cfg.spark, cfg.storage, name, first, last)
        except InputError as err:
            typer.secho(f"input error: {err}", fg="red", err=True)
            raise typer.Exit(1) from None
        typer.echo(json.dumps({f"{day}": tables for day, tables in rows.items()}, indent=2))

    command.__doc__ = f"Run `{name}` for one day or a range of days."
    return command


# Same names as `spark_jobs.jobs.JOBS` (kept here so `growthgr --help` does not import pyspark).
JOB_NAMES = ("item_daily_stats", "features", "gr_samples", "itemltv_labels")
for _name in (*JOB_NAMES, "all"):
    app.command(_name.replace("_", "-"))(_command(_name))
