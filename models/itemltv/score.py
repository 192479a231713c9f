"""Scoring items with a trained ItemLTV: the scores the new-item pool is ranked by.

    item_scores(trained, inputs)     base and context-free uplift of each item's pseudo-exposure
    listing_inputs(items)            new items as pseudo-exposures at the end of their listing day
    listing_scores(trained, items)   the base growth of each row of a raw items table

The daily pool (`models.itemltv.pipeline.score_candidates`) scores the items of their new-item
period with their point-in-time Feast item features; the closed-loop A/B test of the application scores
the day's new items from the raw items table with a release's frozen checkpoint.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.itemltv.data import Inputs, encode
from models.itemltv.predict import predict
from models.itemltv.train import Trained


@torch.no_grad()
def item_scores(trained: Trained, inputs: Inputs, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The model's towers on one pseudo-exposure per item (no user, no history: only the item
    tower and the context-free uplift of one click), encoded with the checkpoint's own
    preprocessing (`frame`: the already built numeric frame of `inputs`, if any).

    Columns: item_id, base (the base-growth tower), uplift, listing_date; in item-id order."""
    exposures = predict(trained, encode(inputs, trained.pre, frame)).exposures
    return pd.DataFrame({"item_id": exposures["item_id"].astype("int64"), "base": exposures["base"].astype(float),
                         "uplift": exposures["uplift"].astype(float),
                         "listing_date": exposures["listing_date"].to_numpy()}
                        ).sort_values("item_id", kind="stable").reset_index(drop=True)


def listing_inputs(items: pd.DataFrame) -> Inputs:
    """Raw items (item_id, listing_date, title, brand, category, price, ...) as one pseudo-exposure
    each at 23:00 of their listing day, with no user and no clicks.

    Departure: the daily pool reads the same items through Feast (point-in-time item features);
    the base tower only uses listing-time features (title words, brand, category, price), so the
    raw items table gives the same inputs (missing feature columns are filled with the training
    mean, as at scoring time)."""
    listing = pd.to_datetime(items["listing_date"], utc=True)
    samples = pd.DataFrame({"user_id": -1, "item_id": items["item_id"].to_numpy(np.int64),
                            "ts": (listing + pd.Timedelta(hours=23)).astype("datetime64[us, UTC]"),
                            "treatment": np.float32(0.0), "listing_date": listing.dt.date})
    users = pd.DataFrame({"user_id": [-1], "age_band": [None]})
    clicks = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="int64"),
                           "ts": pd.Series(dtype="datetime64[us, UTC]")})
    return Inputs(samples, items, users, clicks)


def listing_scores(trained: Trained, items: pd.DataFrame) -> np.ndarray:
    """The base growth of each row of `items` (a raw items table) at listing time: float64 (N,)."""
    by_item = item_scores(trained, listing_inputs(items)).set_index("item_id")["base"]
    return by_item.reindex(items["item_id"].to_numpy()).to_numpy(np.float64)


__all__ = ["item_scores", "listing_inputs", "listing_scores"]
