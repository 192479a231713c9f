"""`growthgr pipeline run|backfill|step`: the daily DAG under a local Airflow, or one step directly."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from growthgr.cli.context import date_option

app = typer.Typer(help="Run the daily pipeline (under Airflow, or step by step).", no_args_is_help=True)
AIRFLOW_HOME = typer.Option(Path(".airflow"), "--airflow-home", help="Local Airflow home (SQLite DB, logs).")


def run_days(days: list[date], airflow_home: Path, simulate: bool) -> dict[str, object]:
    """For each day in order: (optionally) the simulate DAG, then the daily DAG. Stops at a failed day."""
    from growthgr.airflow_local import prepare, run_day

    prepare(airflow_home)
    outcomes = {}
    for ds in days:
        if simulate:
            sim = run_day("simulate_platform_day", ds)
            if not sim.ok:
                outcomes[ds] = sim
                break
        outcomes[ds] = run_day("growthgr_daily", ds)
        if not outcomes[ds].ok:
            break
    return outcomes


def _report(outcomes: dict) -> None:
    for ds, out in outcomes.items():
        colour = "green" if out.ok else "red"
        typer.secho(f"{ds}: {out.state}", fg=colour)
        for task, state in out.tasks.items():
            if state != "success":
                typer.echo(f"    {task}: {state}")
    if not all(out.ok for out in outcomes.values()):
        raise typer.Exit(1)


@app.command("run")
def run_cmd(
    ds: date = date_option(..., "--ds", help="Data interval start YYYY-MM-DD."),
    simulate: bool = typer.Option(False, "--simulate", help="First advance the simulated platform to ds."),
    airflow_home: Path = AIRFLOW_HOME,
) -> None:
    """Run the daily DAG for one day under a local Airflow (dag.test); exit 1 unless it succeeded."""
    _report(run_days([ds], airflow_home, simulate))


@app.command("backfill")
def backfill_cmd(
    start: date = date_option(..., "--start", help="First day YYYY-MM-DD."),
    end: date = date_option(..., "--end", help="Last day YYYY-MM-DD (inclusive)."),
    simulate: bool = typer.Option(False, "--simulate", help="Advance the simulated platform day by day too."),
    airflow_home: Path = AIRFLOW_HOME,
) -> None:
    """Run the daily DAG for every day start..end, in order (stops at the first failed day)."""
    from foundation.lake import ds_range

    _report(run_days(ds_range(start, end), airflow_home, simulate))


def refusal_line(step: str, ds: date, err: Exception) -> str:
    """An expected refusal as one line: the error's first line, and the first of the lines under it
    (a failed gate's first failed rule; `growthgr validate <gate> --ds D` prints every rule)."""
    head, *rest = str(err).splitlines() or [""]
    return f"{step} ds={ds}: {type(err).__name__}: {head}" + (f"; first: {rest[0]}" if rest else "")


@app.command("step")
def step_cmd(
    name: str = typer.Argument(..., metavar="STEP", help="A step of the daily pipeline = a task id of the daily DAG "
                                         "(`growthgr pipeline steps` lists them)."),
    ds: date = date_option(..., "--ds"),
) -> None:
    """Run one step of the daily pipeline directly (no Airflow). An expected refusal (a gate failed,
    nothing to publish, a missing partition) prints one line and exits 1."""
    from foundation.lake import PartitionNotFound
    from foundation.releases import ReleaseError
    from growthgr.cli.context import settings
    from growthgr.pipeline import GateFailed
    from growthgr.publish import PublishRefused
    from growthgr.steps import BY_NAME

    if name not in BY_NAME:
        raise typer.BadParameter(f"unknown step {name!r}: one of {', '.join(BY_NAME)}", param_hint="STEP")
    try:
        out = BY_NAME[name](settings(), ds)
    except (GateFailed, PublishRefused, ReleaseError, PartitionNotFound) as err:
        typer.secho(refusal_line(name, ds, err), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command("steps")
def steps_cmd() -> None:
    """List the daily pipeline's steps in run order: name (= DAG task id), runs after, gate, pool."""
    from growthgr.steps import in_order

    for s in in_order():
        extra = [f"gate {s.gate}{' (publish needs it)' if s.publish else ''}"] if s.gate else []
        extra += [f"pool {s.pool}"] if s.pool else []
        typer.echo(f"{s.name:<18} after {', '.join(s.after) or '-':<45} {'; '.join(extra)}")
