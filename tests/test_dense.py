"""The dense retriever (models.dense): MOPPR loss, training on gr_samples-shaped requests (the
query decides the purchase), the FAISS index with recall-chosen parameters and its gate, the
collision re-ranker / two-stage re-ranking, and the lake entry points on a small handmade lake.

The lake test writes `gr_samples`, `raw/items` and `curated/item_sids` partitions directly: on the
shared tiny world they need the gr_samples Spark job and the text encoder + RQ-VAE (minutes, see
tests/test_multigr_lake.py), too slow for this file.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from foundation.catalog import GR_SAMPLES, ITEM_SIDS, RAW
from foundation.lake import Lake, PartitionNotFound
from foundation.sections.dense import PROFILES, DenseConfig, DenseIndexConfig
from foundation.sections.trainer import TrainerConfig
from models.dense import index as dindex
from models.dense.data import OBJECTIVES, ItemTable, build_requests, collate, under_exposures
from models.dense.loss import moppr_loss
from models.dense.model import DenseRetriever
from models.dense.platform import encode_items, train_dense
from models.dense.rerank import ItemVectors, dr_reranker, two_stage
from models.dense.train import encode_catalog, evaluate, fit, load_checkpoint, mean_loss, save_checkpoint
from models.multigr.beam import BeamResult, SidItems

N_ITEMS = 200
CODES = ("c1", "c2", "c3")


def tiny_cfg(**kw) -> DenseConfig:
    return DenseConfig(**{**PROFILES["tiny"], **kw})


def world(seed: int, n_requests: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(gr_samples rows, raw items, item SIDs): each request's query names the item it buys, which
    the platform ranked first and exposed; the rest of the ranking is random."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + N_ITEMS)
    gen = np.random.default_rng(123)                     # the catalog is the same for every seed
    items = pd.DataFrame({"item_id": ids, "category_id": (ids % 16).astype(np.int32), "price": gen.uniform(1, 100, N_ITEMS)})
    codes = gen.integers(0, 16, (N_ITEMS, 3))
    sids = pd.DataFrame({"item_id": ids, **{c: codes[:, i].astype(np.int32) for i, c in enumerate(CODES)}})
    rows = []
    for r, w in enumerate(rng.integers(0, N_ITEMS, n_requests)):
        ranked = list(dict.fromkeys([int(ids[w]), *map(int, rng.permutation(ids)[:40])]))
        rows.append({"request_id": r, "user_id": int(rng.integers(0, 50)), "query_text": f"brand{w} shoes",
                     "history_item_ids": [int(i) for i in rng.choice(ids, int(rng.integers(0, 6)))],
                     "rank_candidate_ids": ranked, "exposure_ids": ranked[:6], "click_ids": ranked[:2] if r % 2 else ranked[:1],
                     "purchase_ids": [int(ids[w])], "site_order_item_ids": []})
    return pd.DataFrame(rows), items, sids


# -- MOPPR loss --------------------------------------------------------------------------------------

def one_objective(positives: list[list[int]], m: int) -> torch.Tensor:
    pos = torch.zeros(1, len(positives), m, dtype=torch.bool)
    for i, p in enumerate(positives):
        pos[0, i, p] = True
    return pos


@pytest.mark.parametrize("variant", ["per_positive", "mass"])
def test_one_positive_is_softmax_cross_entropy(variant):
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 6, 2, 2])
    loss, per = moppr_loss(logits, one_objective([[t] for t in target.tolist()], 7), [1.0], variant)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    assert per.shape == (1,)


def test_many_positives_capped_at_one():
    # two positives of equal score holding all the mass: each has p = 1/2, n * p = 1 -> no loss
    logits = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert moppr_loss(logits, one_objective([[0, 1]], 4), [1.0])[0].item() == pytest.approx(0.0, abs=1e-6)
    # one positive above 1/n is capped (contributes 0, not a negative loss); the other pays -log(n p)
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)[0]
    loss, _ = moppr_loss(logits, one_objective([[0, 1]], 4), [1.0])
    assert loss.item() == pytest.approx(-(0.0 + torch.log(2 * p[1]).item()) / 2, rel=1e-5)
    # at the cap nothing pulls: zero gradient when every positive holds its 1/n share
    logits = torch.tensor([[3.0, 3.0, 3.0, -30.0]], requires_grad=True)
    moppr_loss(logits, one_objective([[0, 1, 2]], 4), [1.0])[0].backward()
    assert logits.grad.abs().max().item() < 1e-6
    # `mass`: -log(min(1, n * mean p)) = -log(sum of the positives' p)
    loss, _ = moppr_loss(torch.tensor([[10.0, 0.0, 0.0, 0.0]]), one_objective([[0, 1]], 4), [1.0], "mass")
    assert loss.item() == pytest.approx(-torch.log(p[0] + p[1]).item(), rel=1e-3)


def test_objective_weights_and_empty_objectives():
    logits = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    pos = torch.zeros(4, 3, 6, dtype=torch.bool)
    pos[0, :, 0] = True                 # relevance: every request
    pos[1, 0, [1, 2]] = True            # exposure: request 0 only (the mean is over requests with positives)
    pos[2, 1, 3] = True                 # click: request 1
    # purchase: none in this batch -> 0
    total, per = moppr_loss(logits, pos, [1.0, 2.0, 0.5, 3.0])
    assert per[3].item() == 0.0
    assert per[2].item() == pytest.approx(F.cross_entropy(logits[1:2], torch.tensor([3])).item(), rel=1e-6)
    assert total.item() == pytest.approx(per[0].item() + 2 * per[1].item() + 0.5 * per[2].item(), rel=1e-6)
    assert moppr_loss(logits, pos, [0.0, 0.0, 1.0, 0.0])[0].item() == pytest.approx(per[2].item(), rel=1e-6)


# -- samples and model -------------------------------------------------------------------------------

def test_requests_positives_and_under_exposures():
    cfg = tiny_cfg()
    samples, items, sids = world(0, 20)
    requests = build_requests(samples, cfg)
    r, row = requests[0], samples.iloc[0]
    assert [len(p) for p in r.positives] == [cfg.relevance_top, 6, len(row.click_ids), 1]
    assert r.positives[3][0] == row.purchase_ids[0]
    under = under_exposures(np.array(row.rank_candidate_ids), np.array(row.exposure_ids), cfg.under_exposure_min_rank,
                            cfg.under_exposures)
    assert np.array_equal(r.under_exposures, under) and len(under) == cfg.under_exposures
    assert not np.isin(under, row.exposure_ids).any()
    assert set(under) <= set(row.rank_candidate_ids[cfg.under_exposure_min_rank:])
    table = ItemTable.from_frames(items, sids, CODES)
    batch = collate(requests[:4], table, cfg, table.ids[:10])
    assert batch.positives.shape == (len(OBJECTIVES), 4, len(batch.item_ids))
    assert batch.positives[3].sum().item() == 4


def test_towers_are_normalised_and_handle_empty_inputs():
    cfg = tiny_cfg()
    samples, items, sids = world(0, 8)
    samples.loc[0, "query_text"] = ""
    samples.at[1, "history_item_ids"] = []
    samples.at[2, "history_item_ids"] = [7, 8]          # items unknown to the catalog
    table = ItemTable.from_frames(items, sids, CODES)
    model = DenseRetriever(cfg).eval()
    batch = collate(build_requests(samples, cfg), table, cfg, table.ids[:5])
    with torch.no_grad():
        u, v = model.encode_query(batch.query), model.encode_items(batch.items)
    assert torch.isfinite(u).all() and torch.isfinite(v).all()
    assert torch.allclose(u.norm(dim=1), torch.ones(len(u)), atol=1e-5)
    assert torch.allclose(v.norm(dim=1), torch.ones(len(v)), atol=1e-5)


def test_training_lowers_the_loss_and_retrieves_held_out_purchases(tmp_path):
    cfg = tiny_cfg(max_epochs=6)
    train, items, sids = world(0, 1500)
    test, _, _ = world(1, 200)
    table = ItemTable.from_frames(items, sids, CODES)
    requests = build_requests(train, cfg)
    fixed = [collate(requests[i : i + 64], table, cfg, table.ids[:64]) for i in range(0, 256, 64)]
    torch.manual_seed(cfg.seed)
    before = mean_loss(DenseRetriever(cfg), fixed)
    untrained = evaluate(DenseRetriever(cfg), table, test, ks=(10,))
    model, stats = fit(cfg, requests, table)
    after = mean_loss(model, fixed)
    assert after < 0.6 * before
    assert stats["epoch_losses"][-1] < stats["epoch_losses"][0] and len(stats["epoch_losses"]) == 6
    out = evaluate(model, table, test, ks=(10,))
    print(f"loss {before:.3f} -> {after:.3f}; recall@10 untrained {untrained['recall@10']:.3f}, trained "
          f"{out['recall@10']:.3f}, random {10 / N_ITEMS:.3f}; {stats}")
    random_recall = 10 / N_ITEMS
    assert out["requests"] == 200
    assert out["recall@10"] >= 0.8 > 4 * random_recall and untrained["recall@10"] < 0.3
    # checkpoint round trip: same item vectors
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "dr"))
    assert np.allclose(encode_catalog(loaded, table)[1], encode_catalog(model, table)[1], atol=1e-6)


# -- index ---------------------------------------------------------------------------------------------

def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_recall(index, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> float:
    scores = queries @ vectors.T
    truth = ids[np.argsort(-scores, axis=1)[:, :k]]
    got = dindex.search(index, queries, k)[0]
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(got, truth, strict=True)]))


def test_smallest_passing_parameter():
    curve = {v: min(1.0, v / 37) for v in range(1, 101)}
    value, recall, tried = dindex.smallest_passing(curve.__getitem__, 1, 100, 0.95)
    assert value == 36 and recall >= 0.95 and curve[35] < 0.95
    assert dindex.smallest_passing(lambda v: 0.5, 1, 8, 0.95)[:2] == (8, 0.5)


def test_small_catalog_is_exact():
    vectors, ids = unit_vectors(500, 16, 0), np.arange(500) + 10_000
    index, manifest = dindex.build_index(vectors, DenseIndexConfig(exact_max_items=1000), ids)
    assert manifest["kind"] == "flat" and manifest["measured_recall"] == 1.0 and manifest["n_items"] == 500
    assert exact_recall(index, vectors, ids, vectors[:20], 100) == 1.0
    assert dindex.search(index, vectors[:3], 1)[0][:, 0].tolist() == [10_000, 10_001, 10_002]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_reaches_target_recall_with_the_smallest_parameter(kind):
    n, d = 20_000, 32
    vectors, ids = unit_vectors(n, d, 1), np.arange(n, dtype=np.int64) * 3
    cfg = DenseIndexConfig(exact_max_items=10_000, kind=kind, recall_queries=100, hnsw_m=16, hnsw_ef_construction=40)
    index, manifest = dindex.build_index(vectors, cfg, ids)
    name = {"ivf": "nprobe", "hnsw": "efSearch"}[kind]
    value = manifest["params"][name]
    print(kind, manifest["params"], manifest["measured_recall"], manifest["recall_curve"])
    assert manifest["kind"] == kind and manifest["measured_recall"] >= 0.95 and manifest["n_queries"] == 100
    curve = dict(manifest["recall_curve"])
    assert curve[value] == manifest["measured_recall"]
    if value - 1 in curve:                               # the value below it was measured and failed
        assert curve[value - 1] < 0.95
    if kind == "ivf":
        assert manifest["params"]["nlist"] == dindex.ivf_nlist(n, cfg) and value < manifest["params"]["nlist"]
    assert dindex.gate_index(vectors, manifest) == []
    # fresh queries (not the build's sample), checked against brute force; then a byte round trip
    queries = unit_vectors(100, d, 2)
    assert exact_recall(index, vectors, ids, queries, 100) >= 0.93
    loaded = dindex.index_from_bytes(dindex.index_to_bytes(index), manifest)
    assert np.array_equal(dindex.search(loaded, queries, 10)[0], dindex.search(index, queries, 10)[0])


def test_gate_catches_nan_vectors_and_low_recall():
    vectors = unit_vectors(300, 8, 3)
    _, manifest = dindex.build_index(vectors, DenseIndexConfig(), np.arange(300))
    assert dindex.gate_index(vectors, manifest) == []
    broken = vectors.copy()
    broken[[5, 17]] = np.nan
    failures = dindex.gate_index(broken, manifest)
    assert len(failures) == 1 and "2 of 300 item vectors are not finite" in failures[0] and "[5, 17]" in failures[0]
    low = {**manifest, "kind": "ivf", "measured_recall": 0.81, "params": {"nlist": 8, "nprobe": 1}}
    failures = dindex.gate_index(vectors, low)
    assert len(failures) == 1 and "recall@100" in failures[0] and "0.81" in failures[0] and "below 0.95" in failures[0]
    assert any("not L2-normalised" in f for f in dindex.gate_index(vectors * 2, manifest))
    assert any("10 x 8" in f for f in dindex.gate_index(vectors[:10], manifest))


# -- re-ranking -----------------------------------------------------------------------------------------

def test_collision_reranker_orders_a_shared_sid_by_dr_score():
    # items 10, 11, 12 share SID (1, 2, 3); item 20 has its own SID (4, 5, 6)
    sids = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [4, 5, 6]])
    index = SidItems(sids, 8, np.array([10, 11, 12, 20]))
    lookup = ItemVectors(np.array([10, 11, 12, 20]), np.eye(4, dtype=np.float32))
    queries = np.array([[0.1, 0.2, 0.9, 0.0], [0.9, 0.1, 0.5, 0.0]], np.float32)   # request 0 prefers 12, 1 prefers 10
    beams = BeamResult(torch.tensor([[[1, 2, 3], [4, 5, 6]]] * 2), torch.tensor([[-0.1, -2.0]] * 2),
                       torch.full((2, 2), -1))
    out = index.expand(beams, top_n=4, reranker=dr_reranker(queries, lookup))
    assert out.items.tolist() == [[12, 11, 10, 20], [10, 12, 11, 20]]
    assert index.expand(beams, top_n=4).items[0].tolist() == [10, 11, 12, 20]   # without DR: item-id order


def test_two_stage_reorders_first_stage_by_dr():
    lookup = ItemVectors(np.array([1, 2, 3, 4]), np.eye(4, dtype=np.float32))
    queries = np.array([[0.1, 0.4, 0.3, 0.9], [1.0, 0.0, 0.0, 0.0]], np.float32)
    first = np.array([[1, 2, 3, 4, 99], [2, 1, 99, -1, -1]])                       # 99 has no DR vector
    out = two_stage(first, queries, lookup, top_n=3)
    assert out.items.tolist() == [[4, 2, 3], [1, 2, 99]]
    assert out.scores[0].tolist() == pytest.approx([0.9, 0.4, 0.3])
    wide = two_stage(first, queries, lookup, top_n=6)
    assert wide.items[1].tolist() == [1, 2, 99, -1, -1, -1] and np.isneginf(wide.scores[1, 2:]).all()


# -- lake entry points ------------------------------------------------------------------------------------

def test_train_and_encode_from_a_lake(tmp_path):
    lake = Lake.open(str(tmp_path / "lake"))
    samples, items, sids = world(0, 600)
    lake.write_partition(*RAW["items"], "2026-01-01", items.iloc[:150])
    lake.write_partition(*RAW["items"], "2026-01-02", items.iloc[150:])
    lake.write_partition(*ITEM_SIDS, "2026-01-01", sids.iloc[:150].assign(sid_version="sid-1"))
    lake.write_partition(*ITEM_SIDS, "2026-01-02", sids.assign(sid_version="sid-1"))
    lake.write_partition(*GR_SAMPLES, "2026-01-01", samples.iloc[:300])
    lake.write_partition(*GR_SAMPLES, "2026-01-02", samples.iloc[300:])
    cfg = tiny_cfg(max_epochs=2, codebook_size=4)          # raised to the snapshot's 16 codes
    model, stats = train_dense(cfg, TrainerConfig(), lake, [date(2026, 1, 2), date(2026, 1, 1)])
    assert stats["days"] == ["2026-01-01", "2026-01-02"] and stats["sample_rows"] == 600
    assert stats["sid_snapshot"] == "2026-01-02" and stats["items"] == N_ITEMS and model.cfg.codebook_size == 16
    ids, vectors = encode_items(model, lake, date(2026, 1, 1))
    assert np.array_equal(ids, items["item_id"].to_numpy()[:150]) and vectors.shape == (150, cfg.emb_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(PartitionNotFound, match="gr_samples"):
        train_dense(cfg, TrainerConfig(), lake, [date(2026, 1, 3)])
