"""Alerts of the DAGs: a task that failed after its last retry, a run not successful by its deadline.

`on_task_failure` is every task's `on_failure_callback` (Airflow calls it once, after the last try;
a retried try calls `on_retry_callback`, which is not set); `on_deadline_missed` is the callback of
the DAGs' `DeadlineAlert` (run by the executor when a run is not successful
`orchestration.deadline_minutes` after it was queued). Both are wired by
`growthgr.airflow_local.daily_dag_args`. Each turns Airflow's context into an `Alert` (DAG,
task, run, logical date, try number, error, log URL and log file) and `send`s it to the sinks of
`settings.orchestration.alerts`, read where the callback runs: an e-mail through SMTP and a JSON
POST to a webhook, both optional. Errors and logs name a sink by its host only: a webhook URL can
carry a token, and the SMTP password is never printed. Importing this module imports no Airflow
(a process binds to the metadata DB of its first Airflow import).
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

from foundation.config import AlertsConfig, load_settings
from foundation.redact import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One alert, as every sink sends it."""

    event: str                        # "task_failed" or "deadline_missed"
    dag_id: str
    run_id: str
    logical_date: str | None          # ISO timestamp; None for a run without one
    task_id: str | None = None        # a task failure only
    try_number: int | None = None     # the failed (last) try
    error: str | None = None          # the exception, secrets redacted
    log_url: str | None = None        # the task's (or the run's) page in the Airflow UI
    log_path: str | None = None       # the try's log file where the worker wrote it
    deadline: str | None = None       # a missed deadline only: when the run had to be successful

    @property
    def subject(self) -> str:
        what = f"task {self.dag_id}.{self.task_id} failed" if self.task_id else f"run of {self.dag_id} missed its deadline"
        tried = f", try {self.try_number}" if self.try_number is not None else ""
        return f"GrowthGR: {what} (logical date {self.logical_date}{tried})"

    def text(self) -> str:
        """The body: one `name: value` line per known field."""
        lines = [("DAG", self.dag_id), ("task", self.task_id), ("run", self.run_id),
                 ("logical date", self.logical_date), ("try", self.try_number), ("deadline", self.deadline),
                 ("error", self.error), ("log", self.log_url), ("log file", self.log_path)]
        return "\n".join([self.subject, ""] + [f"{name}: {value}" for name, value in lines if value is not None])

    def payload(self) -> dict:
        """The webhook's JSON body: every field, `text` (Slack-style webhooks show it) and `subject`."""
        return {**asdict(self), "subject": self.subject, "text": self.text()}


def _iso(value) -> str | None:
    """A timestamp (a datetime or an ISO string such as the REST API's `...Z`) as `isoformat()` writes it."""
    from datetime import datetime

    if value is None:
        return None
    return (value if isinstance(value, datetime) else datetime.fromisoformat(str(value))).isoformat()


def log_path(ti) -> str:
    """The log file of `ti`'s current try: `[logging] log_filename_template` under `base_log_folder`."""
    from pathlib import Path

    import jinja2
    from airflow.sdk.configuration import conf

    name = jinja2.Template(conf.get("logging", "log_filename_template")).render(ti=ti, try_number=ti.try_number)
    return str(Path(conf.get("logging", "base_log_folder")) / name)


def task_alert(context) -> Alert:
    """The alert of a failed task from its Airflow callback context."""
    ti, error = context["ti"], context.get("exception")
    return Alert("task_failed", ti.dag_id, ti.run_id, _iso(context.get("logical_date")), ti.task_id,
                 ti.try_number, redact(f"{type(error).__name__}: {error}") if error is not None else None,
                 getattr(ti, "log_url", None), log_path(ti))


def deadline_alert(context) -> Alert:
    """The alert of a missed run deadline from the context a `DeadlineAlert` callback gets (the
    run as the REST API shows it, and the deadline)."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    run, deadline = context["dag_run"], context.get("deadline") or {}
    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    return Alert("deadline_missed", run["dag_id"], run["dag_run_id"], _iso(run.get("logical_date")),
                 error=f"the run is {run.get('state')}", deadline=_iso(deadline.get("deadline_time")),
                 log_url=f"{base}/dags/{run['dag_id']}/runs/{quote(run['dag_run_id'])}")


def send_email(alert: Alert, cfg: AlertsConfig) -> None:
    """The alert as a plain-text e-mail through `cfg.smtp_host` (STARTTLS and login when configured)."""
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = alert.subject, cfg.smtp_from, ", ".join(cfg.smtp_to)
    msg.set_content(alert.text())
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls()
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, cfg.smtp_password or "")
        smtp.send_message(msg)


def post_webhook(alert: Alert, cfg: AlertsConfig) -> None:
    """The alert as one JSON POST to `cfg.webhook_url`; a non-2xx answer is an error."""
    import httpx

    httpx.post(cfg.webhook_url, json=alert.payload(), timeout=cfg.timeout_s).raise_for_status()


def _sink_error(sink: str, err: Exception) -> str:
    """A failed delivery in words that hold no secret: the sink's host, the error's type and, for
    an HTTP answer, its status (an SMTP or HTTP error's text can quote the URL or the login)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"{sink}: {type(err).__name__}" + (f" (HTTP {status})" if status else "")


def send(alert: Alert, cfg: AlertsConfig) -> list[str]:
    """Deliver `alert` to every configured sink; return the sinks that got it. Every sink is tried;
    then a RuntimeError names the ones that failed (Airflow logs a failed callback)."""
    sinks = []
    if cfg.smtp_host:
        sinks.append((f"smtp {cfg.smtp_host}:{cfg.smtp_port}", send_email))
    if cfg.webhook_url:
        sinks.append((f"webhook {urlsplit(cfg.webhook_url).hostname}", post_webhook))
    delivered, failed = [], []
    for name, deliver in sinks:
        try:
            deliver(alert, cfg)
            delivered.append(name)
        except Exception as err:  # one sink down must not keep the alert from the others
            failed.append(_sink_error(name, err))
    log.info("alert %s delivered to %s", alert.subject, delivered or "no sink (none configured)")
    if failed:
        raise RuntimeError(f"alert {alert.subject!r} not delivered to {'; '.join(failed)}")
    return delivered


def on_task_failure(context) -> None:
    """The `on_failure_callback` of every GrowthGR task: sends `task_alert(context)` to the sinks
    configured where the task ran."""
    send(task_alert(context), load_settings().orchestration.alerts)


def on_deadline_missed(context) -> None:
    """The callback of the DAGs' `DeadlineAlert`: sends `deadline_alert(context)`."""
    send(deadline_alert(context), load_settings().orchestration.alerts)
