"""`growthgr features apply|training-set|materialize|online`: the Feast feature store."""

from __future__ import annotations

from datetime import date

import typer

from features.store import materialize, online_features, open_store, training_set
from growthgr.cli.context import date_option

app = typer.Typer(help="Feast feature store: training sets, materialisation, online reads.", no_args_is_help=True)
SERVICE = typer.Option("itemltv_v1", "--service", help="Feature service: itemltv_v1 | multigr_v1 | dr_v1.")


def _store_args() -> tuple:
    """(feast section, lake, Spark master) of this invocation's settings."""
    from foundation.lake import Lake
    from growthgr.cli.context import settings

    s = settings()
    return s.feast, Lake.from_settings(s), s.spark.master


@app.command("apply")
def apply_cmd() -> None:
    """Register the definitions (no-op when unchanged since the last apply)."""
    open_store(*_store_args())
    typer.echo("feature store up to date")


@app.command("training-set")
def training_set_cmd(service: str = SERVICE,
                     ds: date = date_option(..., "--ds", help="Partition date YYYY-MM-DD.")) -> None:
    """Point-in-time training set of a feature service for the samples of `ds`, written to the lake."""
    cfg, lake, master = _store_args()
    out = training_set(cfg, lake, service, ds, master)
    typer.echo(f"samples/training_{service}/ds={ds}: {len(out)} rows, {out.shape[1]} columns")


@app.command("materialize")
def materialize_cmd(ds: date = date_option(..., "--ds", help="Data interval [ds, ds+1) UTC.")) -> None:
    """Materialise one day of feature rows into the online store."""
    cfg, lake, master = _store_args()
    materialize(cfg, lake, ds, master)
    typer.echo(f"materialised {ds}")


@app.command("online")
def online_cmd(user: int | None = typer.Option(None, "--user", help="A user id (the service's user features)."),
               item: int | None = typer.Option(None, "--item", help="An item id (the service's item features)."),
               query_id: int | None = typer.Option(None, "--query-id", help="A query id (the service's query "
                                                   "features); `growthgr retrieve --query` is the query's text."),
               service: str = SERVICE) -> None:
    """Print the online features of one user / item / query."""
    cfg, lake, master = _store_args()
    values = online_features(cfg, lake, service, master, user_id=user, item_id=item, query_id=query_id)
    for key, value in values.items():
        typer.echo(f"{key}: {value}")
