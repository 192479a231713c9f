"""The state every command reads: the global flags of this invocation and the settings they give."""

from __future__ import annotations

from pathlib import Path

import typer

from foundation.config import ConfigError, Settings, load_settings


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
