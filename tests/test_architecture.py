"""The floors (DESIGN.md section 3): foundation -> subsystems -> application -> DAGs.

Each module imports only its own floor or the floors below; subsystems never import another
subsystem's modules; the import graph has no circle; and importing the foundation loads none of
the heavy frameworks (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("growthgr", "spark_jobs", "models", "expectations", "dags")
FOUNDATION, SUBSYSTEM, APPLICATION, DAGS = 1, 2, 3, 4
# (module prefix, floor, subsystem name); the longest matching prefix wins.
FLOORS: list[tuple[str, int, str]] = [
    ("growthgr", FOUNDATION, "growthgr"),          # the package's (empty) __init__
    ("growthgr.core", FOUNDATION, "core"),
    ("growthgr.simulator", SUBSYSTEM, "simulator"),
    ("growthgr.features", SUBSYSTEM, "features"),
    ("growthgr.feast_offline", SUBSYSTEM, "features"),
    ("growthgr.dbt_runner", SUBSYSTEM, "dbt"),
    ("spark_jobs", SUBSYSTEM, "spark"),
    ("expectations", SUBSYSTEM, "expectations"),
    ("models", SUBSYSTEM, "models"),                # shared model plumbing (training, metrics)
    ("models.itemltv", SUBSYSTEM, "itemltv"),
    ("models.tokenizer", SUBSYSTEM, "tokenizer"),
    ("models.multigr", SUBSYSTEM, "multigr"),
    ("models.dense", SUBSYSTEM, "dense"),
    ("growthgr.cli", APPLICATION, "app"),
    ("growthgr.pipeline", APPLICATION, "app"),
    ("growthgr.steps", APPLICATION, "app"),
    ("growthgr.publish", APPLICATION, "app"),
    ("growthgr.serve", APPLICATION, "app"),
    ("growthgr.report", APPLICATION, "app"),
    ("growthgr.demo", APPLICATION, "app"),
    ("growthgr.abtest", APPLICATION, "app"),
    ("growthgr.airflow_local", APPLICATION, "app"),
    ("dags", DAGS, "dags"),
]
# Subsystems a subsystem may use through its public modules (a dependency, not a circle).
ALLOWED_PEERS = {("multigr", "tokenizer"): ("models.tokenizer", "models.tokenizer.trie", "models.tokenizer.sids"),
                 ("itemltv", "models"): ("models.training", "models.metrics"),
                 ("tokenizer", "models"): ("models.training", "models.metrics"),
                 ("multigr", "models"): ("models.training", "models.metrics"),
                 ("dense", "models"): ("models.training", "models.metrics"),
                 # DR reuses MultiGR's query-word hashing and serves as its collision re-ranker
                 ("dense", "multigr"): ("models.multigr.model", "models.multigr.beam")}
HEAVY = ("pyspark", "feast", "torch", "airflow", "great_expectations", "lightning", "dbt")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def floor_of(module: str) -> tuple[int, str]:
    best = max((p for p in FLOORS if module == p[0] or module.startswith(p[0] + ".")), key=lambda p: len(p[0]))
    return best[1], best[2]


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def test_every_module_has_a_floor():
    """Every module is listed under a floor; only the package root falls back to `growthgr`."""
    def prefix(m: str) -> str:
        return max((p[0] for p in FLOORS if m == p[0] or m.startswith(p[0] + ".")), key=len)

    unlisted = [m for m in modules() if m.startswith("growthgr.") and prefix(m) == "growthgr"]
    assert not unlisted, f"modules with no floor in FLOORS: {unlisted}"


def test_imports_go_only_downwards():
    bad = []
    for mod, targets in graph().items():
        (floor, sub) = floor_of(mod)
        for target in targets:
            (tfloor, tsub) = floor_of(target)
            if target in ("growthgr", "models"):     # package roots hold no code
                continue
            if tfloor > floor:
                bad.append(f"{mod} (floor {floor}) imports {target} (floor {tfloor})")
            elif tfloor == floor == SUBSYSTEM and tsub != sub and target not in ALLOWED_PEERS.get((sub, tsub), ()):
                bad.append(f"{mod} ({sub}) imports another subsystem's module {target} ({tsub})")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(g):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_no_settings_probes():
    hits = [f"{p.relative_to(ROOT)}" for p in modules().values() if "getattr(settings" in p.read_text()]
    assert not hits


def test_subsystems_never_take_the_whole_settings():
    """Subsystem code never reaches into the `Settings` object: it gets its own section."""
    bad = [m for m, p in modules().items() if floor_of(m)[0] == SUBSYSTEM
           and ("from growthgr.core.config import Settings" in p.read_text()
                or "Lake.from_settings" in p.read_text())]
    assert not bad, bad


def test_foundation_loads_no_framework():
    code = ("import sys, importlib, pkgutil, growthgr.core as core\n"
            "for m in pkgutil.walk_packages(core.__path__, 'growthgr.core.'): importlib.import_module(m.name)\n"
            f"print(','.join(sorted({{n.split('.')[0] for n in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"the foundation loaded {out.stdout.strip()}"
