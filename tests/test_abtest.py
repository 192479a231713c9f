"""Closed-loop A/B tests in the simulated platform (`growthgr.abtest`, `growthgr abtest`), on the tiny world."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from growthgr.abtest import (
    CHANNEL,
    CONTROL,
    MIN_TI30_DAYS,
    TREATED,
    Assignment,
    Experiment,
    PoolRetriever,
    Population,
    category_table,
    channel_slots,
    design_assignment,
    pick,
    run_experiment,
    start_state,
    ti30_block,
)
from growthgr.cli import app
from growthgr.core.calendar import NEW_ITEM_DAYS
from growthgr.core.config import load_settings
from growthgr.core.lake import Lake
from growthgr.core.releases import ReleaseStore
from growthgr.simulator.engine import simulate_day
from growthgr.simulator.run import default_channels
from growthgr.simulator.world import World, from_bytes

CFG = load_settings("tiny", env={}).abtest
DAYS = 4


@pytest.fixture(scope="module")
def start(tiny_world) -> tuple[str, bytes]:
    """(ds, bytes) of the tiny world's last state (read only)."""
    return start_state(Lake.open(str(tiny_world)))


@pytest.fixture(scope="module")
def oracle(start) -> tuple[np.ndarray, np.ndarray]:
    """(item_id, log1p(base demand)) of every item that exists during the test: the 'best new item'
    oracle (arrivals do not depend on the channel, so one channel-free run knows them all)."""
    w = from_bytes(start[1])
    for day in range(w.last_day + 1, w.last_day + 1 + DAYS):
        simulate_day(w, day, default_channels(w.config))
    return w.items["item_id"].copy(), np.log1p(w.items["base_demand"])


def oracle_retriever(oracle) -> PoolRetriever:
    return PoolRetriever(oracle[0], oracle[1], pool_size=10_000, k=CFG.candidates)


def run_days(world: World, days: int, slots) -> list[dict]:
    channels = [*default_channels(world.config), *slots]
    return [simulate_day(world, day, channels).raw for day in range(world.last_day + 1, world.last_day + 1 + days)]


# -- buckets ----------------------------------------------------------------------------------------

def test_designs_are_exclusive_and_stable():
    ids = np.arange(1, 5_001, dtype=np.int64)
    user, item, two = (design_assignment(d, CFG) for d in ("user", "item", "two-sided"))
    # stable: the same ids fall in the same arms on every call, and about treated_share of them
    assert np.array_equal(user.treated_users(ids), design_assignment("user", CFG).treated_users(ids.copy()))
    assert abs(user.treated_users(ids).mean() - CFG.treated_share) < 0.05
    assert user.treated_items(ids).all()                          # user design: every item
    users, items = ids[:200], ids[None, :300].repeat(200, 0)
    # item design: a treated item is served only to the treated (coupled) users, a control item never
    served = item.pairs(users, items)
    assert not served[:, ~item.treated_items(ids[:300])].any()
    assert not served[~item.treated_users(users)].any()
    # two-sided: treated exactly when both sides are treated
    assert np.array_equal(two.pairs(users, items),
                          two.treated_users(users)[:, None] & two.treated_items(ids[:300])[None, :])
    # coupling groups: each item bucket reaches exactly one group of user buckets
    grouped = Assignment(CFG.n_buckets, item.user_buckets, item.item_buckets, groups=len(item.item_buckets))
    reach = grouped.pairs(users, items)
    for j in np.flatnonzero(reach.any(0)):
        assert len(np.unique(grouped.treated_users(users[reach[:, j]]))) == 1
    assert reach.sum() < served.sum()
    assert not design_assignment(CONTROL, CFG).pairs(users, items).any()
    assert design_assignment(TREATED, CFG).pairs(users, items).all()


def test_item_design_logs_one_policy_per_item(start, oracle):
    """In the simulated logs: channel items are treated items, placed only for treated users."""
    a = design_assignment("item", CFG)
    raw = run_days(from_bytes(start[1]), 2, channel_slots(CFG, oracle_retriever(oracle), a))
    cand = pd.concat([r["rank_candidates"].to_pandas() for r in raw])
    req = pd.concat([r["search_requests"].to_pandas() for r in raw])[["request_id", "user_id"]]
    placed = cand[cand["channel"] == CHANNEL].merge(req, on="request_id")
    assert len(placed) > 20
    assert a.treated_items(placed["item_id"].to_numpy()).all()
    assert a.treated_users(placed["user_id"].to_numpy()).all()


# -- common random numbers --------------------------------------------------------------------------

def test_paired_arms_identical_when_channel_off(start, oracle):
    """Control arm vs an arm whose channel has nothing to serve: identical logs, byte for byte; a
    serving arm gets the same requests (paired) and different slates."""
    off = run_days(from_bytes(start[1]), 3, channel_slots(CFG, oracle_retriever(oracle), design_assignment(CONTROL, CFG)))
    empty = PoolRetriever(np.zeros(0, np.int64), np.zeros(0), pool_size=10, k=4)
    idle = run_days(from_bytes(start[1]), 3, channel_slots(CFG, empty, design_assignment(TREATED, CFG)))
    on = run_days(from_bytes(start[1]), 3, channel_slots(CFG, oracle_retriever(oracle), design_assignment(TREATED, CFG)))
    for a, b, c in zip(off, idle, on, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].equals(b[name]), name
        assert a["search_requests"].equals(c["search_requests"])
        assert not a["rank_candidates"].equals(c["rank_candidates"])


# -- the experiment ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def user_result(start, oracle) -> dict:
    exp = Experiment(start[1], "user", DAYS, CFG, lambda: oracle_retriever(oracle), release_id="oracle")
    return run_experiment(exp, progress=False)


def test_best_new_item_channel_raises_new_item_exposures(user_result):
    for block in (user_result["estimate"], user_result["global"]):
        pvr = block["pvr"]
        assert pvr["treated"] > pvr["control"] and pvr["rel_pct"] > 0 and pvr["ci95_pct"][0] > 0
    served = user_result["served"]
    assert served[TREATED]["placements"] > served["user"]["placements"] > served[CONTROL]["placements"] == 0
    assert user_result["bias"]["pvr"]["bias_pp"] == pytest.approx(
        user_result["estimate"]["pvr"]["rel_pct"] - user_result["global"]["pvr"]["rel_pct"])


def test_bootstrap_intervals_cover_the_point(user_result):
    checked = 0
    for block in (user_result["estimate"], user_result["global"]):
        for e in [block[k] for k in ("new_item_gmv", "search_gmv", "pvr")] + [
                v for c in block["category"].values() for v in c.values()]:
            lo, hi = e["ci95_pct"]
            if np.isfinite(e["rel_pct"]) and np.isfinite(lo):
                assert lo <= e["rel_pct"] <= hi
                checked += 1
    assert checked >= 6


def test_ti30_needs_37_days():
    """TI@30 of the launch cohort is unavailable (with the reason) below 37 days; an item cohort
    that completes days 30..36 inside the test is estimated."""
    start, end = 100, 100 + MIN_TI30_DAYS - 1
    listing = np.array([start - 10, start - 30, start, start + 1, start])
    pop = Population(np.arange(3), np.arange(1, 6), listing, np.zeros(5, np.int64), start, end)
    values, arm = np.array([1.0, 9.0, 4.0, 2.0, 1.0]), np.array([True, True, True, False, False])
    full = ti30_block(values, values, arm, ~arm, pop, CFG, MIN_TI30_DAYS)
    assert full["launched_during_test"]["available"] and full["launched_during_test"]["n_items"] == 2
    assert full["launched_during_test"]["rel_pct"] == pytest.approx(300.0)      # 4 vs 1
    assert full["new_at_start"]["n_items"] == 1                                  # listed start-10 (start-30 is not new)
    short = ti30_block(values, values, arm, ~arm, pop, CFG, MIN_TI30_DAYS - 1)
    assert not short["launched_during_test"]["available"] and "37" in short["launched_during_test"]["reason"]


def test_pool_ranking_helpers():
    rows, score = category_table(np.array([5, 6, 7, 8]), np.array([0.1, 0.9, 0.5, 0.3]), np.array([1, 1, 1, 0]), k=2,
                                 n_categories=3)
    assert rows.tolist() == [[8, -1], [6, 7], [-1, -1]] and score[1].tolist() == [0.9, 0.5]
    valid = rows >= 0
    assert pick(rows, np.nan_to_num(score, neginf=0.0), valid, 0).tolist() == [8, 6, -1]
    assert pick(rows, np.nan_to_num(score, neginf=0.0), valid, 1).tolist() == [-1, 7, -1]


# -- the command: reports only, the source lake untouched ---------------------------------------------

def tree_hashes(root: Path, zones: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for z in zones for p in sorted((root / z).rglob("*")) if p.is_file()}


def test_cli_writes_only_reports(tmp_path, copy_world, start):
    lake_root = copy_world(tmp_path / "lake")
    w = from_bytes(start[1])
    new = np.flatnonzero(w.last_day - w.items["listing_day"] < NEW_ITEM_DAYS)
    pool = pd.DataFrame({"ds": start[0], "item_id": w.items["item_id"][new], "score": np.log1p(w.items["price"][new]),
                         "rank": np.arange(1, len(new) + 1, dtype=np.int32)})
    buf = io.BytesIO()
    pool.to_parquet(buf)
    ReleaseStore.open(str(tmp_path / "releases")).publish(f"ds={start[0]}-test", {"pool.parquet": buf.getvalue()},
                                                          {"ds": start[0]})
    before = tree_hashes(lake_root, ("raw", "truth", "sim_state"))
    env = {"GROWTHGR_LAKE_ROOT": str(lake_root), "GROWTHGR_RELEASES_ROOT": str(tmp_path / "releases")}
    out = CliRunner().invoke(app, ["--profile", "tiny", "abtest", "--days", "2", "--design", "item", "--json"], env=env)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{"):])
    assert result["design"] == "item" and result["days"] == 2
    assert not result["estimate"]["ti30"]["launched_during_test"]["available"]
    assert tree_hashes(lake_root, ("raw", "truth", "sim_state")) == before
    written = sorted(str(p.relative_to(lake_root)) for p in (lake_root / "reports").rglob("*") if p.is_file())
    assert written == [f"reports/abtest/ds={start[0]}/item.json", f"reports/abtest/ds={start[0]}/item.md"]
    assert "true global effect" in (lake_root / written[1]).read_text()
    bad = CliRunner().invoke(app, ["--profile", "tiny", "abtest", "--design", "both"], env=env)
    assert bad.exit_code == 2 and "--design" in bad.output
