"""One simulated day of the search platform: structural equations, vectorised with numpy.

Per day `t` (all draws from `day_rng(seed, t)`, so a day depends only on the
state at the end of day t-1 and the seed):

1. Arrivals: new users; new items (Poisson(new_items_per_day), age 0).
   raw/users holds only declared profile fields (region, age band: noisy
   correlates of the home category and the niche/mass segment, drawn from
   their own stream `PROFILE_STREAM`); the latent user parameters (segment,
   home category, niche, activity, price sensitivity) go to truth/users.
2. Requests: each user searches Poisson(activity) times; the intent is the
   home category (85% for niche enthusiasts, 60% for mass consumers) or a
   category drawn by popularity; the query position is the user's taste
   (inside the home category; 0 = mass taste elsewhere) plus noise, the query
   text its noun, niche attribute words and sometimes a brand.
3. Retrieval ("main" channel): the top `n_candidates` items of the intent
   category by relevance + pop_retrieval_weight * log(1 + pop), where
   relevance = -|query - item position|^2 / 2, searched in an IVF-style index
   (the query's cell plus the category's most popular items; `retrieve`).
   Channels (`channels.ChannelSlot`) add one item each in a fixed slot: the platform's own
   (`run.default_channels`): the traffic-support experiment's paced impressions for new items
   of the support arm (randomised at listing by a salted hash of the item id,
   raw/item_experiments), and in the new-item slot, on disjoint request buckets, a uniform
   exploration bucket and a new-item channel that samples from a softmax over an observable
   word score; plus plug-ins (e.g. a GrowthGR release in an A/B test). Every candidate and
   exposure logs its channel and the propensity of its placement (main: 1).
4. Ranking (the production ranker): relevance + pop_weight * log(1 + pop)
   + lookalike_weight * G [only after day 29] + Gumbel noise. `pop` is an
   exponential moving average of the item's daily orders (`pop_memory`: a
   ~30-day sales signal): the popularity prior that makes the rich richer.
5. Exposure with position bias: the user looks at slots 0..depth-1 with
   depth ~ Geometric(1 - scroll_continue) capped at n_exposed.
6. Clicks: P = (1 + position)^-position_decay * sigmoid(base_ctr
   + relevance_click_weight * relevance + 0.5 * quality).
7. Orders.
   * Items in their new-item period (age 0..29): a click converts with
     P = sigmoid(base_cvr + 0.5 * quality - price_sensitivity(user) *
     log(price / category reference price) + social_proof * log(1 + cumulative
     orders)); plus site-wide orders ~ Poisson(new_item_site_share * B).
   * Items aged 30 or more: orders are demand-driven. The number of orders
     of item i on the day is N_i = F^-1_Poisson(U_i; lambda_i) with
         lambda_i = (1 + B_i) * exp(G_i) - 1,
     B_i the item's base demand (quality, price, category, brand) and G_i its
     growth state, frozen at the end of day 29. N_i is attributed first to
     that day's clicks on the item (random order; one order per click) as
     search purchases, the rest are site-wide orders.
   Site-wide orders have a buyer from the item's category and are linked to
   the buyer's most relevant query of the last 7 days (before the day).
8. The growth mechanism. A click at age a in 0..29 by user u adds
       delta(u, i, a) = growth_kappa * (growth_floor + (1 - growth_floor) * aff(u, i))
                        * exp(-a / growth_age_tau) / (1 + n_i / growth_saturation)
   to G_i, where aff(u, i) = exp(-|taste_u - position_i|^2 / (2 affinity_scale^2))
   is 1 when the user sits on the item's niche (taste is 0, the mass taste,
   outside the user's home category) and n_i is the item's number of
   exposures before the day (the lookalike audience saturates, so G grows
   like the log of the exposures instead of exploding for hits). G_i does
   not enter anything before day 30 (so a click's growth effect cannot feed
   back into the new-item period).

Ground truth (exact, closed form). For an item with base demand B and growth
state G after day 29, the expected mean daily orders over days 30..36 is
lambda = (1 + B) e^G - 1, so log(1 + lambda) = log(1 + B) + G. Hence
  * `item_outcomes.y0` = log(1 + B): the expected-rate outcome with no growth
    from clicks (G = 0);
  * `click_effects.true_uplift` = delta(u, i, a): the change in
    log(1 + expected mean daily orders, days 30..36) when this exposure is
    clicked rather than not, all other clicks held fixed. G is a sum of
    increments whose sizes depend on exposures (n_i), never on G or on other
    clicks' growth, so the effect is additive and exact, and needs no future
    information: it is written on the exposure's day. Included: the growth
    mechanism (lookalike expansion and word of mouth after the new-item
    period). Excluded (not part of the truth): the click's short-term funnel
    path within days 0..29 (a purchase it may cause raises popularity and
    social proof, which can bring the item later exposures and clicks), and
    effects on other items (interference through the ranker's competition
    once the item is past day 29). The "expected-rate scale" means
    log(1 + E[mean orders]), not E[log(1 + mean orders)] (they differ by a
    Jensen term that depends on B and G).
Re-simulation with common random numbers (the per-item uniforms U_i; the
`intervention` argument of `simulate_day` flips chosen exposures' growth
contribution) agrees with this; see tests/test_sim_truth.py.

Where this departs from a real platform: demand after day 29 is generated per
item and then attributed to clicks (the funnel still holds: every purchase has
a click); the platform never sees B, G or the latent quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from foundation.calendar import NEW_ITEM_DAYS
from simulator.channels import (
    SUPPORT_SALT,
    CatalogView,
    ChannelSlot,
    RequestBatch,
    bucket,
    serve,
)
from simulator.equations import (
    affinity,
    growth_increment,
    label_rate,
    label_window_orders,
    poisson_icdf,
    sigmoid,
)
from simulator.site_orders import site_orders
from simulator.tables import (
    SUPPORT,
    Funnel,
    Slate,
    catalog_tables,
    catalog_truth,
    click_effects_table,
    day_truth,
    funnel_tables,
)
from simulator.text import ATTRIBUTES, N_CATEGORIES, NOUNS, queries
from simulator.world import (
    RECENT_QUERIES,
    US,
    US_PER_DAY,
    World,
    append,
    cells,
    day_rng,
    new_items,
    new_users,
)

# importable from here as before: the equations (`simulator.equations`) and the tables (`simulator.tables`)
__all__ = ["DayOutput", "affinity", "catalog_tables", "growth_increment", "label_rate", "label_window_orders",
           "poisson_icdf", "simulate_day"]


@dataclass(frozen=True)
class DayOutput:
    raw: dict[str, pa.Table]
    truth: dict[str, pa.Table]



# -- 1. arrivals ----------------------------------------------------------------------------------

def arrivals(w: World, day: int, rng: np.random.Generator) -> None:
    cfg, s = w.config, w.structure
    n_users = int(rng.poisson(cfg.new_users_per_day))
    users = new_users(rng, cfg, s, w.n_users + 1, n_users, np.full(n_users, day))
    users["announce_day"] = np.full(n_users, day, dtype=np.int32)
    n_items = max(1, int(rng.poisson(cfg.new_items_per_day)))
    items = new_items(rng, cfg, s, w.n_items + 1, n_items, np.full(n_items, day))
    items["announce_day"] = np.full(n_items, day, dtype=np.int32)
    items["arm"] = support_arm(items["item_id"], cfg.support_share)
    w.users, w.items = append(w.users, users), append(w.items, items)


def support_arm(item_id: np.ndarray, share: float) -> np.ndarray:
    """The traffic-support arm of new items (1 support, 0 control): a salted hash of the id."""
    return (bucket(item_id, SUPPORT_SALT, 1_000_000) < round(share * 1_000_000)).astype(np.int8)


# -- 2. requests ----------------------------------------------------------------------------------

def make_requests(w: World, day: int, rng: np.random.Generator) -> tuple[RequestBatch, np.ndarray, np.ndarray]:
    """The day's requests (in time order), their user rows (R,) and timestamps in us (R,)."""
    cfg, s, users = w.config, w.structure, w.users
    n_req = rng.poisson(users["activity"])
    user_row = rng.permutation(np.repeat(np.arange(w.n_users), n_req))
    r = len(user_row)
    ts = day * US_PER_DAY + np.sort(rng.integers(0, 23 * 3600 * US, r))
    home, niche = users["home_cat"][user_row], users["niche"][user_row]
    p_home = np.where(niche >= 0, 0.85, 0.6)
    other = rng.choice(N_CATEGORIES, size=r, p=s.cat_weight)
    cat = np.where(rng.random(r) < p_home, home, other).astype(np.int32)
    at_home = cat == home
    q_off = (users["offset"][user_row] * at_home[:, None] + 0.3 * rng.normal(size=(r, cfg.taste_dim))).astype(np.float32)
    text, noun, attr, brand = query_texts(w, rng, cat, np.where(at_home, niche, -1))
    batch = RequestBatch(
        request_id=np.arange(w.next_request_id, w.next_request_id + r, dtype=np.int64),
        user_id=users["user_id"][user_row], category=cat, query_offset=q_off, query_text=text,
        query_noun=noun, query_attr=attr, query_brand=brand, history_attr=users["recent_attr"][user_row],
    )
    return batch, user_row, ts


def query_texts(w: World, rng: np.random.Generator, cat: np.ndarray,
                niche: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Noun of the intent category; niche attribute words for enthusiasts at home; sometimes a brand.
    The texts and their words as ids: noun, attribute (-1 none), brand row (-1 none)."""
    s, r = w.structure, len(cat)
    noun = rng.integers(0, len(NOUNS[0]), r)
    own = s.niche_attrs[cat, np.maximum(niche, 0), rng.integers(0, 3, r)]
    attr = np.where((niche >= 0) & (rng.random(r) < 0.7), own,
                    np.where(rng.random(r) < 0.3, rng.integers(0, len(ATTRIBUTES), r), -1))
    brand_row = cat * s.brands_per_category + rng.integers(0, s.brands_per_category, r)
    use_brand = rng.random(r) < 0.1
    brands = [str(s.brand_names[b]) if u else None for b, u in zip(brand_row.tolist(), use_brand.tolist(), strict=True)]
    text = queries([NOUNS[c][n] for c, n in zip(cat.tolist(), noun.tolist(), strict=True)], attr, brands)
    return text, noun.astype(np.int32), attr.astype(np.int32), np.where(use_brand, brand_row, -1).astype(np.int32)


# -- 3-4. retrieval and ranking -------------------------------------------------------------------

def catalog_view(w: World, day: int) -> CatalogView:
    it = w.items
    age = (day - it["listing_day"]).astype(np.int32)
    return CatalogView(item_id=it["item_id"], category=it["category"], age_days=age, pop=it["pop"], price=it["price"],
                       offset=it["offset"], noun=it["noun"], attrs=it["attrs"], brand=it["brand"],
                       support_due=support_due(w.config, it["arm"], age, it["support_shown"]))


def support_due(cfg, arm: np.ndarray, age: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Traffic-support impressions due today per item: what is still owed, spread evenly over the
    support days left (int64 (N,); 0 outside the support arm and days)."""
    days_left = cfg.support_days - age
    owed = np.maximum(cfg.support_impressions - shown, 0)
    active = (arm == 1) & (age >= 0) & (days_left > 0)
    return np.where(active, -(-owed // np.maximum(days_left, 1)), 0).astype(np.int64)


def retrieve(w: World, req: RequestBatch) -> np.ndarray:
    """Organic candidates per request: int64 (R, n_candidates), -1 where the pool is smaller.

    An IVF-style index: each item sits in a cell of its category (`world.cells`:
    its nearest niche center, or one of the mass region's orthants); a request
    scores the items of its query's cell plus the category's `retrieval_popular`
    most popular items, by relevance + pop_retrieval_weight * log(1 + pop).
    Cost per request is about items / (16 * (niches + 2^mass_cell_bits)) + retrieval_popular.
    """
    cfg, it, s = w.config, w.items, w.structure
    out = np.full((len(req.request_id), cfg.n_candidates), -1, dtype=np.int64)
    prior = cfg.pop_retrieval_weight * np.log1p(it["pop"])
    n_cells = cfg.niches_per_category + 2**cfg.mass_cell_bits
    item_key = it["category"].astype(np.int64) * n_cells + it["cell"]
    req_key = req.category.astype(np.int64) * n_cells + cells(cfg, s.niche_centers, req.category, req.query_offset)
    by_key = np.argsort(item_key, kind="stable")
    bounds = np.searchsorted(item_key[by_key], np.arange(N_CATEGORIES * n_cells + 1))
    popular = popular_items(it["category"], it["pop"], cfg.retrieval_popular)
    req_order = np.argsort(req_key, kind="stable")
    req_bounds = np.searchsorted(req_key[req_order], np.arange(N_CATEGORIES * n_cells + 1))
    for key in np.flatnonzero(req_bounds[1:] > req_bounds[:-1]):
        rows = req_order[req_bounds[key]:req_bounds[key + 1]]
        pool = np.union1d(by_key[bounds[key]:bounds[key + 1]], popular[key // n_cells])
        if len(pool) == 0:
            continue
        pos = it["offset"][pool]                                                     # float32 (P, D)
        score = req.query_offset[rows] @ pos.T + (prior[pool] - 0.5 * (pos**2).sum(1)).astype(np.float32)  # (r, P)
        k = min(cfg.n_candidates, len(pool))
        top = (np.argpartition(score, len(pool) - k, axis=1)[:, len(pool) - k:] if k < len(pool)
               else np.tile(np.arange(k), (len(rows), 1)))
        out[rows, :k] = pool[top]
    return out


def popular_items(category: np.ndarray, pop: np.ndarray, n: int) -> list[np.ndarray]:
    """The `n` most popular item rows of each category (sorted by row)."""
    out = []
    for c in range(N_CATEGORIES):
        rows = np.flatnonzero(category == c)
        out.append(np.sort(rows[np.argpartition(-pop[rows], n - 1)[:n]]) if len(rows) > n else rows)
    return out


def relevance(req: RequestBatch, offset: np.ndarray, item: np.ndarray) -> np.ndarray:
    """-|query - item|^2 / 2 per (request, candidate); -inf where item is -1. float64 (R, W)."""
    diff = req.query_offset[:, None, :] - offset[np.maximum(item, 0)]          # float32 (R, W, D)
    rel = -0.5 * np.einsum("rwd,rwd->rw", diff, diff).astype(np.float64)
    return np.where(item >= 0, rel, -np.inf)


def rank(w: World, day: int, req: RequestBatch, cand: np.ndarray, rng: np.random.Generator) -> Slate:
    """The production ranker (popularity prior, lookalike expansion after day 29), sorted best first."""
    rel = relevance(req, w.items["offset"], cand)
    score = ranker_score(w, day, cand, rel) + w.config.ranker_noise * rng.gumbel(size=cand.shape)
    order = np.argsort(-score, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return Slate(take(cand), take(score), np.zeros(cand.shape, dtype=np.int16), take(rel), np.ones(cand.shape))


def ranker_score(w: World, day: int, item: np.ndarray, rel: np.ndarray) -> np.ndarray:
    cfg, it = w.config, w.items
    row = np.maximum(item, 0)
    mature = (day - it["listing_day"][row]) >= NEW_ITEM_DAYS
    return rel + cfg.pop_weight * np.log1p(it["pop"][row]) + cfg.lookalike_weight * it["growth"][row] * mature


def place(slate: Slate, proposals: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
          slots: Sequence[int]) -> Slate:
    """Insert the channels' proposals (item row or -1, propensity, score, relevance: (R,) each), in
    order, each at its slot of the slate as it stands (or right after the request's last valid
    entry when it has fewer), shifting the entries below it down; a proposal already on the slate
    is dropped. The result has one column per channel more, valid entries first."""
    n, width = slate.item.shape
    n_valid = (slate.item >= 0).sum(1)
    taken = slate.item
    pos = np.full((n, len(proposals)), -1)                            # final position of each placement
    items = []
    for k, ((item, *_), slot) in enumerate(zip(proposals, slots, strict=True)):
        item = np.where((taken == item[:, None]).any(1), -1, item)
        has = item >= 0
        at = np.minimum(slot, n_valid)
        pos[:, :k] += (pos[:, :k] >= at[:, None]) & has[:, None]
        pos[has, k] = at[has]
        n_valid = n_valid + has
        taken = np.concatenate([taken, item[:, None]], axis=1)
        items.append(item)
    col = np.arange(width + len(proposals))[None, :]
    channel_at = np.full((n, col.shape[1]), -1)
    rows, ks = np.nonzero(pos >= 0)
    channel_at[rows, pos[rows, ks]] = ks
    organic = np.cumsum(channel_at < 0, axis=1) - 1                   # organic index of the other columns
    # source column in [organic columns | padding | one column per channel]
    src = np.where(channel_at >= 0, width + 1 + channel_at, np.minimum(organic, width))

    def put(a: np.ndarray, extra: list[np.ndarray], pad) -> np.ndarray:
        ext = np.concatenate([a, np.full((n, 1), pad, dtype=a.dtype), np.stack(extra, 1).astype(a.dtype)], axis=1)
        return np.take_along_axis(ext, src, axis=1)

    k_all = range(len(proposals))
    return Slate(put(slate.item, items, -1), put(slate.score, [p[2] for p in proposals], -np.inf),
                 put(slate.channel, [np.full(n, k + 1) for k in k_all], 0),
                 put(slate.relevance, [p[3] for p in proposals], -np.inf),
                 put(slate.propensity, [p[1] for p in proposals], np.nan))


def apply_channels(w: World, day: int, req: RequestBatch, slate: Slate, channels: Sequence[ChannelSlot]) -> Slate:
    if not channels:
        return slate
    view = catalog_view(w, day)
    proposals = []
    for k, spec in enumerate(channels):
        proposed, propensity = serve(spec, req, view, day_rng(w.seed, day, 10 + k))
        rel = relevance(req, w.items["offset"], proposed[:, None])[:, 0]
        score = np.where(proposed >= 0, ranker_score(w, day, proposed[:, None], rel[:, None])[:, 0], -np.inf)
        proposals.append((proposed, propensity, score, rel))
    return place(slate, proposals, [spec.slot for spec in channels])


# -- 5-8. exposure, clicks, orders, growth ----------------------------------------------------------

def funnel(w: World, day: int, slate: Slate, user_row: np.ndarray, u_demand: np.ndarray,
           rng: np.random.Generator) -> Funnel:
    """Exposure with position bias, clicks, conversion (new items) and demand-driven orders (mature items)."""
    cfg, s, it, users = w.config, w.structure, w.items, w.users
    r, width = slate.item.shape
    u_click, u_conv, u_attr = rng.random((r, width)), rng.random((r, width)), rng.random((r, width))
    depth = np.minimum(cfg.n_exposed, rng.geometric(1.0 - cfg.scroll_continue, r))
    pos = np.arange(width)
    row = np.maximum(slate.item, 0)
    exposed = (pos[None, :] < depth[:, None]) & (slate.item >= 0)
    examine = (1.0 + pos[None, :]) ** -cfg.position_decay
    p_click = examine * sigmoid(cfg.base_ctr_logit + cfg.relevance_click_weight * slate.relevance + 0.5 * it["quality"][row])
    clicked = exposed & (u_click < p_click)
    age = (day - it["listing_day"][row]).astype(np.int32)
    new = age < NEW_ITEM_DAYS
    log_rel_price = np.log(it["price"][row] / s.cat_price[it["category"][row]])
    p_conv = sigmoid(cfg.base_cvr_logit + 0.5 * it["quality"][row] - users["price_sens"][user_row][:, None] * log_rel_price
                     + cfg.social_proof * np.log1p(it["cum_orders"][row]))
    bought = clicked & new & (u_conv < p_conv)
    mature_item = (day - it["listing_day"]) >= NEW_ITEM_DAYS
    lam = np.where(mature_item, label_rate(it["base_demand"], it["growth"]), cfg.new_item_site_share * it["base_demand"])
    n_orders = poisson_icdf(u_demand, lam)
    bought |= attribute(slate.item, clicked & ~new, u_attr, n_orders)
    clicks_per_item = np.bincount(slate.item[clicked & ~new], minlength=w.n_items)
    site_n = np.where(mature_item, n_orders - np.minimum(n_orders, clicks_per_item), n_orders)
    return Funnel(exposed, clicked, bought, site_n, age)


def attribute(item: np.ndarray, clicks: np.ndarray, key: np.ndarray, n_orders: np.ndarray) -> np.ndarray:
    """Mark the first n_orders[i] clicks (in random `key` order) of each item as purchases: bool (R, W)."""
    flat = np.flatnonzero(clicks)
    ci, k = item.ravel()[flat], key.ravel()[flat]
    order = np.lexsort((k, ci))
    ci_sorted = ci[order]
    group_start = np.searchsorted(ci_sorted, ci_sorted, side="left")
    rank_in_item = np.arange(len(order)) - group_start
    out = np.zeros(item.size, dtype=bool)
    out[flat[order[rank_in_item < n_orders[ci_sorted]]]] = True
    return out.reshape(item.shape)


def user_offset_in(w: World, user_row: np.ndarray, category: np.ndarray) -> np.ndarray:
    """The user's taste inside `category`: own taste at home, the mass taste (0) elsewhere. (..., D)"""
    home = w.users["home_cat"][user_row] == category
    return w.users["offset"][user_row] * home[..., None]


def increments(w: World, slate: Slate, user_row: np.ndarray, fun: Funnel) -> np.ndarray:
    """delta(u, i, a) of every (request, slot): float64 (R, W), 0 where not an exposure of a new item."""
    cfg, it = w.config, w.items
    r, j = np.nonzero(fun.exposed & (fun.age < NEW_ITEM_DAYS))
    row = slate.item[r, j]
    aff = affinity(user_offset_in(w, user_row[r], it["category"][row]), it["offset"][row], cfg.affinity_scale)
    delta = np.zeros(slate.item.shape)
    delta[r, j] = growth_increment(cfg, aff, fun.age[r, j], it["cum_exposures"][row])
    return delta


def growth_clicks(item_id: np.ndarray, slate: Slate, req: RequestBatch, fun: Funnel,
                  intervention: np.ndarray | None) -> np.ndarray:
    """Which exposures count as clicks for the growth state: the clicks, with `intervention`
    ((n, 2) request_id, item_id pairs) flipped. bool (R, W)."""
    clicks = fun.clicked
    if intervention is None or len(intervention) == 0:
        return clicks
    m = np.int64(2**31)
    keys = intervention[:, 0].astype(np.int64) * m + intervention[:, 1].astype(np.int64)
    cells = req.request_id[:, None] * m + np.where(slate.item >= 0, item_id[np.maximum(slate.item, 0)], -1)
    return clicks ^ (np.isin(cells, keys) & fun.exposed)


# -- state update ---------------------------------------------------------------------------------

def update_items(w: World, orders_per_item: np.ndarray, exposures_per_item: np.ndarray, delta_growth: np.ndarray) -> None:
    it, m = w.items, w.config.pop_memory
    it["cum_exposures"] = it["cum_exposures"] + exposures_per_item
    it["cum_orders"] = it["cum_orders"] + orders_per_item
    it["pop"] = m * it["pop"] + (1.0 - m) * orders_per_item
    it["growth"] = it["growth"] + delta_growth


def update_recent_queries(w: World, day: int, req: RequestBatch, user_row: np.ndarray) -> None:
    """Push each user's last RECENT_QUERIES requests of the day in front of the older ones."""
    users, k = w.users, RECENT_QUERIES
    order = np.lexsort((np.arange(len(user_row)), user_row))          # by user, then time
    u_sorted = user_row[order]
    count = np.bincount(user_row, minlength=w.n_users)
    from_end = np.cumsum(count)[u_sorted] - 1 - np.arange(len(order))  # 0 = the user's last request
    keep = from_end < k
    shift = np.minimum(count, k)[:, None]
    src = np.arange(k)[None, :] - shift                                # (U, k) index into the old list
    for name, today in (("recent_req", req.request_id), ("recent_day", np.full(len(order), day)),
                        ("recent_cat", req.category), ("recent_qoff", req.query_offset),
                        ("recent_attr", req.query_attr)):
        old = users[name]
        new = np.take_along_axis(old, np.maximum(src, 0).reshape(src.shape + (1,) * (old.ndim - 2)), axis=1)
        new = new.copy()
        new[u_sorted[keep], from_end[keep]] = today[order][keep]
        users[name] = new



# -- the day --------------------------------------------------------------------------------------

def simulate_day(w: World, day: int, channels: Sequence[ChannelSlot] = (),
                 intervention: np.ndarray | None = None) -> DayOutput:
    """Advance `w` (at the end of day-1) by one day; return the day's raw and truth tables.

    `intervention`: optional (n, 2) array of (request_id, item_id) exposures whose
    effect on the growth state is flipped (a click counts as none, a non-click
    as a click); used to check the ground truth by re-simulation.
    """
    if day != w.last_day + 1:
        raise ValueError(f"world is at day {w.last_day}, cannot simulate day {day}")
    rng = day_rng(w.seed, day)
    arrivals(w, day, rng)
    u_demand = rng.random(w.n_items)                      # one uniform per item: its orders of the day
    req, user_row, req_ts = make_requests(w, day, rng)
    slate = apply_channels(w, day, req, rank(w, day, req, retrieve(w, req), rng), channels)
    fun = funnel(w, day, slate, user_row, u_demand, rng)
    site = site_orders(w, day, fun.site_n, rng)
    names = [spec.channel.name for spec in channels]
    tables = funnel_tables(w, req, user_row, req_ts, slate, fun, site, names, rng) | catalog_tables(w, day)
    truth = catalog_truth(w, day) | day_truth(req, req_ts)
    delta = increments(w, slate, user_row, fun)
    grow = growth_clicks(w.items["item_id"], slate, req, fun, intervention) & (fun.age < NEW_ITEM_DAYS)
    orders = np.bincount(slate.item[fun.bought], minlength=w.n_items) + fun.site_n
    exposures = np.bincount(slate.item[fun.exposed], minlength=w.n_items)
    update_items(w, orders, exposures, np.bincount(slate.item[grow], weights=delta[grow], minlength=w.n_items))
    supported = fun.exposed & np.isin(slate.channel, [k + 1 for k, n in enumerate(names) if n == SUPPORT])
    w.items["support_shown"] = w.items["support_shown"] + np.bincount(slate.item[supported], minlength=w.n_items)
    update_recent_queries(w, day, req, user_row)
    truth = {"click_effects": click_effects_table(w, req, req_ts, slate, fun, delta)} | truth
    w.next_request_id += len(req.request_id)
    w.next_order_id += int(fun.bought.sum()) + len(site.item)
    w.last_day = day
    return DayOutput(raw=tables, truth=truth)
