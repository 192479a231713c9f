"""`make demo`: the main job end to end on the embedded default.

1. simulate the platform's history (skipped when the lake already has it);
2. backfill the Spark label job over the history, so ItemLTV has closed cohorts (and,
   with `--feature-days N`, the feature job over the last N history days), and `gr_samples`
   over the last `multigr.daily.train_days + eval_days - 1` history days, so the first live
   day's MultiGR trains from scratch on history and holds out its newest days;
3. for each of the last `--live-days` days: the `simulate_platform_day` DAG
   delivers the day's logs, then the `growthgr_daily` DAG runs under a local
   Airflow (SQLite, `dag.test`);
4. the ItemLTV evaluation table of the last day over `--study-seeds` seeds
   (`growthgr itemltv evaluate`: ItemLTV, fair baselines, references, mean ± sd);
5. print a summary: partitions, label rows, pool, the ItemLTV table, the MultiGR
   daily metrics on its fixed held-out days (and the serving model's), the release, and
   where Data Docs, dbt docs, plots and reports are;
6. write the day's self-contained HTML report (`growthgr report`) and print its path.

Re-running is idempotent: finished days are not simulated again, Spark and
the DAG overwrite their own partitions, and an identical release is not
published twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date, timedelta
from pathlib import Path

import typer

from growthgr.core import calendar, catalog
from growthgr.core.config import Settings, load_settings
from growthgr.core.lake import Lake, ds_range
from growthgr.core.logs import setup_logging

log = logging.getLogger("growthgr.demo")


def shift(ds: str, days: int) -> str:
    return (date.fromisoformat(ds) + timedelta(days=days)).isoformat()


def simulate_history(settings: Settings, days: int) -> str:
    """Simulate `days` days from the configured start unless the lake has them; returns the last day."""
    from growthgr.simulator.run import next_start, simulate

    lake = Lake.from_settings(settings)
    last = shift(settings.simulator.start_date, days - 1)
    following = next_start(lake, settings.simulator)
    if following <= last:
        remaining = (date.fromisoformat(last) - date.fromisoformat(following)).days + 1
        log.info("simulating %d day(s) %s..%s", remaining, following, last)
        simulate(lake, settings.simulator, start=following, days=remaining)
    return last


def backfill_job(settings: Settings, job: str, table: tuple[str, str], days: list[str]) -> list[str]:
    """Spark job `job` for each of `days` whose output partition `table` (zone, name) is missing."""
    from spark_jobs.jobs import run_days

    lake = Lake.from_settings(settings)
    todo = [ds for ds in days if not lake.exists(*table, ds)]
    log.info("backfilling %s for %d day(s)", job, len(todo))
    if todo:
        run_days(lake, settings.spark, settings.storage, job, todo)
    return todo


def backfill_labels(settings: Settings, first_day: str, last: str) -> None:
    """The label job for every day from the first closable cohort up to `last` (missing days only)."""
    backfill_job(settings, "itemltv_labels", ("samples", "itemltv_labels"), ds_range(shift(first_day, calendar.COHORT_OFFSET), last))


def backfill_features(settings: Settings, last: str, days: int) -> None:
    """The Spark feature job for the last `days` history days up to `last` (missing days only), then
    the ItemLTV training sets already built are rebuilt so they pick the new features up.

    Without it the history cohorts' Feast training sets hold no features (the views' TTL is
    2 days and the daily run only builds the live days): ItemLTV then learns from content,
    behaviour history and exposure context alone.
    """
    from growthgr.features import training_set
    from models.itemltv.data import SERVICE, TRAINING_TABLE

    if backfill_job(settings, "features", ("features", "item_features"), ds_range(shift(last, 1 - days), last)):
        lake = Lake.from_settings(settings)
        for ds in lake.list_partitions(*TRAINING_TABLE):
            training_set(settings.feast, lake, SERVICE, ds, settings.spark.master)


def backfill_gr_samples(settings: Settings, last: str) -> list[str]:
    """`gr_samples` for the last `train_days + eval_days - 1` history days up to `last` (missing
    days only): with the first live day, the first MultiGR lineage holds out the newest `eval_days`
    days and trains from scratch on the `train_days` before them (`models.multigr.daily`)."""
    daily = settings.multigr.daily
    n = daily.train_days + daily.eval_days - 1
    return backfill_job(settings, "gr_samples", tuple(catalog.GR_SAMPLES), ds_range(shift(last, 1 - n), last))


def multigr_lines(report: dict, url: str) -> list[str]:
    """The daily MultiGR evaluation (`reports/multigr/ds=<ds>/daily.json`) as a few summary lines."""
    cand, serving = report["candidate"], report.get("serving")
    origin = (f"warm start from {report['init_release']}" if report["mode"] == "warm_start"
              else "trained from scratch") + f", lineage since {report['lineage_start']}"
    lines = [f"MultiGR ds={report['ds']} ({origin}; trained on {report['train_days'] or 'no day (held out)'}; "
             f"held-out days {cand['eval_days']}, evaluated {cand['evaluated_days']}):"]
    cols = ["recall@10", "recall@100", "ndcg@10"]
    lines.append(f"  {'label':<8} {'model':<10} {'requests':>9} " + " ".join(f"{c:>10}" for c in cols))
    for label in ("search", "all-net"):
        for name, ev in (("candidate", cand), ("serving", serving)):
            m = (ev or {}).get("metrics", {}).get(label)
            if m:
                lines.append(f"  {label:<8} {name:<10} {int(m['requests']):>9d} " + " ".join(f"{m[c]:>10.4f}" for c in cols))
    if serving is None:
        lines.append(f"  serving model not compared: {report['serving_skipped']}")
    lines.append(f"  valid SIDs from the constrained decoder: {cand['valid_sid_fraction']:.4f} of {cand['decoded_sids']}")
    lines.append(f"  report: {url}")
    return lines


def summary(settings: Settings, days: list[str]) -> str:
    from growthgr.core.releases import ReleaseStore

    lake, store = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
    last = days[-1]
    lines = [f"== GrowthGR demo: profile={settings.profile} lake={settings.lake_root} days {days[0]}..{last}"]
    for zone in ("raw", "curated", "features", "samples"):
        for table in lake.list_tables(zone):
            parts = lake.list_partitions(zone, table)
            lines.append(f"  {zone}/{table}: {len(parts)} partitions ({parts[0]}..{parts[-1]})")
    labels = lake.read_range(*catalog.ITEMLTV_LABELS, "0001-01-01", last)
    lines.append(f"label rows: {labels.num_rows} items in {len(set(labels.column('ds').to_pylist()))} cohorts")
    pool = lake.read_partition(*catalog.NEW_ITEM_POOL, last).to_pandas()
    lines.append(f"new-item pool {last}: {len(pool)} items, scores {pool['score'].min():.3f}..{pool['score'].max():.3f}")
    metrics_key, study_key = catalog.report_key("itemltv", last), catalog.report_key("itemltv", last, "study.md")
    if lake.store.exists(study_key):
        lines += ["ItemLTV (held-out cohorts, mean ± sd over seeds):", lake.store.get_bytes(study_key).decode()]
    elif lake.store.exists(metrics_key):
        from models.itemltv.evaluate import metrics_table

        lines += ["ItemLTV (held-out cohorts):", metrics_table(json.loads(lake.store.get_bytes(metrics_key)))]
    multigr_key = catalog.report_key("multigr", last, "daily.json")
    if lake.store.exists(multigr_key):
        lines += multigr_lines(json.loads(lake.store.get_bytes(multigr_key)), lake.store.url(multigr_key))
    current = store.get("current")
    lines.append(f"release: {current.release_id} -> {store.store.url(current.release_id)}")
    lines.append(f"  files: {', '.join(current.files)}")
    lines.append(f"Data Docs: {lake.store.url(catalog.data_docs_prefix('raw', last) + '/index.html')}")
    from growthgr.dbt_runner import duckdb_path, warehouse_dir

    lines.append(f"warehouse: {duckdb_path(lake)} (DuckDB; dbt docs in {warehouse_dir(lake) / 'dbt_target'} after "
                 "`growthgr dbt docs`)")
    lines.append(f"plots:     {lake.store.url(catalog.report_prefix('itemltv', last) + '/')}")
    lines.append(f"MultiGR:   {lake.store.url(catalog.report_prefix('multigr', last) + '/')}")
    return "\n".join(lines)


def write_html_report(settings: Settings, ds: str) -> str:
    """The day's self-contained HTML report (`growthgr.report`) in the lake; returns its URL."""
    from growthgr.core.releases import ReleaseStore
    from growthgr.report import write_report

    lake = Lake.from_settings(settings)
    return lake.store.url(write_report(lake, ds, ReleaseStore.from_settings(settings).get("current").manifest))


def airflow_ui_hint(airflow_home: Path, days: list[str]) -> str:
    """How to look at the demo's DAG runs in the Airflow UI (same SQLite metadata DB)."""
    home = airflow_home.absolute()
    return (f"Airflow UI: AIRFLOW_HOME={home} AIRFLOW__CORE__DAGS_FOLDER={home.parent / 'dags'} "
            f"AIRFLOW__CORE__LOAD_EXAMPLES=False .venv/bin/airflow standalone  (login printed at start-up; "
            f"http://localhost:8080), then DAG growthgr_daily, runs with logical dates {days[0]}..{days[-1]} "
            f"(and simulate_platform_day for the same days)")


def main(
    profile: str = typer.Option("demo", "--profile", help="tiny | demo | large"),
    live_days: int = typer.Option(3, "--live-days", help="Days run through Airflow at the end."),
    airflow_home: Path = typer.Option(Path(".airflow"), "--airflow-home"),
    feature_days: int = typer.Option(
        0, "--feature-days", min=0,
        help="Also build the feature tables for the last N history days (about 20 s a day on 2 cores), so "
             "the history cohorts' Feast training sets are not empty; 0 keeps the demo in its time budget."),
    study_seeds: int = typer.Option(
        5, "--study-seeds", min=0,
        help="Seeds of the ItemLTV evaluation table of the last day (about 1 min each on 2 cores); 0 skips it."),
) -> None:
    """Simulate, backfill, run the daily DAG for the last days, print a summary."""
    from growthgr.cli.pipeline import run_days

    setup_logging("INFO")
    started = time.perf_counter()
    os.environ["GROWTHGR_PROFILE"] = profile  # the DAG tasks read the same settings from the environment
    settings = load_settings()
    total, first = settings.simulator.days, settings.simulator.start_date
    history_end = simulate_history(settings, total - live_days)
    backfill_labels(settings, first, history_end)
    if feature_days:
        backfill_features(settings, history_end, feature_days)
    backfill_gr_samples(settings, history_end)
    days = ds_range(shift(history_end, 1), shift(history_end, live_days))
    outcomes = run_days(days, airflow_home, simulate=True)
    for ds, out in outcomes.items():
        typer.echo(f"{ds}: {out.state}" + ("" if out.ok else f"  {out.tasks}"))
    if not all(o.ok for o in outcomes.values()):
        raise typer.Exit(1)
    if study_seeds:
        from models.itemltv.study import run_study

        log.info("ItemLTV evaluation table of %s over %d seeds", days[-1], study_seeds)
        run_study(settings.itemltv, settings.trainer, Lake.from_settings(settings), days[-1], list(range(study_seeds)))
    typer.echo(summary(settings, days))
    typer.echo(airflow_ui_hint(airflow_home, days))
    typer.echo(f"report:    {write_html_report(settings, days[-1])}  (`growthgr report --ds {days[-1]}`)")
    typer.echo(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
