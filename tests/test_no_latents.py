"""No simulator internals as features (issue 18, DESIGN.md section 5): raw tables and Feast
feature views name no latent parameter, the simulated raw zone holds none while truth/users
does, and no feature or training code references the truth zone."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.lake import Lake
from foundation.schemas import RAW_SCHEMAS, TRUTH_SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
# Latent parameters of the simulator (users and items) and the truth it derives from them.
LATENT_NAMES = {"segment", "home_category_id", "home_cat", "activity", "price_sensitivity", "price_sens",
                "niche", "niche_id", "quality", "base_demand", "offset", "taste", "growth", "true_uplift", "y0"}
USER_LATENTS = ("segment", "home_category_id", "niche_id", "activity", "price_sensitivity", "taste")
# Feature and training code: never reads truth/ (evaluation of ItemLTV and the synthetic-lake
# writer are the exceptions; the simulator writes it).
NO_TRUTH_SOURCES = ("spark_jobs", "models", "features/store.py", "features/offline_store.py", "feature_repo")
TRUTH_READERS = ("models/itemltv/evaluate.py", "models/itemltv/synthetic.py", "models/multigr/labels.py")
TRUTH_SYMBOLS = {"TRUTH", "TRUTH_SCHEMAS"}


def latent(name: str) -> bool:
    """A column name that is, or contains as `_`-separated words, a latent parameter's name."""
    return name in LATENT_NAMES or any(f"_{n}_" in f"_{name}_" for n in LATENT_NAMES)


def test_latent_detector_flags_the_truth_users_columns_and_not_behaviour_features():
    assert [f.name for f in TRUTH_SCHEMAS["users"] if latent(f.name)] == list(USER_LATENTS)
    assert latent("user_niche") and latent("item_quality") and latent("taste")
    assert not any(latent(c) for c in ("active_days_30d", "category_affinity", "price_level_30d", "region",
                                       "age_band", "requests_30d", "category_id", "price"))


@pytest.mark.parametrize("table", list(RAW_SCHEMAS))
def test_no_raw_schema_names_a_latent(table):
    names = [f.name for f in RAW_SCHEMAS[table]]
    assert names and [n for n in names if latent(n)] == []


def test_raw_users_holds_declared_profile_fields_only():
    assert RAW_SCHEMAS["users"].names == ["user_id", "signup_date", "region", "age_band"]
    assert set(USER_LATENTS) <= set(TRUTH_SCHEMAS["users"].names)


def feast_objects(lake_root: Path) -> list:
    """The objects of feature_repo/definitions.py, built by its `build(lake_root)`."""
    spec = importlib.util.spec_from_file_location("no_latents_feature_repo", ROOT / "feature_repo/definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(str(lake_root))


def test_no_feast_feature_view_or_service_names_a_latent(tmp_path):
    objects = feast_objects(tmp_path)
    views = [o for o in objects if hasattr(o, "ttl")]
    assert sorted(v.name for v in views) == ["item_features", "query_features", "user_features"]
    fields = {(v.name, f.name) for v in views for f in v.features}
    assert ("user_features", "active_days_30d") in fields and ("user_features", "region") in fields
    assert [f for f in fields if latent(f[1])] == []
    services = [o for o in objects if hasattr(o, "feature_view_projections")]
    assert {s.name for s in services} == {"itemltv_v1", "multigr_v1", "dr_v1"}
    served = {(s.name, f.name) for s in services for p in s.feature_view_projections for f in p.features}
    assert ("multigr_v1", "age_band") in served and [f for f in served if latent(f[1])] == []


def _read_all(lake: Lake, zone: str, table: str):
    parts = lake.list_partitions(zone, table)
    return lake.read_range(zone, table, parts[0], parts[-1]).to_pandas()


def test_simulated_raw_zone_holds_no_latent_and_truth_users_does(tiny_world):
    lake = Lake.open(str(tiny_world))
    assert sorted(lake.list_tables("raw")) == sorted(RAW_SCHEMAS)
    for table in lake.list_tables("raw"):
        parts = lake.list_partitions("raw", table)
        for ds in (parts[0], parts[-1]):
            names = lake.read_partition("raw", table, ds).column_names
            assert names and [n for n in names if latent(n)] == [], (table, ds)
    raw, truth = _read_all(lake, "raw", "users"), _read_all(lake, "truth", "users")
    assert set(USER_LATENTS) <= set(truth.columns)
    assert sorted(truth["user_id"]) == sorted(raw["user_id"]) and len(raw) > 100
    assert (lake.list_partitions("truth", "users") == lake.list_partitions("raw", "users"))
    # a declared field does not determine any latent parameter (it is a noisy correlate at most)
    users = raw.merge(truth, on="user_id")
    for declared in ("region", "age_band"):
        for hidden in ("segment", "home_category_id"):
            assert users.groupby(declared)[hidden].nunique().min() > 1, (declared, hidden)


def truth_references(source: str) -> list[str]:
    """Where Python `source` references the truth zone: a `TRUTH` / `TRUTH_SCHEMAS` name,
    attribute or import, or a string literal (not a docstring) naming the zone."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in TRUTH_SYMBOLS:
            found.append(f"{node.lineno}: name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in TRUTH_SYMBOLS:
            found.append(f"{node.lineno}: attribute {node.attr}")
        elif isinstance(node, ast.ImportFrom) and any(a.name in TRUTH_SYMBOLS for a in node.names):
            found.append(f"{node.lineno}: import from {node.module}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and (node.value.strip() == "truth" or "truth/" in node.value)):
            found.append(f"{node.lineno}: string {node.value!r}")
    return found


def test_truth_reference_detector():
    assert truth_references('"""Docstring about the truth/ zone."""\nx = 1\n') == []
    assert len(truth_references('lake.read_partition("truth", "users", ds)\n')) == 1
    assert len(truth_references('lake.read_range(*catalog.TRUTH["click_effects"], a, b)\n')) == 1
    assert len(truth_references("from foundation.schemas import TRUTH_SCHEMAS\n")) == 1
    assert len(truth_references('key = f"truth/users/ds={ds}"\n')) == 1
    # the known reader (evaluation) is found, so the scan below would see a new one
    assert truth_references((ROOT / "models/itemltv/evaluate.py").read_text())


def test_feature_and_training_code_never_references_truth():
    files = sorted(p for src in NO_TRUTH_SOURCES for p in ([ROOT / src] if src.endswith(".py")
                                                           else (ROOT / src).rglob("*.py")))
    files = [p for p in files if p.relative_to(ROOT).as_posix() not in TRUTH_READERS]
    assert len(files) > 20 and ROOT / "spark_jobs/features.py" in files
    offenders = {p.relative_to(ROOT).as_posix(): refs for p in files if (refs := truth_references(p.read_text()))}
    assert offenders == {}


def truth_function_callers(source: str) -> list[str]:
    """Imports of the evaluation-only truth module (`simulator.truth`) or uses of its `click_truth`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "simulator.truth" or (node.module == "simulator" and any(a.name == "truth" for a in node.names))):
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Import) and any(a.name == "simulator.truth" for a in node.names):
            found.append(f"{node.lineno}: import simulator.truth")
        elif isinstance(node, (ast.Name, ast.Attribute)) and getattr(node, "id", getattr(node, "attr", "")) == "click_truth":
            found.append(f"{node.lineno}: click_truth")
    return found


def test_only_evaluation_calls_the_truth_function():
    """`simulator.truth.click_truth` (what any slate would have done) is for evaluation: no product
    module outside the evaluation readers imports it."""
    assert truth_function_callers("from simulator.truth import click_truth\n")
    assert truth_function_callers("import simulator.truth\n") and truth_function_callers("from simulator import truth\n")
    product = [p for p in ROOT.rglob("*.py") if not {"tests", ".venv", "benchmarks"} & set(p.relative_to(ROOT).parts)]
    allowed = {*TRUTH_READERS, "simulator/truth.py"}
    offenders = {p.relative_to(ROOT).as_posix(): refs for p in product
                 if p.relative_to(ROOT).as_posix() not in allowed and (refs := truth_function_callers(p.read_text()))}
    assert len(product) > 100 and offenders == {}


# ItemLTV's training and model-selection code paths: fitting, the arm calibration, the baselines'
# validation tuning, the pool's scoring. None of them may load a module that reads the truth.
ITEMLTV_SELECTION = ("models.itemltv.data", "models.itemltv.train", "models.itemltv.calibrate",
                     "models.itemltv.baselines", "models.itemltv.predict", "models.itemltv.score")


def test_itemltv_training_and_selection_import_nothing_that_reads_the_truth():
    """Imported in a fresh interpreter, the training and selection modules pull in (transitively)
    no truth reader (`TRUTH_READERS`) and not `simulator.truth`."""
    readers = [p.removesuffix(".py").replace("/", ".") for p in TRUTH_READERS] + ["simulator.truth"]
    code = (f"import sys\nimport {', '.join(ITEMLTV_SELECTION)}\n"
            f"print(sorted(m for m in {readers!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # the detector itself: the study (evaluation) does load the truth reader
    study = subprocess.run([sys.executable, "-c", "import sys, models.itemltv.study\n"
                            "print('models.itemltv.evaluate' in sys.modules)"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert study.stdout.strip() == "True"
