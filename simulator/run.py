"""Run the simulator over days and write the lake: raw + truth partitions, end-of-day state.

Continuation: the state at the end of each day is stored at
`sim_state/state/ds=D/state.npz` (the last `state_keep_days` are kept). A run
starting on day S continues from the state of S-1 when it exists, so
`--days 1` after a 60-day run produces day 61 only, and running day by day
writes exactly the partitions of one long run. A run whose start has no
previous state begins a fresh world (the first day then also carries the
initial catalog and users). Seed and config must match the stored state.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa
from tqdm import tqdm

from foundation.lake import Lake, parse_ds
from foundation.sections.simulator import SimulatorConfig
from simulator import faults as fault_lib
from simulator.channels import ChannelSlot, ExploreChannel, NewItemChannel, SupportChannel
from simulator.engine import simulate_day
from simulator.world import EPOCH, World, create_world, day_ds, day_index, day_rng, from_bytes, to_bytes

log = logging.getLogger(__name__)

STATE_PREFIX = "sim_state/state"
_STATE_RE = re.compile(r"ds=(\d{4}-\d{2}-\d{2})/state\.npz$")


class StateMismatch(ValueError):
    """The stored state was produced with another seed or config, or there is a gap before the start."""


@dataclass
class RunSummary:
    start: str
    end: str
    days: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)     # "zone/table" -> rows written

    def line(self) -> str:
        rows = ", ".join(f"{k}={v:,}" for k, v in sorted(self.rows.items()))
        return f"simulated {self.days} day(s) {self.start}..{self.end} in {self.seconds:.1f}s: {rows}"


def state_key(ds: str) -> str:
    return f"{STATE_PREFIX}/ds={ds}/state.npz"


def saved_states(lake: Lake) -> list[str]:
    return sorted(m.group(1) for k in lake.store.list(STATE_PREFIX + "/") if (m := _STATE_RE.search(k)))


def load_world(lake: Lake, ds: str) -> World:
    return from_bytes(lake.store.get_bytes(state_key(ds)))


def save_world(lake: Lake, w: World, keep: int) -> None:
    lake.store.put_bytes(state_key(day_ds(w.last_day)), to_bytes(w))
    for old in saved_states(lake)[:-keep]:
        lake.store.delete(state_key(old))


def default_channels(cfg: SimulatorConfig) -> list[ChannelSlot]:
    """The platform's own channels: traffic support in `support_slot`; in `new_item_slot` the
    exploration bucket (the first `explore_share` of request uniforms) and the new-item channel
    (the next `new_item_share`)."""
    out = []
    if cfg.support_share > 0 and cfg.support_impressions > 0:
        seen = cfg.scroll_continue ** cfg.support_slot if cfg.support_slot < cfg.n_exposed else 0.0
        out.append(ChannelSlot(SupportChannel(max(seen, 1e-3), cfg.new_item_temperature, cfg.new_item_history_weight),
                               slot=cfg.support_slot))
    if cfg.explore_share > 0:
        out.append(ChannelSlot(ExploreChannel(), slot=cfg.new_item_slot, share=cfg.explore_share))
    if cfg.new_item_share > 0:
        out.append(ChannelSlot(NewItemChannel(cfg.new_item_temperature, cfg.new_item_history_weight),
                               slot=cfg.new_item_slot, share=cfg.new_item_share, share_from=cfg.explore_share))
    return out


def open_world(lake: Lake, cfg: SimulatorConfig, seed: int, start: str) -> World:
    """The world at the end of start-1: the stored state, or a fresh world."""
    prev = day_ds(day_index(start) - 1)
    states = saved_states(lake)
    if prev in states:
        w = load_world(lake, prev)
        # the config's `seed` is only the default of `seed`: the world's own seed is compared on its own
        if w.seed != seed or w.config.model_copy(update={"seed": seed}) != cfg.model_copy(update={"seed": seed}):
            raise StateMismatch(f"state of {prev} was simulated with seed={w.seed} and another config; "
                                f"use the same seed/profile or a new lake root")
        return w
    earlier = [s for s in states if s < start]
    if earlier:
        raise StateMismatch(f"no state for {prev}; the lake's last state before {start} is {earlier[-1]}")
    log.info("fresh world starting %s (seed %d)", start, seed)
    return create_world(cfg, seed, day_index(start))


def next_start(lake: Lake, cfg: SimulatorConfig) -> date:
    """The day after the last stored state, or the configured start date."""
    states = saved_states(lake)
    return EPOCH + timedelta(days=day_index(states[-1]) + 1) if states else parse_ds(cfg.start_date)


def simulate(
    lake: Lake,
    cfg: SimulatorConfig,
    *,
    seed: int | None = None,
    start: date | None = None,
    days: int | None = None,
    inject: Sequence[str] = (),
    inject_day: date | None = None,
    channels: Sequence[ChannelSlot] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Simulate `days` days from `start` (default: continue the lake), writing raw, truth and state."""
    seed = cfg.seed if seed is None else seed
    first = day_index(start or next_start(lake, cfg))
    start = day_ds(first)
    days = cfg.days if days is None else days
    inject = fault_lib.check(inject)
    inject_at = day_index(inject_day) if inject_day else first
    if inject and not first <= inject_at < first + days:
        raise ValueError(f"--inject-day {day_ds(inject_at)} is not one of the simulated days ({start} + {days} days)")
    channels = default_channels(cfg) if channels is None else channels
    w = open_world(lake, cfg, seed, start)
    summary = RunSummary(start=start, end=start, days=days, seconds=0.0)
    t0 = time.perf_counter()
    for day in tqdm(range(first, first + days), desc="simulate", unit="day", disable=not progress):
        ds = day_ds(day)
        raw, truth = run_day(w, day, channels, inject if day == inject_at else ())
        for zone, tables in (("raw", raw), ("truth", truth)):
            for name, t in tables.items():
                lake.write_partition(zone, name, ds, t)
                summary.rows[f"{zone}/{name}"] = summary.rows.get(f"{zone}/{name}", 0) + t.num_rows
        save_world(lake, w, cfg.state_keep_days)
        summary.end = ds
    summary.seconds = time.perf_counter() - t0
    return summary


def run_day(w: World, day: int, channels: Sequence[ChannelSlot],
            inject: Sequence[str]) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """One day: simulate, add rows that arrived late from the previous day, inject faults."""
    out = simulate_day(w, day, channels)
    raw = dict(out.raw)
    for name, data in w.pending.items():
        raw[name] = pa.concat_tables([raw[name], fault_lib.from_ipc(data).cast(raw[name].schema)])
    w.pending = {}
    if inject:
        raw, w.pending = fault_lib.inject(raw, inject, day_rng(w.seed, day, 3), w.config.fault_fraction)
    return raw, out.truth
