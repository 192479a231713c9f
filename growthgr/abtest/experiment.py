"""One closed-loop A/B test: the design's arm and the two global arms, each on a private copy of
the world state at its start, then the design's estimates, the true global effect and their bias.

    world state of the lake (a copy) --N days--> arm logs --> per-design estimates
                                                          --> true global effect
                                                          --> the report's content (`analyse`)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from foundation.lake import Lake
from foundation.sections.abtest import ABTestConfig
from growthgr.abtest.arms import ArmLog, Population, population, run_arm
from growthgr.abtest.assignment import CONTROL, TREATED, design_assignment
from growthgr.abtest.channel import Retriever, channel_slots
from growthgr.abtest.estimators import (
    bias_table,
    design_estimates,
    design_trajectory,
    global_estimates,
    global_trajectory,
    in_scope,
)
from simulator.run import load_world, saved_states
from simulator.world import World, day_ds, from_bytes, to_bytes

NOTES = ("Intervals: 95% percentile bootstrap; user-side metrics resample users, item-side metrics items, "
         "two-sided cells users and items independently; the global effect resamples the same units in both "
         "worlds (paired). Gini values are points (no interval).")


@dataclass
class Experiment:
    """Inputs of one test: the world at its start, the release's pool, the design."""

    world_bytes: bytes                      # the serialised start state (every arm gets a copy)
    design: str
    days: int
    cfg: ABTestConfig
    make_retriever: Callable[[], Retriever]
    release_id: str = ""
    seed: int | None = None                 # None: the world's own seed (the lake's continuation)
    # --retrain: the retriever of each arm by arm name (`closed_loop_factory`); None: `make_retriever`
    make_arm_retriever: Callable[[str], Retriever] | None = None

    def world(self) -> World:
        w = from_bytes(self.world_bytes)
        if self.seed is not None:
            w.seed = self.seed
        return w


def run_arms(exp: Experiment, progress: bool = True) -> tuple[dict[str, ArmLog], Population]:
    """The design's arm and the two global arms, each on a private copy of the start world."""
    from tqdm import tqdm

    arms = (exp.design, TREATED, CONTROL)
    bar = tqdm(total=exp.days * len(arms), desc="abtest", unit="day", disable=not progress)
    logs: dict[str, ArmLog] = {}
    pops: list[Population] = []
    for arm in arms:
        w = exp.world()
        start = w.last_day + 1
        bar.set_postfix_str(arm)
        retriever = exp.make_arm_retriever(arm) if exp.make_arm_retriever else exp.make_retriever()
        logs[arm] = run_arm(w, exp.days, channel_slots(exp.cfg, retriever, design_assignment(arm, exp.cfg)),
                            retriever, lambda: bar.update(1))
        logs[arm].retrain = getattr(retriever, "history", None)
        logs[arm].retriever = retriever.name
        pops.append(population(w, start))
    bar.close()
    return logs, pops[-1]



def analyse(exp: Experiment, logs: Mapping[str, ArmLog], pop: Population) -> dict:
    """The report's content: design estimates, the global truth, their bias, run facts."""
    est = design_estimates(exp.design, logs[exp.design], pop, exp.cfg, exp.days)
    truth = global_estimates(logs[TREATED], logs[CONTROL], pop, exp.cfg, exp.days)
    a = design_assignment(exp.design, exp.cfg)
    return {
        "design": exp.design, "release": exp.release_id, "days": exp.days,
        "start": day_ds(pop.start), "end": day_ds(pop.end),
        "seed": exp.seed, "config": exp.cfg.model_dump(mode="json"),
        "treated_users": float(a.treated_users(pop.user_id).mean()),
        "treated_new_items": float(a.treated_items(pop.item_id[in_scope(pop)]).mean()),
        "served": {arm: {"placements": lg.served, "requests": lg.requests, "retriever": lg.retriever}
                   for arm, lg in logs.items()},
        "estimate": est, "global": truth, "bias": bias_table(est, truth),
        "trajectory": {"days": [day_ds(d) for d in range(pop.start, pop.end + 1)],
                       "estimate": design_trajectory(exp.design, logs[exp.design], pop, exp.cfg),
                       "global": global_trajectory(logs[TREATED], logs[CONTROL], pop, exp.cfg)},
        "retrain": {arm: lg.retrain for arm, lg in logs.items() if lg.retrain is not None} or None,
        "notes": NOTES,
    }


def run_experiment(exp: Experiment, progress: bool = True) -> dict:
    logs, pop = run_arms(exp, progress)
    return analyse(exp, logs, pop)


def start_state(lake: Lake) -> tuple[str, bytes]:
    """(ds, serialised world) of the lake's last stored end-of-day state. Read only."""
    states = saved_states(lake)
    if not states:
        raise FileNotFoundError(f"no simulator state in {lake.store.uri}: simulate first")
    return states[-1], to_bytes(load_world(lake, states[-1]))
