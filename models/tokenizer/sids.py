"""SID table: `fit` (new codebook, new SID version) and daily `assign` (frozen model, new items only).

Table `curated/item_sids`, one partition per day, each a full snapshot of the
SIDs valid that day (every item embedded up to that day, exactly one row
each): item_id int64, sid_version string, c1, c2, c3 int32, c4 int32 (the
disambiguation token; null when `collision_mode == "shared"`).

The model of a SID version lives at `models/tokenizer/<sid_version>/model.safetensors`
in the lake's object store (its header holds the config, input dim and
feature statistics).

Collisions: first, with `dedup_last_level`, an item whose (c1, c2, c3) is taken
moves to the nearest free c3 of its (c1, c2) prefix; only what is left collides.
Disambiguation (mode a, `unique_sids`) then makes every full SID (c1, c2, c3, c4)
unique by construction, keeping every code in [0, K) so the trie and the
catalog stay valid. Items are taken in row order (by item_id within one run),
after the SIDs already assigned, which never move; an item with codes
(c1, c2, c3) gets, in this order:
  1. the smallest free c4 of its group (c1, c2, c3) -- c4 = 0, 1, 2, ... in
     assignment order, so a new item continues its group;
  2. when the group holds K items: the first c3' of the same (c1, c2), by
     last-level residual distance (nearest first; |c3' - c3| without a model),
     whose group has a free c4, and that group's smallest free c4;
  3. when (c1, c2) holds all K * K SIDs: the first group with a free c4 in
     lexicographic order after (c1, c2, K - 1), cyclically (the next c2, then
     the next c1, ...), again with its smallest free c4.
The rule is deterministic, and it fails only when all K^4 SIDs are taken. Both
`fit` and `assign` refuse to write a snapshot whose item_id or full SID
repeats (`DuplicateSids`); the GX gate `sid_unique` is the second line. In
mode b ("shared") c4 is null and items may share a SID.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from foundation import catalog
from foundation.lake import Lake, PartitionNotFound
from foundation.sections.tokenizer import TokenizerConfig
from foundation.sections.trainer import TrainerConfig
from models.tokenizer import embed
from models.tokenizer.metrics import sid_report
from models.tokenizer.rqvae import RQVAE, model_from_bytes, model_to_bytes, train_rqvae
from models.tokenizer.runtime import torch_threads
from models.tokenizer.trie import SidTrie

log = logging.getLogger(__name__)

ZONE, TABLE = catalog.ITEM_SIDS
CODE_COLUMNS = ("c1", "c2", "c3")
SIDS_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("sid_version", pa.string()),
    ("c1", pa.int32()),
    ("c2", pa.int32()),
    ("c3", pa.int32()),
    ("c4", pa.int32()),
])


@dataclass
class Tokenized:
    """A fitted tokenizer applied to an item set."""

    model: RQVAE
    meta: dict
    item_ids: np.ndarray     # (N,) int64
    codes: np.ndarray        # (N, L) int64, before disambiguation
    recon_mse: float
    inputs: np.ndarray       # (N, In) float32, the RQ-VAE inputs
    raw_codes: np.ndarray    # (N, L) nearest codes before the last-level de-duplication


def model_key(sid_version: str) -> str:
    return f"models/tokenizer/{sid_version}/model.safetensors"


def build_inputs(emb: pd.DataFrame, cfg: TokenizerConfig, price_stats: tuple[float, float]) -> np.ndarray:
    """Embedding rows -> (N, In) RQ-VAE inputs: the text vector, plus side features when enabled."""
    x = embed.embedding_matrix(emb)
    if cfg.feature_weight <= 0 or not len(emb):
        return x
    feats = embed.side_features(emb["category"], emb["price"], cfg, price_stats)
    return np.concatenate([x, feats], axis=1).astype(np.float32)


def fit_codes(emb: pd.DataFrame, cfg: TokenizerConfig, sid_version: str, progress: bool = False,
              trainer_cfg: TrainerConfig | None = None) -> Tokenized:
    """Train an RQ-VAE on the embedding rows and give every row its codes."""
    if cfg.levels != len(CODE_COLUMNS):
        log.warning("levels=%d: the SID table holds 3 code columns", cfg.levels)
    pstats = embed.price_stats(emb["price"]) if "price" in emb else (0.0, 1.0)
    x = build_inputs(emb, cfg, pstats)
    model, stats = train_rqvae(x, cfg, progress=progress, trainer_cfg=trainer_cfg or TrainerConfig())
    with torch_threads(cfg.torch_threads):
        raw, recon = model.encode_codes(torch.as_tensor(x))
        codes = dedup_last_level(raw, model, x) if cfg.dedup_last_level else raw
    meta = {
        "sid_version": sid_version, "input_dim": int(x.shape[1]), "tokenizer": cfg.model_dump(mode="json"),
        "price_stats": list(pstats), "encoder": embed.ENCODER_NAME, "encoder_version": embed.encoder_version(),
        "train_items": int(len(x)), "steps": stats.steps, "codes_reseeded": stats.codes_reseeded,
    }
    log.info("fitted SID version %s on %d items: recon %.4f, %d codes re-seeded",
             sid_version, len(x), recon, stats.codes_reseeded)
    return Tokenized(model, meta, emb["item_id"].to_numpy(np.int64), codes, recon, x, raw)


def apply_codes(model: RQVAE, meta: dict, emb: pd.DataFrame, taken: set[tuple] | None = None) -> np.ndarray:
    """Codes (N, L) of embedding rows under a frozen model; with `taken` (the SIDs already
    assigned), colliding rows are de-duplicated at the last level when the version does so."""
    cfg = TokenizerConfig(**meta["tokenizer"])
    x = build_inputs(emb, cfg, tuple(meta["price_stats"]))
    if not len(x):
        return np.zeros((0, cfg.levels), np.int64)
    with torch_threads(cfg.torch_threads):
        codes = model.encode_codes(torch.as_tensor(x))[0]
        return dedup_last_level(codes, model, x, taken) if taken is not None and cfg.dedup_last_level else codes


def dedup_last_level(codes: np.ndarray, model: RQVAE, x: np.ndarray, taken: set[tuple] | None = None) -> np.ndarray:
    """Move colliding items to the nearest free last-level code of their prefix, in row order.

    Like MiniOneRec's Sinkhorn re-assignment of collided items, but greedy and incremental:
    a row whose SID is already taken (by `taken` or an earlier row) takes the nearest code
    (last-level residual distance) that makes its SID unique within the same (c1, .., c_{L-1})
    prefix; when every code of the prefix is taken it keeps its SID (the disambiguation token
    or the DR resolves it). Rows that do not collide never move, so existing SIDs stay stable.
    """
    codes = codes.copy()
    used = set(taken or ())
    clash = []
    for i, row in enumerate(map(tuple, codes.tolist())):
        if row in used:
            clash.append(i)
        else:
            used.add(row)
    if not clash:
        return codes
    with torch.no_grad():
        d2 = model.last_level_distances(torch.as_tensor(x[clash])).numpy()    # (n_clash, K)
    for j, i in enumerate(clash):
        prefix = tuple(codes[i, :-1].tolist())
        for code in np.argsort(d2[j], kind="stable"):
            if (*prefix, int(code)) not in used:
                codes[i, -1] = code
                break
        used.add(tuple(codes[i].tolist()))
    return codes


def unique_sids(codes: np.ndarray, k: int, existing: pd.DataFrame | None = None,
                last_dist: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes, c4) of new rows with `codes` (N, L), in row order, with every full SID unique among
    them and the rows of `existing` (CODE_COLUMNS + c4, never moved) -- the rule of the module
    docstring. `last_dist(rows)` gives the (len(rows), K) last-level distances of those rows
    (the order of step 2); None orders the last-level codes by |c3' - c3|."""
    codes = np.array(codes, dtype=np.int64)
    old = existing[[*CODE_COLUMNS, "c4"]].to_numpy(np.int64) if existing is not None and len(existing) else None
    if len(codes) + (0 if old is None else len(old)) > k ** (codes.shape[1] + 1):
        raise ValueError(f"{len(codes)} new items do not fit in the {k}^{codes.shape[1] + 1} SIDs")
    used: dict[tuple, set[int]] = defaultdict(set)   # group (c1..cL) -> its c4 in use
    low: dict[tuple, int] = {}                        # group -> every c4 below it is in use
    for *group, c in ([] if old is None else old.tolist()):
        used[tuple(group)].add(c)

    def take(group: tuple) -> int | None:
        """The smallest free c4 of `group`, now in use; None when all K are."""
        c = low.get(group, 0)
        while c in used[group]:
            c += 1
        low[group] = c
        if c >= k:
            return None
        used[group].add(c)
        return c

    c4 = np.empty(len(codes), np.int64)
    for i, row in enumerate(codes.tolist()):
        c = take(tuple(row))                                           # 1. own group
        if c is None:                                                  # 2. nearest c3' of the prefix
            d = last_dist(np.array([i]))[0] if last_dist else np.abs(np.arange(k) - row[-1])
            for code in np.argsort(d, kind="stable").tolist():
                if (c := take((*row[:-1], code))) is not None:
                    row[-1] = code
                    break
        if c is None:                                                  # 3. next groups, cyclically
            n_groups = k ** len(row)
            start = (int(np.dot(row[:-1], k ** np.arange(len(row) - 2, -1, -1))) + 1) * k
            for v in range(start, start + n_groups):
                group = [int(g) for g in np.unravel_index(v % n_groups, (k,) * len(row))]
                if (c := take(tuple(group))) is not None:
                    row = group
                    break
        codes[i], c4[i] = row, c
    return codes, c4


class DuplicateSids(ValueError):
    """A SID snapshot whose item_id or full SID repeats."""


def check_unique(df: pd.DataFrame, ds: date) -> None:
    """Refuse a snapshot with a repeated item_id or, with the disambiguation token, full SID."""
    keys = [["item_id"]] + ([[*CODE_COLUMNS, "c4"]] if df["c4"].notna().any() else [])
    for cols in keys:
        extra = df.duplicated(cols)
        if extra.any():
            dup = df[df.duplicated(cols, keep=False)].groupby(cols)["item_id"].apply(list)
            shown = "; ".join(f"{k} items {v}" for k, v in list(dup.items())[:10])
            raise DuplicateSids(f"refusing to write {ZONE}.{TABLE} [ds={ds}]: columns {','.join(cols)} not unique: "
                                f"{int(extra.sum())} of {len(df)} rows repeat ({len(dup)} groups): {shown}")


def write_snapshot(lake: Lake, ds: date, df: pd.DataFrame) -> None:
    check_unique(df, ds)
    lake.write_partition(ZONE, TABLE, ds, to_arrow(df))


def last_level_dist(model: RQVAE, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """rows -> (len(rows), K) last-level residual distances of those rows of `x`."""
    def dist(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.last_level_distances(torch.as_tensor(x[rows])).numpy()
    return dist


def sid_frame(item_ids: np.ndarray, codes: np.ndarray, sid_version: str, c4: np.ndarray | None) -> pd.DataFrame:
    """Rows of the SID table (contract above)."""
    df = pd.DataFrame({"item_id": item_ids.astype(np.int64), "sid_version": sid_version})
    for j, col in enumerate(CODE_COLUMNS):
        df[col] = codes[:, j].astype(np.int32)
    df["c4"] = pd.array(c4, dtype="Int32") if c4 is not None else pd.array([None] * len(df), dtype="Int32")
    return df


def to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, schema=SIDS_SCHEMA, preserve_index=False)


def default_version(ds: date) -> str:
    return f"sid-{ds:%Y%m%d}"


def fit(lake: Lake, ds: date, cfg: TokenizerConfig, sid_version: str | None = None,
        trainer_cfg: TrainerConfig | None = None) -> dict:
    """Train a codebook on every item embedded up to `ds`, save it as a new SID version,
    and write the SID snapshot for `ds`. Returns the report of the new assignment."""
    sid_version = sid_version or default_version(ds)
    emb = embed.read_embeddings(lake, ds)
    tok = fit_codes(emb, cfg, sid_version, progress=len(emb) > 10_000, trainer_cfg=trainer_cfg)
    codes, c4 = tok.codes, None
    if cfg.collision_mode == "disambiguation_token":
        with torch_threads(cfg.torch_threads):
            codes, c4 = unique_sids(tok.codes, cfg.codebook_size, None, last_level_dist(tok.model, tok.inputs))
    frame = sid_frame(tok.item_ids, codes, sid_version, c4)
    check_unique(frame, ds)                      # refuse before the model or the snapshot is written
    lake.store.put_bytes(model_key(sid_version), model_to_bytes(tok.model, tok.meta))
    write_snapshot(lake, ds, frame)
    report = sid_report(codes, tok.recon_mse, categories=emb["category"].to_numpy(),
                        codebook_size=cfg.codebook_size)
    report["moved_on_overflow"] = int((codes != tok.codes).any(axis=1).sum())
    report["collisions_nearest_code"] = sid_report(tok.raw_codes)["collisions"]
    report.update(sid_version=sid_version, ds=f"{ds}")
    lake.store.put_bytes(f"models/tokenizer/{sid_version}/report.json", json.dumps(report, indent=2).encode())
    return report


def load_version(lake: Lake, sid_version: str) -> tuple[RQVAE, dict]:
    """The frozen model of a SID version."""
    try:
        return model_from_bytes(lake.store.get_bytes(model_key(sid_version)))
    except FileNotFoundError:
        raise FileNotFoundError(f"no tokenizer model for SID version {sid_version!r} in the lake") from None


def latest_snapshot(lake: Lake, ds: date) -> tuple[date, pd.DataFrame]:
    """(ds, rows) of the newest `item_sids` partition at or before `ds`."""
    parts = lake.list_partitions(ZONE, TABLE, end=ds)
    if not parts:
        raise PartitionNotFound(f"no {ZONE}/{TABLE} at or before {ds}: run `growthgr tokenizer fit` first")
    return parts[-1], lake.read_partition(ZONE, TABLE, parts[-1]).to_pandas()


def assign(lake: Lake, ds: date, cfg: TokenizerConfig | None = None) -> dict:
    """SIDs for the items embedded up to `ds` that the latest snapshot lacks, with its frozen model;
    writes the snapshot for `ds` (old rows unchanged + new rows). Returns counts."""
    base_ds, base = latest_snapshot(lake, ds)
    versions = base["sid_version"].unique().tolist()
    if len(versions) != 1:
        raise ValueError(f"snapshot {base_ds} mixes SID versions {versions}")
    model, meta = load_version(lake, versions[0])
    emb = embed.read_embeddings(lake, ds)
    new = emb[~emb["item_id"].isin(base["item_id"])].reset_index(drop=True)
    codes = apply_codes(model, meta, new, taken=set(map(tuple, base[list(CODE_COLUMNS)].to_numpy().tolist())))
    vcfg, c4 = TokenizerConfig(**meta["tokenizer"]), None
    if vcfg.collision_mode == "disambiguation_token":
        x = build_inputs(new, vcfg, tuple(meta["price_stats"]))
        with torch_threads(vcfg.torch_threads):
            codes, c4 = unique_sids(codes, vcfg.codebook_size, base, last_level_dist(model, x))
    rows = sid_frame(new["item_id"].to_numpy(np.int64), codes, versions[0], c4)
    snapshot = pd.concat([base.astype(rows.dtypes.to_dict()), rows], ignore_index=True).sort_values("item_id")
    write_snapshot(lake, ds, snapshot)
    log.info("assigned %d new items with SID version %s (base %s)", len(rows), versions[0], base_ds)
    return {"ds": f"{ds}", "sid_version": versions[0], "base_ds": f"{base_ds}", "new_items": int(len(rows)),
            "total_items": int(len(snapshot))}


def sid_matrix(df: pd.DataFrame) -> np.ndarray:
    """SID rows -> (N, 3) or (N, 4) codes (the 4th column when the disambiguation token is present)."""
    cols = list(CODE_COLUMNS) + (["c4"] if df["c4"].notna().all() and len(df) else [])
    return df[cols].to_numpy(np.int64)


def build_trie(df: pd.DataFrame, codebook_size: int, item_ids: np.ndarray | None = None) -> SidTrie:
    """Trie of the SIDs of `item_ids` (all rows when None), e.g. the daily new-item pool."""
    if item_ids is not None:
        df = df[df["item_id"].isin(item_ids)]
    return SidTrie.from_sids(sid_matrix(df), codebook_size)
