"""The state every command reads: the global flags of this invocation and the settings they give."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import typer

from foundation.config import ConfigError, Settings, load_settings
from foundation.lake import BadDate, parse_ds


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


def parse_date(value: str) -> date:
    """A date option's value, parsed once at the edge (`foundation.lake.parse_ds`): a bad one is a
    one-line usage error (exit 2), not a traceback."""
    try:
        return parse_ds(value)
    except BadDate as err:
        raise typer.BadParameter(str(err)) from None


def date_option(default: Any, *names: str, help: str = "Logical date YYYY-MM-DD.") -> Any:
    """A typer option holding a `datetime.date` (`--ds`, `--start`, ...), parsed by `parse_date`."""
    return typer.Option(default, *names, parser=parse_date, metavar="YYYY-MM-DD", help=help)
