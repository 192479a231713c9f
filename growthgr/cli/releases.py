"""`growthgr releases list|show|rollback`."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Inspect published releases and move the serving pointer.", no_args_is_help=True)


def _store():
    from growthgr.cli.context import settings
    from growthgr.core.releases import ReleaseStore

    return ReleaseStore.from_settings(settings())


@app.command("list")
def list_releases() -> None:
    """List releases (complete or not) and mark the current one."""
    rows = _store().list()
    if not rows:
        typer.echo("no releases")
    for row in rows:
        mark = "*" if row["current"] else " "
        state = "complete" if row["complete"] else "INCOMPLETE"
        typer.echo(f"{mark} {row['release_id']}  {state}")


@app.command("show")
def show(release_id: str = typer.Argument("current", help="A release id, or 'current'.")) -> None:
    """Print a release's manifest."""
    from growthgr.core.releases import ReleaseError

    try:
        typer.echo(json.dumps(_store().get(release_id).manifest, indent=2, sort_keys=True))
    except ReleaseError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None


@app.command("rollback")
def rollback() -> None:
    """Point `current` back at the previously current release."""
    from growthgr.core.releases import ReleaseError

    try:
        typer.echo(f"current release is now {_store().rollback()}")
    except ReleaseError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
