"""SIDs unique by construction (`sids.unique_sids`) and the refusal to write a non-unique table."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.config import load_settings
from foundation.lake import Lake
from models.tokenizer import embed, sids

SID = ["c1", "c2", "c3", "c4"]


def full(codes: np.ndarray, c4: np.ndarray) -> np.ndarray:
    return np.column_stack([codes, c4])


def frame(codes: np.ndarray, c4: np.ndarray, start_id: int = 0) -> pd.DataFrame:
    return sids.sid_frame(np.arange(start_id, start_id + len(codes)), codes, "v", c4)


def assert_valid(sid: np.ndarray, k: int) -> None:
    assert len(np.unique(sid, axis=0)) == len(sid), "full SIDs repeat"
    assert not sid.size or (sid.min() >= 0 and sid.max() < k), "a code leaves the codebook"


def draw_codes(rng: np.random.Generator, n: int, k: int, spread: int) -> np.ndarray:
    """(n, 3) codes concentrated on few values per level (like an RQ-VAE on a small catalog)."""
    p = 1.0 / np.arange(1, k + 1) ** spread
    return rng.choice(k, size=(n, 3), p=p / p.sum())


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([2, 3, 4, 8, 16]),
       n=st.integers(0, 300), spread=st.sampled_from([0, 1, 2, 4]), cut=st.floats(0, 1))
def test_unique_deterministic_and_incremental(seed, k, n, spread, cut):
    n = min(n, k**4)
    codes = draw_codes(np.random.default_rng(seed), n, k, spread)
    out, c4 = sids.unique_sids(codes, k)
    assert_valid(full(out, c4), k)
    again = sids.unique_sids(codes.copy(), k)
    np.testing.assert_array_equal(full(*again), full(out, c4))
    # a row keeps its codes while its group has a free c4 (always, when no group outgrows K)
    if not n or pd.DataFrame(codes).value_counts().max() <= k:
        np.testing.assert_array_equal(out, codes)
    # assigning the rest later: old SIDs untouched, the result the same as in one run
    m = int(cut * n)
    old_codes, old_c4 = sids.unique_sids(codes[:m], k)
    new_codes, new_c4 = sids.unique_sids(codes[m:], k, frame(old_codes, old_c4))
    np.testing.assert_array_equal(full(old_codes, old_c4), full(out, c4)[:m])
    np.testing.assert_array_equal(full(new_codes, new_c4), full(out, c4)[m:])


def test_group_larger_than_codebook():
    k = 4
    codes = np.tile([1, 2, 3], (50, 1))
    out, c4 = sids.unique_sids(codes, k)
    assert_valid(full(out, c4), k)
    # 1. the own group first, c4 = 0..3
    assert full(out, c4)[:4].tolist() == [[1, 2, 3, c] for c in range(4)]
    # 2. then the nearest last-level codes of the prefix (|c3' - c3| without a model: 2, 1, 0)
    assert out[4:16, 2].tolist() == [2] * 4 + [1] * 4 + [0] * 4 and (out[:16, :2] == [1, 2]).all()
    # 3. then the next c2 (1, 3, *), in order
    assert full(out, c4)[16:20].tolist() == [[1, 3, 0, c] for c in range(4)]
    assert (out[16:32, :2] == [1, 3]).all()
    assert full(out, c4)[32:].tolist() == [[2, 0, c // 4, c % 4] for c in range(16)] + [[2, 1, 0, 0], [2, 1, 0, 1]]
    # step 3 wraps past the last prefix to (0, 0)
    last, _ = sids.unique_sids(np.tile([3, 3, 3], (17, 1)), k)
    assert last[-1].tolist() == [0, 0, 0]


def test_overflow_follows_the_residual_distance():
    k = 4
    dist = lambda rows: np.tile([5.0, 0.0, 9.0, 1.0], (len(rows), 1))    # noqa: E731 -- nearest: 1, 3, 0, 2
    out, c4 = sids.unique_sids(np.tile([0, 0, 2], (13, 1)), k, last_dist=dist)
    assert out[:, 2].tolist() == [2] * 4 + [1] * 4 + [3] * 4 + [0]


def test_existing_sids_are_respected_and_the_space_can_fill():
    k = 2
    codes = np.zeros((16, 3), np.int64)
    out, c4 = sids.unique_sids(codes, k)
    assert_valid(full(out, c4), k)                      # all 2^4 SIDs, each once
    with pytest.raises(ValueError, match="do not fit"):
        sids.unique_sids(np.zeros((1, 3), np.int64), k, frame(out, c4))
    # an existing table with gaps: new items fill the smallest free c4 of their group
    existing = pd.DataFrame({"c1": [0, 0], "c2": [0, 0], "c3": [0, 0], "c4": [0, 2]})
    assert sids.unique_sids(np.zeros((2, 3), np.int64), 4, existing)[1].tolist() == [1, 3]


def test_refuses_a_non_unique_table():
    df = frame(np.array([[13, 3, 7], [13, 3, 7], [1, 2, 3], [13, 3, 7]]), np.array([7, 7, 0, 8]), start_id=100)
    with pytest.raises(sids.DuplicateSids) as err:
        sids.check_unique(df, date(2026, 2, 13))
    msg = str(err.value)
    assert "curated.item_sids [ds=2026-02-13]" in msg and "c1,c2,c3,c4" in msg
    assert "1 of 4 rows" in msg and "(13, 3, 7, 7) items [100, 101]" in msg
    with pytest.raises(sids.DuplicateSids, match="columns item_id not unique"):
        sids.check_unique(pd.concat([df.iloc[2:3], df.iloc[2:3]]), "2026-02-13")
    sids.check_unique(df.iloc[1:], date(2026, 2, 13))                             # unique: passes
    sids.check_unique(df.assign(c4=pd.array([None] * 4, dtype="Int32")), "d")  # shared mode may share SIDs


@pytest.mark.parametrize("seed", range(10))
def test_tiny_world_first_day_is_unique(seed):
    """A tiny-sized first-day catalog (905 items, K=16) with the skew that broke the gate:
    a (c1, c2) prefix full of c3 codes and one group of 23 items."""
    rng = np.random.default_rng(seed)
    k = 16
    codes = np.concatenate([draw_codes(rng, 850, k, 2), [[13, 3, c] for c in range(k)] * 2,
                            np.tile([13, 3, 7], (23, 1))])[rng.permutation(905)]
    assert pd.DataFrame(codes).value_counts().max() > k                     # the 4th code alone cannot do it
    out, c4 = sids.unique_sids(codes, k)
    assert_valid(full(out, c4), k)
    sids.check_unique(frame(out, c4), "2026-02-13")


# -- end to end on a lake with synthetic embeddings (no text encoder) ----------------------------
def write_embeddings(lake: Lake, ds: str, ids: np.ndarray, x: np.ndarray) -> None:
    n = len(ids)
    df = pd.DataFrame({"item_id": ids, "encoder": [embed.ENCODER_NAME] * n,
                       "encoder_version": [embed.encoder_version()] * n, "embedding": list(x),
                       "category": pd.Series(["c"] * n, dtype="string"), "price": np.ones(n)})
    lake.write_partition("curated", "item_embeddings", ds, embed.to_arrow(df))


def clustered(rng: np.random.Generator, n: int, dup: int, dim: int = 32) -> np.ndarray:
    """n unit vectors around a few centres, the first `dup` of them identical."""
    x = rng.normal(size=(8, dim))[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, dim))
    x[:dup] = x[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tiny_cfg(**update):
    return load_settings("tiny", env={}).tokenizer.model_copy(update=update)


def test_fit_and_assign_with_a_tiny_codebook(tmp_path):
    rng = np.random.default_rng(0)
    lake = Lake.open(str(tmp_path / "lake"))
    write_embeddings(lake, "2026-01-01", np.arange(150), clustered(rng, 150, dup=60))
    report = sids.fit(lake, date(2026, 1, 1), tiny_cfg(codebook_size=4, epochs=3))
    day1 = lake.read_partition("curated", "item_sids", "2026-01-01").to_pandas()
    assert report["moved_on_overflow"] > 0
    assert_valid(day1[SID].to_numpy(np.int64), 4)
    write_embeddings(lake, "2026-01-02", np.arange(1000, 1060), clustered(rng, 60, dup=60))
    sids.assign(lake, date(2026, 1, 2))
    day2 = lake.read_partition("curated", "item_sids", "2026-01-02").to_pandas()
    assert_valid(day2[SID].to_numpy(np.int64), 4)
    pd.testing.assert_frame_equal(day2[day2["item_id"] < 1000].reset_index(drop=True), day1)


def test_fit_refuses_to_write_duplicates(tmp_path, monkeypatch):
    lake = Lake.open(str(tmp_path / "lake"))
    write_embeddings(lake, "2026-01-01", np.arange(40), clustered(np.random.default_rng(1), 40, dup=40))
    monkeypatch.setattr(sids, "unique_sids", lambda codes, *a: (codes, np.zeros(len(codes), np.int64)))
    with pytest.raises(sids.DuplicateSids, match=r"curated.item_sids \[ds=2026-01-01\]: columns c1,c2,c3,c4"):
        sids.fit(lake, date(2026, 1, 1), tiny_cfg(codebook_size=4, epochs=2))
    assert not lake.list_partitions("curated", "item_sids")


@pytest.mark.parametrize("seed", range(10))
def test_tiny_world_first_day_fit_is_unique(tmp_path, seed):
    """`fit` of a tiny-sized first day (905 items, K=16, 23 identical items) writes unique SIDs
    (synthetic embeddings: a simulated day costs ~25 s of text encoding)."""
    lake = Lake.open(str(tmp_path / "lake"))
    write_embeddings(lake, "2026-02-13", np.arange(905), clustered(np.random.default_rng(seed), 905, dup=23))
    sids.fit(lake, date(2026, 2, 13), tiny_cfg(seed=seed))
    df = lake.read_partition("curated", "item_sids", "2026-02-13").to_pandas()
    assert len(df) == 905
    assert_valid(df[SID].to_numpy(np.int64), 16)
