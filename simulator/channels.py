"""Retrieval channels of the simulated search engine: the platform's own new-item channels and
plug-ins.

The engine retrieves organic candidates itself (relevance + popularity prior,
channel name "main", propensity 1: retrieval is deterministic given the state).
A channel proposes at most one extra item per request, which the engine places
in a fixed result slot (`ChannelSlot.slot`), shifting the organic results below
it down; a proposal already among the organic candidates is not placed twice.
This is how a published GrowthGR release can be served inside the simulator:
implement `RetrievalChannel` (e.g. beam search over the release's SID trie for
the request's user and query) and pass it in a `ChannelSlot`.

Propensities. A channel's `propose` returns the proposed rows, or (rows,
propensities): the probability of each proposal under the channel's policy given
the request and that the channel serves it (a deterministic channel returns the
rows alone: propensity 1). Every rank candidate and exposure logs the channel
that placed it and this propensity.

The platform's channels (wired by `simulator.run.default_channels`; what each stands for: the
README, "The simulated platform"):
  * `NewItemChannel` ("new_item"): a new-item retrieval channel; the item is
    drawn from a softmax, at `temperature`, over an observable word score
    (`word_matches`: the query's words and the user's recent query words against
    the item's title and attributes; no latent);
  * `ExploreChannel` ("explore"): a uniformly random new item of the category,
    propensity 1/N;
  * `SupportChannel` ("support"): the traffic-support experiment's impressions,
    paced so that each item of the support arm gets `support_impressions`
    impressions over its first `support_days` days.
The new-item and exploration channels share one slot on disjoint request
buckets (`ChannelSlot.share_from`, a hash of the request id).

A/B tests: `ChannelSlot.user_buckets` restricts the channel to requests of
users in those buckets (user-side test); `item_buckets` restricts the items it
may place (item-side test; combine both for item-side buckets with coupled
user buckets). Buckets are a stable hash of the id (`bucket`), so the same
user or item stays in its bucket across days and runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from foundation.calendar import NEW_ITEM_DAYS


@dataclass(frozen=True)
class RequestBatch:
    """The search requests of one day (R rows)."""

    request_id: np.ndarray      # int64 (R,)
    user_id: np.ndarray         # int64 (R,)
    category: np.ndarray        # int32 (R,) intent category
    query_offset: np.ndarray    # float32 (R, D) query position inside the intent category (latent:
                                #   plug-ins standing for a learnt query encoder may use it)
    query_text: list[str]       # (R,)
    query_noun: np.ndarray      # int32 (R,) the words of query_text as ids: noun (within the category),
    query_attr: np.ndarray      # int32 (R,) attribute word or -1,
    query_brand: np.ndarray     # int32 (R,) brand row or -1
    history_attr: np.ndarray    # int32 (R, k) attribute words of the user's last k queries (-1: none)

    def take(self, idx: np.ndarray) -> RequestBatch:
        """The requests at positions `idx` (int (S,))."""
        return RequestBatch(**{f.name: ([v[i] for i in idx.tolist()] if isinstance(v, list) else v[idx])
                               for f in fields(self) for v in [getattr(self, f.name)]})


@dataclass(frozen=True)
class CatalogView:
    """The items listed up to and including the day (N rows); read-only for channels."""

    item_id: np.ndarray         # int64 (N,)
    category: np.ndarray        # int32 (N,)
    age_days: np.ndarray        # int32 (N,) 0 = listed today
    pop: np.ndarray             # float64 (N,) the platform's popularity signal
    price: np.ndarray           # float64 (N,)
    offset: np.ndarray          # float32 (N, D) item position inside its category (platform's item embedding)
    noun: np.ndarray            # int32 (N,) the title's noun (within the category)
    attrs: np.ndarray           # int32 (N, 3) attribute words (two in the title)
    brand: np.ndarray           # int32 (N,) brand row
    support_due: np.ndarray     # int64 (N,) traffic-support impressions due today (0: none)


class RetrievalChannel(Protocol):
    name: str

    def propose(self, requests: RequestBatch, catalog: CatalogView,
                rng: np.random.Generator) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One catalog row index per request, or -1 for none: int64 (R,); optionally with the
        propensity of each proposal: float64 (R,)."""
        ...


@dataclass(frozen=True)
class ChannelSlot:
    channel: RetrievalChannel
    slot: int = 3                              # result position the proposed item takes (0 = top)
    share: float = 1.0                         # share of eligible requests served: those whose request
    share_from: float = 0.0                    #   uniform (`request_uniform`) is in [share_from, share_from + share)
    n_buckets: int = 100
    user_buckets: tuple[int, ...] | None = None  # None: every user
    item_buckets: tuple[int, ...] | None = None  # None: every item


def bucket(ids: np.ndarray, salt: int, n_buckets: int) -> np.ndarray:
    """Stable bucket of each id (splitmix64 of id ^ salt, modulo n_buckets)."""
    x = (ids.astype(np.uint64) ^ np.uint64(salt)) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n_buckets)).astype(np.int64)


USER_SALT, ITEM_SALT, REQUEST_SALT, SUPPORT_SALT = 0x5EED_0001, 0x5EED_0002, 0x5EED_0003, 0x5EED_0004
REQUEST_BUCKETS = 1_000_000


def request_uniform(request_id: np.ndarray) -> np.ndarray:
    """A stable uniform in [0, 1) per request (the same in every slot, arm and run)."""
    return bucket(request_id, REQUEST_SALT, REQUEST_BUCKETS) / REQUEST_BUCKETS


def serve(spec: ChannelSlot, requests: RequestBatch, catalog: CatalogView,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The item (catalog row, or -1) the channel places for each request after buckets and share,
    and its propensity (float64 (R,); 1 where the channel gives none)."""
    u = request_uniform(requests.request_id)
    served = (u >= spec.share_from) & (u < spec.share_from + spec.share)
    if spec.user_buckets is not None:
        served &= np.isin(bucket(requests.user_id, USER_SALT, spec.n_buckets), spec.user_buckets)
    idx = np.flatnonzero(served)
    proposed, propensity = np.full(len(u), -1, dtype=np.int64), np.full(len(u), np.nan)
    if len(idx) == 0:
        return proposed, propensity
    out = spec.channel.propose(requests.take(idx), catalog, rng)
    rows, prop = out if isinstance(out, tuple) else (out, np.ones(len(out)))
    if spec.item_buckets is not None:
        ok = rows >= 0
        ok[ok] = np.isin(bucket(catalog.item_id[rows[ok]], ITEM_SALT, spec.n_buckets), spec.item_buckets)
        rows = np.where(ok, rows, -1)
    proposed[idx], propensity[idx] = rows, np.where(rows >= 0, prop, np.nan)
    return proposed, propensity


# -- the platform's channels ----------------------------------------------------------------------

def word_matches(requests: RequestBatch, catalog: CatalogView, r: np.ndarray,
                 rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observable relevance of items `rows` (P,) to requests `r` (S,), as two counts (int8 (S, P)):
    the query's words found in the item's title and attributes (noun, attribute word, brand: 0..3)
    and the distinct attribute words of the user's last queries the item carries (0..3). Only
    logged text: no latent position enters."""
    attrs = catalog.attrs[rows]                                                    # (P, 3)
    n_words = int(max(attrs.max(initial=0), requests.query_attr.max(initial=0),
                      requests.history_attr.max(initial=0))) + 2
    has_word = np.zeros((n_words, len(rows)), dtype=np.int8)                       # word x item; row -1: none
    has_word[attrs, np.arange(len(rows))[:, None]] = 1
    has_word[-1] = 0
    query = has_word[requests.query_attr[r]]
    query += (catalog.noun[rows][None, :] == requests.query_noun[r][:, None]).view(np.int8)
    query += (catalog.brand[rows][None, :] == requests.query_brand[r][:, None]).view(np.int8)
    hist = np.sort(requests.history_attr[r], axis=1)
    hist[:, 1:][hist[:, 1:] == hist[:, :-1]] = -1                                  # distinct words only
    history = has_word[hist[:, 0]]
    for j in range(1, hist.shape[1]):
        history += has_word[hist[:, j]]
    return query, history


def word_score_weights(temperature: float, history_weight: float) -> np.ndarray:
    """exp(score / temperature), score = query matches + history_weight x history matches, for
    every (query, history) count pair, indexed by 4 x query + history; the largest is 1."""
    score = np.arange(4)[:, None] + history_weight * np.arange(4)[None, :]   # history <= 3 (attrs per item)
    return np.exp((score - score.max()) / temperature).ravel().astype(np.float32)


def draw(weights: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One column per row of `weights` (S, P), with probability weight / row sum: (index, probability)."""
    cum = np.cumsum(weights, 1)
    total = cum[:, -1].astype(np.float64)
    pick = np.minimum((cum < (rng.random(len(cum)) * total)[:, None]).sum(1), cum.shape[1] - 1)
    return pick, weights[np.arange(len(cum)), pick].astype(np.float64) / total


class SoftmaxNewItems:
    """Base of the new-item channels: for each request, one item of its intent category still in
    its new-item period, drawn with probability ~ `weights` (S, P) of that category's items."""

    name = "new_items"

    def __init__(self, max_age_days: int = NEW_ITEM_DAYS - 1):
        self.max_age_days = max_age_days

    def eligible(self, catalog: CatalogView) -> np.ndarray:
        return np.flatnonzero(catalog.age_days <= self.max_age_days)

    def weights(self, requests: RequestBatch, catalog: CatalogView, r: np.ndarray, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def choose(self, requests: RequestBatch, catalog: CatalogView, r: np.ndarray, rows: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Index into `rows` and its probability, per request of `r`."""
        return draw(self.weights(requests, catalog, r, rows), rng)

    def propose(self, requests: RequestBatch, catalog: CatalogView,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        out = np.full(len(requests.request_id), -1, dtype=np.int64)
        prop = np.full(len(out), np.nan)
        items = self.eligible(catalog)
        item_cat = catalog.category[items]
        for c in np.unique(requests.category):
            rows = items[item_cat == c]
            if len(rows) == 0:
                continue
            r = np.flatnonzero(requests.category == c)
            pick, p = self.choose(requests, catalog, r, rows, rng)
            out[r], prop[r] = rows[pick], p
        return out, prop


class NewItemChannel(SoftmaxNewItems):
    """The platform's new-item retrieval channel: softmax(word_score / temperature)."""

    name = "new_item"

    def __init__(self, temperature: float = 0.5, history_weight: float = 0.5, max_age_days: int = NEW_ITEM_DAYS - 1):
        super().__init__(max_age_days)
        self.temperature, self.history_weight = temperature, history_weight

    def weights(self, requests, catalog, r, rows):
        query, history = word_matches(requests, catalog, r, rows)
        query *= 4
        query += history
        return word_score_weights(self.temperature, self.history_weight)[query]


class ExploreChannel(SoftmaxNewItems):
    """The uniform exploration bucket: every new item of the category equally likely (1/N)."""

    name = "explore"

    def choose(self, requests, catalog, r, rows, rng):
        return np.minimum((rng.random(len(r)) * len(rows)).astype(np.int64), len(rows) - 1), np.full(len(r), 1 / len(rows))


class SupportChannel(NewItemChannel):
    """The traffic-support programme: impressions for the support arm's items that are due today.

    Pacing: a category's requests are served with probability min(1, due / (requests x
    slot_exposure)), `due` the impressions its supported items are owed today and
    `slot_exposure` the chance that the slot is seen; a served request shows an owed item of its
    category with probability ~ due_i x exp(word_score / temperature). What is not delivered stays
    owed (`engine.support_due`), so the guarantee holds up to the last support day. The logged
    propensity is that choice probability (given that the request is served)."""

    name = "support"

    def __init__(self, slot_exposure: float, temperature: float = 0.5, history_weight: float = 0.5):
        super().__init__(temperature, history_weight)
        self.slot_exposure = slot_exposure

    def eligible(self, catalog):
        return np.flatnonzero(catalog.support_due > 0)

    def weights(self, requests, catalog, r, rows):
        return super().weights(requests, catalog, r, rows) * catalog.support_due[rows][None, :]

    def propose(self, requests, catalog, rng):
        owed = self.eligible(catalog)
        n_cat = int(max(requests.category.max(initial=0), catalog.category.max(initial=0))) + 1
        due = np.bincount(catalog.category[owed], weights=catalog.support_due[owed], minlength=n_cat)
        n_req = np.bincount(requests.category, minlength=n_cat)
        rate = np.minimum(1.0, due / np.maximum(n_req * self.slot_exposure, 1e-9))[requests.category]
        idx = np.flatnonzero(rng.random(len(rate)) < rate)
        out, prop = np.full(len(rate), -1, dtype=np.int64), np.full(len(rate), np.nan)
        out[idx], prop[idx] = super().propose(requests.take(idx), catalog, rng)
        return out, prop
