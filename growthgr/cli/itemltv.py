"""`growthgr itemltv train|evaluate|pool`: the ItemLTV steps of the daily run."""

from __future__ import annotations

import json
from datetime import date

import typer

from growthgr.cli.context import date_option

app = typer.Typer(help="ItemLTV uplift model: train, evaluate, daily new-item pool.", no_args_is_help=True)
DS = date_option(..., "--ds", help="Logical date YYYY-MM-DD (cohorts whose label window ended by then).")


def _settings_and_lake():
    from foundation.lake import Lake
    from growthgr.cli.context import settings

    s = settings()
    return s, Lake.from_settings(s)


@app.command("train")
def train_cmd(ds: date = DS) -> None:
    """Fit the "+uplift" and "base only" models; save safetensors checkpoints in the lake."""
    from models.itemltv.pipeline import run_train

    s, lake = _settings_and_lake()
    out = run_train(s.itemltv, s.trainer, lake, ds)
    typer.echo(json.dumps(out, indent=2, default=str))


@app.command("evaluate")
def evaluate_cmd(
    ds: date = DS,
    seeds: int = typer.Option(5, "--seeds", min=1, help="Train and evaluate every model and baseline with seeds "
                              "0..N-1; figures are mean ± sd."),
    saved_checkpoints: bool = typer.Option(False, "--saved-checkpoints", help="Instead: evaluate the day's saved "
                                           "checkpoints once (the daily report, reports/itemltv/ds=<ds>/metrics.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics JSON."),
) -> None:
    """ItemLTV vs fair baselines, meta-learners and references against the simulator's truth on the
    held-out cohorts of --ds; writes reports/itemltv/ds=<ds>/study.{json,md} (or metrics.json)."""
    s, lake = _settings_and_lake()
    if saved_checkpoints:
        from models.itemltv.pipeline import metrics_table, run_evaluate

        metrics = run_evaluate(s.itemltv, lake, ds)
        typer.echo(json.dumps(metrics, indent=2, default=float) if as_json else metrics_table(metrics))
        return
    from models.itemltv.study import run_study, study_table

    result = run_study(s.itemltv, s.trainer, lake, ds, seeds=list(range(seeds)))
    typer.echo(json.dumps(result, indent=2, default=float) if as_json else study_table(result))


@app.command("pool")
def pool_cmd(ds: date = DS) -> None:
    """Score the items in their new-item period with the base tower; write curated/new_item_pool."""
    from models.itemltv.pipeline import write_pool

    s, lake = _settings_and_lake()
    pool = write_pool(s.itemltv, lake, ds)
    typer.echo(f"new_item_pool ds={ds}: {len(pool)} items, top score {pool['score'].max():.4f}")
