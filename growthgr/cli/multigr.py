"""`growthgr multigr ...`: SFT training and offline evaluation.

`train` / `evaluate-seq` read item-sequence data in the Amazon datasets' format:
`{user: [item, ...]}` in time order and `{item: [c1, ..., cL]}` SIDs; the split is
leave-one-out (see `data.leave_one_out`). `platform` (SFT vs popularity) and `evaluate`
(the paper's Tables 3-5: SFT, GRPO, MoPO and its ablations over seeds; with the dense retriever's
rows `dr` and `two_stage` composed in from `models.dense.offline`) read the lake:
held-out days of `samples/gr_samples` (see `platform.run_platform`, `offline.run_offline`).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import typer

from foundation.sections.multigr import MultiGRConfig
from growthgr.cli.context import date_option

app = typer.Typer(help="MultiGR generative retriever: SFT and constrained beam search.", no_args_is_help=True)

INTER = typer.Option(..., "--inter", exists=True, dir_okay=False, help="{user: [item, ...]} JSON")
SIDS = typer.Option(..., "--sids", exists=True, dir_okay=False, help="{item: [c1, ..., cL]} JSON")


def fit_config(cfg: MultiGRConfig, item_sids: np.ndarray) -> MultiGRConfig:
    """The config with the data's SID depth and a position table long enough for it.

    Sequence data has no user features and no query: their buckets are dropped.
    """
    if item_sids.max() >= cfg.codebook_size:
        raise typer.BadParameter(f"SID code {item_sids.max()} >= codebook_size {cfg.codebook_size}")
    levels = item_sids.shape[1]
    beams = (cfg.beam_widths + [cfg.beam_widths[-1]] * levels)[:levels]
    return cfg.model_copy(
        update={
            "sid_levels": levels,
            "n_user_buckets": 0,
            "n_query_buckets": 0,
            "max_len": max(cfg.max_len, 1 + (cfg.max_history + 1) * levels),
            "beam_widths": beams,
        }
    )


@app.command("train")
def train_cmd(
    inter: Path = INTER,
    sids: Path = SIDS,
    out: Path = typer.Option(..., "--out", help="checkpoint directory (model.safetensors + config.json)"),
    epochs: int | None = typer.Option(None, "--epochs", help="override multigr.max_epochs"),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="training wall-time cap"),
) -> None:
    """Supervised next-token training on the leave-one-out training part."""
    from growthgr.cli.context import settings
    from models.multigr.data import SFTDataModule, leave_one_out, load_sequences
    from models.multigr.model import Vocab
    from models.multigr.train import fit, save_checkpoint

    s = settings()
    data = load_sequences(inter, sids)
    cfg = fit_config(s.multigr, data.item_sids)
    if epochs:
        cfg = cfg.model_copy(update={"max_epochs": epochs})
    split = leave_one_out(Vocab.from_config(cfg), data, cfg.max_history)
    model, seconds = fit(cfg, SFTDataModule(split.train, cfg.batch_size, cfg.seed), max_minutes and max_minutes * 60,
                         trainer_cfg=s.trainer)
    save_checkpoint(model, out, {"train_examples": len(split.train), "training_time_s": round(seconds, 1)})
    typer.echo(json.dumps({"checkpoint": str(out), "params": model.num_params(), "training_time_s": round(seconds, 1)}))


@app.command("evaluate-seq")
def evaluate_seq_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", exists=True, file_okay=False,
                                    help="checkpoint directory written by `multigr train --out`"),
    inter: Path = INTER,
    sids: Path = SIDS,
    split_name: str = typer.Option("test", "--split", help="val | test"),
    unconstrained: bool = typer.Option(False, "--unconstrained", help="decode without the SID trie"),
) -> None:
    """Recall@5/10 and NDCG@5/10 of full-ranking next-item retrieval (one line of JSON)."""
    import torch

    from models.metrics import ranking_metrics
    from models.multigr.beam import SidItems, beam_search, trie_table
    from models.multigr.data import leave_one_out, left_pad, load_sequences
    from models.multigr.train import load_checkpoint
    from models.tokenizer.trie import SidTrie

    model = load_checkpoint(checkpoint)
    cfg = model.cfg
    torch.set_num_threads(cfg.num_threads)
    data = load_sequences(inter, sids)
    split = leave_one_out(model.vocab, data, cfg.max_history)
    prompts, targets = (split.val_prompts, split.val_targets) if split_name == "val" else (split.test_prompts, split.test_targets)
    trie_next = None if unconstrained else trie_table(SidTrie.from_sids(data.item_sids, cfg.codebook_size))
    index = SidItems(data.item_sids, cfg.codebook_size)
    top = max(10, cfg.top_k)
    widths = [max(w, top) if i == cfg.sid_levels - 1 else w for i, w in enumerate(cfg.beam_widths)]
    ranked = np.concatenate([
        index.expand(beam_search(model, left_pad(prompts[i : i + 256]), widths, top, trie_next), top).items
        for i in range(0, len(prompts), 256)
    ])
    typer.echo(json.dumps({"split": split_name, "users": len(targets), **ranking_metrics(ranked, targets, (5, 10))}))


@app.command("platform")
def platform_cmd(
    ds: date = date_option(..., "--ds", help="Logical date YYYY-MM-DD: the last held-out test day."),
    train_days: int = typer.Option(14, "--train-days", min=1, help="days of gr_samples before the test days"),
    test_days: int = typer.Option(2, "--test-days", min=1, help="newest days up to --ds, held out"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="override multigr.max_epochs"),
    as_json: bool = typer.Option(False, "--json", help="print the report JSON instead of the table"),
) -> None:
    """SFT on the train days, Recall/NDCG@10/100/1000 on the test days (search, all-net) vs popularity;
    writes reports/multigr/ds=<ds>/metrics.json."""
    from foundation.catalog import report_key
    from foundation.lake import Lake
    from growthgr.cli.context import settings
    from models.multigr.platform import report_table, run_platform

    s = settings()
    lake = Lake.from_settings(s)
    report = run_platform(s.multigr, lake, ds, train_days, test_days, epochs, s.trainer)
    typer.echo(json.dumps(report, indent=2) if as_json else report_table(report))
    typer.echo(f"report: {lake.store.url(report_key('multigr', report['ds']))}")


@app.command("evaluate")
def evaluate_cmd(
    ds: date = date_option(..., "--ds", help="Logical date YYYY-MM-DD: the last held-out test day."),
    train_days: int = typer.Option(14, "--train-days", min=1, help="days of gr_samples before the test days"),
    test_days: int = typer.Option(2, "--test-days", min=1, help="newest days up to --ds, held out"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds 0..N-1 (init, batch order, rollouts)"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="override multigr.max_epochs (SFT)"),
    steps: int | None = typer.Option(None, "--steps", min=0, help="override multigr.mopo.steps"),
    rows: str | None = typer.Option(None, "--rows", help="comma-separated aligned rows (default: all)"),
    max_test_requests: int | None = typer.Option(None, "--max-test-requests", min=1,
                                                 help="decode at most this many test requests per label set"),
    dense: bool = typer.Option(True, "--dense/--no-dense", help="add the rows dr and two_stage (dense retriever)"),
    dense_epochs: int | None = typer.Option(None, "--dense-epochs", min=1, help="override dense.max_epochs"),
    as_json: bool = typer.Option(False, "--json", help="print the report JSON instead of the tables"),
) -> None:
    """The paper's Tables 3-5 on held-out days (popularity, DR, SFT, GRPO on conversion, MoPO and its
    ablations, GrowthGR-twoStage, top-p vs beam rollouts; labels search, all-net, long-term,
    long-term-true), mean and 95% interval over seeds; writes reports/multigr/ds=<ds>/offline.{json,md,png}."""
    from foundation.catalog import report_key
    from foundation.lake import Lake
    from growthgr.cli.context import settings
    from models.dense.offline import offline_rows
    from models.multigr.offline import VARIANTS, offline_markdown, run_offline

    s = settings()
    cfg = s.multigr if steps is None else s.multigr.model_copy(
        update={"mopo": s.multigr.mopo.model_copy(update={"steps": steps})})
    variants = tuple(VARIANTS) if rows is None else tuple(r.strip() for r in rows.split(",") if r.strip())
    if unknown := sorted(set(variants) - set(VARIANTS)):
        raise typer.BadParameter(f"unknown rows {unknown}; choose from {sorted(VARIANTS)}")
    lake = Lake.from_settings(s)
    extra = offline_rows(s.dense, s.trainer, lake, dense_epochs) if dense else None
    report = run_offline(cfg, lake, ds, train_days, test_days, list(range(seeds)), s.trainer, epochs, variants,
                         max_test_requests, progress=s.trainer.progress_bar, extra_rows=extra)
    typer.echo(json.dumps(report, indent=2) if as_json else offline_markdown(report))
    typer.echo(f"report: {lake.store.url(report_key('multigr', report['ds'], 'offline.md'))}")
