"""MultiGR on the simulated platform: `samples/gr_samples` rows -> examples, and offline evaluation.

A request's prompt is BOS, two user feature tokens (hashed user id and the
query's intent category), the SIDs of the user's last `max_history` history
items, and the query words. SFT targets are the items purchased through the
request (one example per purchased item). Items without a SID in the snapshot used
are dropped from histories and targets (evaluation uses the snapshot of the last test
day, in which the frozen tokenizer gave new items their SIDs: `eval_lookup`).

Labels (DESIGN.md section 7): `search` = `purchase_ids`; `all-net` = the
site-wide orders linked to the request (`site_order_item_ids`) plus the
search purchases. Recall@k = |relevant in top k| / |relevant|, averaged over the
requests with at least one relevant item that has a SID; NDCG@k with binary gains
(`models.metrics`).

`run_platform` is the offline evaluation on held-out days of a lake (train on the
days before, test on the newest days, against a popularity ranking); it writes
`reports/multigr/ds=<ds>/metrics.json` (`catalog.report_key("multigr", ds)`).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from datetime import date, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from foundation.catalog import ITEM_SIDS, RAW, report_key
from foundation.lake import Lake, PartitionNotFound, ds_range
from foundation.samples import read_gr_samples
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models.metrics import ranking_metrics
from models.multigr.beam import SidItems, beam_search, trie_table
from models.multigr.data import Example, SFTDataModule, context_tokens, left_pad, sample_example
from models.multigr.model import MultiGR, Vocab
from models.tokenizer.trie import SidTrie

LABELS = {"search": ("purchase_ids",), "all-net": ("purchase_ids", "site_order_item_ids")}


def _hash(kind: str, value: object) -> int:
    return zlib.crc32(f"{kind}:{value}".encode())


class SidLookup:
    """item id -> (L,) SID codes for the items of one `curated/item_sids` snapshot."""

    def __init__(self, item_sids: pd.DataFrame, code_columns: Sequence[str]):
        self.ids = item_sids["item_id"].to_numpy(np.int64)
        order = np.argsort(self.ids)
        self.ids = self.ids[order]
        self.codes = item_sids[list(code_columns)].to_numpy(np.int64)[order]  # (N, L)

    def known(self, items: np.ndarray) -> np.ndarray:
        """The items of `items` that have a SID, in their order."""
        items = np.asarray(items, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, items), 0, max(len(self.ids) - 1, 0))
        return items[(len(self.ids) > 0) & (self.ids[pos] == items)]

    def sids(self, items: np.ndarray) -> np.ndarray:
        """(n,) known item ids -> (n, L) codes."""
        return self.codes[np.searchsorted(self.ids, np.asarray(items, dtype=np.int64))]

    def index(self, codebook_size: int) -> SidItems:
        """The SID -> items index of this snapshot (for `SidItems.expand`)."""
        return SidItems(self.codes, codebook_size, self.ids)


def request_prompt(vocab: Vocab, row, lookup: SidLookup, max_history: int, max_query_words: int) -> np.ndarray:
    history = lookup.known(np.asarray(row.history_item_ids, dtype=np.int64))[-max_history:]
    feats = [_hash("user", row.user_id), _hash("intent", row.intent_category_id)]
    return context_tokens(vocab, lookup.sids(history), feats, str(row.query_text), max_query_words)


def sft_examples(model_vocab: Vocab, samples: pd.DataFrame, lookup: SidLookup, max_history: int,
                 max_query_words: int) -> list[Example]:
    """One example per (request, purchased item with a SID)."""
    out = []
    for row in samples.itertuples(index=False):
        targets = lookup.known(np.asarray(row.purchase_ids, dtype=np.int64))
        if len(targets):
            prompt = request_prompt(model_vocab, row, lookup, max_history, max_query_words)
            out.extend(sample_example(model_vocab, prompt, sid) for sid in lookup.sids(targets))
    return out


def relevant_sets(samples: pd.DataFrame, lookup: SidLookup) -> dict[str, list[np.ndarray]]:
    """Per label set, per request: the relevant items that have a SID (the retrievable ones)."""
    return {
        name: [lookup.known(np.concatenate([np.asarray(getattr(r, c), dtype=np.int64) for c in cols]))
               for r in samples.itertuples(index=False)]
        for name, cols in LABELS.items()
    }


def evaluate_samples(
    model: MultiGR,
    samples: pd.DataFrame,
    lookup: SidLookup,
    trie_next,
    ks: Sequence[int] = (10, 100, 1000),
    batch_size: int = 64,
    beam_widths: Sequence[int] | None = None,
) -> dict[str, dict[str, float]]:
    """Full-pool retrieval metrics per label set. Beam widths: `beam_widths`, else the config's
    with the last widened to max(ks) (the last width must cover max(ks) SIDs)."""
    ranked = rank_samples(model, samples, lookup, trie_next, max(ks), batch_size, beam_widths)
    return {name: ranking_metrics(ranked, rel, ks) for name, rel in relevant_sets(samples, lookup).items()}


def rank_samples(model: MultiGR, samples: pd.DataFrame, lookup: SidLookup, trie_next, top: int,
                 batch_size: int = 64, beam_widths: Sequence[int] | None = None) -> np.ndarray:
    """(requests, top) item ids by trie-constrained beam search over the SIDs of `lookup` (see
    `evaluate_samples` for the beam widths); items sharing a SID in item-id order."""
    cfg = model.cfg
    index = lookup.index(cfg.codebook_size)
    prompts = [request_prompt(model.vocab, r, lookup, cfg.max_history, cfg.max_query_words)
               for r in samples.itertuples(index=False)]
    widths = list(beam_widths or list(cfg.beam_widths[:-1]) + [max(cfg.beam_widths[-1], top)])
    return np.concatenate([
        index.expand(beam_search(model, left_pad(prompts[i : i + batch_size]), widths, top, trie_next), top).items
        for i in range(0, len(prompts), batch_size)
    ] or [np.zeros((0, top), np.int64)])


# ---------------------------------------------------------------------------------------------
# Offline evaluation on held-out days of a lake (DESIGN.md section 7)

KS = (10, 100, 1000)
SAMPLE_COLUMNS = ["request_id", "user_id", "query_text", "intent_category_id", "history_item_ids",
                  "rank_candidate_ids", "exposure_ids", "click_ids",
                  "purchase_ids", "site_order_item_ids"]


def split_days(ds: date, train_days: int, test_days: int) -> tuple[list[date], list[date]]:
    """(train, test): the newest `test_days` days up to `ds` and the `train_days` before them."""
    if train_days < 1 or test_days < 1:
        raise ValueError(f"need train_days >= 1 and test_days >= 1, got {train_days}, {test_days}")
    days = ds_range(ds - timedelta(days=train_days + test_days - 1), ds)
    return days[:train_days], days[train_days:]


def add_late_site_orders(lake: Lake, samples: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """`site_order_item_ids` plus the `raw/site_orders` of days start..end linked to the request.

    `gr_samples` for day D only holds the site orders placed on D, but the simulator links
    a site order to one of the buyer's queries of earlier days (1 to 7 days before), so
    without this the `all-net` label would hold no site order at all. Orders placed after
    `end` are not seen: the newest test day gets no late orders (a short label window).
    """
    if not lake.list_partitions(*RAW["site_orders"], start, end):
        return samples
    orders = lake.read_range(*RAW["site_orders"], start, end, ["item_id", "ts", "linked_request_id"]).to_pandas()
    orders = orders[orders["linked_request_id"].notna()].sort_values(["ts", "item_id"], kind="stable")
    late = orders.groupby(orders["linked_request_id"].astype(np.int64))["item_id"].agg(list).to_dict()
    out = samples.copy()
    out["site_order_item_ids"] = [list(dict.fromkeys([*map(int, own), *late.get(rid, ())]))
                                  for rid, own in zip(out["request_id"], out["site_order_item_ids"], strict=True)]
    return out


def popularity_ranking(train: pd.DataFrame, lookup: SidLookup) -> np.ndarray:
    """Every item with a SID, by purchases in `train` (ties: clicks, then item id)."""
    def counts(col: str) -> np.ndarray:
        bought = lookup.known(np.concatenate([np.asarray(v, np.int64) for v in train[col]] + [np.zeros(0, np.int64)]))
        return np.bincount(np.searchsorted(lookup.ids, bought), minlength=len(lookup.ids))

    return lookup.ids[np.lexsort((lookup.ids, -counts("click_ids"), -counts("purchase_ids")))]


def platform_config(cfg: MultiGRConfig, codes: np.ndarray, codebook_size: int) -> MultiGRConfig:
    """`cfg` with the SID table's depth and codebook size, and room for the longest prompt + target."""
    if codes.size and codes.max() >= codebook_size:
        raise ValueError(f"SID code {codes.max()} >= codebook_size {codebook_size}")
    levels = codes.shape[1]
    return cfg.model_copy(update={
        "sid_levels": levels,
        "codebook_size": codebook_size,
        "max_len": max(cfg.max_len, 3 + (cfg.max_history + 1) * levels + cfg.max_query_words),
        "beam_widths": (cfg.beam_widths + [cfg.beam_widths[-1]] * levels)[:levels],
    })


class PlatformData(NamedTuple):
    """What `run_platform` reads from the lake for one evaluation."""

    train_days: list[date]
    test_days: list[date]
    train: pd.DataFrame          # gr_samples rows of the train days
    test: pd.DataFrame           # gr_samples rows of the test days, all-net completed by later site orders
    sid_ds: date                 # the item_sids snapshot used for training (as of the last train day)
    sid_version: str
    codes: np.ndarray            # (N, L) SIDs of that snapshot (c4 included when present)
    lookup: SidLookup
    codebook_size: int           # of the SID version's tokenizer
    eval_sid_ds: date            # the snapshot of evaluation (as of the last test day, see `eval_lookup`)
    eval_lookup: SidLookup


def code_columns(table: pd.DataFrame) -> list[str]:
    """The SID code columns of an `item_sids` table: c1..c3, and c4 when every row has one."""
    from models.tokenizer import sids

    has_c4 = "c4" in table and len(table) and table["c4"].notna().all()
    return list(sids.CODE_COLUMNS) + ["c4"] * bool(has_c4)


def eval_lookup(train_sids: pd.DataFrame, test_sids: pd.DataFrame) -> SidLookup:
    """The SIDs of evaluation: the snapshot as of the last test day, which `sids.assign` extends with
    the new items' SIDs from the frozen tokenizer (item content only), so items listed on the test
    days are retrievable. Refused when it is another SID version or moved an item of the train snapshot."""
    versions = set(train_sids["sid_version"]) | set(test_sids["sid_version"])
    if len(versions) != 1:
        raise ValueError(f"train and test SID snapshots mix SID versions {sorted(versions)}")
    cols = code_columns(train_sids)
    if code_columns(test_sids) != cols:
        raise ValueError(f"train and test SID snapshots have different code columns {cols}")
    both = train_sids[["item_id", *cols]].merge(test_sids[["item_id", *cols]], on="item_id", suffixes=("", "_t"))
    moved = (both[cols].to_numpy(np.int64) != both[[f"{c}_t" for c in cols]].to_numpy(np.int64)).any(1)
    if len(both) < len(train_sids) or moved.any():
        raise ValueError(f"the test SID snapshot moved or dropped {int(moved.sum()) + len(train_sids) - len(both)} "
                         "items of the train snapshot")
    return SidLookup(test_sids, cols)


def load_platform_data(lake: Lake, ds: date, train_days: int, test_days: int) -> PlatformData:
    """Train / test samples and the SID snapshot as of the last train day (see `run_platform`)."""
    from models.tokenizer import sids

    train_ds, test_ds = split_days(ds, train_days, test_days)
    train, test = read_gr_samples(lake, train_ds, SAMPLE_COLUMNS), read_gr_samples(lake, test_ds, SAMPLE_COLUMNS)
    test = add_late_site_orders(lake, test, test_ds[0], test_ds[-1])
    parts = lake.list_partitions(*ITEM_SIDS, end=train_ds[-1])
    if not parts:
        raise PartitionNotFound(f"no {ITEM_SIDS.key(train_ds[-1])} or earlier: run `growthgr tokenizer fit`")
    sid_ds, table = parts[-1], lake.read_partition(*ITEM_SIDS, parts[-1]).to_pandas()
    version = str(table["sid_version"].iloc[0])
    lookup = SidLookup(table, code_columns(table))
    codebook_size = int(sids.load_version(lake, version)[1]["tokenizer"]["codebook_size"])
    eval_ds = lake.list_partitions(*ITEM_SIDS, end=test_ds[-1])[-1]
    evaluated = eval_lookup(table, lake.read_partition(*ITEM_SIDS, eval_ds).to_pandas())
    return PlatformData(train_ds, test_ds, train, test, sid_ds, version, lookup.codes, lookup, codebook_size,
                        eval_ds, evaluated)


def run_platform(cfg: MultiGRConfig, lake: Lake, ds: date, train_days: int = 14, test_days: int = 2,
                 epochs: int | None = None, trainer_cfg: TrainerConfig = TrainerConfig()) -> dict:
    """Offline evaluation of MultiGR (SFT) on held-out days of the lake; writes and returns the report.

    Reads `samples/gr_samples` for the `train_days` days before the newest `test_days`
    days up to `ds` (train) and for those newest days (test); the `curated/item_sids`
    snapshot as of the last train day for training and as of the last test day for
    evaluation (`eval_lookup`: same SID version, new items from the frozen tokenizer), the
    codebook size of the SID version from the tokenizer model in the lake;
    `raw/site_orders` of the test days (see `add_late_site_orders`).

    Protocol: SFT (`cfg` with the SID table's depth and codebook size, `epochs` overriding
    `max_epochs`; device and precision from `trainer_cfg`) on one example per (train request, purchased item
    with a SID), for a fixed number of epochs: no validation day picks the epoch (on
    small lakes one day holds too few purchases to choose reliably, and holding it out
    costs training data). Every test request with a relevant item is decoded by
    trie-constrained beam search over all items of the snapshot, with beam width
    max(KS) at every level (not the config's narrow serving widths, so that Recall@1000
    is reachable); items sharing a SID come in item-id order (no DR re-ranker). Labels
    `search` and `all-net` (see the module docstring); relevant items without a SID in
    the evaluation snapshot are dropped, and requests left with none are skipped. The reference is a popularity ranking: items by purchases (ties:
    clicks) in the train days, one list for every request, on the same relevant sets.

    Departures from the paper: SFT only (its TIGER row; no MoPO), no DR, no `long-term`
    labels, retrieval over the whole catalog rather than the daily new-item pool, a
    short label window for late all-net orders, and simulated logs. Writes
    `report_key("multigr", ds)`.
    """
    from models.multigr.train import fit

    data = load_platform_data(lake, ds, train_days, test_days)
    cfg = platform_config(cfg, data.codes, data.codebook_size)
    if epochs:
        cfg = cfg.model_copy(update={"max_epochs": epochs})
    lookup = data.lookup
    examples = sft_examples(Vocab.from_config(cfg), data.train, lookup, cfg.max_history, cfg.max_query_words)
    if not examples:
        raise ValueError(f"no purchase of an item with a SID in the train days {data.train_days}")
    model, seconds = fit(cfg, SFTDataModule(examples, cfg.batch_size, cfg.seed), trainer_cfg=trainer_cfg)

    test_lookup = data.eval_lookup
    relevant = relevant_sets(data.test, test_lookup)
    scored = data.test[np.any([[len(r) > 0 for r in rel] for rel in relevant.values()], axis=0)]
    widths = [max(w, max(KS)) for w in cfg.beam_widths]
    started = time.perf_counter()
    multigr = evaluate_samples(model, scored, test_lookup,
                               trie_table(SidTrie.from_sids(test_lookup.codes, cfg.codebook_size)), KS,
                               beam_widths=widths)
    eval_seconds = time.perf_counter() - started
    top = popularity_ranking(data.train, test_lookup)[: max(KS)]
    popularity = {name: ranking_metrics(np.broadcast_to(top, (len(rel), len(top))), rel, KS)
                  for name, rel in relevant.items()}

    figures = {"multigr_sft": multigr, "popularity": popularity}
    report = _report(ds, data, cfg, model, len(examples), figures, widths, (seconds, eval_seconds))
    lake.store.put_bytes(report_key("multigr", ds), json.dumps(report, indent=2).encode())
    return report


def _report(ds: date, data: PlatformData, cfg: MultiGRConfig, model: MultiGR, n_examples: int, metrics: dict,
            widths: list[int], seconds: tuple[float, float]) -> dict:
    test_lookup, lookup = data.eval_lookup, data.lookup
    bought = np.concatenate([np.asarray(v, np.int64) for v in data.test["purchase_ids"]] + [np.zeros(0, np.int64)])
    return {
        "ds": f"{ds}",
        "train_days": [f"{data.train_days[0]}", f"{data.train_days[-1]}"],
        "test_days": [f"{data.test_days[0]}", f"{data.test_days[-1]}"],
        "sid_snapshot": f"{data.sid_ds}",
        "eval_sid_snapshot": f"{data.eval_sid_ds}",
        "sid_version": data.sid_version,
        "items_with_sid": int(len(test_lookup.ids)),
        "new_items_with_sid": int(len(test_lookup.ids) - len(lookup.ids)),
        "train_requests": int(len(data.train)),
        "train_examples": n_examples,
        "test_requests": int(len(data.test)),
        "test_purchases_without_sid": int(len(bought) - len(test_lookup.known(bought))),
        "epochs": cfg.max_epochs,
        "params": model.num_params(),
        "training_time_s": round(seconds[0], 1),
        "eval_time_s": round(seconds[1], 1),
        "beam_widths": widths,
        "ks": list(KS),
        "metrics": metrics,
        "config": cfg.model_dump(mode="json"),
    }


def report_table(report: dict) -> str:
    """The report's metrics as a fixed-width text table, one row per (label, model)."""
    cols = ["requests"] + [f"{m}@{k}" for m in ("recall", "ndcg") for k in report["ks"]]
    lines = [f"MultiGR offline evaluation ds={report['ds']}: train {report['train_days'][0]}..{report['train_days'][1]}"
             f" ({report['train_examples']} examples, {report['epochs']} epochs), test "
             f"{report['test_days'][0]}..{report['test_days'][1]} ({report['test_requests']} requests), "
             f"SIDs {report['sid_version']} ({report['items_with_sid']} items)",
             f"{'label':<8} {'model':<12} " + " ".join(f"{c:>11}" for c in cols)]
    for label in LABELS:
        for name, metrics in report["metrics"].items():
            m = metrics[label]
            cells = [f"{int(m['requests']):>11d}"] + [f"{m[c]:>11.4f}" for c in cols[1:]]
            lines.append(f"{label:<8} {name:<12} " + " ".join(cells))
    return "\n".join(lines)
