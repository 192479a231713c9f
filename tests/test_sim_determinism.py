"""Same seed -> byte-identical partitions; day-by-day continuation == one long run."""

from __future__ import annotations

import pytest
from sim_fixtures import START, tiny_config

from foundation.lake import Lake
from foundation.schemas import RAW_SCHEMAS, TRUTH_SCHEMAS
from simulator.run import StateMismatch, saved_states, simulate

DAYS = 4


def partition_bytes(lake: Lake) -> dict[str, bytes]:
    """Every committed raw/truth partition's Parquet bytes, by `zone/table/ds`."""
    out = {}
    for zone in ("raw", "truth"):
        for table in lake.list_tables(zone):
            for ds in lake.list_partitions(zone, table):
                files = lake.commit_info(zone, table, ds).files
                part = lake.partition_key(zone, table, ds)
                out[f"{zone}/{table}/{ds}"] = b"".join(lake.store.get_bytes(f"{part}/{f}") for f in files)
    return out


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> dict[str, bytes]:
    lake = Lake.open(str(tmp_path_factory.mktemp("long")))
    simulate(lake, tiny_config(), seed=5, start=START, days=DAYS, progress=False)
    return partition_bytes(lake)


def test_same_seed_gives_byte_identical_partitions(long_run, tmp_path):
    lake = Lake.open(str(tmp_path))
    simulate(lake, tiny_config(), seed=5, start=START, days=DAYS, progress=False)
    again = partition_bytes(lake)
    assert len(again) == (len(RAW_SCHEMAS) + len(TRUTH_SCHEMAS)) * DAYS
    assert again == long_run


def test_other_seed_differs(long_run, tmp_path):
    lake = Lake.open(str(tmp_path))
    simulate(lake, tiny_config(), seed=6, start=START, days=DAYS, progress=False)
    other = partition_bytes(lake)
    assert other.keys() == long_run.keys()
    assert sum(other[k] != long_run[k] for k in other) >= 9 * DAYS


def test_day_by_day_continuation_equals_one_long_run(long_run, tmp_path):
    lake = Lake.open(str(tmp_path))
    first = simulate(lake, tiny_config(), seed=5, start=START, days=1, progress=False)
    assert (first.start, first.end) == (START, START)
    for _ in range(DAYS - 1):
        step = simulate(lake, tiny_config(), seed=5, days=1, progress=False)   # start: the day after the state
        assert step.start == step.end and step.days == 1
    assert saved_states(lake)[-1] == "2026-01-04"
    assert partition_bytes(lake) == long_run


def test_continuation_refuses_another_seed_or_a_gap(tmp_path):
    lake = Lake.open(str(tmp_path))
    simulate(lake, tiny_config(), seed=5, start=START, days=1, progress=False)
    with pytest.raises(StateMismatch, match="seed"):
        simulate(lake, tiny_config(), seed=6, days=1, progress=False)
    with pytest.raises(StateMismatch, match="no state"):
        simulate(lake, tiny_config(), seed=5, start="2026-01-05", days=1, progress=False)
    with pytest.raises(StateMismatch):
        simulate(lake, tiny_config(n_users=301), seed=5, days=1, progress=False)
    # the config's seed is only the default: a config naming the world's seed continues it
    cont = simulate(lake, tiny_config().model_copy(update={"seed": 5}), days=1, progress=False)
    assert cont.start == "2026-01-02"
    with pytest.raises(StateMismatch, match="seed"):
        simulate(lake, tiny_config().model_copy(update={"seed": 6}), days=1, progress=False)
