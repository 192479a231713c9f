"""Tokenizer end to end on a real lake: incremental embeddings, tiny RQ-VAE fit, daily assignment."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from foundation.config import load_settings
from foundation.lake import Lake
from foundation.schemas import RAW_SCHEMAS
from models.tokenizer import embed, sids
from models.tokenizer.rqvae import model_from_bytes, model_to_bytes

CATS = ["drill", "saw", "glove", "lamp"]
BRANDS = ["acme", "bosch", "nordic", "zenith"]
ATTRS = ["cordless", "steel", "compact", "heavy duty", "blue", "led", "leather", "waterproof"]


def catalog(start_id: int, n: int, day: str, seed: int) -> pd.DataFrame:
    """Hand-built catalog rows with the raw `items` schema."""
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, len(CATS), n)
    brand = rng.choice(BRANDS, n)
    attrs = [", ".join(rng.choice(ATTRS, 2, replace=False)) for _ in range(n)]
    return pd.DataFrame({
        "item_id": np.arange(start_id, start_id + n, dtype=np.int64),
        "listing_date": pd.to_datetime([day] * n).date,
        "listed_at": pd.to_datetime([day] * n, utc=True),
        "title": [f"{b} {a.split(',')[0]} {CATS[c]} model {i}" for i, (b, a, c) in enumerate(zip(brand, attrs, cat, strict=True))],
        "category_id": cat.astype(np.int32),
        "category": [CATS[c] for c in cat],
        "brand": brand,
        "attributes": attrs,
        "price": rng.lognormal(3, 1, n),
    })


def write_items(lake: Lake, df: pd.DataFrame, ds: str) -> None:
    import pyarrow as pa

    lake.write_partition("raw", "items", ds, pa.Table.from_pandas(df, schema=RAW_SCHEMAS["items"], preserve_index=False))


@pytest.fixture(scope="module")
def encoder():
    """The real text encoder, loaded once for the module (a few seconds)."""
    return embed.load_encoder(32)


@pytest.fixture
def cfg():
    return load_settings("tiny", env={}).tokenizer


@pytest.fixture
def lake(tmp_path, encoder, cfg):
    """A lake with two days of catalog: 120 items on day 1, 20 new ones on day 2, embedded."""
    lake = Lake.open(str(tmp_path / "lake"))
    write_items(lake, catalog(0, 120, "2026-01-01", 1), "2026-01-01")
    write_items(lake, catalog(1000, 20, "2026-01-02", 2), "2026-01-02")
    return lake


def test_embeddings_are_incremental(lake, cfg, encoder):
    assert embed.embed_new_items(lake, date(2026, 1, 1), cfg, encoder) == 120
    assert embed.embed_new_items(lake, date(2026, 1, 2), cfg, encoder) == 20
    assert embed.embed_new_items(lake, date(2026, 1, 2), cfg, encoder) == 20   # a re-run rewrites the same delta
    day2 = lake.read_partition("curated", "item_embeddings", "2026-01-02").to_pandas()
    assert sorted(day2["item_id"]) == list(range(1000, 1020))
    assert (day2["encoder_version"] == embed.encoder_version()).all()
    emb = embed.read_embeddings(lake, date(2026, 1, 2))
    x = embed.embedding_matrix(emb)
    assert x.shape == (140, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    # same text -> the same vector (encoded once); the category words move the vector
    a = embed.encode_texts(encoder, ["acme cordless drill", "nordic leather glove", "acme cordless drill"], 8)
    assert a.shape == (3, 384) and np.array_equal(a[0], a[2]) and a[0] @ a[1] < 0.9


def test_fit_then_assign_keeps_existing_sids(lake, cfg, encoder):
    embed.embed_new_items(lake, date(2026, 1, 1), cfg, encoder)
    report = sids.fit(lake, date(2026, 1, 1), cfg)
    assert report["items"] == 120 and report["sid_version"] == "sid-20260101"
    assert 1 <= report["level1_codes_used"] <= cfg.codebook_size
    assert len(report["levels"]) == 3 and all(lv["perplexity"] >= 1 for lv in report["levels"])
    day1 = lake.read_partition("curated", "item_sids", "2026-01-01").to_pandas()
    assert len(day1) == 120 and day1["item_id"].is_unique
    assert day1[["c1", "c2", "c3"]].to_numpy().max() < cfg.codebook_size
    # disambiguation token: full SIDs are unique
    assert not day1.duplicated(["c1", "c2", "c3", "c4"]).any()

    embed.embed_new_items(lake, date(2026, 1, 2), cfg, encoder)
    out = sids.assign(lake, date(2026, 1, 2))
    assert out == {"ds": "2026-01-02", "sid_version": "sid-20260101", "base_ds": "2026-01-01",
                   "new_items": 20, "total_items": 140}
    day2 = lake.read_partition("curated", "item_sids", "2026-01-02").to_pandas()
    old = day2[day2["item_id"] < 1000].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, day1.reset_index(drop=True))
    assert not day2.duplicated(["c1", "c2", "c3", "c4"]).any()
    # re-running the day is idempotent
    assert sids.assign(lake, date(2026, 1, 2))["new_items"] == 0
    # the new items' SIDs are those the frozen model gives them (last level de-duplicated against day 1)
    model, meta = sids.load_version(lake, "sid-20260101")
    new_emb = embed.read_embeddings(lake, date(2026, 1, 2)).query("item_id >= 1000")
    taken = set(map(tuple, day1[["c1", "c2", "c3"]].to_numpy().tolist()))
    new_codes = day2[day2["item_id"] >= 1000][["c1", "c2", "c3"]].to_numpy()
    np.testing.assert_array_equal(sids.apply_codes(model, meta, new_emb, taken=taken), new_codes)
    nearest = sids.apply_codes(model, meta, new_emb)
    np.testing.assert_array_equal(nearest[:, :2], new_codes[:, :2])  # only the last level may move
    # a trie of the new-item pool accepts exactly their SIDs
    trie = sids.build_trie(day2, cfg.codebook_size, np.arange(1000, 1020))
    assert len(trie) == 20 and trie.depth == 4
    assert all(trie.contains(r) for r in sids.sid_matrix(day2[day2["item_id"] >= 1000]))


def test_fit_is_deterministic_and_model_roundtrips(lake, cfg, encoder):
    embed.embed_new_items(lake, date(2026, 1, 1), cfg, encoder)
    emb = embed.read_embeddings(lake, date(2026, 1, 1))
    a = sids.fit_codes(emb, cfg, "a")
    b = sids.fit_codes(emb, cfg, "b")
    np.testing.assert_array_equal(a.codes, b.codes)
    model, meta = model_from_bytes(model_to_bytes(a.model, a.meta))
    np.testing.assert_array_equal(sids.apply_codes(model, meta, emb), a.raw_codes)
    other = sids.fit_codes(emb, cfg.model_copy(update={"seed": 5}), "c")
    assert not np.array_equal(other.codes, a.codes)


def test_shared_collision_mode_leaves_c4_null(lake, cfg, encoder):
    embed.embed_new_items(lake, date(2026, 1, 1), cfg, encoder)
    cfg = cfg.model_copy(update={"collision_mode": "shared", "codebook_size": 2, "epochs": 2})
    report = sids.fit(lake, date(2026, 1, 1), cfg, sid_version="shared-v1")
    table = lake.read_partition("curated", "item_sids", "2026-01-01")
    assert table.schema.field("c4").type == "int32" and table.column("c4").null_count == 120
    df = table.to_pandas()
    assert report["collisions"] == 120 - len(df.drop_duplicates(["c1", "c2", "c3"])) > 0
    assert sids.sid_matrix(df).shape == (120, 3)


def test_dedup_last_level_moves_only_colliding_rows(lake, cfg, encoder):
    embed.embed_new_items(lake, date(2026, 1, 1), cfg, encoder)
    emb = embed.read_embeddings(lake, date(2026, 1, 1))
    tok = sids.fit_codes(emb, cfg, "v")
    raw, dedup = tok.raw_codes, tok.codes
    assert len(np.unique(dedup, axis=0)) >= len(np.unique(raw, axis=0))
    np.testing.assert_array_equal(raw[:, :2], dedup[:, :2])
    first_seen = ~pd.DataFrame(raw).duplicated().to_numpy()
    np.testing.assert_array_equal(raw[first_seen], dedup[first_seen])


def test_disambiguation_continues_existing_groups():
    existing = pd.DataFrame({"c1": [1, 1, 2], "c2": [0, 0, 0], "c3": [3, 3, 3], "c4": [0, 1, 0]})
    new = np.array([[1, 0, 3], [5, 5, 5], [1, 0, 3], [2, 0, 3]])
    codes, c4 = sids.unique_sids(new, 256, existing)
    assert c4.tolist() == [2, 0, 3, 1] and codes.tolist() == new.tolist()
