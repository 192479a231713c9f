import json
import re

import pytest
from typer.testing import CliRunner

from growthgr.cli import app


def test_config_show_prints_effective_config(monkeypatch):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", "/tmp/somewhere")
    out = CliRunner().invoke(app, ["--profile", "tiny", "config", "show", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["profile"] == "tiny" and data["lake_root"] == "/tmp/somewhere"


def test_bad_config_exits_2_naming_the_key(monkeypatch):
    monkeypatch.setenv("GROWTHGR_SPARK__NOPE", "1")
    out = CliRunner().invoke(app, ["config", "show"])
    assert out.exit_code == 2
    assert "spark.nope" in out.output


def test_every_command_has_help():
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for name in ("config", "releases"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


SECRET = "pa55-w0rd"
URL_SETTINGS = {   # every setting that holds a URL or connection string, with a password in it
    "GROWTHGR_SERVE__REDIS_URL": f"redis://:{SECRET}@cache:6379/0",
    "GROWTHGR_FEAST__REDIS_CONNECTION": f"cache:6379,password={SECRET}",
    "GROWTHGR_S3_ENDPOINT_URL": f"https://key:{SECRET}@s3.internal:9000",
    "GROWTHGR_SPARK__MASTER": f"spark://ops:{SECRET}@spark-master:7077",
    "GROWTHGR_ORCHESTRATION__ALERTS__WEBHOOK_URL": f"https://hook:{SECRET}@alerts.internal/growthgr",
}


def _url_keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _url_keys(v, f"{prefix}{k}.")
        elif k.endswith(("_url", "_connection", "master")):
            out.add(f"{prefix}{k}")
    return out


def test_config_show_never_prints_a_password(monkeypatch):
    for name, value in URL_SETTINGS.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    data = json.loads(runner.invoke(app, ["config", "show", "--json"]).output)
    # the test covers every URL-like setting there is
    assert _url_keys(data) == {"serve.redis_url", "feast.redis_connection", "storage.s3_endpoint_url", "spark.master",
                               "orchestration.alerts.webhook_url"}
    for args in (["config", "show"], ["config", "show", "--json"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 0 and SECRET not in out.output and out.output.count("***") == len(URL_SETTINGS)
    assert data["serve"]["redis_url"] == "redis://:***@cache:6379/0" and data["spark"]["master"].startswith("spark://ops:***@")


def test_config_show_masks_the_smtp_password(monkeypatch):
    monkeypatch.setenv("GROWTHGR_ORCHESTRATION__ALERTS__SMTP_PASSWORD", SECRET)
    out = CliRunner().invoke(app, ["config", "show", "--json"])
    assert out.exit_code == 0 and SECRET not in out.output
    assert json.loads(out.output)["orchestration"]["alerts"]["smtp_password"] == "***"


def test_a_config_error_does_not_echo_a_password(monkeypatch):
    monkeypatch.setenv("GROWTHGR_SERVE__PORT", f"redis://:{SECRET}@cache:6379/0")
    out = CliRunner().invoke(app, ["config", "show"])
    assert out.exit_code == 2 and "serve.port" in out.output and SECRET not in out.output and "***" in out.output


def test_a_failed_airflow_call_does_not_carry_the_database_url():
    from subprocess import CompletedProcess

    from growthgr.airflow_local import airflow_failure

    proc = CompletedProcess(["airflow", "db", "migrate"], 1, stdout=f"sql_alchemy_conn = postgresql+psycopg2://airflow:{SECRET}@db/airflow",
                            stderr=f"redis: host:6379,password={SECRET}; token={SECRET}")
    err = str(airflow_failure(["db", "migrate"], proc))
    assert SECRET not in err and "postgresql+psycopg2://airflow:***@db/airflow" in err and "failed (1)" in err


def test_a_hung_cli_call_is_killed_and_named(tmp_path):
    import sys

    from growthgr.airflow_local import run_bounded

    hang = [sys.executable, "-c", f"print('postgresql://u:{SECRET}@db/x', flush=True); import time; time.sleep(60)"]
    with pytest.raises(RuntimeError, match=r"did not finish within 1 s and was killed") as err:
        run_bounded(hang, env={}, timeout_s=1.0)
    assert SECRET not in str(err.value)


def test_an_expected_refusal_of_a_step_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(tmp_path / "releases"))
    expected = {
        "gate_raw": "gate_raw ds=2026-01-05: GateFailed: gate raw ds=2026-01-05: FAILED (9 suites, 0 expectations, "
                    "9 failed); first: FAIL raw.items [ds=2026-01-05] column=* rule=partition_exists: no committed "
                    "partition",
        "publish": "publish ds=2026-01-05: PublishRefused: not publishing ds=2026-01-05: gates failed: ",
    }
    for step, line in expected.items():
        out = CliRunner().invoke(app, ["--profile", "tiny", "pipeline", "step", step, "--ds", "2026-01-05"])
        assert out.exit_code == 1, (step, out.output)
        printed = [s for s in out.output.splitlines() if not re.match(r"\d\d:\d\d:\d\d [A-Z]+ ", s)]  # not a log line
        assert len(printed) == 1 and printed[0].startswith(line) and "Traceback" not in out.output, out.output
