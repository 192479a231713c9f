import json

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


def test_unknown_pipeline_step_exits_2_listing_the_steps():
    out = CliRunner().invoke(app, ["pipeline", "step", "nosuch", "--ds", "2026-02-01"])
    assert out.exit_code == 2 and "nosuch" in out.output and "dense_train" in out.output
