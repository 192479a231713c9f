"""`growthgr simulate` end to end: fresh run, one-day continuation, faults, report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from foundation.lake import Lake, ds_range
from growthgr.cli import app


def test_simulate_continue_inject_and_report(tmp_path):
    runner = CliRunner()
    root = str(tmp_path / "lake")
    args = ["--profile", "tiny", "simulate", "--lake-root", root, "--seed", "4"]
    first = runner.invoke(app, [*args, "--start", "2026-03-01", "--days", "2", "--inject", "nulls,duplicates",
                                "--inject-day", "2026-03-02"])
    assert first.exit_code == 0, first.output
    assert "simulated 2 day(s) 2026-03-01..2026-03-02" in first.output and "raw/exposures=" in first.output
    step = runner.invoke(app, [*args, "--days", "1"])
    assert step.exit_code == 0, step.output
    assert "simulated 1 day(s) 2026-03-03..2026-03-03" in step.output
    lake = Lake.open(root)
    assert lake.list_partitions("raw", "clicks") == ds_range("2026-03-01", "2026-03-03")
    assert lake.read_partition("raw", "clicks", "2026-03-02").column("item_id").null_count >= 1
    assert lake.read_partition("raw", "clicks", "2026-03-03").column("item_id").null_count == 0

    report = runner.invoke(app, [*args, "--report"])
    assert report.exit_code == 0, report.output
    figures = json.loads(report.output[report.output.index("{"):])
    assert figures["days"] == 3 and figures["rows"]["exposures"] > 0
    assert 0 < figures["exposure_gini"] < 1 and figures["true_uplift"]["mean"] > 0

    wrong = runner.invoke(app, [*args, "--seed", "5", "--days", "1"])
    assert wrong.exit_code == 2 and "seed" in wrong.output
    bad = runner.invoke(app, [*args, "--days", "1", "--inject", "gremlins"])
    assert bad.exit_code == 2 and "unknown fault" in bad.output
