"""Label sets of the MultiGR offline evaluation (DESIGN.md section 7), per test request.

- `search`, `all-net`: see `platform.relevant_sets`;
- `long-term`: the clicked items whose ItemLTV uplift (`curated/item_uplift` as of the last
  test day) is above the mean uplift of that table (`mopo.long_term_items`): the label MoPO's
  long-term reward is built from;
- `long-term-true`: the clicked items whose simulator true uplift of that click
  (`truth/click_effects`) is above the mean true uplift of the test days' clicks.

Evaluation only: this is the one MultiGR module that reads the simulator's truth
(tests/test_no_latents.py allows it); training never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from foundation.catalog import RAW, TRUTH
from foundation.lake import Lake
from models.multigr.mopo import long_term_items
from models.multigr.platform import SidLookup, relevant_sets

LABEL_NAMES = ("search", "all-net", "long-term", "long-term-true")


def read_click_effects(lake: Lake, days: Sequence[date]) -> pd.DataFrame:
    """The clicked rows of `truth/click_effects` of `days`: request_id, item_id, true_uplift."""
    table = lake.read_range(*TRUTH["click_effects"], days[0], days[-1],
                            ["request_id", "item_id", "clicked", "true_uplift"]).to_pandas()
    return table[table["clicked"]].drop(columns="clicked").reset_index(drop=True)


def clicked_in(samples: pd.DataFrame, lookup: SidLookup, items: np.ndarray) -> list[np.ndarray]:
    """Per request: its clicked items that are in `items` (sorted ids) and have a SID."""
    return [lookup.known(np.intersect1d(np.asarray(c, np.int64), items)) for c in samples["click_ids"]]


def true_long_term(samples: pd.DataFrame, lookup: SidLookup, effects: pd.DataFrame) -> list[np.ndarray]:
    """Per request: its clicked items with a SID whose true uplift is above the mean of `effects`."""
    high = effects[effects["true_uplift"] > effects["true_uplift"].mean()]
    pairs = set(zip(high["request_id"].tolist(), high["item_id"].tolist(), strict=True))
    return [lookup.known(np.array([i for i in map(int, c) if (int(r), i) in pairs], np.int64))
            for r, c in zip(samples["request_id"], samples["click_ids"], strict=True)]


def channel_counts(lake: Lake, days: Sequence[date], samples: pd.DataFrame,
                   relevant: dict[str, list[np.ndarray]]) -> dict[str, dict[str, int]]:
    """Per label set: how many of its (request, item) pairs each retrieval channel of `raw/rank_candidates`
    placed (`main`, the organic ranking; `new_item`, `support`, `explore`: the simulator's new-item
    channels, `foundation.schemas.CHANNELS`; `none` when the item was no rank candidate of the request,
    e.g. a site order)."""
    cand = lake.read_range(*RAW["rank_candidates"], days[0], days[-1], ["request_id", "item_id", "channel"]).to_pandas()
    keys = zip(cand["request_id"].tolist(), cand["item_id"].tolist(), strict=True)
    channel = dict(zip(keys, cand["channel"].tolist(), strict=True))
    out = {}
    for name, rel in relevant.items():
        found = pd.Series([channel.get((int(r), int(i)), "none")
                           for r, items in zip(samples["request_id"], rel, strict=True) for i in items], dtype=object)
        out[name] = {str(k): int(v) for k, v in found.value_counts().sort_index().items()}
    return out


def label_sets(samples: pd.DataFrame, lookup: SidLookup, item_uplift: pd.DataFrame | None,
               effects: pd.DataFrame) -> dict[str, list[np.ndarray]]:
    """Every label set of `LABEL_NAMES`, per request of `samples`."""
    return {**relevant_sets(samples, lookup),
            "long-term": clicked_in(samples, lookup, long_term_items(item_uplift)),
            "long-term-true": true_long_term(samples, lookup, effects)}
