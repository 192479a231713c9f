"""Simulator speed: rows generated per second, seconds per day, peak memory, cost per user-day.

Each (profile, scale) runs in its own subprocess (so peak RSS is its own),
simulating `--days` days from a fresh world into a temporary lake (or in
memory with `--no-write`). `--scales 0.5,1` shrinks users and items together
to check that cost grows linearly with users x days. Prints one line per run
and the medians over `--repeats`.

    .venv/bin/python benchmarks/sim_speed.py --profile demo --days 60
    .venv/bin/python benchmarks/sim_speed.py --profile large --days 3 --no-write
    .venv/bin/python benchmarks/sim_speed.py --profile demo --days 10 --scales 0.5,1 --no-write
    .venv/bin/python benchmarks/sim_speed.py --profile demo --days 60 --repeats 3 --baseline HEAD~1

`--baseline REF` also times the simulator of git ref REF (a temporary worktree, same
interpreter), alternating baseline and current runs so that both see the same machine load,
and prints the ratio of the median times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALED = ("n_users", "new_users_per_day", "n_items", "new_items_per_day")


def one_run(profile: str, days: int, scale: float, write: bool) -> dict:
    from foundation.config import load_settings
    from foundation.lake import Lake
    from simulator.engine import simulate_day
    from simulator.run import default_channels, simulate
    from simulator.world import create_world, day_index

    cfg = load_settings(profile=profile, env={}).simulator
    cfg = cfg.model_copy(update={k: max(1, int(getattr(cfg, k) * scale)) for k in SCALED})
    t0 = time.perf_counter()
    if write:
        with tempfile.TemporaryDirectory(prefix="simbench-") as root:
            rows = simulate(Lake.open(root), cfg, seed=1, start="2026-01-01", days=days, progress=False).rows
    else:
        first = day_index("2026-01-01")
        w, channels, rows = create_world(cfg, 1, first), default_channels(cfg), {}
        for d in range(first, first + days):
            out = simulate_day(w, d, channels)
            for k, v in (out.raw | out.truth).items():
                rows[k] = rows.get(k, 0) + v.num_rows
    seconds = time.perf_counter() - t0
    total = sum(rows.values())
    return {
        "profile": profile, "scale": scale, "days": days, "write": write, "users": cfg.n_users,
        "seconds": round(seconds, 2), "rows": total, "rows_per_s": round(total / seconds),
        "s_per_day": round(seconds / days, 3), "us_per_user_day": round(1e6 * seconds / (cfg.n_users * days), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "exposures": rows.get("raw/exposures", rows.get("exposures", 0)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", action="append", choices=["tiny", "demo", "study", "large"], help="repeatable (default demo)")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--scales", default="1", help="comma-separated population scales, e.g. 0.5,1")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="keep the output in memory (engine cost only)")
    p.add_argument("--baseline", help="git ref whose simulator is timed alternately with the current one")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one_run(**json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="simbench-base-") as tmp:
        base = checkout(args.baseline, Path(tmp) / "tree") if args.baseline else None
        try:
            for profile in args.profile or ["demo"]:
                for scale in (float(s) for s in args.scales.split(",")):
                    spec = json.dumps({"profile": profile, "days": args.days, "scale": scale, "write": not args.no_write})
                    runs: dict[str, list[dict]] = {"current": [], **({"baseline": []} if base else {})}
                    for _ in range(args.repeats):
                        for name in runs:
                            runs[name].append(child(spec, base if name == "baseline" else ROOT))
                            print(json.dumps({"code": name, **runs[name][-1]}), flush=True)
                    medians = {}
                    for name, rs in runs.items():
                        medians[name] = {k: statistics.median(r[k] for r in rs) for k in
                                         ("seconds", "rows_per_s", "s_per_day", "us_per_user_day", "peak_rss_mb")}
                        print(f"MEDIAN {name} {profile} scale={scale} days={args.days} write={not args.no_write}: "
                              f"{json.dumps(medians[name])}", flush=True)
                    if base:
                        print(f"RATIO current / baseline ({args.baseline}) seconds: "
                              f"{medians['current']['seconds'] / medians['baseline']['seconds']:.3f}", flush=True)
        finally:
            if base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


ROOT = Path(__file__).resolve().parents[1]


def checkout(ref: str, path: Path) -> Path:
    """A detached worktree of `ref` at `path`."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), ref], check=True)
    return path


def child(spec: str, tree: Path) -> dict:
    """One run in a fresh interpreter importing the code of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(tree / "benchmarks/sim_speed.py"), "--child", spec], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
