"""The `growthgr` command line. Subsystems plug in their own Typer apps in `_register`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from growthgr import logs  # noqa: F401  (telemetry off before anything else is imported)
from growthgr.config import ConfigError, Settings, load_settings

app = typer.Typer(help="GrowthGR: daily batch system for new-item growth in search.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class State:
    config_file: Path | None = None
    profile: str | None = None


def settings(**overrides) -> Settings:
    """The effective settings of this invocation (global flags + env + overrides)."""
    try:
        return load_settings(profile=State.profile, config_file=State.config_file, overrides=overrides or None)
    except ConfigError as err:
        typer.secho(f"configuration error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None


@app.callback()
def main_callback(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False, help="YAML config file."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="tiny | demo | large (default: env or demo)."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
) -> None:
    logs.setup_logging(log_level.upper())
    State.config_file, State.profile = config, profile


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML.")) -> None:
    """Print the effective configuration (profile + file + environment)."""
    s = settings()
    data = s.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(f"# profile={s.profile} digest={s.digest()}")
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def _register() -> None:
    """Add each subsystem's commands (one line each)."""
    from growthgr.releases_cli import app as releases_app

    app.add_typer(releases_app, name="releases")
    app.add_typer(__import__("growthgr.pipeline_cli", fromlist=["app"]).app, name="pipeline")
    app.add_typer(__import__("growthgr.simulator.cli", fromlist=["app"]).app, name="simulate")
    __import__("spark_jobs.cli", fromlist=["register"]).register(app)  # spark, dbt, sql
    __import__("expectations.cli", fromlist=["register"]).register(app)  # validate, features
    app.add_typer(__import__("models.itemltv.cli", fromlist=["app"]).app, name="itemltv")
    app.add_typer(__import__("models.tokenizer.cli", fromlist=["app"]).app, name="tokenizer")
    app.add_typer(__import__("models.multigr.cli", fromlist=["app"]).app, name="multigr")


_register()


def main() -> None:
    app()
