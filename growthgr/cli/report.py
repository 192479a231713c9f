"""`growthgr report --ds YYYY-MM-DD`: the day's self-contained HTML report (`growthgr.report`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from growthgr.cli.context import date_option


def report_cmd(
    ds: date = date_option(..., "--ds", help="Logical date YYYY-MM-DD of the reports to gather."),
    out: Path | None = typer.Option(None, "--out", dir_okay=False, help="Also write the page to this local file."),
) -> None:
    """Gather every report of the day (ItemLTV, MultiGR, A/B tests, ...), the gate results and the
    serving release into one HTML page in the lake's reports zone; print where it is."""
    from foundation.lake import Lake
    from foundation.releases import ReleaseStore
    from growthgr.cli.context import settings
    from growthgr.report import write_report

    s = settings()
    lake, store = Lake.from_settings(s), ReleaseStore.from_settings(s)
    manifest = store.get("current").manifest if store.current_id() else None
    key = write_report(lake, ds, manifest)
    if out is not None:
        out.write_bytes(lake.store.get_bytes(key))
        typer.echo(f"report: {out}")
    typer.echo(f"report: {lake.store.url(key)}")
