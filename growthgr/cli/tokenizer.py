"""`growthgr tokenizer embed|fit|assign|report`."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from growthgr.cli.context import date_option

app = typer.Typer(help="Item tokenizer: text embeddings, RQ-VAE semantic IDs, SID table.", no_args_is_help=True)


def _settings():
    from growthgr.cli.context import settings

    return settings()


def _lake_and_cfg():
    from foundation.lake import Lake
    from growthgr.cli.context import settings

    s = settings()
    return Lake.from_settings(s), s.tokenizer


def _echo(data: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            typer.echo(f"{key}: {value}")


@app.command("embed")
def embed_cmd(ds: date = date_option(..., "--ds", help="Logical day YYYY-MM-DD.")) -> None:
    """Encode the catalog items up to DS that have no embedding yet (curated/item_embeddings)."""
    from models.tokenizer import embed

    lake, cfg = _lake_and_cfg()
    typer.echo(json.dumps({"ds": f"{ds}", "embedded": embed.embed_new_items(lake, ds, cfg)}))


@app.command("fit")
def fit_cmd(
    ds: date = date_option(..., "--ds", help="Logical day YYYY-MM-DD."),
    version: str | None = typer.Option(None, "--version", help="SID version name (default sid-YYYYMMDD)."),
    embed_first: bool = typer.Option(True, "--embed/--no-embed", help="Embed pending items of DS first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of key: value lines."),
) -> None:
    """Train a new codebook on every item up to DS: a new SID version and the SID snapshot of DS."""
    from models.tokenizer import embed, sids

    lake, cfg = _lake_and_cfg()
    if embed_first:
        embed.embed_new_items(lake, ds, cfg)
    _echo(sids.fit(lake, ds, cfg, sid_version=version, trainer_cfg=_settings().trainer), as_json)


@app.command("assign")
def assign_cmd(
    ds: date = date_option(..., "--ds", help="Logical day YYYY-MM-DD."),
    embed_first: bool = typer.Option(True, "--embed/--no-embed", help="Embed pending items of DS first."),
) -> None:
    """Give SIDs to the items new since the last snapshot with the frozen model (existing SIDs unchanged)."""
    from models.tokenizer import embed, sids

    lake, cfg = _lake_and_cfg()
    if embed_first:
        embed.embed_new_items(lake, ds, cfg)
    typer.echo(json.dumps(sids.assign(lake, ds, cfg)))


def load_dataset(path: Path) -> pd.DataFrame:
    """Catalog rows from an item file (.json Amazon-style, .parquet, .csv) or a lake root (raw/items)."""
    from models.tokenizer import embed

    if path.is_dir():
        from foundation.lake import Lake

        lake = Lake.open(str(path))
        items = lake.read_range("raw", "items", "0001-01-01", "9999-12-31").to_pandas()
        return items.drop_duplicates("item_id").sort_values("item_id").reset_index(drop=True)
    return embed.read_item_file(path)


def dataset_report(items: pd.DataFrame, cfg, cache: Path | None = None) -> dict:
    """Embed `items`, fit an RQ-VAE in memory and return its SID report (nothing written to the lake)."""
    from models.tokenizer import embed, sids
    from models.tokenizer.metrics import sid_report

    t0 = time.perf_counter()
    if cache is not None and cache.exists():
        emb = pd.read_parquet(cache)
    else:
        emb = embed.embed_items(items, cfg)
        if cache is not None:
            embed.to_arrow(emb).to_pandas().to_parquet(cache)
    t1 = time.perf_counter()
    tok = sids.fit_codes(emb, cfg, "report", trainer_cfg=_settings().trainer)
    t2 = time.perf_counter()
    items = items.set_index("item_id").loc[tok.item_ids]
    labels = {c: items[c].to_numpy(dtype=object) if c in items else None for c in ("category", "brand")}
    report = sid_report(tok.codes, tok.recon_mse, x=embed.embedding_matrix(emb), codebook_size=cfg.codebook_size,
                        categories=labels["category"], brands=labels["brand"])
    report["collisions_nearest_code"] = sid_report(tok.raw_codes)["collisions"]
    report["encode_seconds"] = round(t1 - t0, 2)
    report["fit_seconds"] = round(t2 - t1, 2)
    report["input_dim"] = int(tok.inputs.shape[1])
    report["codes_reseeded"] = tok.meta["codes_reseeded"]
    report["config"] = {k: tok.meta["tokenizer"][k] for k in
                        ("codebook_size", "levels", "latent_dim", "hidden_dims", "epochs", "seed", "feature_weight")}
    return report


@app.command("report")
def report_cmd(
    dataset: Path | None = typer.Option(None, "--dataset", exists=True, help="Item file or lake root to fit on."),
    ds: date | None = date_option(None, "--ds", help="Report the lake's SID snapshot of this day instead."),
    cache: Path | None = typer.Option(None, "--embeddings-cache", help="Parquet file to reuse item embeddings."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of key: value lines."),
) -> None:
    """Collisions, per-level usage and perplexity, reconstruction error, level-1 purity."""
    from growthgr.cli.context import settings

    if (dataset is None) == (ds is None):
        raise typer.BadParameter("give exactly one of --dataset or --ds")
    cfg = settings().tokenizer
    if dataset is not None:
        _echo(dataset_report(load_dataset(dataset), cfg, cache), as_json)
        return
    from models.tokenizer import sids
    from models.tokenizer.metrics import sid_report

    lake, cfg = _lake_and_cfg()
    snap_ds, df = sids.latest_snapshot(lake, ds)
    items = lake.read_range("raw", "items", "0001-01-01", snap_ds).to_pandas().drop_duplicates("item_id")
    cats = df[["item_id"]].merge(items[["item_id", "category"]], how="left")["category"].to_numpy(dtype=object)
    out = sid_report(df[list(sids.CODE_COLUMNS)].to_numpy(np.int64), categories=cats, codebook_size=cfg.codebook_size)
    out.update(ds=f"{snap_ds}", sid_version=",".join(df["sid_version"].unique()))
    _echo(out, as_json)
