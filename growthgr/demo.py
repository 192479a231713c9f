"""`make demo`: the main job end to end on the embedded default.

1. simulate the platform's history (skipped when the lake already has it);
2. backfill the Spark label job over the history, so ItemLTV has closed cohorts (and,
   with `--feature-days N`, the feature job over the last N history days), and `gr_samples`
   over the last `multigr.daily.train_days + eval_days - 1` history days, so the first live
   day's MultiGR trains from scratch on history and holds out its newest days;
3. for each of the last `--live-days` days (1 by default: every model from scratch; with 2 or more
   the later days warm-start from the serving release and are compared with it): the
   `simulate_platform_day` DAG delivers the day's logs, then the `growthgr_daily` DAG runs under
   a local Airflow (SQLite, `dag.test`; no retries unless `--retries`: a failed day ends the
   demo at once with one line naming the failed task, the last line of its error and its log);
4. with `--study-seeds N`, an extra ItemLTV evaluation table of the last day over N seeds
   (`growthgr itemltv evaluate`: ItemLTV, fair baselines, references, mean ± sd);
5. print a summary: partitions, label rows, pool, the ItemLTV table (the daily step's own, or
   the study's), the MultiGR daily metrics on its fixed held-out days (and, from the second
   live day, the serving model's and how far the daily update moved the weights), the release,
   where Data Docs, dbt docs, plots and reports are, and every step's time per day;
6. write the day's self-contained HTML report (`growthgr report`) and print its path.

`--inject-fault NAME` corrupts the last live day's raw logs with a simulator fault: its raw gate
refuses the day, nothing is published, the demo exits 1.

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

from foundation import calendar, catalog
from foundation.config import Settings, load_settings
from foundation.lake import Lake, ds_range, parse_ds
from foundation.logs import setup_logging

log = logging.getLogger("growthgr.demo")


def simulate_history(settings: Settings, first: date, days: int) -> date:
    """Simulate `days` days from `first` unless the lake has them; returns the last day."""
    from simulator.run import next_start, simulate

    lake = Lake.from_settings(settings)
    last = first + timedelta(days=days - 1)
    following = next_start(lake, settings.simulator)
    if following <= last:
        remaining = (last - following).days + 1
        log.info("simulating %d day(s) %s..%s", remaining, following, last)
        simulate(lake, settings.simulator, start=following, days=remaining)
    return last


def backfill_job(settings: Settings, job: str, table: tuple[str, str], days: list[date]) -> list[date]:
    """Spark job `job` for each of `days` whose output partition `table` (zone, name) is missing."""
    from spark_jobs.jobs import run_days

    lake = Lake.from_settings(settings)
    todo = [ds for ds in days if not lake.exists(*table, ds)]
    log.info("backfilling %s for %d day(s)", job, len(todo))
    if todo:
        run_days(lake, settings.spark, settings.storage, job, todo)
    return todo


def backfill_labels(settings: Settings, first_day: date, last: date) -> None:
    """The label job for every day from the first closable cohort up to `last` (missing days only)."""
    backfill_job(settings, "itemltv_labels", ("samples", "itemltv_labels"), ds_range(first_day + timedelta(days=calendar.COHORT_OFFSET), last))


def backfill_features(settings: Settings, last: date, days: int) -> None:
    """The Spark feature job for the last `days` history days up to `last` (missing days only), then
    the ItemLTV training sets already built are rebuilt so they pick the new features up.

    Without it the history cohorts' Feast training sets hold no features (the views' TTL is
    2 days and the daily run only builds the live days): ItemLTV then learns from content,
    behaviour history and exposure context alone.
    """
    from features.store import training_set
    from models.itemltv.data import SERVICE, TRAINING_TABLE

    if backfill_job(settings, "features", ("features", "item_features"), ds_range(last - timedelta(days=days - 1), last)):
        lake = Lake.from_settings(settings)
        for ds in lake.list_partitions(*TRAINING_TABLE):
            training_set(settings.feast, lake, SERVICE, ds, settings.spark.master)


def backfill_gr_samples(settings: Settings, last: date) -> list[date]:
    """`gr_samples` for the last `train_days + eval_days - 1` history days up to `last` (missing
    days only): with the first live day, the first MultiGR lineage holds out the newest `eval_days`
    days and trains from scratch on the `train_days` before them (`models.multigr.daily`)."""
    daily = settings.multigr.daily
    n = daily.train_days + daily.eval_days - 1
    return backfill_job(settings, "gr_samples", tuple(catalog.GR_SAMPLES), ds_range(last - timedelta(days=n - 1), last))


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
    else:
        delta = {c: cand["metrics"]["search"][c] - serving["metrics"]["search"][c] for c in cols}
        lines.append(f"  daily update: weights moved {100 * report.get('weight_change_vs_serving', 0.0):.2f}% "
                     f"(relative L2) from the serving model; held-out search change "
                     + ", ".join(f"{c} {v:+.4f}" for c, v in delta.items()))
    lines.append(f"  valid SIDs from the constrained decoder: {cand['valid_sid_fraction']:.4f} of {cand['decoded_sids']}")
    lines.append(f"  report: {url}")
    return lines


def summary(settings: Settings, days: list[date]) -> str:
    from foundation.releases import ReleaseStore

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
    from warehouse.runner import duckdb_path, warehouse_dir

    lines.append(f"warehouse: {duckdb_path(lake)} (DuckDB; dbt docs in {warehouse_dir(lake) / 'dbt_target'} after "
                 "`growthgr dbt docs`)")
    lines.append(f"plots:     {lake.store.url(catalog.report_prefix('itemltv', last) + '/')}")
    lines.append(f"MultiGR:   {lake.store.url(catalog.report_prefix('multigr', last) + '/')}")
    return "\n".join(lines)


def step_times(settings: Settings, days: list[date]) -> list[str]:
    """Per day: the pipeline steps' recorded durations (`growthgr.pipeline.timed`), longest first."""
    from growthgr.report import timing_records

    lake, lines = Lake.from_settings(settings), ["step times (s):"]
    for ds in days:
        records = sorted(timing_records(lake, ds), key=lambda r: -float(r.get("seconds") or 0))
        total = sum(float(r.get("seconds") or 0) for r in records)
        lines.append(f"  {ds} total {total:.0f}: " + ", ".join(f"{r['step']} {float(r['seconds']):.0f}"
                                                         + ("" if r.get("status") == "ok" else " FAILED")
                                                         for r in records))
    return lines


def failure_line(settings: Settings, ds: date, tasks: dict[str, str]) -> str:
    """One readable line for a failed day: the failed task, the last line of its error and where
    the traceback is (the step's record, `growthgr.pipeline.timed`); the output above otherwise."""
    from growthgr.report import timing_records

    failed = [t for t, state in tasks.items() if state == "failed"] or sorted(tasks)
    records = [r for r in timing_records(Lake.from_settings(settings), ds) if r.get("status") != "ok"]
    if not records:
        return f"{ds}: task {', '.join(failed)} failed (no step record: see the output above)"
    r = records[-1]
    last = (r.get("error") or "").strip().splitlines()[-1:] or ["(no message)"]
    return f"{ds}: task {', '.join(failed)} failed: {last[0]}  (log: {r.get('log', 'the output above')})"


def write_html_report(settings: Settings, ds: date) -> str:
    """The day's self-contained HTML report (`growthgr.report`) in the lake; returns its URL."""
    from foundation.releases import ReleaseStore
    from growthgr.report import write_report

    lake = Lake.from_settings(settings)
    return lake.store.url(write_report(lake, ds, ReleaseStore.from_settings(settings).get("current").manifest))


def airflow_ui_hint(airflow_home: Path, days: list[date]) -> str:
    """How to look at the demo's DAG runs in the Airflow UI (same SQLite metadata DB)."""
    home = airflow_home.absolute()
    return (f"Airflow UI: .venv/bin/growthgr airflow standalone --airflow-home {home}  (login printed at start-up; "
            f"http://127.0.0.1:8080), then DAG growthgr_daily, runs with logical dates {days[0]}..{days[-1]} "
            f"(and simulate_platform_day for the same days)")


def run_live_days(settings: Settings, days: list[date], airflow_home: Path, inject_fault: str | None) -> None:
    """The simulate and daily DAGs for each live day; with `inject_fault` the last day's raw logs are
    simulated with that fault first. Exits 1 with one line per failed day."""
    from growthgr.cli.pipeline import run_days
    from simulator.faults import check

    outcomes = run_days(days[:-1] if inject_fault else days, airflow_home, simulate=True)
    if inject_fault and all(o.ok for o in outcomes.values()):
        from simulator.run import next_start, simulate

        lake = Lake.from_settings(settings)
        if next_start(lake, settings.simulator) > days[-1]:     # raw data is never overwritten
            typer.echo(f"{days[-1]} is simulated already: --inject-fault needs a lake without it (`make clean`)")
            raise typer.Exit(2)
        simulate(lake, settings.simulator, start=days[-1], days=1, inject=check([inject_fault]), progress=False)
        outcomes.update(run_days(days[-1:], airflow_home, simulate=True))
    for ds, out in outcomes.items():
        typer.echo(f"{ds}: {out.state}" if out.ok else failure_line(settings, ds, out.tasks))
    if not all(o.ok for o in outcomes.values()):
        raise typer.Exit(1)


def main(
    profile: str = typer.Option("demo", "--profile", help="tiny | demo | study | large"),
    live_days: int = typer.Option(
        1, "--live-days", min=1,
        help="Days run through Airflow at the end: the first trains every model from scratch, the next ones "
             "warm-start from the serving release and are compared with it (about 5 min a day on 2 cores)."),
    airflow_home: Path = typer.Option(Path(".airflow"), "--airflow-home"),
    feature_days: int = typer.Option(
        0, "--feature-days", min=0,
        help="Also build the feature tables for the last N history days (about 20 s a day on 2 cores), so "
             "the history cohorts' Feast training sets are not empty; 0 keeps the demo in its time budget."),
    study_seeds: int = typer.Option(
        0, "--study-seeds", min=0,
        help="Seeds of an extra ItemLTV evaluation table of the last day, mean ± sd (about 1.3 min a seed on "
             "2 cores; 5-seed tables: benchmarks/itemltv_worlds.py); 0: the summary shows the daily "
             "pipeline's own table (one seed, the same baselines)."),
    days: int = typer.Option(
        None, "--days", min=2,
        help="Days of the simulated platform in all, the live ones included (default: the profile's "
             "`simulator.days`); the history is the days before the live ones."),
    retries: int = typer.Option(
        0, "--retries", min=0, help="Retries of a failed DAG task (no delay); a failed task ends the run at once."),
    inject_fault: str = typer.Option(
        None, "--inject-fault",
        help="Corrupt the last day's raw logs with this simulator fault (nulls, duplicates, schema_drift, ...): "
             "its raw gate refuses the day, nothing is published and the demo ends with rc 1."),
) -> None:
    """Simulate, backfill, run the daily DAG for the last days, print a summary."""
    setup_logging("INFO")
    started = time.perf_counter()
    # the DAG tasks read the same settings from the environment; a demo retries at once, if at all
    # (Airflow's `fail_fast` is no help: it skips the rest and the run then ends "success")
    os.environ["GROWTHGR_PROFILE"] = profile
    os.environ["GROWTHGR_ORCHESTRATION__RETRIES"] = str(retries)
    os.environ["GROWTHGR_ORCHESTRATION__RETRY_DELAY_MINUTES"] = "0"
    settings = load_settings()
    total, first = days or settings.simulator.days, parse_ds(settings.simulator.start_date)
    history_end = simulate_history(settings, first, total - live_days)
    backfill_labels(settings, first, history_end)
    if feature_days:
        backfill_features(settings, history_end, feature_days)
    backfill_gr_samples(settings, history_end)
    live = ds_range(history_end + timedelta(days=1), history_end + timedelta(days=live_days))
    run_live_days(settings, live, airflow_home, inject_fault)
    if study_seeds:
        from models.itemltv.study import run_study

        log.info("ItemLTV evaluation table of %s over %d seeds", live[-1], study_seeds)
        run_study(settings.itemltv, settings.trainer, Lake.from_settings(settings), live[-1], list(range(study_seeds)))
    typer.echo(summary(settings, live))
    typer.echo("\n".join(step_times(settings, live)))
    typer.echo(airflow_ui_hint(airflow_home, live))
    typer.echo(f"report:    {write_html_report(settings, live[-1])}  (`growthgr report --ds {live[-1]}`)")
    typer.echo(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    typer.run(main)
