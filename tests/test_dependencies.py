"""The dependency lists: pyproject.toml is the one list of direct dependencies, requirements.lock
its compiled lock (`make lock`).

Every third-party module the code imports comes from a direct dependency (the runtime list for
the installed packages, the runtime list plus the `dev` extra for tests and benchmarks), so
`pip install .` runs `growthgr`; every direct dependency is locked at a version its specifier
admits; every locked package has hashes; the lock holds no CUDA build (torch is `+cpu`, nothing
from NVIDIA).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_architecture import FOLDERS, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# A locked package: `name==version \` followed by its `--hash=sha256:...` lines.
LOCK_ENTRY = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", re.M)
DEV_FOLDERS = ("tests", "benchmarks")


def direct(extra: str | None = None) -> dict[str, Requirement]:
    """The direct dependencies by canonical name: `[project.dependencies]`, or one extra's list."""
    specs = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def locked(text: str) -> dict[str, tuple[Version, int]]:
    """A compiled lock's pins by canonical name: (version, number of hashes)."""
    return {canonicalize_name(name): (Version(version), hashes.count("--hash="))
            for name, version, hashes in LOCK_ENTRY.findall(text)}


def third_party_imports(folders: tuple[str, ...]) -> dict[str, str]:
    """Top-level modules imported by the Python files under `folders` that are neither the
    standard library nor the project's own (helper modules in those folders included): module ->
    one file importing it."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if not (top in sys.stdlib_module_names or top in FOLDERS or top in DEV_FOLDERS
                            or any((ROOT / f / f"{top}.py").exists() for f in folders)):
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def uncovered(imports: dict[str, str], allowed: set[str]) -> list[str]:
    """The imports whose installed distributions are none of `allowed` (canonical names)."""
    dists = packages_distributions()
    return [f"{module} (in {where}; from {dists.get(module, ['nothing installed'])})"
            for module, where in sorted(imports.items())
            if not {canonicalize_name(d) for d in dists.get(module, [])} & allowed]


def test_the_installed_packages_import_only_runtime_dependencies():
    runtime = tuple(f for f in FOLDERS if f not in DEV_FOLDERS)
    assert not uncovered(third_party_imports(runtime), set(direct()))


def test_tests_and_benchmarks_import_only_runtime_or_dev_dependencies():
    assert not uncovered(third_party_imports(DEV_FOLDERS), set(direct()) | set(direct("dev")))


def test_test_tools_are_dev_extras_not_runtime_dependencies():
    tools = {"pytest", "moto", "hypothesis", "schemathesis", "ruff", "pip-tools"}
    assert not tools & set(direct())
    assert tools <= set(direct("dev"))


def test_every_direct_dependency_is_locked_at_an_admitted_version_with_hashes():
    lock = locked((ROOT / "requirements.lock").read_text())
    for name, req in {**direct(), **direct("dev")}.items():
        assert name in lock, f"{name} is not in requirements.lock: run `make lock`"
        version, _ = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} vs {req}"
    assert {name for name, (_, hashes) in lock.items() if hashes == 0} == set()


def test_the_lock_is_the_cpu_build_of_torch_and_nothing_from_cuda():
    text = (ROOT / "requirements.lock").read_text()
    lock = locked(text)
    assert lock["torch"][0].local == "cpu"
    assert not [name for name in lock if re.match(r"(nvidia|cuda|triton)", name)]
    assert "make lock" in text.split("\n\n")[0], "the lock's header names the command that compiles it"
