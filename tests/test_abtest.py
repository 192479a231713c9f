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

from foundation.calendar import NEW_ITEM_DAYS
from foundation.config import load_settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from growthgr.abtest import Experiment, run_experiment, start_state, write_report
from growthgr.abtest.arms import Population
from growthgr.abtest.assignment import CONTROL, TREATED, Assignment, design_assignment
from growthgr.abtest.channel import CHANNEL, PoolRetriever, category_table, channel_slots, pick
from growthgr.abtest.estimators import MIN_TI30_DAYS, ti30_block
from growthgr.cli import app
from simulator.engine import simulate_day
from simulator.run import default_channels
from simulator.world import World, from_bytes

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


def test_trajectory_ends_at_the_final_estimate(user_result):
    """One cumulative point per test day for the design and the global truth; the last day's point and
    interval are the final estimate's (same units, denominators and bootstrap weights)."""
    traj = user_result["trajectory"]
    assert len(traj["days"]) == DAYS and traj["days"][-1] == user_result["end"]
    for block in ("estimate", "global"):
        for k in ("new_item_gmv", "search_gmv", "pvr"):
            t, final = traj[block][k], user_result[block][k]
            assert len(t["rel_pct"]) == len(t["lo"]) == len(t["hi"]) == DAYS
            assert t["rel_pct"][-1] == pytest.approx(final["rel_pct"], rel=1e-9, abs=1e-9)
            assert [t["lo"][-1], t["hi"][-1]] == pytest.approx(final["ci95_pct"], rel=1e-9, abs=1e-9)
    pvr = traj["global"]["pvr"]
    assert all(lo <= p <= hi for p, lo, hi in zip(pvr["rel_pct"], pvr["lo"], pvr["hi"], strict=True))
    assert len(set(pvr["rel_pct"])) > 1                     # cumulative: it moves from day to day


def test_trajectory_plot_and_table(user_result):
    from PIL import Image

    from growthgr.abtest.render import markdown, trajectory_png

    png = trajectory_png(user_result)
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size == (1300, 460)
    low, high = image.getextrema()
    assert high - low > 100
    text = markdown(user_result)
    assert "## Trajectory" in text and f"| {DAYS} | {user_result['end']} |" in text


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


def _pool_bytes(ds: str, item_id: np.ndarray, price: np.ndarray) -> bytes:
    pool = pd.DataFrame({"ds": ds, "item_id": item_id, "score": np.log1p(price),
                         "rank": np.arange(1, len(item_id) + 1, dtype=np.int32)})
    buf = io.BytesIO()
    pool.to_parquet(buf)
    return buf.getvalue()


def publish_start_release(root: Path, start) -> str:
    """A release of the start day whose pool is every item in its new-item period (score log1p(price))."""
    w = from_bytes(start[1])
    new = np.flatnonzero(w.last_day - w.items["listing_day"] < NEW_ITEM_DAYS)
    rid = f"ds={start[0]}-test"
    ReleaseStore.open(str(root)).publish(rid, {"pool.parquet": _pool_bytes(start[0], w.items["item_id"][new],
                                                                          w.items["price"][new])}, {"ds": start[0]})
    return rid


def test_cli_writes_only_reports(tmp_path, copy_world, start):
    lake_root = copy_world(tmp_path / "lake")
    publish_start_release(tmp_path / "releases", start)
    before = tree_hashes(lake_root, ("raw", "truth", "sim_state"))
    env = {"GROWTHGR_LAKE_ROOT": str(lake_root), "GROWTHGR_RELEASES_ROOT": str(tmp_path / "releases")}
    out = CliRunner().invoke(app, ["--profile", "tiny", "abtest", "--days", "2", "--design", "item", "--json"], env=env)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{"):])
    assert result["design"] == "item" and result["days"] == 2
    assert not result["estimate"]["ti30"]["launched_during_test"]["available"]
    assert tree_hashes(lake_root, ("raw", "truth", "sim_state")) == before
    written = sorted(str(p.relative_to(lake_root)) for p in (lake_root / "reports").rglob("*") if p.is_file())
    assert written == [f"reports/abtest/ds={start[0]}/item.json", f"reports/abtest/ds={start[0]}/item.md",
                       f"reports/abtest/ds={start[0]}/item_trajectory.png"]
    assert "true global effect" in (lake_root / written[1]).read_text()
    assert (lake_root / written[2]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["--profile", "tiny", "abtest", "--design", "both"], env=env)
    assert bad.exit_code == 2 and "--design" in bad.output


# -- the closed loop (--retrain) ----------------------------------------------------------------------

def fake_steps(fail_on: str) -> list:
    """Stand-ins for the daily pipeline (the real one runs Spark, dbt, Feast, training: minutes a day):
    a gate that refuses on `fail_on`, and a publish whose pool is the serving pool + the day's new items
    read from the arm's lake (so it only works if the day's logs were written there). Like the registry's
    steps they get `ds` as a `datetime.date`."""
    from foundation import catalog
    from growthgr.pipeline import GateFailed

    def gate_pool(s, ds):
        if f"{ds}" == fail_on:
            raise GateFailed(f"curated/new_item_pool ds={ds}: 1 expectation failed")
        return {"gate": "pool"}

    def publish(s, ds):
        store, lake = ReleaseStore.from_settings(s), Lake.from_settings(s)
        served = pd.read_parquet(io.BytesIO(store.read(store.current_id(), "pool.parquet")))
        items = lake.read_partition(*catalog.RAW["items"], ds).to_pandas()
        ids = np.concatenate([served["item_id"].to_numpy(), items["item_id"].to_numpy()])
        price = np.concatenate([np.expm1(served["score"].to_numpy()), items["price"].to_numpy()])
        release = store.publish(f"ds={ds}-loop", {"pool.parquet": _pool_bytes(f"{ds}", ids, price)},
                                {"ds": f"{ds}"})
        return {"release_id": release.release_id}

    return [("gate_pool", gate_pool), ("publish", publish)]


def test_closed_loop_serves_each_days_release_and_keeps_the_last_good_one(tmp_path, copy_world, start):
    """--retrain on 4 tiny days, the 2nd refused by a gate: day 1 publishes and day 2 serves its release;
    day 2 publishes nothing, so day 3 keeps serving day 1's; day 3 publishes and day 4 serves it; no
    pipeline after the last day. The arms' lakes and release stores are copies under the working
    directory; the sources are untouched."""
    from foundation import catalog
    from growthgr.abtest import closed_loop_factory, prepare_workdir
    from simulator.world import day_ds

    lake_root, releases = copy_world(tmp_path / "lake"), tmp_path / "releases"
    first = publish_start_release(releases, start)
    settings = load_settings("tiny", env={}).model_copy(update={"lake_root": str(lake_root),
                                                                "releases_root": str(releases)})
    before = tree_hashes(lake_root, ("raw", "truth", "sim_state", "reports")) | tree_hashes(releases, (".",))
    days = [day_ds(from_bytes(start[1]).last_day + d) for d in (1, 2, 3, 4)]
    work = prepare_workdir(tmp_path / "work")
    make = closed_loop_factory(settings, work, "current", steps=fake_steps(fail_on=days[1]), last_ds=days[3])
    exp = Experiment(start[1], "user", 4, CFG, lambda: make(CONTROL), release_id=first, make_arm_retriever=make)
    result = run_experiment(exp, progress=False)

    r1, r3 = f"ds={days[0]}-loop", f"ds={days[2]}-loop"
    assert set(result["retrain"]) == {"user", TREATED}                   # the control arm serves nothing
    for arm, log in result["retrain"].items():
        assert [e["ds"] for e in log] == days
        assert [e["served_release"] for e in log] == [first, r1, r1, r3]
        assert [e["published"] for e in log] == [True, False, True, False]
        assert log[1]["pipeline"]["failed_step"] == "gate_pool" and "expectation failed" in log[1]["pipeline"]["error"]
        assert log[3]["pipeline"]["skipped"] == "last test day" and not log[3]["pipeline"]["seconds"]
        assert [e["next_release"] for e in log] == [r1, r1, r3, r3]
        assert 0 < log[0]["next_pool_size"] < log[2]["next_pool_size"]          # the pool changed
        assert all(e["placements"] > 0 and e["placed_in_pool"] == 1.0 for e in log)   # served from that release
        arm_lake = Lake.open(str(work / arm / "lake"))
        assert all(arm_lake.exists(*catalog.RAW["exposures"], d) for d in days)   # the day's logs fed the loop
        timing = json.loads(arm_lake.store.get_bytes(catalog.pipeline_step_key(days[1], "gate_pool")))
        assert timing["status"] == "failed"
        assert ReleaseStore.open(str(work / arm / "releases")).current_id() == r3
    assert tree_hashes(lake_root, ("raw", "truth", "sim_state", "reports")) | tree_hashes(releases, (".",)) == before
    assert "## Closed loop" in markdown_of(result) and "FAILED at gate_pool" in markdown_of(result)
    keys = write_report(Lake.open(str(tmp_path / "out")), start[0], result)     # next to the plain A/B report
    assert [k.rsplit("/", 1)[1] for k in keys] == ["user_retrain.json", "user_retrain.md",
                                                   "user_retrain_trajectory.png"]


def test_closed_loop_runs_the_registrys_steps_in_dependency_order():
    """The closed loop runs what the daily DAG runs: the registry's steps (the DAG's tasks, one per
    step), each after the steps it depends on."""
    from growthgr import pipeline
    from growthgr.abtest.closed_loop import daily_steps
    from growthgr.steps import DAILY

    steps = daily_steps()
    order = [name for name, _ in steps]
    assert sorted(order) == sorted(s.name for s in DAILY) and order[0] == "gate_raw" and order[-1] == "publish"
    for s in DAILY:
        assert all(order.index(up) < order.index(s.name) for up in s.after), s.name
    resolved = dict(steps)
    assert resolved["itemltv"] is pipeline.itemltv and resolved["spark_jobs"] is pipeline.spark
    assert resolved["gate_pool"].__name__ == "gate_pool"
    assert order.index("pool") < order.index("multigr_train") < order.index("gate_multigr") < order.index("publish")


def markdown_of(result: dict) -> str:
    from growthgr.abtest.render import markdown

    return markdown(result)


def test_retrain_refuses_a_foreign_workdir(tmp_path):
    from growthgr.abtest import prepare_workdir

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        prepare_workdir(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").exists()
    work = prepare_workdir(tmp_path / "ab")
    (work / "x").write_text("from an earlier A/B")
    assert not (prepare_workdir(tmp_path / "ab") / "x").exists()


# -- the MultiGR channel (`abtest.channel: multigr`) ---------------------------------------------------

class StubService:
    """A retrieval service's surface (`growthgr.serve.Retriever`): known users, pool ids, retrieve."""

    def __init__(self, users, answers: dict[int, list[int]]):
        from types import SimpleNamespace

        self.context = SimpleNamespace(users=frozenset(users))
        self.pool = SimpleNamespace(ids=np.array(sorted({i for a in answers.values() for i in a}), np.int64))
        self.answers, self.calls = answers, 0

    def retrieve(self, queries):
        self.calls += 1
        return [[{"item_id": i, "score": -float(r), "sid": [0], "beam_score": -float(r)}
                 for r, i in enumerate(self.answers[q.user_id][:q.k])] for q in queries]


def test_multigr_retriever_maps_service_answers_and_falls_back_to_the_pool():
    from growthgr.abtest.channel import MultiGRRetriever
    from simulator.channels import CatalogView, RequestBatch

    catalog = CatalogView(item_id=np.array([10, 11, 12, 13, 14], np.int64), category=np.array([0, 0, 1, 1, 1], np.int32),
                          age_days=np.array([1, 2, 3, 40, 0], np.int32), pop=np.zeros(5), price=np.ones(5),
                          offset=np.zeros((5, 2), np.float32), noun=np.zeros(5, np.int32),
                          attrs=np.zeros((5, 3), np.int32), brand=np.zeros(5, np.int32),
                          support_due=np.zeros(5, np.int64))
    requests = RequestBatch(np.array([1, 2, 3]), np.array([7, 8, 9]), np.array([1, 1, 0], np.int32),
                            np.zeros((3, 2), np.float32), ["a", "b", "c"], query_noun=np.zeros(3, np.int32),
                            query_attr=np.full(3, -1, np.int32), query_brand=np.full(3, -1, np.int32),
                            history_attr=np.full((3, 3), -1, np.int32))
    # user 7: MultiGR's top 3 are 14, 13 (too old: dropped), 99 (not in the catalog: dropped); user 8: nothing
    # usable; user 9: unknown to the release -> the pool
    service = StubService({7, 8}, {7: [14, 13, 99, 12], 8: [99]})
    pool = PoolRetriever(np.array([10, 11, 12, 14]), np.array([0.1, 0.2, 0.3, 0.4]), pool_size=10, k=3)
    got = MultiGRRetriever(service, pool, k=3)
    cand = got.retrieve(requests, catalog)
    assert cand.item.tolist() == [[4, -1, -1], [4, 2, -1], [1, 0, -1]]       # catalog rows
    assert cand.score[0].tolist() == [0.0, -np.inf, -np.inf]                  # the service's scores
    assert cand.score[1, :2].tolist() == [0.4, 0.3]                           # user 8: pool fallback
    got.retrieve(requests, catalog)
    assert service.calls == 1                                                 # memoised for the day's slots
    assert set(got.item_id.tolist()) == {10, 11, 12, 13, 14, 99}
