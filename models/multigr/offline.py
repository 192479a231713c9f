"""The paper's offline tables (3-5 shape) on held-out simulated days, over seeds.

    report = run_offline(cfg, lake, ds, train_days, test_days, seeds, trainer_cfg)
    offline_markdown(report)                  # the three tables

Rows (`ROWS`): `popularity` (train-day purchases, one list for every request), `sft` (SFT
only, TIGER-style), `grpo_conversion` (SFT + plain GRPO on purchases), `growthgr` (SFT +
MoPO, top-p rollouts); Table 4 ablations `no_ltv`, `no_ciw`, `no_funnel`; Table 5
`growthgr_beam` (MoPO with constrained beam-search rollouts). Per seed, SFT runs once (the
seed changes init and batch order) and every aligned row starts from that SFT model with
the same MoPO budget (`cfg.mopo`, the seed changes contexts and rollouts).

Rows of other retrievers (`EXTRA_ROWS`: `dr`, the dense retriever alone, and `two_stage`,
GrowthGR's ranking re-ranked by DR) come from an `extra_rows` hook that the application composes
(`models.dense.offline.offline_rows`; MultiGR does not import DR): per seed it gets an
`ExtraRowInputs` (the same decoded requests, the items with a SID in the evaluation snapshot,
the `growthgr` row's ranking) and returns ranked item ids per row, scored here against the same
label sets as every other row.

Label sets: `labels.LABEL_NAMES`. Relevant items need a SID in the evaluation snapshot (the
newest at or before the last test day: new items get theirs from the frozen tokenizer,
`platform.eval_lookup`); requests with no relevant item in any label set are not decoded.
The all-net label takes the site orders linked to a test request that were placed up to
`LATE_ORDER_DAYS` after the last test day where the lake has them (`late_orders_end`): pick a
test day with later days after it, or all-net is search plus same-day orders only.
MoPO's long-term reward reads `curated/item_uplift` as of the last train day; the
`long-term` label reads it as of the last test day (`labels`). Every figure is the mean
over seeds and a 95% t-interval; differences to `sft` (and of the ablations to `growthgr`)
are paired by seed. Writes offline.json, offline.md and offline.png under
`catalog.report_prefix("multigr", ds)`.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats

from foundation.catalog import ITEM_UPLIFT, RAW, report_key
from foundation.lake import Lake
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.trainer import TrainerConfig
from models.metrics import ranking_metrics
from models.multigr import labels
from models.multigr.beam import trie_table
from models.multigr.data import SFTDataModule
from models.multigr.model import Vocab
from models.multigr.mopo import align, build_contexts
from models.multigr.platform import (
    KS,
    PlatformData,
    add_late_site_orders,
    load_platform_data,
    platform_config,
    popularity_ranking,
    rank_samples,
    sft_examples,
)
from models.tokenizer.trie import SidTrie

log = logging.getLogger(__name__)

VARIANTS: dict[str, dict] = {                       # aligned rows: MoPOConfig overrides
    "grpo_conversion": {"reward": "conversion"},
    "growthgr": {},
    "no_ltv": {"use_ltv": False},
    "no_ciw": {"use_ciw": False},
    "no_funnel": {"use_funnel": False},
    "growthgr_beam": {"rollout": "beam"},
}
EXTRA_ROWS = ("dr", "two_stage")                    # rows of the `extra_rows` hook (other retrievers)
ROWS = ("popularity", "sft", *VARIANTS, *EXTRA_ROWS)
TABLES = {
    "Table 3: main comparison": ("popularity", "dr", "sft", "grpo_conversion", "growthgr", "two_stage"),
    "Table 4: ablations": ("growthgr", "no_ltv", "no_ciw", "no_funnel"),
    "Table 5: rollouts (top-p vs beam)": ("growthgr", "growthgr_beam"),
}
METRICS = (*(f"recall@{k}" for k in KS), "ndcg@10")


class ExtraRowInputs(NamedTuple):
    """What an `extra_rows` hook gets, per seed."""

    seed: int
    ds: date                       # the last test day
    train_days: list[date]         # the gr_samples days the MultiGR rows train on
    requests: pd.DataFrame         # the decoded test requests (gr_samples rows), R of them
    item_ids: np.ndarray           # items with a SID in the evaluation snapshot (what MultiGR can decode)
    first_stage: np.ndarray | None  # (R, k) the `growthgr` row's ranking (None when that row is not run)
    k: int                         # the depth every row is scored at (max KS)


ExtraRows = Callable[[ExtraRowInputs], tuple[dict[str, np.ndarray], dict]]
"""inputs -> ({row name: (R, k) ranked item ids, -1 padding}, {row name: run figures for the report})."""


def read_item_uplift(lake: Lake, ds: date) -> pd.DataFrame | None:
    """The newest `curated/item_uplift` at or before `ds` (None when there is none)."""
    parts = lake.list_partitions(*ITEM_UPLIFT, end=ds)
    return lake.read_partition(*ITEM_UPLIFT, parts[-1]).to_pandas() if parts else None


LATE_ORDER_DAYS = 7
"""The simulator links a site order to one of the buyer's queries of the 1-7 days before it."""


def late_orders_end(lake: Lake, test_days: Sequence[date]) -> date:
    """The last day whose `raw/site_orders` complete the test days' all-net label: the newest
    partition within `LATE_ORDER_DAYS` after the last test day (the last test day itself when
    there is none later)."""
    horizon = test_days[-1] + timedelta(days=LATE_ORDER_DAYS)
    parts = lake.list_partitions(*RAW["site_orders"], test_days[-1], horizon)
    return parts[-1] if parts else test_days[-1]


def decoded_requests(relevant: dict[str, list[np.ndarray]], per_label: int | None) -> np.ndarray:
    """The requests to decode: those with a relevant item in some label set; with `per_label`, the
    union over label sets of a seeded sample of at most that many requests of each (rare labels
    such as long-term keep their requests)."""
    has = {name: np.flatnonzero([len(r) > 0 for r in rel]) for name, rel in relevant.items()}
    rng = np.random.default_rng(0)
    picked = [rows if not per_label or len(rows) <= per_label else rng.choice(rows, per_label, replace=False)
              for rows in has.values()]
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval half-width over seeds (0 with one seed)."""
    v = np.asarray(values, float)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "ci95": half, "n": len(v)}


def aggregate(per_seed: dict[int, dict[str, dict[str, dict[str, float]]]]) -> dict:
    """Per seed {row: {label: metrics}} -> {"rows": summaries, "vs_sft", "vs_growthgr": paired differences}."""
    seeds = sorted(per_seed)
    rows = [r for r in ROWS if all(r in per_seed[s] for s in seeds)]
    label_names = list(per_seed[seeds[0]][rows[0]])

    def table(fn) -> dict:
        return {r: {lb: {m: summary([fn(s, r, lb, m) for s in seeds]) for m in METRICS} for lb in label_names}
                for r in rows}

    def value(s: int, r: str, lb: str, m: str) -> float:
        return per_seed[s][r][lb][m]

    out = {"rows": table(value),
           "vs_sft": table(lambda s, r, lb, m: value(s, r, lb, m) - value(s, "sft", lb, m))}
    if "growthgr" in rows:
        out["vs_growthgr"] = table(lambda s, r, lb, m: value(s, r, lb, m) - value(s, "growthgr", lb, m))
    return out


class _Setup(NamedTuple):
    """What every seed's rows are trained and scored on (read once per evaluation)."""

    data: PlatformData
    cfg: MultiGRConfig             # fitted to the SID table (and the `epochs` override)
    late_end: date                 # site orders read through this day (all-net labels)
    examples: list                 # SFT examples of the train days
    contexts: list                 # MoPO contexts of the train days
    long_term_items_train: int
    train_trie: torch.Tensor
    test_trie: torch.Tensor
    relevant: dict[str, list[np.ndarray]]  # label set -> relevant items per decoded request
    channels: dict
    scored: pd.DataFrame           # the decoded test requests
    widths: list[int]
    popularity: dict[str, dict[str, float]]


def _setup(cfg: MultiGRConfig, lake: Lake, ds: date, train_days: int, test_days: int, epochs: int | None,
           max_test_requests: int | None, started: float) -> _Setup:
    """Read the days, build the SFT examples, MoPO contexts, tries and label sets, score popularity."""
    data = load_platform_data(lake, ds, train_days, test_days)
    late_end = late_orders_end(lake, data.test_days)
    if late_end > data.test_days[-1]:                 # site orders placed after the test days (labels only)
        data = data._replace(test=add_late_site_orders(lake, data.test, data.test_days[0], late_end))
    cfg = platform_config(cfg, data.codes, data.codebook_size)
    if epochs:
        cfg = cfg.model_copy(update={"max_epochs": epochs})
    vocab = Vocab.from_config(cfg)
    examples = sft_examples(vocab, data.train, data.lookup, cfg.max_history, cfg.max_query_words)
    if not examples:
        raise ValueError(f"no purchase of an item with a SID in the train days {[f'{d}' for d in data.train_days]}")
    train_uplift, test_uplift = read_item_uplift(lake, data.train_days[-1]), read_item_uplift(lake, ds)
    contexts = build_contexts(cfg, data.train, data.lookup, train_uplift)
    log.info("%d SFT examples, %d MoPO contexts (%.0f s)", len(examples), len(contexts), time.perf_counter() - started)
    train_trie = trie_table(SidTrie.from_sids(data.lookup.codes, cfg.codebook_size))

    test_lookup = data.eval_lookup
    relevant = labels.label_sets(data.test, test_lookup, test_uplift, labels.read_click_effects(lake, data.test_days))
    channels = labels.channel_counts(lake, data.test_days, data.test, relevant)
    keep = decoded_requests(relevant, max_test_requests)
    scored = data.test.iloc[keep].reset_index(drop=True)
    relevant = {name: [rel[i] for i in keep] for name, rel in relevant.items()}
    test_trie = trie_table(SidTrie.from_sids(test_lookup.codes, cfg.codebook_size))
    widths = [max(w, max(KS)) for w in cfg.beam_widths]
    top = popularity_ranking(data.train, test_lookup)[: max(KS)]
    popularity = {name: ranking_metrics(np.broadcast_to(top, (len(rel), len(top))), rel, KS)
                  for name, rel in relevant.items()}
    long_term = int(0 if train_uplift is None else len(labels.long_term_items(train_uplift)))
    return _Setup(data, cfg, late_end, examples, contexts, long_term, train_trie, test_trie, relevant, channels,
                  scored, widths, popularity)


def _run_seed(setup: _Setup, ds: date, seed: int, trainer_cfg: TrainerConfig, variants: Sequence[str],
              progress: bool, extra_rows: ExtraRows | None, started: float) -> tuple[dict, dict]:
    """({row: {label: metrics}}, {row: run figures}) of one seed: SFT, the aligned rows, the extra rows."""
    from models.multigr.train import fit

    cfg, data, test_lookup = setup.cfg, setup.data, setup.data.eval_lookup

    def score(ranked: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: ranking_metrics(ranked, rel, KS) for name, rel in setup.relevant.items()}

    def rank(model) -> np.ndarray:
        return rank_samples(model, setup.scored, test_lookup, setup.test_trie, max(KS), beam_widths=setup.widths)

    seed_cfg = cfg.model_copy(update={"seed": int(seed)})
    sft, sft_s = fit(seed_cfg, SFTDataModule(setup.examples, cfg.batch_size, int(seed)), trainer_cfg=trainer_cfg)
    rows = {"popularity": setup.popularity, "sft": score(rank(sft))}
    first_stage = None
    log.info("seed %s SFT: %.0f s, long-term R@10 %.4f (%.0f s)", seed, sft_s,
             rows["sft"]["long-term"]["recall@10"], time.perf_counter() - started)
    runs = {"sft": {"seconds": round(sft_s, 1)}}
    for name in variants:
        mopo_cfg = cfg.mopo.model_copy(update=VARIANTS[name])
        aligned, st = align(copy.deepcopy(sft), setup.contexts, setup.train_trie, mopo_cfg, seed=int(seed),
                            progress=progress)
        ranked = rank(aligned)
        first_stage = ranked if name == "growthgr" else first_stage
        rows[name] = score(ranked)
        runs[name] = {k: st[k] for k in ("mean_reward", "mean_ciw", "seconds")}
        log.info("seed %s %s: MoPO %.0f s, long-term R@10 %.4f (sft %.4f) (%.0f s)", seed, name, st["seconds"],
                 rows[name]["long-term"]["recall@10"], rows["sft"]["long-term"]["recall@10"],
                 time.perf_counter() - started)
    if extra_rows is not None:
        extra, info = extra_rows(ExtraRowInputs(int(seed), ds, list(data.train_days), setup.scored,
                                                test_lookup.ids.copy(), first_stage, max(KS)))
        for name, ranked in extra.items():
            rows[name] = score(ranked)
            runs[name] = info.get(name, {})
            log.info("seed %s %s: long-term R@10 %.4f, search R@10 %.4f (%.0f s)", seed, name,
                     rows[name]["long-term"]["recall@10"], rows[name]["search"]["recall@10"],
                     time.perf_counter() - started)
    return rows, runs


def _report(setup: _Setup, ds: date, seeds: Sequence[int], per_seed: dict[int, dict], runs: dict[int, dict],
            started: float) -> dict:
    """The offline report of the seeds run so far (JSON-ready: days as `YYYY-MM-DD`)."""
    data, test_lookup = setup.data, setup.data.eval_lookup
    return {
        "ds": f"{ds}", "train_days": [f"{data.train_days[0]}", f"{data.train_days[-1]}"],
        "test_days": [f"{data.test_days[0]}", f"{data.test_days[-1]}"], "seeds": [int(s) for s in sorted(per_seed)],
        "late_site_orders_through": f"{setup.late_end}",
        "sid_snapshot": f"{data.sid_ds}", "eval_sid_snapshot": f"{data.eval_sid_ds}", "sid_version": data.sid_version,
        "items_with_sid": int(len(test_lookup.ids)),
        "new_items_with_sid": int(len(test_lookup.ids) - len(data.lookup.ids)),
        "train_examples": len(setup.examples), "train_contexts": len(setup.contexts),
        "long_term_items_train": setup.long_term_items_train,
        "test_requests": int(len(setup.scored)), "ks": list(KS), "beam_widths": setup.widths,
        "label_requests": {name: int(sum(len(r) > 0 for r in rel)) for name, rel in setup.relevant.items()},
        "label_channels": setup.channels,
        "per_seed": {str(s): v for s, v in per_seed.items()}, "runs": {str(s): v for s, v in runs.items()},
        **aggregate(per_seed),
        "config": setup.cfg.model_dump(mode="json"), "seconds": round(time.perf_counter() - started, 1),
        "seeds_planned": [int(s) for s in seeds],
    }


def run_offline(cfg: MultiGRConfig, lake: Lake, ds: date, train_days: int, test_days: int, seeds: Sequence[int],
                trainer_cfg: TrainerConfig = TrainerConfig(), epochs: int | None = None,
                variants: Sequence[str] = tuple(VARIANTS), max_test_requests: int | None = None,
                progress: bool = False, extra_rows: ExtraRows | None = None) -> dict:
    """Train and evaluate every row for every seed (see the module docstring); writes and returns the report.

    `max_test_requests` caps the decoded test requests per label set (`decoded_requests`, the same
    for every row and seed) to bound the beam-search time on a CPU. `extra_rows` adds the rows of
    other retrievers (`ExtraRows`), run after the aligned rows of each seed.
    """
    started = time.perf_counter()
    setup = _setup(cfg, lake, ds, train_days, test_days, epochs, max_test_requests, started)
    per_seed: dict[int, dict] = {}
    runs: dict[int, dict] = {}
    for seed in seeds:
        per_seed[seed], runs[seed] = _run_seed(setup, ds, seed, trainer_cfg, variants, progress, extra_rows, started)
        write_report(lake, _report(setup, ds, seeds, per_seed, runs, started))   # partial tables after every seed

    report = _report(setup, ds, seeds, per_seed, runs, started)
    write_report(lake, report)
    return report


def _cell(s: dict, pct: bool = True) -> str:
    scale = 100 if pct else 1
    return f"{s['mean'] * scale:.2f} ± {s['ci95'] * scale:.2f}"


def offline_markdown(report: dict) -> str:
    """The tables (metrics in %, mean ± 95% half-interval over seeds) and the paired differences."""
    label_names = list(report["label_requests"])
    head = (f"# MultiGR offline evaluation ds={report['ds']}\n\ntrain {report['train_days'][0]}..{report['train_days'][1]}"
            f" ({report['train_examples']} SFT examples, {report['train_contexts']} MoPO contexts), test "
            f"{report['test_days'][0]}..{report['test_days'][1]} ({report['test_requests']} requests: "
            + ", ".join(f"{k} {v}" for k, v in report["label_requests"].items())
            + f"), seeds {report['seeds']}, SIDs {report['sid_version']} ({report['items_with_sid']} items, "
            f"{report['new_items_with_sid']} new on the test days), all-net with site orders through "
            f"{report.get('late_site_orders_through', report['test_days'][-1])}. Metrics in %, mean ± 95% interval "
            "half-width over seeds.\n")
    if channels := report.get("label_channels"):
        head += ("\nRelevant (request, item) pairs by the retrieval channel that placed the item (`main`: the "
                 "organic ranking; `new_item`: the platform's new-item channel; `support`: the traffic-support "
                 "experiment; `explore`: the uniform exploration bucket, which no retriever can predict; `none`: "
                 "not a rank candidate of the request): " + "; ".join(f"{k} " + ", ".join(f"{c} {n}" for c, n in v.items())
                                          for k, v in channels.items()) + ".\n")
    parts = [head]
    for title, rows in TABLES.items():
        rows = [r for r in rows if r in report["rows"]]
        parts.append(f"\n## {title}\n")
        for label in label_names:
            parts.append(f"\n**{label}**\n\n| row | " + " | ".join(METRICS) + " | Δ R@10 vs SFT |\n"
                         + "|---" * (len(METRICS) + 2) + "|\n")
            for r in rows:
                cells = [_cell(report["rows"][r][label][m]) for m in METRICS]
                parts.append(f"| {r} | " + " | ".join(cells) + f" | {_cell(report['vs_sft'][r][label]['recall@10'])} |\n")
    return "".join(parts)


def offline_plot(report: dict) -> bytes:
    """PNG: Recall@10 per label set and row (bars, 95% intervals) above one Recall@K curve panel
    per label set (K = `report["ks"]`, log scale; each row's mean with its 95% band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, label_names = list(report["rows"]), list(report["label_requests"])
    ks = list(report.get("ks", KS))
    fig = plt.figure(figsize=(12, 7.5))
    grid = fig.add_gridspec(2, len(label_names))
    ax = fig.add_subplot(grid[0, :])
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        s = [report["rows"][r][lb]["recall@10"] for lb in label_names]
        ax.bar(np.arange(len(label_names)) + i * width, [100 * x["mean"] for x in s], width,
               yerr=[100 * x["ci95"] for x in s], label=r, capsize=2)
    ax.set_xticks(np.arange(len(label_names)) + 0.4 - width / 2, label_names)
    ax.set_ylabel("Recall@10 (%)")
    ax.set_title(f"MultiGR offline, test {report['test_days'][0]}..{report['test_days'][1]}, seeds {report['seeds']}")
    ax.legend(fontsize=7, ncol=4)
    for j, lb in enumerate(label_names):
        curve = fig.add_subplot(grid[1, j])
        for i, r in enumerate(rows):
            s = [report["rows"][r][lb][f"recall@{k}"] for k in ks]
            mean, half = np.array([100 * x["mean"] for x in s]), np.array([100 * x["ci95"] for x in s])
            curve.plot(ks, mean, marker="o", ms=3, color=f"C{i}", label=r)
            curve.fill_between(ks, mean - half, mean + half, color=f"C{i}", alpha=0.15)
        curve.set_xscale("log")
        curve.set_xlabel("K")
        curve.set_title(f"Recall@K, {lb}", fontsize=9)
        if j == 0:
            curve.set_ylabel("Recall@K (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(lake: Lake, report: dict) -> dict[str, str]:
    """offline.json, offline.md, offline.png under `report_prefix("multigr", ds)`; returns their keys."""
    ds = report["ds"]
    keys = {ext: report_key("multigr", ds, f"offline.{ext}") for ext in ("json", "md", "png")}
    lake.store.put_bytes(keys["json"], json.dumps(report, indent=2).encode())
    lake.store.put_bytes(keys["md"], offline_markdown(report).encode())
    lake.store.put_bytes(keys["png"], offline_plot(report))
    return keys
