"""`growthgr releases list|show|history|promote|rollback`."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Inspect published releases and move the serving pointer.", no_args_is_help=True)


def _store():
    from foundation.releases import ReleaseStore
    from growthgr.cli.context import settings

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


def _run(action):
    """Run `action()`; a release error (or an invalid key) is a red message and exit code 1."""
    from foundation.releases import ReleaseError
    from foundation.storage import InvalidKey

    try:
        return action()
    except (ReleaseError, InvalidKey) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None


@app.command("show")
def show(release_id: str = typer.Argument("current", help="A release id, or 'current'.")) -> None:
    """Print a release's manifest."""
    typer.echo(json.dumps(_run(lambda: _store().get(release_id)).manifest, indent=2, sort_keys=True))


@app.command("history")
def history(last: int = typer.Option(20, "--last", min=1, help="How many of the newest moves to print.")) -> None:
    """Print the moves of the serving pointer, oldest first, with each one's outcome (`moved`,
    `failed`, or `unknown` when its mover stopped before recording one)."""
    moves = _run(lambda: _store().history())
    if not moves:
        typer.echo("no moves")
    for m in moves[-last:]:
        typer.echo(f"{m['at']}  {m['action']:<8} {m['from'] or '-'} -> {m['to']}  {m['outcome'] or 'unknown'}")


@app.command("promote")
def promote(release_id: str = typer.Argument(..., help="A complete release id.")) -> None:
    """Point `current` at a release, also an older one (publishing alone never moves it back)."""
    _run(lambda: _store().set_current(release_id))
    typer.echo(f"current release is now {release_id}")


@app.command("rollback")
def rollback() -> None:
    """Point `current` back at the release served before it; repeated rollbacks keep walking back."""
    typer.echo(f"current release is now {_run(lambda: _store().rollback())}")
