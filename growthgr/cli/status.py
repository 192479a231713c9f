"""`growthgr status [--ds D] [--json]`: what ran, what failed and what is serving (`growthgr.status`);
exit 1 when the day did not publish, for cron or a monitor."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from growthgr.cli.context import date_option
from growthgr.cli.pipeline import AIRFLOW_HOME


def _age(hours: float | None) -> str:
    return "" if hours is None else f" ({hours:.1f} h ago)"


def render(status) -> list[str]:
    """The report of a `growthgr.status.Status` as lines: the verdict first."""
    lines = [status.reason]
    srv = status.serving
    if srv.error:
        lines.append(f"serving: unreadable: {srv.error}")
    else:
        lines.append(f"serving: {srv.release_id or 'nothing'}" + (f" (ds {srv.ds}, published {srv.created_at}"
                                                                  f"{_age(srv.age_hours)})" if srv.release_id else ""))
    lines.append("runs:" + (f" unknown: {status.airflow_error}" if status.airflow_error else
                            "" if status.runs else " none"))
    for run in status.runs:
        extra = f", {run.upstream_failed} upstream_failed" if run.upstream_failed else ""
        lines.append(f"  {run.dag_id:<22} ds={run.ds}  {run.state:<8} {run.run_id} ({run.run_type}{extra})")
        for task in run.failed:
            lines.append(f"      {task.task_id}: {task.state}, try {task.try_number}; log {task.log or '-'}"
                         + (f"; traceback {task.step_log}" if task.step_log else ""))
    lines.append(f"gates ds={status.ds}:" if status.gates else "gates: none")
    for g in status.gates:
        note = f", {g.failures} failures, first: {g.first_failure}" if g.failures else ""
        lines.append(f"  {g.name:<9} {g.state}{'' if g.required else ' (not required)'}{note}")
    lines.append("raw tables (newest partition, committed):")
    for r in status.raw:
        lines.append(f"  {r.table:<17} {r.newest or 'none'}  {r.committed_at or ''}{_age(r.age_hours)}")
    return lines


def status_cmd(
    ds: date | None = date_option(None, "--ds", help="The day to report YYYY-MM-DD (default: the newest raw "
                                                     "partition or daily run)."),
    airflow_home: Path = AIRFLOW_HOME,
    airflow_db: str | None = typer.Option(None, "--airflow-db", help="The Airflow metadata DB as a SQLAlchemy URL "
                                                                     "(default: SQLite in --airflow-home)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """What ran, what failed and what is serving: the last runs of each DAG with failed tasks and
    their logs, the day's gate results, the serving release and its age, raw tables' freshness.
    Exit 0 when the day published a release, 1 when it did not (the first line says why)."""
    from growthgr.cli.context import settings
    from growthgr.status import gather

    status = gather(settings(), airflow_home, ds, airflow_db)
    if as_json:
        typer.echo(json.dumps(status.to_json(), indent=2))
    else:
        lines = render(status)
        typer.secho(lines[0], fg="green" if status.ok else "red")
        typer.echo("\n".join(lines[1:]))
    if not status.ok:
        raise typer.Exit(1)
