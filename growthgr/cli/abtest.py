"""`growthgr abtest`: a closed-loop A/B test of a release inside the simulated platform."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import typer

DESIGN_HELP = ("user: users hashed into treatment/control buckets | item: new items hashed into buckets, the "
               "treated ones served only to their coupled user buckets (an item sees one policy) | two-sided: "
               "treated only when user and item are both treated")


def abtest_cmd(
    release: str = typer.Option("current", "--release", help="Release id to serve, or `current`."),
    days: int = typer.Option(14, "--days", min=1, help="Days to simulate forward from the lake's last state "
                             "(TI@30 of cohorts launched during the test needs >= 37)."),
    design: str = typer.Option("user", "--design", help=DESIGN_HELP),
    seed: int | None = typer.Option(None, "--seed", help="World seed of the test days (default: the lake's own, "
                                    "i.e. its continuation); every arm uses it (common random numbers)."),
    frozen_pool: bool = typer.Option(False, "--frozen-pool", help="Serve only the release's pool (no daily "
                                     "scoring of new items with the release's ItemLTV)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result JSON instead of the summary."),
    retrain: bool = typer.Option(False, "--retrain", help="Closed loop: after every test day run the daily "
                                 "pipeline (the DAG's steps, in-process) on a copy of the lake per retraining arm "
                                 "(the design's and the fully treated one); the channel serves the day's new "
                                 "release from the next day, or keeps the last good one when a step fails."),
    workdir: Path = typer.Option(Path("artifacts/abtest"), "--work-dir", help="--retrain: where the arms' lake and "
                                 "release store copies go (cleared if an earlier A/B made it; refused if it holds anything "
                                 "else). The source lake and release store are only read."),
) -> None:
    """Run the world forward N days three times from a copy of the lake's last simulator state: with
    the design's buckets, fully treated and fully untreated (the true global effect), all with the
    same seed. The GrowthGR channel serves the release's new-item pool in the configured slot(s)
    (`abtest` config section). Only the report is written to the lake:
    reports/abtest/ds=<last simulated day>/<design>.json|.md; raw/ and truth/ are never touched.
    With `--retrain` the design's arm and the fully treated arm retrain every day through the daily
    pipeline on their own copies (`--work-dir`), so treatment traffic feeds tomorrow's models; the
    per-day log (served release, pipeline outcome) goes into the report."""
    from foundation.lake import Lake
    from foundation.releases import ReleaseError, ReleaseStore
    from growthgr.abtest import (
        DESIGNS,
        Experiment,
        closed_loop_factory,
        prepare_workdir,
        release_retriever,
        run_experiment,
        start_state,
        summary_lines,
        write_report,
    )
    from growthgr.cli.context import settings

    if design not in DESIGNS:
        typer.secho(f"abtest: --design must be one of {', '.join(DESIGNS)}", fg="red", err=True)
        raise typer.Exit(2)
    s = settings()
    lake = Lake.from_settings(s)
    try:
        ds, world = start_state(lake)
        release_id, make = release_retriever(ReleaseStore.from_settings(s), release, s.itemltv.pool_size,
                                             s.abtest.candidates, refresh=not frozen_pool, channel=s.abtest.channel,
                                             settings=s)
    except (FileNotFoundError, ReleaseError) as err:
        typer.secho(f"abtest: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    arm_retriever = None
    if retrain:
        try:
            last = (date.fromisoformat(ds) + timedelta(days=days)).isoformat()
            arm_retriever = closed_loop_factory(s, prepare_workdir(workdir / design), release,
                                                refresh=not frozen_pool, last_ds=last)
        except (ValueError, FileExistsError) as err:
            typer.secho(f"abtest: {err}", fg="red", err=True)
            raise typer.Exit(2) from None
    exp = Experiment(world, design, days, s.abtest, make, release_id=release_id, seed=seed,
                     make_arm_retriever=arm_retriever)
    result = run_experiment(exp, progress=True)
    keys = write_report(lake, ds, result)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=float))
    else:
        typer.echo("\n".join([*summary_lines(result), f"report: {', '.join(keys)}"]))
