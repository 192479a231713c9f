"""Shared simulated worlds for the simulator tests (no tests here).

`tiny_lake()` simulates the `tiny` profile once per test process (45 days, so
the cohorts listed on the first days have closed label windows) into a temp
directory; every test file reads it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import pandas as pd

from foundation.config import load_settings
from foundation.lake import Lake
from foundation.sections.simulator import SimulatorConfig
from simulator.run import load_world, saved_states, simulate

START = "2026-01-01"
SEED = 11


def tiny_config(**overrides) -> SimulatorConfig:
    return load_settings(profile="tiny", env={}, overrides={"simulator": overrides} if overrides else None).simulator


@functools.lru_cache(maxsize=1)
def tiny_lake() -> Lake:
    root = tempfile.mkdtemp(prefix="sim-tiny-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    lake = Lake.open(root)
    simulate(lake, tiny_config(), seed=SEED, start=START, progress=False)
    return lake


def read_all(table: str, zone: str = "raw") -> pd.DataFrame:
    lake = tiny_lake()
    parts = lake.list_partitions(zone, table)
    return lake.read_range(zone, table, parts[0], parts[-1]).to_pandas()


def final_world():
    lake = tiny_lake()
    return load_world(lake, saved_states(lake)[-1])
