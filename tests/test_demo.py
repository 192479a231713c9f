"""`make demo`'s own code path (`python -m growthgr.demo`) end to end on the tiny profile, as a
user runs it: a good live day publishes and prints the summary with every step's time; then a
day whose raw logs are corrupted (`--inject-fault nulls`) ends the demo at once (rc 1) with one
readable line naming the failed task, the last line of its error and its log, and the release of
the good day stays current.

The tiny world of the session (`copy_world`, 2026-01-01..02-14) is the demo's history: the
demo's `--days` (46, then 47) puts the live day right after it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from foundation.config import load_settings
from foundation.releases import ReleaseStore

pytestmark = pytest.mark.slow


def _demo(root, days: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GROWTHGR_LAKE_ROOT": str(root / "lake"), "GROWTHGR_RELEASES_ROOT": str(root / "releases"),
           "GROWTHGR_SIMULATOR__SEED": "1"}
    proc = subprocess.run([sys.executable, "-m", "growthgr.demo", "--profile", "tiny", "--live-days", "1", "--days", str(days),
                           "--airflow-home", str(root / "airflow"), *args],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    (root / f"demo-{days}.log").write_text(proc.stdout + proc.stderr)
    return proc


def test_demo_publishes_then_refuses_a_corrupted_day(tmp_path, copy_world):
    copy_world(tmp_path / "lake")
    good = _demo(tmp_path, 46, "--study-seeds", "1")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    out = good.stdout
    assert "2026-02-15: success" in out and "== GrowthGR demo: profile=tiny" in out
    assert "ItemLTV (held-out cohorts, mean ± sd over seeds):" in out and "release: ds=2026-02-15-" in out
    times = next(line for line in out.splitlines() if line.startswith("  2026-02-15 total "))
    for step in ("gate_raw", "spark_jobs", "feast_materialize", "tokenize", "itemltv", "multigr_train", "dense_train", "publish"):
        assert f"{step} " in times
    assert "report:" in out and "demo finished in" in out
    store = ReleaseStore.from_settings(load_settings("tiny", env={"GROWTHGR_RELEASES_ROOT": str(tmp_path / "releases")}))
    good_release = store.current_id()
    assert good_release.startswith("ds=2026-02-15-")

    bad = _demo(tmp_path, 47, "--inject-fault", "nulls")
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-3000:]
    line = next((x for x in bad.stdout.splitlines() if x.startswith("2026-02-16: task ")), bad.stdout[-3000:])
    assert line.startswith("2026-02-16: task gate_raw failed: ") and "(log: " in line and "gate_raw.log" in line, \
        line + bad.stderr[-3000:]
    # dag.test logs "No tasks to run" once a second while it waits (retries, a failure propagating): once
    assert (bad.stdout + bad.stderr).count("No tasks to run") <= 1
    assert store.current_id() == good_release                 # nothing published, the good day still serves
