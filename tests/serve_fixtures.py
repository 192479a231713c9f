"""A small serving world (tests/test_serve.py, benchmarks/serve_load.py): a lake with registered users,
their `gr_samples` requests, the catalog's items and SIDs, and releases holding a MultiGR trained on
those requests (and, optionally, the dense retriever with its FAISS index); plus a real uvicorn on
loopback in a thread and a real redis-server.

Each request's query names the pool item it buys (`brand<i> shoes`, intent = the item's category),
so a trained MultiGR ranks that item first; histories are random catalog items.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foundation.catalog import GR_SAMPLES, ITEM_SIDS, RAW
from foundation.config import Settings, load_settings
from foundation.lake import Lake
from foundation.releases import ReleaseStore
from foundation.sections.dense import PROFILES as DENSE_PROFILES
from foundation.sections.dense import DenseConfig
from foundation.sections.multigr import PROFILES as MULTIGR_PROFILES
from foundation.sections.multigr import MultiGRConfig

DS = "2026-01-10"
CODES = ["c1", "c2", "c3"]
SID_VERSION = "sid-20260101"
UNKNOWN_USER = 10**9


@dataclass(frozen=True)
class World:
    settings: Settings
    store: ReleaseStore
    active_users: np.ndarray      # registered users with requests (a history)
    cold_user: int                # registered, no request in the lake
    pool_items: np.ndarray        # every item that is in some release's pool
    queries: list[str]            # query texts of pool items (query i buys pool_items[i])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def item_frame(n_items: int, codebook: int, rng: np.random.Generator) -> pd.DataFrame:
    """Items 1000.. with category, price and unique random 3-level SIDs (the last two items of the
    catalog share one SID: a collision inside the pool)."""
    ids = np.arange(1000, 1000 + n_items, dtype=np.int64)
    codes = np.array(np.unravel_index(rng.choice(codebook**3, n_items, replace=False), (codebook,) * 3)).T
    codes[-1] = codes[-2]
    frame = pd.DataFrame({"item_id": ids, "category_id": (ids % 16).astype(np.int32),
                          "price": rng.uniform(1, 100, n_items), "sid_version": SID_VERSION})
    for j, col in enumerate(CODES):
        frame[col] = codes[:, j].astype(np.int32)
    return frame


def request_frame(items: pd.DataFrame, pool: np.ndarray, users: np.ndarray, per_day: int, day: str,
                  first_id: int, rng: np.random.Generator) -> pd.DataFrame:
    """`per_day` gr_samples rows of one day: a random active user buys the pool item its query names."""
    ids = items["item_id"].to_numpy()
    wanted = rng.integers(0, len(pool), per_day)
    start = datetime.fromisoformat(day + "T00:00:00+00:00")
    rows = []
    for r, w in enumerate(wanted):
        item = int(pool[w])
        ranked = list(dict.fromkeys([item, *map(int, rng.choice(ids, 30))]))
        rows.append({"request_id": first_id + r, "user_id": int(rng.choice(users)),
                     "ts": start + timedelta(seconds=int(r * 86_000 / per_day)), "query_text": f"brand{w} shoes",
                     "intent_category_id": np.int32(item % 16),
                     "history_item_ids": [int(i) for i in rng.choice(ids, int(rng.integers(0, 8)))],
                     "rank_candidate_ids": ranked, "exposure_ids": ranked[:6], "click_ids": [item],
                     "purchase_ids": [item], "site_order_item_ids": []})
    return pd.DataFrame(rows)


def write_lake(lake: Lake, items: pd.DataFrame, samples: dict[str, pd.DataFrame], n_users: int) -> None:
    day0 = min(samples)
    users = pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64), "signup_date": date.fromisoformat(day0),
                          "region": "north", "age_band": "25-34"})
    lake.write_partition(*RAW["users"], day0, users)
    lake.write_partition(*RAW["items"], day0, items[["item_id", "category_id", "price"]])
    lake.write_partition(*ITEM_SIDS, day0, items[["item_id", "sid_version", *CODES]].assign(
        c4=pd.array([None] * len(items), dtype="Int32")))
    for day, frame in samples.items():
        lake.write_partition(*GR_SAMPLES, day, frame)


def train_multigr(cfg: MultiGRConfig, samples: pd.DataFrame, items: pd.DataFrame):
    from models.multigr.data import SFTDataModule
    from models.multigr.model import Vocab
    from models.multigr.platform import SidLookup, platform_config, sft_examples
    from models.multigr.train import fit

    lookup = SidLookup(items, CODES)
    cfg = platform_config(cfg, lookup.codes, cfg.codebook_size)
    examples = sft_examples(Vocab.from_config(cfg), samples, lookup, cfg.max_history, cfg.max_query_words)
    return fit(cfg, SFTDataModule(examples, cfg.batch_size, cfg.seed))[0]


def train_dense(cfg: DenseConfig, samples: pd.DataFrame, items: pd.DataFrame) -> dict[str, bytes]:
    """The DR release files: checkpoint, config (with the index manifest) and FAISS index of the catalog."""
    from models.dense.data import ItemTable, build_requests
    from models.dense.index import build_index, index_to_bytes
    from models.dense.train import encode_catalog, fit, save_checkpoint

    table = ItemTable.from_frames(items[["item_id", "category_id", "price"]], items, CODES)
    model, _ = fit(cfg, build_requests(samples, cfg), table)
    ids, vectors = encode_catalog(model, table)
    index, manifest = build_index(vectors, cfg.index, ids)
    files = checkpoint_files(save_checkpoint, model, "dense", {"index": manifest})
    return {**files, "dense_index.faiss": index_to_bytes(index)}


def checkpoint_files(save, model, name: str, extra: dict | None = None) -> dict[str, bytes]:
    """`<name>.safetensors` + `<name>_config.json` of a `save_checkpoint(model, dir, extra)`."""
    with tempfile.TemporaryDirectory() as tmp:
        save(model, tmp, extra)
        return {f"{name}.safetensors": (Path(tmp) / "model.safetensors").read_bytes(),
                f"{name}_config.json": (Path(tmp) / "config.json").read_bytes()}


def publish(store: ReleaseStore, release_id: str, model, items: pd.DataFrame, pool: np.ndarray,
            extra: dict[str, bytes], make_current: bool) -> None:
    """A release of `pool` (SIDs, trie) with `model` (MultiGR) and `extra` files."""
    from models.multigr.train import save_checkpoint
    from models.tokenizer.trie import SidTrie

    rows = items[items["item_id"].isin(pool)][["item_id", "sid_version", *CODES]]
    with tempfile.TemporaryDirectory() as tmp:
        SidTrie.from_sids(rows[CODES].to_numpy(), model.cfg.codebook_size).save(Path(tmp) / "trie.npz")
        trie = (Path(tmp) / "trie.npz").read_bytes()
    files = {"sid_trie.npz": trie, "item_sids.parquet": rows.to_parquet(index=False),
             "pool.parquet": pd.DataFrame({"item_id": pool}).to_parquet(index=False),
             **checkpoint_files(save_checkpoint, model, "multigr"), **extra}
    store.publish(release_id, files, {"ds": DS, "sid_version": SID_VERSION}, make_current=make_current)


def build_world(root: Path, profile: str = "tiny", n_users: int = 60, n_items: int = 200, pool_size: int = 24,
                per_day: int = 300, epochs: int = 8, serve: dict | None = None) -> World:
    """Lake + releases under `root`: `A` (MultiGR only, current) over the first `pool_size` pool items
    and `B` (MultiGR + DR, published, not current) over a pool shifted by a third."""
    rng = np.random.default_rng(0)
    settings = load_settings(profile, env={}, overrides={
        "lake_root": str(root / "lake"), "releases_root": str(root / "releases"), "serve": serve or {}})
    mcfg = MultiGRConfig(**{**MULTIGR_PROFILES[profile], "max_epochs": epochs, "lr": 5e-3})
    items = item_frame(n_items, mcfg.codebook_size, rng)
    ids = items["item_id"].to_numpy()
    shift = pool_size // 3
    pool_items = ids[-(pool_size + shift):]                 # every pool item; the last two share a SID
    active = np.arange(n_users - 1, dtype=np.int64)         # the last registered user never searched
    day1 = (date.fromisoformat(DS) - timedelta(days=1)).isoformat()
    samples = {d: request_frame(items, pool_items, active, per_day, d, i * per_day, rng)
               for i, d in enumerate((day1, DS))}
    lake = Lake.open(settings.lake_root)
    write_lake(lake, items, samples, n_users)
    train = pd.concat(samples.values(), ignore_index=True)
    store = ReleaseStore.from_settings(settings)
    publish(store, "A", train_multigr(mcfg, train, items), items, pool_items[:pool_size], {}, True)
    dcfg = DenseConfig(**{**DENSE_PROFILES[profile], "max_epochs": max(epochs // 4, 1),
                          "codebook_size": mcfg.codebook_size})
    publish(store, "B", train_multigr(mcfg.model_copy(update={"seed": 1}), train, items), items,
            pool_items[shift:], train_dense(dcfg, train, items), False)
    queries = [f"brand{w} shoes" for w in range(len(pool_items))]
    return World(settings, store, active, n_users - 1, pool_items, queries)


@contextmanager
def uvicorn_thread(settings: Settings) -> Iterator[str]:
    """`growthgr.serve.create_app(settings)` in a real uvicorn on 127.0.0.1 (a free port), in a thread;
    yields its base URL once started (the release loaded)."""
    import uvicorn

    from growthgr.serve import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def redis_url(redis_endpoint: str) -> str:
    """The URL of conftest's real redis-server."""
    return f"redis://{redis_endpoint}/0"
