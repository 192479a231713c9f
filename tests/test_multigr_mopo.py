"""MoPO on a tiny gr_samples-shaped world: each query has a purchased item and a clicked item of high
ItemLTV uplift; SFT learns the purchase, MoPO moves mass to what the reward prefers."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from foundation.sections.multigr import PROFILES, MoPOConfig, MultiGRConfig
from models.multigr import labels
from models.multigr.beam import sid_keys, trie_table
from models.multigr.data import SFTDataModule, left_pad
from models.multigr.model import Vocab
from models.multigr.mopo import (
    LEVELS,
    align,
    build_contexts,
    ciw,
    eligible_contexts,
    expected_reward,
    level_weights,
    logged_members,
    rollout,
    token_logprobs,
)
from models.multigr.offline import decoded_requests, summary
from models.multigr.platform import SidLookup, eval_lookup, evaluate_samples, sft_examples
from models.multigr.train import fit
from models.tokenizer.trie import SidTrie

N_ITEMS, N_QUERIES = 24, 6
CFG = MultiGRConfig(**{**PROFILES["tiny"], "lr": 5e-3, "max_epochs": 8})


def sid_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = np.array(np.unravel_index(rng.choice(8**3, N_ITEMS, replace=False), (8, 8, 8))).T
    return pd.DataFrame({"item_id": np.arange(100, 100 + N_ITEMS), "sid_version": "v1",
                         "c1": codes[:, 0], "c2": codes[:, 1], "c3": codes[:, 2]})


def world(seed: int, n_requests: int) -> pd.DataFrame:
    """Query q: item 100 + q is bought, item 112 + q is clicked (and has a high uplift),
    a few others are exposed or only ranked."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, N_QUERIES, size=n_requests)
    rows = []
    for i, w in enumerate(q):
        bought, clicked = 100 + int(w), 112 + int(w)
        others = rng.choice(np.setdiff1d(np.arange(100, 100 + N_ITEMS), [bought, clicked]), 6, replace=False)
        rows.append({
            "request_id": i, "user_id": int(rng.integers(0, 20)), "query_text": f"brand{w} shoes",
            "intent_category_id": int(w), "history_item_ids": [int(rng.integers(100, 100 + N_ITEMS))],
            "rank_candidate_ids": [bought, clicked, *map(int, others)],
            "exposure_ids": [bought, clicked, int(others[0]), int(others[1])],
            "click_ids": [bought, clicked], "purchase_ids": [bought], "site_order_item_ids": [],
        })
    return pd.DataFrame(rows)


def uplift() -> pd.DataFrame:
    items = np.arange(100, 100 + N_ITEMS)
    return pd.DataFrame({"item_id": items, "base": 0.0, "uplift": np.where(items >= 112, 1.0, 0.0)})


@pytest.fixture(scope="module")
def trained():
    sids = sid_table()
    lookup = SidLookup(sids, ("c1", "c2", "c3"))
    train = world(0, 300)
    examples = sft_examples(Vocab.from_config(CFG), train, lookup, CFG.max_history, CFG.max_query_words)
    model, _ = fit(CFG, SFTDataModule(examples, CFG.batch_size, CFG.seed))
    trie_next = trie_table(SidTrie.from_sids(sids[["c1", "c2", "c3"]].to_numpy(), CFG.codebook_size))
    return model, lookup, train, trie_next


def test_contexts_levels_and_long_term_set(trained):
    _, lookup, train, _ = trained
    ctx = build_contexts(CFG, train.head(5), lookup, uplift())
    assert len(ctx) == 5 and ctx.offsets[-1] == len(ctx.keys) == 5 * 8
    row = train.iloc[0]
    keys = sid_keys(lookup.sids(np.array([row.purchase_ids[0], row.click_ids[1], row.exposure_ids[2],
                                          row.rank_candidate_ids[-1]])), CFG.codebook_size)
    level, long_term = ctx.labels(np.zeros(1, np.int64), keys[None])
    assert [LEVELS[v] for v in level[0]] == ["purchase", "click", "exposure", "candidate"]
    assert long_term[0].tolist() == [False, True, False, False]          # clicked and uplift above the mean
    assert not build_contexts(CFG, train.head(5), lookup, None).long_term.any()
    unknown = train.head(3).assign(rank_candidate_ids=[[999]] * 3, exposure_ids=[[]] * 3, click_ids=[[]] * 3,
                                   purchase_ids=[[]] * 3)
    assert len(build_contexts(CFG, unknown, lookup, uplift())) == 0      # nothing with a SID reached


def test_level_weights_ordered_and_normalised(trained):
    _, lookup, train, _ = trained
    for source in (build_contexts(CFG, train, lookup, uplift()), train):
        w = level_weights(source)
        assert w["purchase"] == 1.0 and w["none"] == 0.0
        assert w["purchase"] > w["click"] > w["exposure"] > w["candidate"] > 0


def test_ciw_bounded_and_larger_for_rare_sids(trained):
    model, lookup, train, trie_next = trained
    assert torch.equal(ciw(torch.tensor([-0.01, -3.0, -50.0]), 1.0, 8.0), torch.tensor([1.0, 3.0, 8.0]))
    prompts = left_pad([build_contexts(CFG, train.head(1), lookup, None).prompts[0]])
    all_sids = torch.from_numpy(lookup.codes)[None]                       # (1, N, L): every item
    logp = token_logprobs(model, prompts, all_sids).sum(-1)[0].detach()
    w = ciw(logp, 1.0, 8.0)
    assert ((w >= 1.0) & (w <= 8.0)).all()
    head = lookup.sids(np.array(train.iloc[0].purchase_ids))              # what SFT learnt to retrieve
    head_pos = int(np.flatnonzero((lookup.codes == head).all(1))[0])
    assert w[head_pos] < w.median() and w[head_pos] == w.min()


@pytest.mark.parametrize("mode", ["top_p", "beam"])
def test_rollouts_produce_only_valid_sids(trained, mode):
    model, lookup, train, trie_next = trained
    ctx = build_contexts(CFG, train.head(16), lookup, None)
    cfg = MoPOConfig(rollout=mode, group_size=6, temperature=3.0, top_p=1.0)
    sids = rollout(model, left_pad(ctx.prompts), trie_next, cfg, torch.Generator().manual_seed(0))
    assert sids.shape == (16, 6, 3)
    valid = set(sid_keys(lookup.codes, CFG.codebook_size).tolist())
    assert set(sid_keys(sids.numpy(), CFG.codebook_size).ravel().tolist()) <= valid


def test_mopo_raises_expected_reward_and_is_deterministic(trained):
    model, lookup, train, trie_next = trained
    ctx = build_contexts(CFG, train, lookup, uplift())
    cfg = CFG.mopo.model_copy(update={"steps": 30, "lr": 3e-3, "temperature": 2.0, "top_p": 1.0})
    weights = level_weights(ctx)
    before = expected_reward(model, ctx, trie_next, cfg, weights, seed=1)
    aligned, stats = align(copy.deepcopy(model), ctx, trie_next, cfg, seed=3)
    after = expected_reward(aligned, ctx, trie_next, cfg, weights, seed=1)
    assert after > before + 0.1, (before, after, stats)
    assert stats["steps"] == 30 and len(stats["mean_reward"]) == 30 // cfg.refresh_every
    assert cfg.ciw_floor <= stats["mean_ciw"] <= cfg.ciw_cap
    again, _ = align(copy.deepcopy(model), ctx, trie_next, cfg, seed=3)
    other, _ = align(copy.deepcopy(model), ctx, trie_next, cfg, seed=4)
    pairs = list(zip(aligned.state_dict().values(), again.state_dict().values(), other.state_dict().values(),
                     strict=True))
    assert all(torch.equal(a, b) for a, b, _ in pairs) and not all(torch.equal(a, c) for a, _, c in pairs)


def test_logged_members_best_level_first_padded_and_reward_blind(trained):
    _, lookup, train, _ = trained
    ctx = build_contexts(CFG, train.head(6), lookup, uplift())
    idx = np.array([0, 3])
    got = logged_members(ctx, idx, 3, LEVELS.index("exposure"), np.random.default_rng(0))
    assert got.shape == (2, 3, 3)
    level, _ = ctx.labels(idx, sid_keys(got, CFG.codebook_size))
    assert [LEVELS[v] for v in level[0]] == ["purchase", "click", "exposure"]   # best first
    wide = logged_members(ctx, idx, 6, LEVELS.index("exposure"), np.random.default_rng(0))
    assert (wide[:, 4:] == -1).all() and (wide[:, :4] >= 0).all()              # 4 exposed SIDs, then padding
    assert np.array_equal(ctx.codes(sid_keys(wide, CFG.codebook_size)), wide)  # keys <-> codes round trip
    clicked = logged_members(ctx, idx, 6, LEVELS.index("click"), np.random.default_rng(0))
    assert (sid_keys(clicked, CFG.codebook_size) >= 0).sum(1).tolist() == [2, 2]
    no_ltv = build_contexts(CFG, train.head(6), lookup, None)                 # the long-term flag plays no part
    assert np.array_equal(logged_members(no_ltv, idx, 3, 2, np.random.default_rng(0)), got)
    ranked_only = train.head(2).assign(exposure_ids=[[]] * 2, click_ids=[[]] * 2, purchase_ids=[[]] * 2)
    both = build_contexts(CFG, pd.concat([ranked_only, train.head(2)], ignore_index=True), lookup, None)
    assert eligible_contexts(both, MoPOConfig(context_min_level="click")).tolist() == [2, 3]
    assert eligible_contexts(both, MoPOConfig()).tolist() == [0, 1, 2, 3]


def test_group_augmentation_moves_mass_to_the_logged_long_term_item(trained):
    """With the logged funnel SIDs in the group, MoPO learns the clicked high-uplift item even when
    the rollouts alone (low temperature: SFT's purchase only) never reach it; conversion-only GRPO
    with the same groups does not prefer it."""
    model, lookup, train, trie_next = trained
    ctx = build_contexts(CFG, train, lookup, uplift())
    clicked = lookup.sids(np.array([112 + q for q in range(N_QUERIES)]))
    prompts = left_pad([build_contexts(CFG, train[train.intent_category_id == q].head(1), lookup, None).prompts[0]
                        for q in range(N_QUERIES)])

    @torch.no_grad()
    def lt_logp(m) -> float:
        return float(token_logprobs(m, prompts, torch.from_numpy(clicked)[:, None]).sum(-1).mean())

    base = CFG.mopo.model_copy(update={"steps": 20, "lr": 3e-3, "temperature": 0.3, "logged_per_group": 2,
                                       "logged_min_level": "click", "context_min_level": "click"})
    mopo, stats = align(copy.deepcopy(model), ctx, trie_next, base, seed=0)
    conv, _ = align(copy.deepcopy(model), ctx, trie_next, base.model_copy(update={"reward": "conversion"}), seed=0)
    assert lt_logp(mopo) > lt_logp(model) + 1.0 and lt_logp(mopo) > lt_logp(conv) + 1.0, stats
    assert len(stats["mean_reward"]) == 20 // base.refresh_every


def test_new_items_get_their_sid_from_the_test_day_snapshot(trained):
    model, lookup, _, _ = trained
    old = sid_table()
    new = pd.DataFrame({"item_id": [500], "sid_version": "v1", "c1": [7], "c2": [7], "c3": [7]})
    assert not ((old[["c1", "c2", "c3"]] == 7).all(1)).any()
    test_lookup = eval_lookup(old, pd.concat([old, new], ignore_index=True))
    test = world(5, 20).assign(purchase_ids=[[500]] * 20)
    codes = test_lookup.codes
    out = evaluate_samples(model, test, test_lookup, trie_table(SidTrie.from_sids(codes, CFG.codebook_size)),
                           ks=(N_ITEMS + 1,), beam_widths=[8, 64, N_ITEMS + 1])
    assert out["search"]["requests"] == 20 and out["search"][f"recall@{N_ITEMS + 1}"] == 1.0
    assert evaluate_samples(model, test, lookup, trie_table(SidTrie.from_sids(lookup.codes, CFG.codebook_size)),
                            ks=(10,))["search"]["requests"] == 0              # the train snapshot drops it
    moved = pd.concat([old.assign(c3=(old["c3"] + 1) % 8), new], ignore_index=True)
    with pytest.raises(ValueError, match="moved"):
        eval_lookup(old, moved)
    with pytest.raises(ValueError, match="version"):
        eval_lookup(old, pd.concat([old, new.assign(sid_version="v2")], ignore_index=True))


def test_offline_label_sets_and_seed_summaries(trained):
    _, lookup, _, _ = trained
    test = world(7, 4)
    effects = pd.DataFrame({"request_id": [0, 0, 1, 2], "item_id": [test.click_ids[0][0], test.click_ids[0][1],
                                                                   test.click_ids[1][1], 999],
                            "true_uplift": [0.0, 1.0, 2.0, 5.0]})             # mean 2.0
    sets = labels.label_sets(test, lookup, uplift(), effects)
    assert list(sets) == list(labels.LABEL_NAMES)
    assert [r.tolist() for r in sets["long-term"]] == [[c[1]] for c in test.click_ids]
    assert [r.tolist() for r in sets["long-term-true"]] == [[], [], [], []]   # only 999 is above the mean
    effects.loc[1, "true_uplift"] = 9.0
    assert labels.label_sets(test, lookup, None, effects)["long-term-true"][0].tolist() == [test.click_ids[0][1]]
    relevant = {"a": [np.array([1])] * 5, "b": [np.array([])] * 4 + [np.array([2])]}
    picked = decoded_requests(relevant, 2)
    assert 4 in picked and len(picked) in (2, 3) and set(picked) <= set(range(5))
    assert decoded_requests(relevant, None).tolist() == [0, 1, 2, 3, 4]
    s = summary([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["ci95"] == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert summary([0.5])["ci95"] == 0.0
