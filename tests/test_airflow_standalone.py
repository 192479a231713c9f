"""`growthgr airflow standalone`, the README's way to the Airflow UI: a fresh home comes up with the
pools the DAGs use (the same `airflow_local.prepare` as every other local Airflow of the project),
both DAGs parsed and a healthy scheduler behind the API server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from growthgr.airflow_local import POOLS, free_port

pytestmark = pytest.mark.slow


def _ready(home: Path, port: int) -> dict | None:
    """Pools, parsed DAGs and the health report once the API server answers, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
            health = json.loads(r.read())
        with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as db:
            pools = {n: s for n, s in db.execute("SELECT pool, slots FROM slot_pool")}
            dags = {d for (d,) in db.execute("SELECT dag_id FROM dag")}
    except (OSError, sqlite3.Error):
        return None
    if health.get("scheduler", {}).get("status") != "healthy" or "growthgr_daily" not in dags:
        return None
    return {"pools": pools, "dags": dags, "health": health}


def test_standalone_home_has_the_pools_and_the_dags(tmp_path):
    home, port = tmp_path / "airflow", free_port()
    env = {**os.environ, "GROWTHGR_PROFILE": "tiny"}
    for key in [k for k in env if k.startswith("AIRFLOW")]:
        env.pop(key)                                   # nothing but the command's own home
    growthgr = str(Path(sys.executable).with_name("growthgr"))
    proc = subprocess.Popen([growthgr, "airflow", "standalone", "--airflow-home", str(home), "--port", str(port)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, ready = time.monotonic() + 300, None
        while ready is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(3)
            ready = _ready(home, port)
        assert ready is not None, f"standalone not ready (exit code {proc.poll()}); logs in {home / 'logs'}"
        assert {name: ready["pools"].get(name) for name in POOLS} == {name: 1 for name in POOLS}
        assert {"growthgr_daily", "simulate_platform_day"} <= ready["dags"]
        assert ready["health"]["metadatabase"]["status"] == "healthy"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
