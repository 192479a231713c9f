"""MultiGR in the daily pipeline: warm-started SFT refresh (+ MoPO) and evaluation on fixed held-out days.

Pure functions over a lake (no Airflow, no release store): the application
(`growthgr.pipeline.multigr_train / multigr_evaluate / gate_multigr`) wires `lineage` (finds the
serving release's model, writes checkpoints and reports) and `gate` (the model gate).

A *lineage* is a chain of daily models, each warm-started from the one before; it starts
with a model trained from scratch (first day, a new SID version, or a new architecture).
Its held-out days are fixed when it starts (`lineage_days`) and inherited by every day
that warm-starts from it (the checkpoint's `config.json` records them):

- at the lineage's first day `ds0`, take the `samples/gr_samples` days <= ds0. If there are
  more than `daily.eval_days` of them, the newest `eval_days` are held out and the SFT
  trains on up to `daily.train_days` days before them;
- with a shorter history (a young lake), the SFT trains on the (up to `train_days`) days <= ds0
  and the held-out days are the `eval_days` calendar days after ds0: evaluated once they have
  samples, and never trained on.

No lineage model ever trains on its held-out days: a warm-started day refreshes on its own
`gr_samples` only, and not at all when it is one of the held-out days (the model is then the
serving one). Evaluation (`evaluate_daily`) ranks the held-out requests with a relevant item (at
most `daily.eval_requests` of them, a fixed pseudo-random subset) by trie-constrained beam search (the
config's beam widths, the last widened to 100) over every item of the day's SID snapshot
(`curated/item_sids` as of ds: new items got their SIDs from the frozen tokenizer in the
`tokenize` step), labels `search` and
`all-net` (site orders placed up to 7 days after a held-out day, and not after ds, are added:
`platform.add_late_site_orders`), and decodes up to 64 of the same prompts (the day's requests
when no held-out day has samples yet) as served (config beam widths and top_k) to measure the
fraction of valid SIDs (every decoded SID must be one of the snapshot's).

Departures from the paper: the daily refresh is one day of SFT (`daily.refresh_epochs` epochs,
no replay of older days) followed by MoPO on that day's requests; the gate compares Recall@10
on the `search` label only (all-net labels keep growing for a week after a held-out day).
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from datetime import date, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from foundation.catalog import GR_SAMPLES, ITEM_SIDS, ITEM_UPLIFT
from foundation.lake import Lake, PartitionNotFound
from foundation.samples import read_gr_samples
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models.multigr.beam import beam_search, trie_table
from models.multigr.data import SFTDataModule, left_pad
from models.multigr.model import MultiGR, Vocab
from models.multigr.platform import (
    SidLookup,
    add_late_site_orders,
    evaluate_samples,
    platform_config,
    relevant_sets,
    request_prompt,
    sft_examples,
)
from models.tokenizer.trie import SidTrie

log = logging.getLogger(__name__)

KS = (10, 100)                     # Recall@10/100, NDCG@10/100
LATE_ORDER_DAYS = 7                # site orders are linked to queries of the 1..7 days before
VALID_SID_PROMPTS = 64             # prompts decoded for the valid-SID fraction (held-out requests first)
# the fields that decide whether a checkpoint's weights fit a config (warm start, scoring the serving model)
ARCHITECTURE = ("sid_levels", "codebook_size", "n_user_buckets", "n_query_buckets", "max_query_words",
                "max_history", "max_len", "n_layer", "n_head", "d_model", "mlp_ratio")


class SidTable(NamedTuple):
    """The `curated/item_sids` snapshot of a day and what decoding needs of it."""

    ds: date                     # the snapshot's partition (the newest <= the day)
    version: str
    codes: np.ndarray            # (N, L) codes (c4 included when every row has one)
    lookup: SidLookup
    codebook_size: int           # of the SID version's tokenizer
    write_id: str                # the committed write that was read

    def trie_next(self) -> torch.Tensor:
        return trie_table(SidTrie.from_sids(self.codes, self.codebook_size))


def sid_table(lake: Lake, ds: date) -> SidTable:
    """The SID snapshot as of `ds` (every item embedded up to ds has a SID)."""
    from models.tokenizer import sids

    parts = lake.list_partitions(*ITEM_SIDS, end=ds)
    if not parts:
        raise PartitionNotFound(f"no {ITEM_SIDS.key(ds)} or earlier: run the tokenize step for {ds}")
    write_id = lake.commit_info(*ITEM_SIDS, parts[-1]).write_id
    table = lake.read_partition(*ITEM_SIDS, parts[-1]).to_pandas()
    versions = sorted(set(table["sid_version"]))
    if len(versions) != 1:
        raise ValueError(f"{ITEM_SIDS.key(parts[-1])} mixes SID versions {versions}")
    codes = sids.sid_matrix(table)
    lookup = SidLookup(table, list(sids.CODE_COLUMNS) + ["c4"] * (codes.shape[1] > len(sids.CODE_COLUMNS)))
    codebook_size = int(sids.load_version(lake, versions[0])[1]["tokenizer"]["codebook_size"])
    return SidTable(parts[-1], versions[0], lookup.codes, lookup, codebook_size, write_id)


def model_config(cfg: MultiGRConfig, table: SidTable) -> MultiGRConfig:
    """`cfg` fitted to the SID table (depth, codebook size, prompt room): `platform.platform_config`."""
    return platform_config(cfg, table.codes, table.codebook_size)


def same_architecture(a: MultiGRConfig, b: MultiGRConfig) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in ARCHITECTURE)


def lineage_days(lake: Lake, ds: date, cfg: MultiGRConfig) -> tuple[list[date], list[date]]:
    """(train days, held-out days) of a lineage starting on `ds` (the rule in the module docstring)."""
    daily = cfg.daily
    days = lake.list_partitions(*GR_SAMPLES, end=ds)
    if ds not in days:
        raise PartitionNotFound(f"no {GR_SAMPLES.key(ds)}: run the gr_samples Spark job (spark_jobs) for {ds}")
    if len(days) > daily.eval_days:
        return days[: -daily.eval_days][-daily.train_days:], days[-daily.eval_days:]
    after = [ds + timedelta(days=i) for i in range(1, daily.eval_days + 1)]
    return days[-daily.train_days:], after


def _refresh_cfg(cfg: MultiGRConfig, n_examples: int) -> MultiGRConfig:
    """The warm start's SFT: `daily.refresh_epochs` epochs at `lr * daily.refresh_lr_factor`, warm-up over
    the first 10% of its steps."""
    steps = cfg.daily.refresh_epochs * -(-n_examples // cfg.batch_size)
    return cfg.model_copy(update={"max_epochs": cfg.daily.refresh_epochs, "warmup_steps": max(1, steps // 10),
                                  "lr": cfg.lr * cfg.daily.refresh_lr_factor})


def _copy(model: MultiGR, cfg: MultiGRConfig) -> MultiGR:
    out = MultiGR(cfg)
    out.load_state_dict(model.state_dict())
    return out.eval()


def train_daily(cfg: MultiGRConfig, trainer_cfg: TrainerConfig, lake: Lake, ds: date, init: MultiGR | None,
                *, eval_days: Sequence[date] | None = None) -> tuple[MultiGR, dict]:
    """The day's MultiGR and what was done: warm start from `init` (the serving release's model, with
    its lineage's held-out `eval_days`) and SFT refresh on the day's `gr_samples`, or (no `init`, or
    an `init` whose architecture does not fit the day's SID table) SFT from scratch on the lineage's
    train days; then MoPO (`cfg.daily.mopo_steps > 0` steps) on the same requests with the day's ItemLTV
    `curated/item_uplift` (None when absent). Never trains on a held-out day."""
    table = sid_table(lake, ds)
    mcfg = model_config(cfg, table).model_copy(update={"max_epochs": cfg.daily.scratch_epochs})
    if init is not None and not same_architecture(init.cfg, mcfg):
        log.warning("MultiGR ds=%s: the serving model does not fit today's SID table / architecture: from scratch", ds)
        init = None
    if init is not None and eval_days is None:
        raise ValueError("a warm start needs its lineage's held-out days (eval_days of the init's config.json)")
    if init is None:
        train, held = lineage_days(lake, ds, cfg)
    else:
        held = sorted(eval_days)
        train = [] if ds in held else [ds]
    samples = read_gr_samples(lake, train)
    examples = sft_examples(Vocab.from_config(mcfg), samples, table.lookup, mcfg.max_history,
                            mcfg.max_query_words) if train else []
    info = {"ds": f"{ds}", "mode": "scratch" if init is None else "warm_start", "train_days": _iso(train),
            "eval_days": _iso(held), "sid_snapshot": f"{table.ds}", "sid_version": table.version,
            "items_with_sid": int(len(table.lookup.ids)), "train_requests": int(len(samples)),
            "sft_examples": len(examples)}
    model, seconds = _sft(mcfg, trainer_cfg, examples, init, train)
    info.update(sft_epochs=0 if not examples else (mcfg.max_epochs if init is None else mcfg.daily.refresh_epochs),
                sft_time_s=round(seconds, 1))
    if cfg.daily.mopo_steps > 0 and len(samples):
        model, info["mopo"] = _mopo(mcfg, lake, ds, model, samples, table)
    return model.eval(), info


def _sft(cfg: MultiGRConfig, trainer_cfg: TrainerConfig, examples: list, init: MultiGR | None,
         train: list[date]) -> tuple[MultiGR, float]:
    from models.multigr.train import fit

    if init is None:
        if not examples:
            raise ValueError(f"no purchase of an item with a SID in {', '.join(GR_SAMPLES.key(d) for d in train)}: "
                             "nothing to train MultiGR on (rule: SFT targets are purchased items with a SID)")
        return fit(cfg, SFTDataModule(examples, cfg.batch_size, cfg.seed), trainer_cfg=trainer_cfg)
    if not examples:
        log.info("MultiGR: no SFT refresh (days %s: held out or no purchase with a SID); serving weights kept", train)
        return _copy(init, cfg), 0.0
    rcfg = _refresh_cfg(cfg, len(examples))
    model, seconds = fit(rcfg, SFTDataModule(examples, rcfg.batch_size, rcfg.seed), trainer_cfg=trainer_cfg, init=init)
    return _copy(model, cfg), seconds


def _mopo(cfg: MultiGRConfig, lake: Lake, ds: date, model: MultiGR, samples: pd.DataFrame,
          table: SidTable) -> tuple[MultiGR, dict]:
    """MoPO alignment of `model` on the requests of `samples` (models.multigr.mopo)."""
    from models.multigr.mopo import align, build_contexts

    uplift = lake.read_partition(*ITEM_UPLIFT, ds).to_pandas() if lake.exists(*ITEM_UPLIFT, ds) else None
    if uplift is None:
        log.warning("MoPO ds=%s: no %s: no long-term (ItemLTV) reward today", ds, ITEM_UPLIFT.key(ds))
    started = time.perf_counter()
    contexts = build_contexts(cfg, samples, table.lookup, uplift)
    if not len(contexts):
        log.warning("MoPO ds=%s: no request with a rank candidate that has a SID: no alignment", ds)
        return model, {"contexts": 0}
    aligned, stats = align(model, contexts, table.trie_next(), cfg.mopo.model_copy(update={"steps": cfg.daily.mopo_steps}),
                           seed=cfg.seed)
    rewards = list(stats.get("mean_reward", []))
    info = {"contexts": len(contexts), "steps": stats.get("steps"), "item_uplift": uplift is not None,
            "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
            "mean_ciw": stats.get("mean_ciw"), "mopo_time_s": round(time.perf_counter() - started, 1)}
    return aligned, {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in info.items()}


def evaluate_daily(model: MultiGR, lake: Lake, ds: date, cfg: MultiGRConfig, *,
                   eval_days: Sequence[date] | None = None) -> dict:
    """Recall@10/100 and NDCG@10/100 (labels `search`, `all-net`) of `model` on the held-out days
    `eval_days` (default: those of a lineage starting on ds) that have samples by `ds`, and the
    fraction of valid SIDs from the constrained decoder (serving beam widths and top_k), with the
    day's SID snapshot and its trie. `inputs` names every partition read, at the write read."""
    held = sorted(eval_days if eval_days is not None else lineage_days(lake, ds, cfg)[1])
    table = sid_table(lake, ds)
    mcfg = model_config(cfg, table)
    if (model.cfg.sid_levels, model.cfg.codebook_size) != (mcfg.sid_levels, mcfg.codebook_size):
        raise ValueError(f"the model decodes {model.cfg.sid_levels} levels of {model.cfg.codebook_size} codes; "
                         f"{ITEM_SIDS.key(table.ds)} has {mcfg.sid_levels} of {mcfg.codebook_size}")
    due = [d for d in held if d <= ds]
    present = [d for d in due if lake.exists(*GR_SAMPLES, d)]
    inputs = [{"zone": ITEM_SIDS.zone, "table": ITEM_SIDS.table, "ds": f"{table.ds}", "write_id": table.write_id}]
    inputs += [{"zone": GR_SAMPLES.zone, "table": GR_SAMPLES.table, "ds": f"{d}",
                "write_id": lake.commit_info(*GR_SAMPLES, d).write_id} for d in present]
    trie_next = table.trie_next()
    report = {"ds": f"{ds}", "eval_days": _iso(held), "evaluated_days": _iso(present),
              "pending_eval_days": _iso(d for d in held if d > ds),
              "missing_eval_days": _iso(d for d in due if d not in present), "sid_snapshot": f"{table.ds}",
              "sid_version": table.version, "items_with_sid": int(len(table.lookup.ids)), "ks": list(KS),
              "inputs": inputs}
    started, scored = time.perf_counter(), pd.DataFrame()
    if present:
        window_end = min(ds, present[-1] + timedelta(days=LATE_ORDER_DAYS))
        test = add_late_site_orders(lake, read_gr_samples(lake, present), present[0], window_end)
        relevant = relevant_sets(test, table.lookup)
        scored = _subset(test[np.any([[len(r) > 0 for r in rel] for rel in relevant.values()], axis=0)],
                         cfg.daily.eval_requests)
        report["metrics"] = evaluate_samples(model, scored, table.lookup, trie_next, KS)
        report.update(label_window_end=f"{window_end}", requests=int(len(test)), scored_requests=int(len(scored)))
    prompts_from = (scored if len(scored) else read_gr_samples(lake, [ds])).head(VALID_SID_PROMPTS)
    report.update(valid_sids(model, prompts_from, table, trie_next))
    report["eval_time_s"] = round(time.perf_counter() - started, 1)
    return report


def _iso(days) -> list[str]:
    """`YYYY-MM-DD` of each day (what the reports and the checkpoint config record)."""
    return [f"{d}" for d in days]


def _subset(scored: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most `n` requests: those with the smallest crc32 of their request id (a fixed
    pseudo-random subset of the held-out days, the same for every model scored on a day)."""
    if len(scored) <= n:
        return scored
    keys = np.array([zlib.crc32(str(int(r)).encode()) for r in scored["request_id"]], dtype=np.int64)
    return scored.iloc[np.sort(np.argsort(keys, kind="stable")[:n])]


def valid_sids(model: MultiGR, samples: pd.DataFrame, table: SidTable, trie_next: torch.Tensor,
               batch_size: int = 64) -> dict:
    """Decode the requests' prompts as served (config beam widths, top_k, trie-constrained) and check
    every decoded SID against the snapshot's SIDs (independently of the trie)."""
    cfg = model.cfg
    prompts = [request_prompt(model.vocab, r, table.lookup, cfg.max_history, cfg.max_query_words)
               for r in samples.itertuples(index=False)]
    known = set(map(tuple, table.codes.tolist()))
    decoded = valid = 0
    top_k = min(cfg.top_k, cfg.beam_widths[-1])
    for i in range(0, len(prompts), batch_size):
        sids = beam_search(model, left_pad(prompts[i : i + batch_size]), cfg.beam_widths, top_k, trie_next).sids
        rows = sids.reshape(-1, sids.shape[-1]).numpy()
        rows = rows[(rows >= 0).all(1)]                       # -1: fewer valid SIDs than top_k exist
        decoded += len(rows)
        valid += sum(tuple(r) in known for r in rows.tolist())
    return {"decoded_prompts": len(prompts), "decoded_sids": decoded,
            "valid_sid_fraction": valid / decoded if decoded else float("nan")}
