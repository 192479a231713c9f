"""Clean output honours the raw contract: schemas, keys, funnel consistency, same-day timestamps."""

from __future__ import annotations

import pandas as pd
import pytest
from sim_fixtures import read_all, tiny_lake

from foundation.schemas import RAW_SCHEMAS, TRUTH_SCHEMAS


def keys(df: pd.DataFrame, cols=("request_id", "item_id")) -> set[tuple]:
    return set(map(tuple, df[list(cols)].to_numpy().tolist()))


@pytest.mark.parametrize("zone,table", [("raw", t) for t in RAW_SCHEMAS] + [("truth", t) for t in TRUTH_SCHEMAS])
def test_every_day_has_every_table_with_the_contract_schema(zone, table):
    lake = tiny_lake()
    parts = lake.list_partitions(zone, table)
    assert len(parts) == 45 and f"{parts[0]}" == "2026-01-01" and f"{parts[-1]}" == "2026-02-14"
    schema = (TRUTH_SCHEMAS if zone == "truth" else RAW_SCHEMAS)[table]
    for ds in (parts[0], parts[-1]):
        assert lake.read_partition(zone, table, ds).schema.equals(schema, check_metadata=False)


def test_funnel_is_consistent_within_each_request():
    cands, exps = read_all("rank_candidates"), read_all("exposures")
    clicks, buys = read_all("clicks"), read_all("purchases")
    assert len(buys) > 0 and len(clicks) > len(buys) and len(exps) > len(clicks) and len(cands) > len(exps)
    assert keys(buys) <= keys(clicks)
    assert keys(clicks) <= keys(exps)
    assert keys(exps) <= keys(cands)
    assert not cands.duplicated(["request_id", "item_id"]).any()
    assert not exps.duplicated(["request_id", "item_id"]).any()
    # positions are ranks, and an exposure page is a prefix of the ranking
    merged = exps.merge(cands, on=["request_id", "item_id"])
    assert (merged["position"] == merged["rank"]).all()
    pages = exps.groupby("request_id")["position"].agg(["max", "count"])
    assert (pages["max"] + 1 == pages["count"]).all()


def test_ids_are_unique_across_days_and_events_stay_in_their_day():
    reqs, buys, site = read_all("search_requests"), read_all("purchases"), read_all("site_orders")
    assert reqs["request_id"].is_unique
    assert pd.concat([buys["order_id"], site["order_id"]]).is_unique
    for name in ("search_requests", "exposures", "clicks", "purchases", "site_orders"):
        df = read_all(name)
        assert (df["ts"].dt.strftime("%Y-%m-%d") == df["ds"]).all(), name
    assert (buys["gmv"].round(2) == (buys["price"] * buys["quantity"]).round(2)).all()


def test_events_follow_each_other_in_time():
    reqs, exps, clicks, buys = (read_all(t) for t in ("search_requests", "exposures", "clicks", "purchases"))
    e = exps.merge(reqs[["request_id", "ts"]], on="request_id", suffixes=("", "_req"))
    assert (e["ts"] == e["ts_req"]).all()
    c = clicks.merge(exps[["request_id", "item_id", "ts", "position"]], on=["request_id", "item_id"], suffixes=("", "_exp"))
    assert (c["ts"] > c["ts_exp"]).all() and (c["position"] == c["position_exp"]).all()
    b = buys.merge(clicks[["request_id", "item_id", "ts", "user_id"]], on=["request_id", "item_id"], suffixes=("", "_clk"))
    assert (b["ts"] > b["ts_clk"]).all() and (b["user_id"] == b["user_id_clk"]).all()


def test_site_orders_link_to_a_recent_query_of_the_same_user():
    site, reqs = read_all("site_orders"), read_all("search_requests")
    linked = site.dropna(subset=["linked_request_id"])
    assert 0.2 < len(linked) / len(site) < 1.0
    assert site.loc[site["linked_request_id"].isna(), "link_score"].isna().all()
    m = linked.merge(reqs[["request_id", "user_id", "ts"]], left_on="linked_request_id", right_on="request_id",
                     suffixes=("", "_req"))
    assert len(m) == len(linked)
    assert (m["user_id"] == m["user_id_req"]).all()
    age = m["ts"].dt.normalize() - m["ts_req"].dt.normalize()
    assert (age >= pd.Timedelta(days=1)).all() and (age <= pd.Timedelta(days=7)).all()
    assert m["link_score"].between(0, 1).all()


def test_truth_rows_cover_new_item_exposures():
    effects, exps, items = read_all("click_effects", "truth"), read_all("exposures"), read_all("items")
    listing = items.set_index("item_id")["listing_date"]
    exps["age"] = (pd.to_datetime(exps["ds"]) - pd.to_datetime(exps["item_id"].map(listing))).dt.days
    new = exps[exps["age"] < 30]
    assert len(effects) == len(new)
    assert keys(effects) == keys(new)
    assert effects["item_age_days"].between(0, 29).all()
    assert (effects["true_uplift"] > 0).all()
    clicked = keys(effects[effects["clicked"]])
    assert clicked == keys(read_all("clicks")) & keys(new)
    outcomes = read_all("item_outcomes", "truth")
    assert outcomes["item_id"].is_unique and set(outcomes["item_id"]) == set(items["item_id"])
