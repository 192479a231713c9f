"""The `growthgr` command line (application floor). Every subsystem's commands live in a module of
this package and are registered here, from the top; no command imports back from this module
(the invocation's state and settings are in `growthgr.cli.context`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from foundation import logs  # noqa: F401  (telemetry off before anything else is imported)
from foundation.redact import redact_tree
from growthgr.cli import context
from growthgr.cli.context import settings

# Plain Click output (no Rich panels): a usage error is one `Error: ...` line a log or a monitor can grep.
app = typer.Typer(help="GrowthGR: daily batch system for new-item growth in search.", no_args_is_help=True,
                  rich_markup_mode=None)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def main_callback(
    config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False, help="YAML config file."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="tiny | demo | study | large (default: env or demo)."),
    log_level: str = typer.Option("INFO", "--log-level", help="GrowthGR's log level: DEBUG, INFO, WARNING, ERROR."),
    lib_log_level: str = typer.Option("WARNING", "--lib-log-level",
                                      help="Third-party libraries' log level (GX, Feast, dbt, ...): INFO shows their "
                                           "progress lines."),
) -> None:
    logs.setup_logging(log_level.upper(), lib_log_level.upper())
    context.State.config_file, context.State.profile = config, profile


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML.")) -> None:
    """Print the effective configuration (profile + file + environment); passwords in URLs and
    connection strings are printed as ***."""
    s = settings()
    data = redact_tree(s.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(f"# profile={s.profile} digest={s.digest()}")
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def _register() -> None:
    """Add each subsystem's commands (imports stay light: no pyspark, torch or Feast at start-up)."""
    from growthgr.cli import (
        abtest,
        airflow,
        dbt,
        features,
        itemltv,
        multigr,
        pipeline,
        releases,
        report,
        serve,
        simulate,
        spark,
        status,
        tokenizer,
        validate,
    )

    for name, module in (("releases", releases), ("pipeline", pipeline), ("simulate", simulate), ("spark", spark),
                         ("dbt", dbt), ("features", features), ("itemltv", itemltv), ("tokenizer", tokenizer),
                         ("multigr", multigr), ("airflow", airflow)):
        app.add_typer(module.app, name=name)
    app.command("sql")(dbt.sql)
    app.command("validate")(validate.validate_cmd)
    app.command("report")(report.report_cmd)
    app.command("abtest")(abtest.abtest_cmd)
    app.command("retrieve")(serve.retrieve_cmd)
    app.command("serve")(serve.serve_cmd)
    app.command("status")(status.status_cmd)


_register()


def main() -> None:
    app()
