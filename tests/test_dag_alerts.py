"""Alerts and timeouts under a real Airflow 3 scheduler (`growthgr.alerts`, `step_timeout`).

Two sinks on 127.0.0.1 stand in for the mail relay and the chat/incident webhook: a minimal SMTP
server (socketserver: EHLO, MAIL, RCPT, DATA) and an HTTP server that records JSON POSTs. The
services of `growthgr.airflow_local.start_airflow` (scheduler + LocalExecutor, DAG processor, API
server; SQLite) run the real `simulate_platform_day` DAG with one retry, the simulate step's
timeout set to 6 s (`orchestration.step_timeout_minutes`) and a deadline of 30 s after a run is
queued. Two manual runs, one after the other (one active run):
  - 2026-06-01: the step fails at once (the platform is at 2026-01-01, a later day is an error),
    is retried, fails again: one task alert per sink, naming try 2;
  - 2026-01-01 on a platform too large to simulate in 6 s: both tries are killed by the
    execution timeout and the task fails: one task alert per sink naming try 2 and the timeout;
and neither run is successful 30 s after it was queued: one deadline alert per run and sink.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socketserver
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import scheduler_env

from foundation.config import AlertsConfig
from growthgr.airflow_local import free_port, start_airflow
from growthgr.alerts import Alert, send

DAG = "simulate_platform_day"
FAILS, HANGS = "2026-06-01", "2026-01-01"   # a day the platform cannot reach yet; its first day
PASSWORD = "hunter2-not-logged"


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: every command is accepted, each DATA body is one message."""

    def handle(self):
        self.wfile.write(b"220 sink ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 end with <CRLF>.<CRLF>\r\n")
                body = []
                while (part := self.rfile.readline()) not in (b".\r\n", b""):
                    body.append((part[1:] if part.startswith(b"..") else part).replace(b"\r\n", b"\n"))
                self.server.messages.append(email.message_from_bytes(b"".join(body), policy=email.policy.default))
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sinks():
    """(SMTP server, HTTP server) on loopback ports; `.messages` / `.posts` hold what arrived."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    smtp.messages = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _HookHandler)
    hook.posts = []
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (smtp, hook)]
    for t in threads:
        t.start()
    yield smtp, hook
    for s in (smtp, hook):
        s.shutdown()
        s.server_close()


def _alerts_env(smtp, hook) -> dict[str, str]:
    return {"GROWTHGR_ORCHESTRATION__ALERTS__SMTP_HOST": "127.0.0.1",
            "GROWTHGR_ORCHESTRATION__ALERTS__SMTP_PORT": str(smtp.server_address[1]),
            "GROWTHGR_ORCHESTRATION__ALERTS__SMTP_TO": "[ops@example.com]",
            "GROWTHGR_ORCHESTRATION__ALERTS__WEBHOOK_URL": f"http://127.0.0.1:{hook.server_address[1]}/hook"}


def test_one_sink_down_does_not_keep_the_alert_from_the_other_and_no_secret_is_printed(sinks, caplog):
    smtp, hook = sinks
    caplog.set_level(logging.INFO, logger="growthgr.alerts")
    alert = Alert("task_failed", "d", "r", "2026-01-01T00:00:00+00:00", "t", 2, error="ValueError: x")
    down = AlertsConfig(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_to=["ops@example.com"],
                        smtp_user="ops", smtp_password=PASSWORD, timeout_s=5,
                        webhook_url=f"http://127.0.0.1:{hook.server_address[1]}/hook?token={PASSWORD}")
    with pytest.raises(RuntimeError) as err:
        send(alert, down)
    assert "smtp 127.0.0.1" in str(err.value) and PASSWORD not in str(err.value) + caplog.text
    assert [p["subject"] for p in hook.posts] == [alert.subject]
    assert send(alert, AlertsConfig()) == []                     # no sink configured: nothing sent


def _settled(airflow) -> list[tuple]:
    """(logical date, state, try number, start, end) of each run's task once both runs finished."""
    rows = airflow.query("SELECT r.logical_date, r.state, t.try_number, t.start_date, t.end_date "
                         "FROM dag_run r JOIN task_instance t ON t.run_id = r.run_id AND t.dag_id = r.dag_id "
                         "WHERE r.dag_id = ? ORDER BY r.logical_date", DAG)
    return rows if len(rows) == 2 and all(state == "failed" for _, state, *_ in rows) else []


@pytest.mark.slow
def test_failed_and_timed_out_tasks_and_a_missed_deadline_alert_once_per_sink(tmp_path, monkeypatch, sinks):
    smtp, hook = sinks
    for key, value in scheduler_env(   # start_airflow exports the home's variables too: undone at the end
        tmp_path,
        GROWTHGR_ORCHESTRATION__RETRIES="1",
        GROWTHGR_ORCHESTRATION__RETRY_DELAY_MINUTES="0",
        GROWTHGR_ORCHESTRATION__STEP_TIMEOUT_MINUTES="{simulate_day: 0.1}",
        GROWTHGR_ORCHESTRATION__DEADLINE_MINUTES="0.5",
        GROWTHGR_SIMULATOR__N_USERS="100000",    # ~25 s to simulate a day: past the 6 s timeout
        GROWTHGR_SIMULATOR__N_ITEMS="200000",
        **_alerts_env(smtp, hook),
    ).items():
        monkeypatch.setenv(key, value)
    airflow = start_airflow(tmp_path / "airflow", preload=("growthgr.steps", "simulator.run"))
    try:
        airflow.cli("dags", "unpause", DAG)
        for day in (FAILS, HANGS):
            airflow.cli("dags", "trigger", DAG, "--logical-date", f"{day}T00:00:00+00:00")
        runs = airflow.wait("both runs failed", lambda: _settled(airflow), timeout=240)
        airflow.wait("four alerts in each sink",
                     lambda: len(smtp.messages) >= 4 and len(hook.posts) >= 4, timeout=120)
        time.sleep(8)                                 # a duplicate would arrive within a scheduler loop or two
    finally:
        airflow.stop()

    assert [(ds[:10], tries) for ds, _, tries, *_ in runs] == [(HANGS, 2), (FAILS, 2)]
    hung_start, hung_end = (datetime.fromisoformat(str(v)).replace(tzinfo=UTC) for v in runs[0][3:5])
    assert (hung_end - hung_start).total_seconds() < 20      # try 2 was killed at 6 s, not left to finish
    posts = {(p["event"], p["logical_date"][:10]): p for p in hook.posts}
    assert len(hook.posts) == 4 and set(posts) == {(e, d) for e in ("task_failed", "deadline_missed")
                                                   for d in (FAILS, HANGS)}
    for day, error in ((FAILS, f"ValueError: cannot simulate {FAILS}"), (HANGS, "AirflowTaskTimeout")):
        alert = posts["task_failed", day]
        assert (alert["dag_id"], alert["task_id"], alert["try_number"]) == (DAG, "simulate", 2)
        assert alert["logical_date"] == f"{day}T00:00:00+00:00" and alert["error"].startswith(error)
        assert alert["log_url"].startswith(f"http://127.0.0.1:{airflow.port}/dags/{DAG}/runs/")
        assert alert["log_url"].endswith("tasks/simulate?try_number=2")
        assert alert["log_path"].endswith("attempt=2.log") and Path(alert["log_path"]).is_file()
        assert f"dag_id={DAG}" in alert["log_path"]
        first_try = Path(alert["log_path"]).with_name("attempt=1.log").read_text()
        assert ("Process timed out" in first_try) == (day == HANGS)      # try 1 was killed too, then retried
        late = posts["deadline_missed", day]
        assert late["dag_id"] == DAG and late["run_id"] == alert["run_id"] and late["deadline"]
        assert late["log_url"].startswith(f"http://127.0.0.1:{airflow.port}/dags/{DAG}/runs/")
    mails = {m["Subject"]: m for m in smtp.messages}
    assert len(smtp.messages) == 4 and set(mails) == {p["subject"] for p in hook.posts}
    for post in hook.posts:
        mail = mails[post["subject"]]
        assert mail["To"] == "ops@example.com" and mail.get_content().strip() == post["text"].strip()
        for field in ("DAG", "task", "logical date", "try", "log", "log file"):
            assert post["event"] == "deadline_missed" or f"\n{field}: " in mail.get_content(), field
