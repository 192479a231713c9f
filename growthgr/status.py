"""What ran, what failed and what is serving: the facts `growthgr status` prints.

`gather(settings, airflow_home)` reads, for one day (the newest by default: the newest raw
partition or daily run), without writing anything:
- the last runs of each DAG (`DAG_IDS`) from the Airflow metadata DB of the home (read-only SQL,
  `LocalAirflow.query`), each failed task with its Airflow log file (the home's
  `logs/<log_filename_template>`, written by a scheduler's workers; `dag.test` writes none) and
  the step's traceback in the lake (`catalog.pipeline_step_log_key`);
- each gate's stored result for the day (`catalog.gate_result_key`; the gates of `growthgr.steps`);
- the serving release (`CURRENT`) with its data date and age (its manifest's `created_at`);
- each raw table's newest committed partition and its commit time (`Lake.list_partitions`,
  `Lake.commit_info`).

The day is good (`Status.ok`) when a complete release of that day exists in the release store
(current or not: a re-run of an older day publishes without becoming current); otherwise
`Status.reason` says why in one line (the failed tasks of the day's daily run, the gates that
failed, or that no run happened).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from foundation import catalog
from foundation.config import Settings
from foundation.lake import Lake, parse_ds
from foundation.redact import redact
from foundation.releases import ReleaseError, ReleaseStore, release_ds
from foundation.schemas import RAW_TABLES

DAILY_DAG = "growthgr_daily"
DAG_IDS = (DAILY_DAG, "simulate_platform_day")
LAST_RUNS = 3   # runs of each DAG listed (the day's latest run is listed too when older)
FAILED = ("failed", "up_for_retry")   # task states listed with their logs (upstream_failed only counted)


@dataclass(frozen=True)
class FailedTask:
    """A task of a run that failed (or waits for a retry), with where to read why."""

    task_id: str
    state: str
    try_number: int
    log: str | None          # its Airflow log file (exists only where a scheduler's worker ran it)
    step_log: str | None     # the step's traceback in the lake (`growthgr.pipeline.timed`)


@dataclass(frozen=True)
class DagRunStatus:
    """One DAG run from the metadata DB."""

    dag_id: str
    run_id: str
    ds: str | None           # the day it processes (`airflow_local.run_ds`: its logical date)
    state: str
    run_type: str
    ended: str | None        # end time (UTC, ISO), None while it runs
    failed: list[FailedTask] = field(default_factory=list)
    upstream_failed: int = 0


@dataclass(frozen=True)
class GateStatus:
    """The stored result of one gate for the day."""

    name: str
    required: bool           # publish needs it to have passed
    state: str               # passed | failed | running | missing
    failures: int = 0
    first_failure: str | None = None
    validated_at: str | None = None


@dataclass(frozen=True)
class Serving:
    """The release `CURRENT` names."""

    release_id: str | None
    ds: str | None
    created_at: str | None
    age_hours: float | None
    error: str | None = None  # a corrupt CURRENT or a missing manifest


@dataclass(frozen=True)
class RawFreshness:
    """A raw table's newest committed partition."""

    table: str
    newest: str | None
    committed_at: str | None
    age_hours: float | None


@dataclass
class Status:
    """Everything `growthgr status` reports for one day."""

    ds: str | None
    ok: bool
    reason: str
    published: list[str]
    serving: Serving
    gates: list[GateStatus]
    runs: list[DagRunStatus]
    raw: list[RawFreshness]
    airflow_error: str | None = None  # why the metadata DB could not be read

    def to_json(self) -> dict:
        return asdict(self)


def hours_since(iso: str | None, now: datetime) -> float | None:
    """Hours from an ISO timestamp (naive = UTC) to `now`, rounded to 0.01."""
    if not iso:
        return None
    then = datetime.fromisoformat(iso)
    return round((now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds() / 3600, 2)


# -- the lake and the release store -------------------------------------------------------------
def raw_freshness(lake: Lake, now: datetime) -> list[RawFreshness]:
    """Each raw table's newest committed partition, its commit time and age."""
    out = []
    for table in RAW_TABLES:
        days = lake.list_partitions("raw", table)
        if not days:
            out.append(RawFreshness(table, None, None, None))
            continue
        written = lake.commit_info("raw", table, days[-1]).written_at
        out.append(RawFreshness(table, f"{days[-1]}", written, hours_since(written, now)))
    return out


def serving(releases: ReleaseStore, now: datetime) -> Serving:
    """The serving release, its data date and its age; an unreadable `CURRENT` is reported, not raised."""
    try:
        current = releases.current_id()
        if current is None:
            return Serving(None, None, None, None)
        release = releases.get(current)
    except ReleaseError as err:
        return Serving(None, None, None, None, str(err))
    created = release.manifest.get("created_at")
    return Serving(current, release_ds(release), created, hours_since(created, now))


def gate_status(name: str, required: bool, stored: dict) -> GateStatus:
    """A stored gate result (`expectations.gate` / the model gates' JSON; {} when none) as a GateStatus."""
    if not stored:
        return GateStatus(name, required, "missing")
    if stored.get("status") == "running":
        return GateStatus(name, required, "running", validated_at=stored.get("validated_at"))
    failures = stored.get("failures") or []
    first = failures[0] if failures else None
    line = (f"FAIL {first['table']} [{first['partition']}] column={first['column']} rule={first['rule']}: "
            f"{first['details']}" if first else None)
    return GateStatus(name, required, "passed" if stored.get("passed") else "failed", len(failures), line,
                      stored.get("validated_at"))


def gate_statuses(lake: Lake, ds: str, gates: list[tuple[str, bool]]) -> list[GateStatus]:
    """The stored result of each (gate, required) for day `ds`."""
    out = []
    for name, required in gates:
        key = catalog.gate_result_key(parse_ds(ds), name)
        stored = json.loads(lake.store.get_bytes(key)) if lake.store.exists(key) else {}
        out.append(gate_status(name, required, stored))
    return out


def step_log(lake: Lake, ds: str | None, step: str) -> str | None:
    """Where the traceback of `step`'s last failed run for `ds` is (its timing record's `log`)."""
    if ds is None:
        return None
    key = catalog.pipeline_step_key(parse_ds(ds), step)
    return json.loads(lake.store.get_bytes(key)).get("log") if lake.store.exists(key) else None


# -- the Airflow metadata DB --------------------------------------------------------------------
def log_path(template: str | None, logs_dir: Path, dag_id: str, run_id: str, task_id: str, map_index: int,
             try_number: int, logical_date: str | None) -> str | None:
    """A task try's log file: the run's `log_filename_template` (Jinja, as Airflow renders it)
    under the home's `logs/`."""
    if not template:
        return None
    from types import SimpleNamespace

    import jinja2

    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number)
    name = jinja2.Template(template).render(ti=ti, try_number=try_number, ts=logical_date)
    return str(logs_dir / name)


def pick_runs(rows: list[dict], ds: str | None, limit: int = LAST_RUNS) -> list[dict]:
    """The last `limit` of a DAG's runs (`rows` oldest first), plus the latest run of `ds` when
    older than those; newest first."""
    picked = rows[-limit:]
    of_day = [r for r in rows if r["ds"] == ds]
    if of_day and of_day[-1] not in picked:
        picked = [of_day[-1], *picked]
    return picked[::-1]


def airflow_runs(query: Callable[..., list[tuple]], lake: Lake, logs_dir: Path, ds: str | None,
                 dag_ids: tuple[str, ...] = DAG_IDS, limit: int = LAST_RUNS) -> list[DagRunStatus]:
    """The runs `pick_runs` chooses of each DAG, read with `query(sql, *params)` (read-only SQL on
    the metadata DB, `LocalAirflow.query`), each with its failed tasks and their logs."""
    from growthgr.airflow_local import dag_run_ds

    out = []
    for dag_id in dag_ids:
        rows = [{"run_id": r, "state": s, "run_type": t, "logical_date": ld, "ds": dag_run_ds(query, pk, ld),
                 "ended": e, "template": tpl}
                for pk, r, s, t, ld, e, tpl in query(
                    "SELECT dr.id, dr.run_id, dr.state, dr.run_type, dr.logical_date, dr.end_date, lt.filename "
                    "FROM dag_run dr LEFT JOIN log_template lt ON lt.id = dr.log_template_id "
                    "WHERE dr.dag_id = ? ORDER BY dr.id", dag_id)]
        for run in pick_runs(rows, ds, limit):
            tasks = query("SELECT task_id, state, try_number, map_index FROM task_instance "
                          "WHERE dag_id = ? AND run_id = ? ORDER BY task_id", dag_id, run["run_id"])
            ld = run["logical_date"]
            ld_iso = ld.isoformat() if isinstance(ld, datetime) else ld
            failed = [FailedTask(t, s, n, log_path(run["template"], logs_dir, dag_id, run["run_id"], t, m, n, ld_iso),
                                 step_log(lake, run["ds"], t))
                      for t, s, n, m in tasks if s in FAILED]
            ended = run["ended"].isoformat() if isinstance(run["ended"], datetime) else run["ended"]
            out.append(DagRunStatus(dag_id, run["run_id"], run["ds"], str(run["state"]), str(run["run_type"]), ended,
                                    failed, sum(1 for _, s, _, _ in tasks if s == "upstream_failed")))
    return out


# -- the verdict ---------------------------------------------------------------------------------
def newest_day(raw: list[RawFreshness], runs: list[DagRunStatus]) -> str | None:
    """The newest day the pipeline should have published: the newest raw partition or daily run."""
    days = [r.newest for r in raw if r.newest] + [r.ds for r in runs if r.dag_id == DAILY_DAG and r.ds]
    return max(days) if days else None


def verdict(ds: str | None, releases: list[str], gates: list[GateStatus], runs: list[DagRunStatus],
            airflow_error: str | None = None) -> tuple[bool, str]:
    """Whether day `ds` published, and one line saying so or why not."""
    if ds is None:
        return False, "no day to report: the lake has no raw partition and Airflow no daily run"
    if releases:
        return True, f"ds={ds}: published {releases[-1]}"
    why = []
    day_runs = [r for r in runs if r.dag_id == DAILY_DAG and r.ds == ds]
    if day_runs and day_runs[0].failed:
        why.append(f"{DAILY_DAG} run {day_runs[0].run_id} {day_runs[0].state}, failed task(s): "
                   + ", ".join(t.task_id for t in day_runs[0].failed))
    elif day_runs:
        why.append(f"{DAILY_DAG} run {day_runs[0].run_id} is {day_runs[0].state}")
    else:
        why.append(f"no {DAILY_DAG} run" + (f" (Airflow: {airflow_error})" if airflow_error else ""))
    why += [f"gate {g.name} {g.state}" + (f" ({g.failures} failures, first: {g.first_failure})" if g.failures else "")
            for g in gates if g.state in ("failed", "running")]
    return False, f"ds={ds}: not published: " + "; ".join(why)


def gather(settings: Settings, airflow_home: Path, ds: date | None = None, sql_conn: str | None = None,
           now: datetime | None = None) -> Status:
    """The status of day `ds` (default: `newest_day`) on the lake and release store of `settings`
    and the Airflow metadata DB of `airflow_home` (SQLite in it, or `sql_conn`)."""
    from growthgr.airflow_local import LocalAirflow, airflow_env
    from growthgr.steps import in_order

    now = now or datetime.now(UTC)
    lake, releases = Lake.from_settings(settings), ReleaseStore.from_settings(settings)
    home = Path(airflow_home).absolute()
    # only its metadata-DB reader is used (`query`): no service is started
    airflow = LocalAirflow(home, airflow_env(home, sql_conn), port=0, sql_conn=sql_conn)
    day = f"{ds}" if ds else None
    raw = raw_freshness(lake, now)
    airflow_error = None
    try:
        runs = airflow_runs(airflow.query, lake, home / "logs", day)
    except Exception as err:  # noqa: BLE001 -- no DB, or not an Airflow one: reported, the rest still is
        where = sql_conn or airflow.db
        runs, airflow_error = [], redact(f"cannot read the metadata DB {where}: {type(err).__name__}: {err}")
    day = day or newest_day(raw, runs)
    gates = gate_statuses(lake, day, [(s.gate, s.publish) for s in in_order() if s.gate]) if day else []
    released = releases.published(day) if day else []
    ok, reason = verdict(day, released, gates, runs, airflow_error)
    return Status(day, ok, reason, released, serving(releases, now), gates, runs, raw, airflow_error)
