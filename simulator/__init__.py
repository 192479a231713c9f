"""The simulated search platform: raw logs with causal ground truth (issue 3, DESIGN.md section 5).

Public API:
  * `simulator.run.simulate(lake, settings.simulator, seed=, start=, days=, inject=, inject_day=,
    channels=)` -> `RunSummary`: write raw/<table>/ds=D and truth/<table>/ds=D partitions and the
    end-of-day state (continues the lake when the state of start-1 exists);
  * `simulator.engine.simulate_day(world, day, channels, intervention=None)`: one day in memory;
  * `simulator.channels`: `RetrievalChannel` protocol, `ChannelSlot` (slot, share, A/B buckets),
    the platform's new-item channels (`NewItemChannel`, `ExploreChannel`, `SupportChannel`; wired
    from the config by `simulator.run.default_channels`);
  * `simulator.faults.FAULTS`: the injectable defects and exactly what each does;
  * `simulator.stats`: gini, new-item shares, uplift by age, `mechanism_report(lake)`,
    `experiment_report(lake)` (channels and the traffic-support experiment);
  * `simulator.truth.click_truth(lake, cfg, ds)`: evaluation only: the click probability and the
    growth a click would cause for any (request, item, slot) of a simulated day.
The structural equations and the definition of the ground truth are in `engine`'s docstring.
"""
