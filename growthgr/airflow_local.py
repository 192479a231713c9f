"""Run the DAGs under a local Airflow 3 (SQLite metadata DB by default): for `make demo`, tests and backfills.

The DAG files take from here what their tasks share: `daily_dag_args()` (schedule, retries, the
failure and deadline alerts of `growthgr.alerts`), `step_timeout(name)` and `run_step(name)`
(through `growthgr.airflow_step.StepOperator`).
`airflow_env(home)` gives the environment of a self-contained Airflow home
(DAGs folder = this repo's `dags/`, no examples, SQLite DB in `home`, or the
SQLAlchemy URL passed as `sql_conn`, e.g. `postgresql+psycopg2://...`; OpenLineage as
`orchestration.lineage` says, `growthgr.lineage`);
`prepare(home)` migrates the DB and creates the single-slot pools;
`run_day(dag_id, ds)` runs one DAG run in-process with `dag.test()` and
returns its final state (dag.test logs task failures instead of raising, so
callers must look at the state); `start_airflow(home)` runs the real services
(scheduler + LocalExecutor, DAG processor, API server on 127.0.0.1) for
backfills and triggered runs driven with the `airflow` CLI, `.stop()` ends
them. Production uses a real scheduler with
PostgreSQL and the Celery or Kubernetes executor (see README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pendulum

from foundation.redact import redact

if TYPE_CHECKING:
    from foundation.config import LineageConfig

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"
POOLS = {"duckdb": "dbt-duckdb: one writer per DuckDB file", "feast_registry": "Feast file registry / SQLite online store"}


AIRFLOW_CLI_TIMEOUT_S = 600.0   # an Airflow CLI call (a `db migrate` of a fresh database takes ~1 min)


def run_bounded(cmd: list[str], env: dict, timeout_s: float = AIRFLOW_CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a CLI with captured output, killed past `timeout_s` (a hung call is an error naming it,
    its output redacted, never a wait without end)."""
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        raise RuntimeError(redact(f"{' '.join(cmd[-3:])} did not finish within {timeout_s:g} s and was killed; "
                                  f"its output so far:\n{out[-2000:]}")) from None


def airflow_failure(args: list[str] | tuple[str, ...], proc: subprocess.CompletedProcess) -> RuntimeError:
    """The error of a failed Airflow CLI call with its output, secrets redacted (its output can
    hold the metadata database URL)."""
    return RuntimeError(redact(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"))


def daily_dag_args(raw_asset: str | None = None) -> dict:
    """What every GrowthGR DAG shares: a daily data-interval timetable (ds = interval start),
    no catch-up, one active run, retries from `settings.orchestration`, an alert on a task that
    failed after its last retry and on a run not successful `deadline_minutes` after it was
    queued (`growthgr.alerts`; a deadline on the queue time, not the logical date, so backfills of
    old days are not all late).

    With `raw_asset` (the daily DAG) the schedule is data-aware, Airflow 3's asset-or-time: a run
    starts when the raw logs' Asset is updated (its day: `run_ds` from the event's `ds`) or at
    `orchestration.raw_deadline_utc` of the next day for the interval of the day before, whichever
    comes first (intervals run from that time to that time, so `ds` is still the interval start's
    date; a deadline run of a day the logs already published does nothing, `run_step`). Without it
    (the platform DAG): midnight to midnight UTC."""
    from airflow.sdk import Asset, DeadlineAlert, DeadlineReference, SyncCallback
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    from foundation.config import load_settings
    from growthgr.alerts import on_deadline_missed, on_task_failure

    orch = load_settings().orchestration
    deadline = None if orch.deadline_minutes is None else DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=orch.deadline_minutes),
        callback=SyncCallback(on_deadline_missed))
    if raw_asset:
        hour, minute = (int(x) for x in orch.raw_deadline_utc.split(":"))
        schedule = AssetOrTimeSchedule(timetable=CronDataIntervalTimetable(f"{minute} {hour} * * *", timezone="UTC"),
                                       assets=Asset(raw_asset))
    else:
        schedule = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    return {
        "schedule": schedule,
        "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
        "catchup": False,
        "max_active_runs": 1,
        "deadline": deadline,
        "default_args": {
            "retries": orch.retries,
            "retry_delay": timedelta(minutes=orch.retry_delay_minutes),
            "on_failure_callback": on_task_failure,
            "owner": "growthgr",
        },
    }


def step_timeout(name: str) -> timedelta:
    """The execution timeout of step `name`'s task: `orchestration.step_timeout_minutes[name]` when
    set, else the registry's `timeout_minutes` times `orchestration.timeout_scale`. A name in
    `step_timeout_minutes` that is no step is an error (a typo would silently keep the default)."""
    from foundation.config import load_settings
    from growthgr.steps import BY_NAME, step

    orch = load_settings().orchestration
    unknown = set(orch.step_timeout_minutes) - set(BY_NAME)
    if unknown:
        raise ValueError(f"orchestration.step_timeout_minutes names no step: {sorted(unknown)}; steps: {list(BY_NAME)}")
    minutes = orch.step_timeout_minutes.get(name, step(name).timeout_minutes * orch.timeout_scale)
    return timedelta(minutes=minutes)


def run_ds(logical_date=None, data_interval_start=None, asset_days: tuple[str, ...] = ()) -> date:
    """The partition (`ds`) a DAG run processes - the one rule shared by the DAG tasks, the CLI and
    the tests, however the run was created.

    The run's logical date when it has one: scheduled and backfill runs (where it equals the data
    interval start), a manual run triggered with `--logical-date`, and any of them cleared and
    re-run. A manual run without a logical date processes the latest complete interval, whose
    start Airflow infers from the trigger time. (Airflow 3 infers `data_interval_start` of a
    manual run from the trigger time even when a logical date is given, so keying on it wrote
    the wrong day's partitions.) A run the raw logs' Asset triggered has neither: it processes the
    newest day of the asset events it consumed (`asset_days`: each event's `ds`, see `run_step`).
    """
    when = logical_date if logical_date is not None else data_interval_start
    if when is None and asset_days:
        return date.fromisoformat(max(asset_days))
    if when is None:
        raise ValueError("a DAG run has neither a logical date, a data interval nor an asset event naming its ds")
    day = pendulum.instance(when).in_timezone("UTC")
    return date(day.year, day.month, day.day)


def asset_days(triggering_events) -> tuple[str, ...]:
    """The `ds` extras of a run's triggering asset events (Airflow's `triggering_asset_events`)."""
    return tuple(str(e.extra["ds"]) for events in (triggering_events or {}).values() for e in events
                 if (e.extra or {}).get("ds"))


def redundant_deadline_run(run_type: str, published: list[str]) -> bool:
    """A scheduled (deadline) run of a day that already has a release: the raw logs' asset run
    published it, so this run does nothing."""
    return run_type == "scheduled" and bool(published)


def run_step(name: str) -> dict:
    """What every DAG task runs: step `name` of `growthgr.steps` for its run's `ds` (`run_ds`: Airflow's
    logical date, or the triggering raw-logs event's `ds`, parsed once, here), with the settings of
    the environment. A step with outlets stamps their asset events with the `ds`. The first step
    of a deadline run whose day is published already is skipped, and with it the run."""
    from airflow.sdk import Asset, get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    from foundation.config import load_settings
    from foundation.logs import setup_logging
    from foundation.releases import ReleaseStore
    from growthgr.steps import step

    setup_logging()
    ctx, settings, s = get_current_context(), load_settings(), step(name)
    ds = run_ds(ctx.get("logical_date"), ctx.get("data_interval_start"), asset_days(ctx.get("triggering_asset_events")))
    dag_run = ctx.get("dag_run")
    if not s.after and s.inlets and dag_run is not None:
        released = ReleaseStore.from_settings(settings).published(f"{ds}")
        if redundant_deadline_run(str(getattr(dag_run.run_type, "value", dag_run.run_type)), released):
            raise AirflowSkipException(f"ds={ds} is published already ({released[-1]}): the deadline run does nothing")
    for uri in s.outlets:
        ctx["outlet_events"][Asset(uri)].extra = {"ds": f"{ds}"}
    return s(settings, ds)


def airflow_env(home: str | Path, sql_conn: str | None = None, lineage: LineageConfig | None = None) -> dict[str, str]:
    """The environment of the Airflow home `home`; its metadata DB is `sql_conn` (a SQLAlchemy URL)
    or, by default, `home/airflow.db` (SQLite); OpenLineage events go where `lineage` says
    (default: `orchestration.lineage` of the environment's settings; a file under `home/lineage/`)."""
    from foundation.config import load_settings
    from growthgr.lineage import airflow_env as lineage_env

    home = Path(home).absolute()
    return {
        **lineage_env(lineage or load_settings().orchestration.lineage, home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn or f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "SCARF_ANALYTICS": "false",
    }


_PREPARED: set[tuple[str, str]] = set()


def prepare(home: str | Path, sql_conn: str | None = None) -> dict[str, str]:
    """Migrate the metadata DB and create the pools (idempotent; done once per home and DB in a
    process). Sets the env in this process. Two `airflow` CLI calls: `db migrate`, `pools import`."""
    import json

    env = airflow_env(home, sql_conn)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    key = (env["AIRFLOW_HOME"], env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    if key in _PREPARED:
        return env
    pools = Path(env["AIRFLOW_HOME"]) / "pools.json"
    pools.write_text(json.dumps({name: {"slots": 1, "description": text} for name, text in POOLS.items()}))
    airflow = str(Path(sys.executable).with_name("airflow"))
    for args in (["db", "migrate"], ["pools", "import", str(pools)]):
        proc = run_bounded([airflow, *args], env={**os.environ})
        if proc.returncode != 0:
            raise airflow_failure(args, proc)
    _PREPARED.add(key)
    return env


@dataclass
class RunOutcome:
    state: str
    tasks: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.state == "success"


def load_dag(dag_id: str):
    """`dag_id` from the DAG folder Airflow is configured with (`[core] dags_folder`, set by
    `prepare`), parsed as the DAG processor parses it: the application runs the DAG floor
    through Airflow and never imports it."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


class _OnceFilter:
    """Lets the first record starting with `prefix` through, drops its repeats (dag.test logs "No
    tasks to run" once a second while it waits: for a retry, or while a failure propagates)."""

    def __init__(self, prefix: str):
        self.prefix, self.seen = prefix, False

    def filter(self, record) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def run_day(dag_id: str, ds: str | date) -> RunOutcome:
    """One run for `ds`: its logical date is ds 00:00 UTC (see `run_ds`). Without the DAG's deadline
    alert: the caller waits for the run, and Airflow 3.3's `dag.test` fails a successful run of a
    DAG with a deadline (it looks the alerts up by ids only a DAG processor's serialization assigns)."""
    import logging

    from airflow import settings

    bound, wanted = str(settings.engine.url), os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if wanted and settings.engine.url.render_as_string(hide_password=False) != wanted:
        raise RuntimeError(f"this process is bound to the metadata DB {redact(bound)} (Airflow binds a process to "
                           f"the DB configured when it is first imported), not to {redact(wanted)}: run the day "
                           "in a process whose Airflow environment was set before Airflow was imported")
    dag = load_dag(dag_id)
    dag.deadline = None
    logger, once = logging.getLogger("airflow.sdk.definitions.dag"), _OnceFilter("No tasks to run")
    logger.addFilter(once)
    try:
        run = dag.test(logical_date=pendulum.parse(f"{ds}", tz="UTC"))
    finally:
        logger.removeFilter(once)
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return RunOutcome(str(run.state), tasks)


# --- a real scheduler on a local home (tests, demos) -------------------------------------------
# `start_airflow(home)` runs what `airflow standalone` runs minus the triggerer: the API server
# (Airflow 3 task workers report to its execution API), the DAG processor and the scheduler with
# the LocalExecutor, each in its own session, all on 127.0.0.1. The task processes inherit the
# caller's environment (GROWTHGR_* settings).

FINISHED = ("success", "failed")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def as_ds(value) -> str | None:
    """The day of a timestamp column as the metadata DB returns it: an ISO string (SQLite) or an
    aware datetime (PostgreSQL)."""
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    return value[:10] if value else None


def asset_run_ds(query, dag_run_pk: int) -> str | None:
    """The `ds` an asset-triggered run processed (`run_ds`): the newest `ds` of the asset events it
    consumed, read with `query(sql, *params)` from the metadata DB (`LocalAirflow.query`)."""
    import json

    extras = query("SELECT ae.extra FROM dagrun_asset_event dae JOIN asset_event ae ON ae.id = dae.event_id "
                   "WHERE dae.dag_run_id = ?", dag_run_pk)
    days = [(x if isinstance(x, dict) else json.loads(x or "{}")).get("ds") for (x,) in extras]
    return max((str(d) for d in days if d), default=None)


def dag_run_ds(query, dag_run_pk: int, logical_date) -> str | None:
    """The `ds` of a run in the metadata DB: its logical date's day, else (an asset-triggered run)
    `asset_run_ds`."""
    return as_ds(logical_date) if logical_date else asset_run_ds(query, dag_run_pk)


@dataclass
class LocalAirflow:
    """A running scheduler + DAG processor + API server for one Airflow home (see `start_airflow`)."""

    home: Path
    env: dict[str, str]
    port: int
    procs: dict = field(default_factory=dict)  # name -> subprocess.Popen
    sql_conn: str | None = None  # None: SQLite in home

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`airflow <args>` against this home (CLI commands talk to the metadata DB)."""
        proc = run_bounded([_airflow(), *args], env=self.env)
        if check and proc.returncode != 0:
            raise airflow_failure(args, proc)
        return proc

    def query(self, sql: str, *params) -> list[tuple]:
        """A read-only query on the metadata DB (cheaper than polling with the CLI); `?` placeholders."""
        if self.sql_conn and self.sql_conn.startswith("postgresql"):
            import psycopg2

            con = psycopg2.connect("postgresql:" + self.sql_conn.split(":", 1)[1], connect_timeout=30)
            try:
                con.set_session(readonly=True, autocommit=True)
                with con.cursor() as cur:
                    cur.execute(sql.replace("?", "%s"), params)
                    return cur.fetchall()
            finally:
                con.close()
        import sqlite3

        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of `dag_id`: run_id, state, run_type, ds (`dag_run_ds`) and backfill_id."""
        rows = self.query("SELECT id, run_id, state, run_type, logical_date, backfill_id FROM dag_run "
                          "WHERE dag_id = ? ORDER BY id", dag_id)
        return [{"run_id": r, "state": s, "run_type": t, "ds": dag_run_ds(self.query, pk, ld), "backfill_id": b}
                for pk, r, s, t, ld, b in rows]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return dict(self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                               dag_id, run_id))

    def wait(self, what: str, done, timeout: float, poll: float = 3.0):
        """Poll `done()` until it returns something truthy; fail on timeout or when a service died."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            result = done()
            if result:
                return result
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"airflow services exited {dead} while waiting for {what}; logs in {self.home}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done after {timeout:.0f}s; logs in {self.home / 'logs'}")
            time.sleep(poll)

    def wait_for_runs(self, dag_id: str, days: list[str], timeout: float = 600) -> dict[str, dict]:
        """Wait until `dag_id` has a finished run for each ds in `days` (the latest per day); return them."""

        def finished():
            latest = {r["ds"]: r for r in self.dag_runs(dag_id) if r["ds"] in days}
            if set(latest) == set(days) and all(r["state"] in FINISHED for r in latest.values()):
                return latest
            return None

        return self.wait(f"runs of {dag_id} for {days}", finished, timeout)

    def wait_for_backfills(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the scheduler has marked every backfill of `dag_id` completed."""
        self.wait(f"backfills of {dag_id} completed",
                  lambda: not self.query("SELECT id FROM backfill WHERE dag_id = ? AND completed_at IS NULL", dag_id),
                  timeout)

    def stop(self, grace: float = 20) -> None:
        """Terminate every service and everything they started, then kill what is left.

        Task supervisors start their own sessions, so the process groups alone miss them: the
        whole process tree is collected first."""
        import signal

        import psutil

        procs = list((self.procs or {}).values())
        tree = []
        for proc in procs:
            try:
                parent = psutil.Process(proc.pid)
                tree += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in tree:
            try:
                tree += [c for c in p.children(recursive=True) if c not in tree]
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc.stdout:
                proc.stdout.close()


# What the daily DAG's tasks import (`growthgr.steps` and the modules of its steps): `start_airflow(preload=TASK_MODULES)`.
TASK_MODULES = ("growthgr.steps", "growthgr.pipeline", "growthgr.publish", "features.store", "warehouse.runner",
                "expectations.gate", "spark_jobs.jobs", "models.tokenizer.embed", "models.tokenizer.sids",
                "models.itemltv.pipeline", "models.multigr.daily", "models.dense.daily")
_PRELOAD = '''"""Written by growthgr.airflow_local.start_airflow: the scheduler imports the DAG tasks' modules
once, so the LocalExecutor's task processes (forked from it) start with them loaded."""
import importlib
import sys

__all__ = []  # Airflow copies this module's public names into airflow.settings
if sys.argv[1:2] == ["scheduler"]:
    for _name in {modules!r}:
        importlib.import_module(_name)
'''


def start_airflow(home: str | Path, extra_env: dict[str, str] | None = None, *, cron: bool = False,
                  parallelism: int = 2, timeout: float = 180, sql_conn: str | None = None,
                  preload: tuple[str, ...] = ()) -> LocalAirflow:
    """Prepare `home` and start its services; returns once the scheduler and DAG processor are
    healthy and every DAG of the folder is serialized. Stop it with `.stop()`. `sql_conn`: the
    metadata DB (a SQLAlchemy URL, e.g. a PostgreSQL one as in production; default SQLite in home).

    `preload`: modules the scheduler imports at start-up (through the home's
    `config/airflow_local_settings.py`, which Airflow imports in every process; only the
    scheduler acts on it). The LocalExecutor forks its task processes from the scheduler, so
    each task then starts with torch, Lightning, GX, ... already imported instead of spending
    seconds of CPU importing them again (the idea of `[dag_processor] parsing_pre_import_modules`,
    for task processes). Nothing is imported in the parent before the fork but modules: no
    Spark session, no torch threads.

    `cron=False` sets `[scheduler] use_job_schedule = False`: the scheduler creates no runs of its
    own (unpausing a DAG would otherwise start a run for the latest interval, i.e. yesterday),
    but still runs backfills and triggered runs."""
    import json
    import secrets
    import urllib.request

    prepare(home, sql_conn)  # also exports the home's env in this process
    home = Path(home).absolute()
    if preload:
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "airflow_local_settings.py").write_text(_PRELOAD.format(modules=tuple(preload)))
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        **airflow_env(home, sql_conn),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",   # the UI links in alerts and task logs
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__API__SECRET_KEY": secret,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(cron),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        **(extra_env or {}),
    }
    commands = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "dag-processor": ["dag-processor"],
        "scheduler": ["scheduler", "--skip-serve-logs"],  # no log server on 0.0.0.0:8793
    }
    (home / "services").mkdir(exist_ok=True)
    airflow = LocalAirflow(home, env, port, {}, sql_conn)
    try:
        for name, args in commands.items():
            log = open(home / "services" / f"{name}.log", "ab")
            airflow.procs[name] = subprocess.Popen([_airflow(), *args], env=env, cwd=home, stdout=log,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   start_new_session=True)

        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
                    health = json.load(r)
            except OSError:
                return False
            return all((health.get(k) or {}).get("status") == "healthy" for k in ("scheduler", "dag_processor"))

        airflow.wait("airflow services healthy", healthy, timeout)
        dag_ids = {p.stem for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_")}
        airflow.wait("DAGs serialized",
                     lambda: dag_ids <= {d for (d,) in airflow.query("SELECT dag_id FROM serialized_dag")}, timeout)
    except BaseException:
        airflow.stop()
        raise
    return airflow
