"""The `growthgr` CLI's surface: every command and option named one way and helped, and the usage
errors an operator meets (a bad date, an unknown step or release) are one line, never a traceback."""

import json
import re
import subprocess
import sys
import types
from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from growthgr.cli import app
from growthgr.cli.context import parse_date

KEBAB = r"[a-z][a-z0-9]*(-[a-z0-9]+)*"
DATE_NAMES = re.compile(r"^(ds|start|end|.*_day|.*_date)$")   # a parameter with such a name holds a date
HEAVY = ("great_expectations", "pyspark", "torch", "lightning", "feast", "airflow", "dbt", "fastapi")


def walk(command, path=()):
    """(path, command) of `command` and of every command below it (Click's command tree)."""
    yield path, command
    ctx = typer.Context(command)
    for name in getattr(command, "list_commands", lambda _: [])(ctx):
        yield from walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))


def base_type(param) -> type:
    """The parameter's annotation without `| None` (`date | None` -> `date`)."""
    annotation = param.type_descriptor.annotation
    if isinstance(annotation, types.UnionType):
        (annotation,) = [a for a in annotation.__args__ if a is not type(None)]
    return annotation


def long_name(param) -> str:
    """The parameter's `--long-name` (an argument's name for an argument)."""
    return next((o for o in param.opts if o.startswith("--")), param.name)


def date_params() -> list[tuple[tuple[str, ...], str]]:
    """(command path, option) of every date option of the app."""
    return [(path, long_name(p)) for path, cmd in COMMANDS for p in cmd.params if base_type(p) is date]


def error_lines(output: str) -> list[str]:
    """The lines of a usage error's message (Click starts them with `Error`)."""
    return [line for line in output.splitlines() if line.startswith("Error")]


def test_every_command_and_option_has_help_and_one_naming_style():
    assert len(COMMANDS) > 40 and len(date_params()) > 20   # the walk reaches the subcommands
    spelled: dict[str, set] = {}
    for path, cmd in COMMANDS:
        assert all(re.fullmatch(KEBAB, part) for part in path), path
        assert path == () or cmd.help or cmd.short_help, f"command {' '.join(path)} has no help"
        for p in cmd.params:
            where = f"{' '.join(path)} {p.name}"
            assert p.help, f"{where} has no help"
            for opt in (*p.opts, *p.secondary_opts):
                assert p.param_type_name == "argument" or re.fullmatch(rf"--{KEBAB}|-[a-z]", opt), (where, opt)
            spelled.setdefault(long_name(p), set()).add((p.name, base_type(p)))
            if DATE_NAMES.match(p.name):
                assert base_type(p) is date, f"{where} holds a date but is typed {base_type(p)}"
            if base_type(p) is date:
                assert p.type_descriptor.parameter_info.parser is parse_date, f"{where} is not parsed by parse_date"
    # one option name, one meaning: the same --name holds the same parameter of the same type everywhere
    assert {name: kinds for name, kinds in spelled.items() if len(kinds) > 1} == {}
    assert {n: spelled[n] for n in ("--ds", "--json", "--out", "--release")} == {
        "--ds": {("ds", date)}, "--json": {("as_json", bool)}, "--out": {("out", Path)}, "--release": {("release", str)}}


@pytest.mark.parametrize("path, option", date_params(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_a_bad_date_is_one_usage_error_naming_the_option(path, option):
    out = CliRunner().invoke(app, [*path, option, "2026-13-01"])
    assert out.exit_code == 2, out.output
    assert error_lines(out.output) == [f"Error: Invalid value for '{option}': '2026-13-01' is not a date YYYY-MM-DD"]
    assert "Traceback" not in out.output and len(out.output.splitlines()) <= 4, out.output


def test_a_bad_date_fails_before_anything_heavy_is_imported():
    script = ("import json, sys\nfrom growthgr.cli import main\nsys.argv = ['growthgr', 'pipeline', 'run', '--ds', "
              "'2026-02-30']\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
              f"print(json.dumps([code, sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.splitlines()[-1]) == [2, []], proc.stdout + proc.stderr
    assert error_lines(proc.stderr) == ["Error: Invalid value for '--ds': '2026-02-30' is not a date YYYY-MM-DD"]
    assert "Traceback" not in proc.stderr


def test_an_unknown_step_is_one_usage_error_listing_the_steps():
    out = CliRunner().invoke(app, ["pipeline", "step", "nosuch", "--ds", "2026-02-01"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    (line,) = error_lines(out.output)
    assert line.startswith("Error: Invalid value for STEP: unknown step 'nosuch': one of gate_raw, ") and "publish" in line


@pytest.mark.parametrize("args", [["releases", "show", "nope"], ["releases", "promote", "nope"],
                                  ["retrieve", "--user", "1", "--query", "shoes", "--release", "nope"]])
def test_an_unknown_release_is_one_line(tmp_path, monkeypatch, args):
    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", str(tmp_path / "releases"))
    out = CliRunner().invoke(app, ["--profile", "tiny", *args])
    assert out.exit_code == 1
    assert out.output.splitlines() == ["release nope is missing or incomplete (no manifest.json)"], out.output
