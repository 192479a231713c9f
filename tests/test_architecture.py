"""The floors (DESIGN.md section 3): foundation -> subsystems -> application -> DAGs, one floor per
top-level folder.

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
FOUNDATION, SUBSYSTEM, APPLICATION, TOP = 1, 2, 3, 4
# Every top-level folder that holds Python code, and its floor: one floor per folder.
# (folder, floor, subsystem name); `models` has one subsystem per sub-package.
FOLDERS: dict[str, tuple[int, str]] = {
    "foundation": (FOUNDATION, "foundation"),
    "simulator": (SUBSYSTEM, "simulator"),
    "spark_jobs": (SUBSYSTEM, "spark"),
    "expectations": (SUBSYSTEM, "expectations"),
    "features": (SUBSYSTEM, "features"),
    "feature_repo": (SUBSYSTEM, "features"),        # Feast definitions, loaded by features.store
    "warehouse": (SUBSYSTEM, "warehouse"),
    "models": (SUBSYSTEM, "models"),                # shared model plumbing (training, metrics)
    "growthgr": (APPLICATION, "app"),
    "dags": (TOP, "dags"),
    "benchmarks": (TOP, "benchmarks"),              # entry points like the DAGs: nothing imports them
}
MODEL_SUBSYSTEMS = ("itemltv", "tokenizer", "multigr", "dense")
NOT_CODE = {"tests", "dbt", "lake", "releases", "docs"}
# Subsystems a subsystem may use through its public modules (a dependency, not a circle).
ALLOWED_PEERS = {("multigr", "tokenizer"): ("models.tokenizer", "models.tokenizer.trie", "models.tokenizer.sids"),
                 ("itemltv", "models"): ("models.training", "models.metrics", "models.checkpoint"),
                 ("tokenizer", "models"): ("models.training", "models.metrics", "models.checkpoint"),
                 ("multigr", "models"): ("models.training", "models.metrics", "models.checkpoint"),
                 ("dense", "models"): ("models.training", "models.metrics", "models.checkpoint"),
                 # DR reuses MultiGR's query-word hashing and serves as its collision re-ranker
                 ("dense", "multigr"): ("models.multigr.model", "models.multigr.beam")}
HEAVY = ("pyspark", "feast", "torch", "airflow", "great_expectations", "lightning", "dbt")


def code_folders() -> set[str]:
    """Top-level folders of the repository that hold Python files."""
    return {p.relative_to(ROOT).parts[0] for p in ROOT.glob("*/**/*.py")
            if not p.relative_to(ROOT).parts[0].startswith(".")} - NOT_CODE


def modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def floor_of(module: str) -> tuple[int, str]:
    parts = module.split(".")
    floor, sub = FOLDERS[parts[0]]
    if parts[0] == "models" and len(parts) > 1 and parts[1] in MODEL_SUBSYSTEMS:
        sub = parts[1]
    return floor, sub


def _literal(node: ast.AST) -> str | None:
    """The text of a string constant, or of a path built as `X / "a" / "b.py"` (its last parts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        right = _literal(node.right)
        left = _literal(node.left) if not isinstance(node.left, ast.Name | ast.Attribute | ast.Call) else None
        names = {"REPO_DIR": "feature_repo", "DAGS_FOLDER": "dags"}
        if left is None and isinstance(node.left, ast.Name):
            left = names.get(node.left.id)
        return f"{left}/{right}" if left and right else right
    if isinstance(node, ast.Name):
        return {"REPO_DIR": "feature_repo", "DAGS_FOLDER": "dags"}.get(node.id)
    return None


def _module_of_path(text: str, known: dict[str, Path]) -> list[str]:
    """Project modules a file or folder path names (`dags`, `feature_repo/definitions.py`)."""
    text = text.strip("/").removesuffix(".py")
    dotted = text.replace("/", ".")
    return [m for m in known if m == dotted or m.startswith(dotted + ".")]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `module` loads anywhere in its file (also inside functions): imports
    (relative ones resolved), `importlib.import_module("x")`, `spec_from_file_location(_, path)`
    and `DagBag(dag_folder=path)` with a path the code spells out."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = list(node.args) + [k.value for k in node.keywords]
            if func == "import_module" and args and (text := _literal(args[0])):
                names = [text]
            elif func in ("spec_from_file_location", "DagBag") and args:
                for arg in args:
                    if (text := _literal(arg)) and "/" in text or (text and text in ("dags",)):
                        out.update(_module_of_path(text, known))
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) - {m} for m, p in known.items()}


def test_every_code_folder_has_one_floor():
    """The folder layout is the floors: every top-level folder with Python code is listed, and
    each listed folder exists and holds modules."""
    assert code_folders() == set(FOLDERS), f"unlisted: {code_folders() - set(FOLDERS)}, gone: {set(FOLDERS) - code_folders()}"
    names = modules()
    for folder in FOLDERS:
        assert any(m.split(".")[0] == folder for m in names), folder


def test_the_graph_is_real():
    """The checks below cannot pass on an empty or partial graph: every folder's modules are in
    it, every floor imports something, and the dynamic loads are followed."""
    g = graph()
    assert len(g) > 100 and sum(map(len, g.values())) > 400
    edges = {(floor_of(a)[0], floor_of(b)[0]) for a, targets in g.items() for b in targets}
    assert {(SUBSYSTEM, FOUNDATION), (APPLICATION, SUBSYSTEM), (APPLICATION, FOUNDATION), (TOP, APPLICATION)} <= edges
    assert "feature_repo.definitions" in g["features.store"], "spec_from_file_location not followed"
    relative = [m for m, p in modules().items() if "from ." in p.read_text()]
    assert all(g[m] for m in relative), "relative imports not followed"


def test_dynamic_and_relative_loads_are_followed(tmp_path):
    code = tmp_path / "m.py"
    code.write_text("from .store import x\nimport importlib\nimportlib.import_module('models.metrics')\n"
                    "from airflow.dag_processing.dagbag import DagBag\nDagBag(dag_folder=DAGS_FOLDER)\n")
    found = imports("features.m", code, modules())
    assert {"features.store", "models.metrics", "dags.growthgr_daily"} <= found, found


def test_imports_go_only_downwards():
    bad = []
    for mod, targets in graph().items():
        (floor, sub) = floor_of(mod)
        for target in targets:
            (tfloor, tsub) = floor_of(target)
            if target in ("foundation", "models"):     # package roots: set-up only
                continue
            if tfloor > floor:
                bad.append(f"{mod} (floor {floor}) imports {target} (floor {tfloor})")
            elif tfloor == floor == SUBSYSTEM and tsub != sub and target not in ALLOWED_PEERS.get((sub, tsub), ()):
                bad.append(f"{mod} ({sub}) imports another subsystem's module {target} ({tsub})")
    assert not bad, "\n".join(bad)


def test_folder_graph_has_no_upward_arrow():
    """Drawn by top-level folder, every arrow runs down or within a floor."""
    up = {(a.split(".")[0], b.split(".")[0]) for a, targets in graph().items() for b in targets
          if FOLDERS[b.split(".")[0]][0] > FOLDERS[a.split(".")[0]][0]}
    assert not up, up


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
           and ("from foundation.config import Settings" in p.read_text()
                or "Lake.from_settings" in p.read_text())]
    assert not bad, bad


def test_foundation_loads_no_framework():
    code = ("import sys, importlib, pkgutil, foundation as core\n"
            "for m in pkgutil.walk_packages(core.__path__, 'foundation.'): importlib.import_module(m.name)\n"
            f"print(','.join(sorted({{n.split('.')[0] for n in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"the foundation loaded {out.stdout.strip()}"
