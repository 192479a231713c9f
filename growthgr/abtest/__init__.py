"""Closed-loop A/B tests of a GrowthGR release inside the simulated platform (issue 21).

    world state of the lake (a copy) --N days--> arm logs --> per-design estimates
                                                          --> true global effect
                                                          --> reports/abtest/ds=<ds>/<design>.json|.md

Modules, bottom to top:
  assignment   the designs (user, item, two-sided), their buckets and the pairs they treat
  channel      the GrowthGR channel (retrieve -> assigned pairs -> light re-rank) and its retrievers:
               the release's ItemLTV pool, refreshed daily with the release's frozen ItemLTV
               (`models.itemltv.score`), or its MultiGR through the retrieval service
  arms         one arm: a private copy of the world continued with the arm's channels (common
               random numbers across arms), its logs aggregated
  bootstrap    relative effects with percentile-bootstrap intervals over a panel's units
  estimators   the designs' panels and estimates, TI@30, Gini, trajectories, the true global effect
  experiment   the three arms of a test and the report's content (`run_experiment`)
  closed_loop  `--retrain`: the daily pipeline (the registry `growthgr.steps`) after each test day
  render       the report: JSON, Markdown, the trajectory plot, the terminal summary

This module re-exports what `growthgr abtest` (`growthgr.cli.abtest`) uses.
"""

from growthgr.abtest.assignment import DESIGNS
from growthgr.abtest.channel import release_retriever
from growthgr.abtest.closed_loop import closed_loop_factory, prepare_workdir
from growthgr.abtest.experiment import Experiment, run_experiment, start_state
from growthgr.abtest.render import summary_lines, write_report

__all__ = ["DESIGNS", "Experiment", "closed_loop_factory", "prepare_workdir", "release_retriever", "run_experiment",
           "start_state", "summary_lines", "write_report"]
