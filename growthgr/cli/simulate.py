"""`growthgr simulate`: write simulated platform logs (raw + truth) to the lake; `--report` summarises them."""

from __future__ import annotations

import json
from datetime import date

import typer

from growthgr.cli.context import date_option
from simulator.faults import FAULTS

app = typer.Typer(help="The simulated search platform.", invoke_without_command=True)


@app.callback(invoke_without_command=True)
def simulate_cmd(
    ctx: typer.Context,
    profile: str | None = typer.Option(None, "--profile", help="tiny | demo | study | large (default: the global profile)."),
    start: date | None = date_option(None, "--start", help="First day YYYY-MM-DD (default: continue the lake)."),
    days: int | None = typer.Option(None, "--days", min=1, help="Number of days (default: the profile's)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (default: simulator.seed)."),
    lake_root: str | None = typer.Option(None, "--lake-root", help="Lake root to write (default: the configured "
                                         "lake_root)."),
    inject: list[str] = typer.Option([], "--inject", help=f"Fault to inject (repeatable): {', '.join(FAULTS)}."),
    inject_day: date | None = date_option(None, "--inject-day", help="Day of the faults (default: the first day)."),
    report: bool = typer.Option(False, "--report", help="Only print the mechanism report of the lake (JSON)."),
) -> None:
    """Simulate days of platform logs, continuing from the lake's last simulated day when it has one."""
    if ctx.invoked_subcommand is not None:
        return
    from foundation.lake import Lake
    from growthgr.cli.context import State, settings
    from simulator.run import StateMismatch, simulate
    from simulator.stats import mechanism_report

    if profile:
        State.profile = profile
    s = settings(**({"lake_root": lake_root} if lake_root else {}))
    lake = Lake.from_settings(s)
    if report:
        typer.echo(json.dumps(mechanism_report(lake), indent=2))
        return
    faults = [f for item in inject for f in item.split(",") if f]
    try:
        summary = simulate(lake, s.simulator, seed=seed, start=start, days=days, inject=faults, inject_day=inject_day)
    except (StateMismatch, ValueError) as err:
        typer.secho(f"simulate: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.line())
