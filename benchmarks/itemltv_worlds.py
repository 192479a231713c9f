"""ItemLTV study on several simulated worlds: the demo world plus worlds with other seeds and
perturbed mechanisms, so a result is not an accident of one world.

    .venv/bin/python benchmarks/itemltv_worlds.py                       # every world, 5 model seeds, demo profile
    .venv/bin/python benchmarks/itemltv_worlds.py --worlds demo,seed7_strong_pop --seeds 3
    .venv/bin/python benchmarks/itemltv_worlds.py --prepare-only        # lakes only (simulate, labels, training sets)
    .venv/bin/python benchmarks/itemltv_worlds.py --profile tiny --days 45 --worlds demo --prepare-only \
        --work-dir /tmp/worlds --out /tmp/worlds/itemltv_worlds.json   # quick check of the preparation

Worlds (`WORLDS`): (name, simulator seed, `simulator` config overrides), on the profile's sizes.
`demo` is what `make demo` simulates (seed 0, no override); the next two change the seed and the
mechanism knobs of `foundation.sections.simulator`: `pop_weight` (the ranker's popularity
prior), `growth_kappa` (size of the click effect), `growth_age_tau` (its decay with the item's
age), `niche_user_share` (share of niche users); `null` is the demo world with `growth_kappa = 0`
(a falsification test: clicks cause nothing). With `--profile study` the worlds are simulated
for 165 days, so that ItemLTV trains on >= 100 closed cohorts.

Each world has its own lake, `<work-dir>/<name>/lake`, prepared as `growthgr.demo` does and
resumable (what the lake already holds is skipped): simulate `--days` days from the profile's
start date; the Spark label job for every day a cohort can close; the Spark feature job for the
last `--feature-days` days (3 by default, as `make demo`, whose daily DAG runs it for its 3 live
days: the Feast views need feature partitions, and the history cohorts' exposures older than the
views' 2-day TTL get no features, as in the demo); the Feast ItemLTV training set of every
samples partition that lacks one. Then `models.itemltv.study.run_study` on the last simulated
day, one run per model seed 0..`--seeds`-1. A lake simulated with another seed or config is refused (`StateMismatch`): use
another `--work-dir`.

Recorded in `--out` (JSON, rewritten after each world; worlds already there with the same
profile, days, seeds and world definition are not run again unless `--rerun`): the command,
git commit (and whether the tree was dirty), machine, profile, days, seeds, and per world its
seed, overrides, `ds`, cohorts, training-set rows, prepare minutes (of the run that wrote the
entry: small when the lake was already prepared), study minutes, the study result and `run`: the
command, commit, tree state and machine of the run that studied it. The study
tables of every world are printed and written next to it as markdown (`.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from foundation import calendar
from foundation.config import Settings, load_settings
from foundation.lake import Lake, parse_ds
from foundation.logs import setup_logging

log = logging.getLogger("benchmarks.itemltv_worlds")

ROOT = Path(__file__).resolve().parents[1]

# (name, simulator seed, simulator config overrides); the profile's sizes otherwise.
WORLDS: list[tuple[str, int, dict[str, Any]]] = [
    ("demo", 0, {}),
    ("seed7_strong_pop", 7, {"pop_weight": 3.0, "growth_kappa": 0.2, "growth_age_tau": 6.0, "niche_user_share": 0.2}),
    ("seed13_long_effect", 13, {"pop_weight": 1.0, "growth_kappa": 0.45, "growth_age_tau": 15.0,
                                "niche_user_share": 0.45}),
    ("null", 0, {"growth_kappa": 0.0}),     # clicks cause nothing: an estimated uplift should vanish
]


def world_settings(profile: str, lake_root: Path, seed: int, overrides: dict[str, Any]) -> Settings:
    """The profile's settings (no environment) with the world's lake, simulator seed and mechanism."""
    return load_settings(profile, env={}, overrides={"lake_root": str(lake_root),
                                                     "simulator": {"seed": seed, **overrides}})


def prepare_world(settings: Settings, days: int, feature_days: int) -> dict[str, Any]:
    """Simulate, label, (features,) training sets, each for what the lake lacks; returns what was prepared."""
    from features.store import training_set
    from growthgr import demo
    from models.itemltv.data import SERVICE, TRAINING_TABLE, sample_partitions

    lake = Lake.from_settings(settings)
    started = time.perf_counter()
    first = parse_ds(settings.simulator.start_date)
    last = demo.simulate_history(settings, first, days)
    log.info("simulated up to %s (%.1f min)", last, (time.perf_counter() - started) / 60)
    demo.backfill_labels(settings, first, last)
    demo.backfill_features(settings, last, min(feature_days, days))   # rebuilds training sets built before
    parts = sample_partitions(lake, last, 100_000)
    todo = [ds for ds in parts if not lake.exists(*TRAINING_TABLE, ds)]
    log.info("Feast training sets: %d cohort(s), %d to build", len(parts), len(todo))
    for i, ds in enumerate(todo, 1):
        training_set(settings.feast, lake, SERVICE, ds, settings.spark.master)
        log.info("training set %d/%d (ds=%s) built", i, len(todo), ds)
    rows = sum(lake.commit_info(*TRAINING_TABLE, ds).rows for ds in parts)
    return {"ds": f"{last}", "cohorts": len(parts), "first_cohort": f"{parts[0]}" if parts else None,
            "training_rows": rows}


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    return {"git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain"))}


def machine() -> str:
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def write_outputs(out: Path, report: dict[str, Any], tables: dict[str, str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [f"# ItemLTV on {len(report['worlds'])} simulated world(s)", "",
             f"profile {report['profile']}, {report['days']} days, model seeds {report['seeds']}, "
             f"commit {report['git_commit']}{' (dirty)' if report.get('git_dirty') else ''}, {report['machine']}", ""]
    for name, entry in report["worlds"].items():
        lines += [f"## {name}", "",
                  f"simulator seed {entry['seed']}, overrides {json.dumps(entry['overrides'])}, ds {entry['ds']}, "
                  f"{entry.get('cohorts')} cohorts; prepare {entry['prepare_minutes']} min, "
                  f"study {entry.get('study_minutes')} min", ""]
        if run := entry.get("run"):     # the run that studied this world (others may come from other runs)
            lines += [f"studied by `{' '.join(run['command'][1:])}` at commit {run['git_commit']}"
                      f"{' (dirty)' if run['git_dirty'] else ''}, {run['machine']}", ""]
        lines += [tables[name], ""] if name in tables else ["(not studied)", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def previous(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """World entries of an earlier run at `out` with the same profile, days and seeds (empty otherwise)."""
    if not out.exists():
        return {}
    try:
        old = json.loads(out.read_text())
    except json.JSONDecodeError:
        return {}
    same = all(old.get(k) == report[k] for k in ("profile", "days", "seeds", "feature_days"))
    return old.get("worlds", {}) if same else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="benchmarks/.worlds", help="one lake per world: <work-dir>/<name>/lake")
    ap.add_argument("--worlds", default=",".join(w[0] for w in WORLDS), help="comma list of world names")
    ap.add_argument("--seeds", type=int, default=5, help="model seeds 0..n-1")
    ap.add_argument("--days", type=int, default=None, help="simulated days (default: the profile's simulator.days)")
    ap.add_argument("--profile", default="demo", choices=("tiny", "demo", "study", "large"))
    ap.add_argument("--feature-days", type=int, default=3,
                    help="Spark feature job for the last N simulated days (3: as `make demo`; >= 1, Feast needs them)")
    ap.add_argument("--out", default="benchmarks/results/itemltv_worlds.json")
    ap.add_argument("--prepare-only", action="store_true", help="prepare the lakes, run no study")
    ap.add_argument("--rerun", action="store_true", help="study again the worlds already in --out")
    args = ap.parse_args()
    setup_logging("INFO")
    logging.getLogger("feast").setLevel(logging.WARNING)     # a registry refresh line per view and query

    known = {name: (seed, over) for name, seed, over in WORLDS}
    names = [n for n in args.worlds.split(",") if n]
    if unknown := [n for n in names if n not in known]:
        ap.error(f"unknown world(s) {unknown}; known: {list(known)}")
    days = args.days or load_settings(args.profile, env={}).simulator.days
    if days <= calendar.COHORT_OFFSET:
        ap.error(f"--days {days}: no cohort closes before day {calendar.COHORT_OFFSET + 1}")
    if args.feature_days < 1:
        ap.error("--feature-days must be >= 1: the Feast training sets need feature partitions")
    work, out = Path(args.work_dir).resolve(), Path(args.out)
    seeds = list(range(args.seeds))

    report: dict[str, Any] = {"command": [sys.executable, *sys.argv], **git_info(), "machine": machine(),
                              "profile": args.profile, "days": days, "seeds": seeds,
                              "feature_days": args.feature_days, "worlds": {}}
    done = {} if args.rerun else previous(out, report)
    report["worlds"] = dict(done)         # worlds of an earlier run not run now stay in the report
    tables: dict[str, str] = {}
    if any(e.get("result") is not None for e in done.values()):
        from models.itemltv.study import study_table

        tables = {n: study_table(e["result"]) for n, e in done.items() if e.get("result") is not None}
    for i, name in enumerate(names, 1):
        seed, overrides = known[name]
        old = done.get(name) if (done.get(name) or {}).get("seed") == seed else None
        old = old if old and old.get("overrides") == overrides and old.get("result") is not None else None
        if old and not args.prepare_only:
            log.info("== world %d/%d %s: already studied in %s, kept (--rerun to study it again)", i, len(names), name, out)
            print(f"\n## {name} (kept from {out})\n{tables[name]}\n", flush=True)
            continue
        log.info("== world %d/%d %s: simulator seed %d, overrides %s, %d days, profile %s",
                 i, len(names), name, seed, overrides or "none", days, args.profile)
        settings = world_settings(args.profile, work / name / "lake", seed, overrides)
        started = time.perf_counter()
        prepared = prepare_world(settings, days, args.feature_days)
        entry: dict[str, Any] = {"seed": seed, "overrides": overrides, "lake": settings.lake_root, **prepared,
                                 "prepare_minutes": round((time.perf_counter() - started) / 60, 2),
                                 "study_minutes": None, "result": None}
        log.info("world %s prepared in %.1f min: ds %s, %d cohorts, %d training rows",
                 name, entry["prepare_minutes"], entry["ds"], entry["cohorts"], entry["training_rows"])
        if old:                            # --prepare-only over a studied world: its study is kept
            entry.update(study_minutes=old.get("study_minutes"), result=old["result"])
        elif not args.prepare_only:
            from models.itemltv.study import run_study, study_table

            started = time.perf_counter()
            lake = Lake.from_settings(settings)
            entry["result"] = run_study(settings.itemltv, settings.trainer, lake, parse_ds(entry["ds"]), seeds=seeds)
            entry["study_minutes"] = round((time.perf_counter() - started) / 60, 2)
            entry["run"] = {k: report[k] for k in ("command", "git_commit", "git_dirty", "machine")}
            tables[name] = study_table(entry["result"])
            log.info("world %s studied in %.1f min", name, entry["study_minutes"])
            print(f"\n## {name} (seed {seed}, {overrides or 'no overrides'}, ds {entry['ds']})\n{tables[name]}\n",
                  flush=True)
        report["worlds"][name] = entry
        write_outputs(out, report, tables)
    write_outputs(out, report, tables)
    log.info("wrote %s and %s", out, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
