"""Bounded load test of the retrieval service (`growthgr serve`) on loopback: latency, throughput, cache hit
rate and errors at several request rates, the sustainable rate, and a release switch under load.

World: `tests/serve_fixtures.build_world` with the `demo` MultiGR / DR sizes (20k registered users,
40k catalog items, a 500-item new-item pool; release A = MultiGR only, release B = MultiGR + DR over
another pool), built once in a temporary directory. Each run starts a fresh server process
(`growthgr --profile demo serve --no-access-log`, in-process LRU cache, torch / FAISS threads as given) on 127.0.0.1
serving A, then, per rate, sends a fixed number of GET /retrieve requests (rate x `--seconds`) on an
open-loop schedule (evenly spaced send times, each request its own task; 10 s client timeout), so every
phase stops by itself. Requests: a random registered user with a random pool query, except that
`--repeat` of them are drawn from 200 hot (user, query) pairs (cache hits after their first time); k=20.
After the rates, one more phase at `--switch-rate` moves CURRENT to B mid-way. The client runs on the
same 2 cores as the server (it takes CPU from it: the figures are a lower bound).

Latency percentiles are over the answered requests (200); `shed` counts the 503s of load shedding
(`serve.max_queue`, `serve.request_timeout_ms`: the settings are recorded), `errors` any other failure.
Sustainable rate: the highest rate whose answered throughput is >= 95% of the offered rate, with no
error, nothing shed and p99 <= `--slo-ms`. Figures: median over `--runs` runs (per rate, each figure
separately).

    .venv/bin/python benchmarks/serve_load.py --runs 3          # -> benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_fixtures import World, build_world, free_port  # noqa: E402

from foundation.config import load_settings  # noqa: E402
from growthgr.serve import summary  # noqa: E402

HOT_PAIRS = 200


def start_server(world: World, port: int, torch_threads: int, faiss_threads: int) -> subprocess.Popen:
    """`growthgr --profile demo serve` over the world's lake and releases; returns once /healthz answers."""
    env = {**os.environ, "GROWTHGR_LAKE_ROOT": world.settings.lake_root,
           "GROWTHGR_RELEASES_ROOT": world.settings.releases_root,
           "GROWTHGR_SERVE__TORCH_THREADS": str(torch_threads), "GROWTHGR_SERVE__FAISS_THREADS": str(faiss_threads)}
    proc = subprocess.Popen([sys.executable, "-c", "from growthgr.cli import main; main()", "--profile", "demo",
                             "--log-level", "WARNING", "serve", "--port", str(port), "--no-access-log"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the server did not answer /healthz within 180 s")


def request_params(world: World, n: int, repeat: float, rng: np.random.Generator) -> list[dict]:
    users = np.arange(world.cold_user + 1)
    hot = [(int(rng.choice(users)), int(rng.integers(len(world.queries)))) for _ in range(HOT_PAIRS)]
    out = []
    for _ in range(n):
        user, q = hot[rng.integers(HOT_PAIRS)] if rng.random() < repeat else \
            (int(rng.choice(users)), int(rng.integers(len(world.queries))))
        out.append({"user_id": user, "query": world.queries[q], "k": 20})
    return out


async def phase(url: str, params: list[dict], rate: float, at: dict[float, object] | None = None) -> dict:
    """Send `params` at `rate` per second (open loop); latency, throughput, errors, releases answering.
    `at`: {fraction of the phase: coroutine function} run when that fraction of requests was sent."""
    results: list[tuple[float, int, str | None, float]] = []   # (latency s, status, release, done at)
    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000)) as client:
        before = summary((await client.get("/metrics")).text)

        async def one(p: dict) -> None:
            t0 = time.perf_counter()
            try:
                r = await client.get("/retrieve", params=p)
                release = r.json().get("release_id") if r.status_code == 200 else None
                results.append((time.perf_counter() - t0, r.status_code, release, time.perf_counter()))
            except httpx.HTTPError:
                results.append((time.perf_counter() - t0, 0, None, time.perf_counter()))

        start, tasks, extra = time.perf_counter(), [], []
        triggers = sorted((int(f * len(params)), fn) for f, fn in (at or {}).items())
        for i, p in enumerate(params):
            while triggers and triggers[0][0] == i:
                extra.append(asyncio.create_task(triggers.pop(0)[1]()))
            await asyncio.sleep(max(start + i / rate - time.perf_counter(), 0))
            tasks.append(asyncio.create_task(one(p)))
        await asyncio.gather(*tasks, *extra)
        elapsed = time.perf_counter() - start
        after = summary((await client.get("/metrics")).text)
    served = np.array([r[0] for r in results if r[1] == 200] or [np.nan]) * 1000
    shed = [r[0] for r in results if r[1] == 503]
    hits = after["cache_hits"] - before["cache_hits"]
    lookups = hits + after["cache_misses"] - before["cache_misses"]
    return {"offered_rps": rate, "requests": len(params), "elapsed_s": round(elapsed, 2),
            "throughput_rps": round(int(np.isfinite(served).sum()) / elapsed, 1),
            **{f"p{q}_ms": round(float(np.percentile(served, q)), 1) for q in (50, 95, 99)},
            "shed": len(shed), "shed_p99_ms": round(float(np.percentile(shed, 99)) * 1000, 1) if shed else None,
            "errors": sum(r[1] not in (200, 503) for r in results), "cache_hit_rate": round(hits / max(lookups, 1), 3),
            "mean_batch": round((after["batched_requests"] - before["batched_requests"])
                                / max(after["batches"] - before["batches"], 1), 2),
            "releases": {rel: sum(r[2] == rel for r in results) for rel in ("A", "B")},
            "_results": results}


async def switch_phase(url: str, world: World, params: list[dict], rate: float) -> dict:
    """A phase at `rate` during which CURRENT moves from A to B (at 30% of the requests)."""
    moved: dict[str, float] = {}

    async def promote() -> None:
        await asyncio.to_thread(world.store.set_current, "B")
        moved["at"] = time.perf_counter()

    out = await phase(url, params, rate, {0.3: promote})
    first_b = min((r[3] for r in out["_results"] if r[2] == "B"), default=None)
    out["switch_s"] = round(first_b - moved["at"], 2) if first_b and "at" in moved else None
    return out


def one_run(world: World, args: argparse.Namespace, seed: int) -> dict:
    world.store.set_current("A")
    port = free_port()
    proc = start_server(world, port, args.torch_threads, args.faiss_threads)
    url, rng = f"http://127.0.0.1:{port}", np.random.default_rng(seed)
    try:
        rates = {}
        for rate in args.rates:
            out = asyncio.run(phase(url, request_params(world, int(rate * args.seconds), args.repeat, rng), rate))
            out.pop("_results")
            rates[str(rate)] = out
            print(f"run {seed} rate {rate}: {json.dumps(out)}", flush=True)
        params = request_params(world, int(args.switch_rate * args.seconds), args.repeat, rng)
        switch = asyncio.run(switch_phase(url, world, params, args.switch_rate))
        switch.pop("_results")
        print(f"run {seed} switch: {json.dumps(switch)}", flush=True)
        health = httpx.get(f"{url}/healthz").json()
        return {"rates": rates, "switch": switch, "serving_after_switch": health["release_id"],
                "reranker_after_switch": health["reranker"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def sustainable(rates: dict[str, dict], slo_ms: float) -> float | None:
    ok = [r["offered_rps"] for r in rates.values() if r["throughput_rps"] >= 0.95 * r["offered_rps"]
          and r["errors"] == 0 and r["shed"] == 0 and r["p99_ms"] <= slo_ms]
    return max(ok, default=None)


def median_of(runs: list[dict]) -> dict[str, dict]:
    """Per rate, the median of each numeric figure over the runs."""
    out = {}
    for rate in runs[0]["rates"]:
        rows = [r["rates"][rate] for r in runs]
        out[rate] = {k: statistics.median(row[k] for row in rows) for k, v in rows[0].items()
                     if isinstance(v, (int, float)) and all(row[k] is not None for row in rows)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rates", type=float, nargs="+", default=[10, 25, 50, 100, 200])
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each rate's phase")
    p.add_argument("--switch-rate", type=float, default=25.0)
    p.add_argument("--repeat", type=float, default=0.3, help="fraction of requests from the hot pairs")
    p.add_argument("--slo-ms", type=float, default=250.0)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--faiss-threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_load.json"))
    args = p.parse_args()
    serve_cfg = load_settings("demo").serve          # what the server process gets (GROWTHGR_SERVE__* apply)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        world = build_world(Path(tmp), profile="demo", n_users=20_000, n_items=40_000, pool_size=500, per_day=2_500,
                            epochs=1)
        print(f"world built in {time.perf_counter() - started:.0f} s", flush=True)
        runs = [one_run(world, args, seed) for seed in range(args.runs)]
    medians = median_of(runs)
    switches = [r["switch"] for r in runs]
    result = {
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count()},
        "threads": {"torch": args.torch_threads, "faiss": args.faiss_threads,
                    "note": "one batching worker thread runs the beam search with `torch` intra-op threads; "
                            "FAISS only at release load (vectors of the DR index)"},
        "world": {"profile": "demo", "registered_users": 20_000, "catalog_items": 40_000, "pool_items": 500,
                  "k": 20, "repeat_fraction": args.repeat, "seconds_per_rate": args.seconds},
        "serve": {k: getattr(serve_cfg, k) for k in ("max_in_flight", "max_queue", "request_timeout_ms", "max_batch",
                                                             "batch_wait_ms")},
        "median": medians,
        "sustainable_rps": sustainable(medians, args.slo_ms),
        "sustainable_rule": f"highest rate with throughput >= 95% of offered, 0 errors, p99 <= {args.slo_ms} ms",
        "switch": {"rate_rps": args.switch_rate,
                   "errors": [s["errors"] for s in switches], "requests": [s["requests"] for s in switches],
                   "answered_by": [s["releases"] for s in switches],
                   "switch_s": [s["switch_s"] for s in switches],
                   "p99_ms_median": statistics.median(s["p99_ms"] for s in switches)},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median", "sustainable_rps", "switch")}, indent=2))


if __name__ == "__main__":
    main()
