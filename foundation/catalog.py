"""The catalog: every dataset of the lake (zone, table, key columns, schema, writer) and every
report / validation / model key, defined once. Code names a dataset by its catalog entry
(`lake.read_partition(*ITEM_SIDS, ds)` or `ITEM_SIDS.zone`), never by string literals.

Schemas: raw and truth tables are fixed here (`foundation.schemas`); derived tables are
defined by their writer (Spark job, tokenizer, model) and checked by the GX suites.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from foundation.lake import partition_dir
from foundation.schemas import RAW_SCHEMAS, TRUTH_SCHEMAS


@dataclass(frozen=True)
class Dataset:
    """One date-partitioned table: `<zone>/<table>/ds=YYYY-MM-DD/`."""

    zone: str
    table: str
    keys: tuple[str, ...]
    writer: str                       # the module that writes it
    schema: pa.Schema | None = None   # fixed schemas (raw, truth); derived ones: see the writer
    also_unique: tuple[tuple[str, ...], ...] = ()   # further column sets unique within a partition

    @property
    def unique_keys(self) -> list[list[str]]:
        """Every column set that must be unique within a partition (the key first)."""
        return [list(k) for k in (self.keys, *self.also_unique) if k]

    def __iter__(self) -> Iterator[str]:
        """`lake.read_partition(*DATASET, ds)` unpacks to (zone, table)."""
        return iter((self.zone, self.table))

    def key(self, ds: date) -> str:
        return f"{self.zone}/{self.table}/{partition_dir(ds)}"


_SIM = "simulator"
_RAW_KEYS = {"items": ("item_id",), "users": ("user_id",), "search_requests": ("request_id",),
             "rank_candidates": ("request_id", "item_id"), "exposures": ("request_id", "item_id"),
             "clicks": ("request_id", "item_id"), "purchases": ("order_id",),
             "site_orders": ("order_id",), "item_experiments": ("item_id", "experiment")}
_RAW_ALSO_UNIQUE = {"rank_candidates": (("request_id", "rank"),), "exposures": (("request_id", "position"),)}
RAW: dict[str, Dataset] = {t: Dataset("raw", t, _RAW_KEYS[t], _SIM, s, _RAW_ALSO_UNIQUE.get(t, ()))
                           for t, s in RAW_SCHEMAS.items()}
TRUTH: dict[str, Dataset] = {t: Dataset("truth", t, (), _SIM, s) for t, s in TRUTH_SCHEMAS.items()}

ITEM_DAILY_STATS = Dataset("curated", "item_daily_stats", ("item_id", "day"), "spark_jobs.item_daily_stats")
USER_FEATURES = Dataset("features", "user_features", ("user_id",), "spark_jobs.features")
ITEM_FEATURES = Dataset("features", "item_features", ("item_id",), "spark_jobs.features")
QUERY_FEATURES = Dataset("features", "query_features", ("query_id",), "spark_jobs.features")
FEATURE_TABLES: dict[str, Dataset] = {d.table: d for d in (USER_FEATURES, ITEM_FEATURES, QUERY_FEATURES)}
GR_SAMPLES = Dataset("samples", "gr_samples", ("request_id",), "spark_jobs.gr_samples")
ITEMLTV_LABELS = Dataset("samples", "itemltv_labels", ("item_id",), "spark_jobs.itemltv_labels")
ITEMLTV_SAMPLES = Dataset("samples", "itemltv_samples", ("request_id", "item_id", "ts", "position"),
                          "spark_jobs.itemltv_labels")
ITEM_EMBEDDINGS = Dataset("curated", "item_embeddings", ("item_id",), "models.tokenizer.embed")
ITEM_SIDS = Dataset("curated", "item_sids", ("item_id",), "models.tokenizer.sids")
NEW_ITEM_POOL = Dataset("curated", "new_item_pool", ("item_id",), "models.itemltv.pipeline")
# ItemLTV's scores of every pool candidate of the day (item_id, base, uplift): MoPO's long-term reward
ITEM_UPLIFT = Dataset("curated", "item_uplift", ("item_id",), "models.itemltv.pipeline")
# the point-in-time item features of the day's pool candidates (items in their new-item period, as of
# the end of ds): built by the application (`growthgr.pipeline.training_set`) from Feast
ITEMLTV_POOL_FEATURES = Dataset("samples", "itemltv_pool_features", ("item_id",), "growthgr.pipeline")


def training_set(service: str) -> Dataset:
    """The point-in-time training set of a Feast feature service (`samples/training_<service>`)."""
    return Dataset("samples", f"training_{service}", (), "features.store")


# -- keys outside the partitioned tables -----------------------------------------------------------
CURVES = "curves"    # the report folder of learning curves: reports/curves/ds=<ds>/<model>/{metrics,epochs}.csv


def report_prefix(subsystem: str, ds: date) -> str:
    """Reports of one subsystem and day: metrics.json, plots (`reports/<subsystem>/ds=<ds>`)."""
    return f"reports/{subsystem}/{partition_dir(ds)}"


def report_key(subsystem: str, ds: date, name: str = "metrics.json") -> str:
    return f"{report_prefix(subsystem, ds)}/{name}"


def gate_result_key(ds: date, dataset: str) -> str:
    """The stored result of one gate (`validation/gate_results/ds=<ds>/<dataset>.json`)."""
    return f"validation/gate_results/{partition_dir(ds)}/{dataset}.json"


def data_docs_prefix(dataset: str, ds: date) -> str:
    """GX Data Docs of one gate run (`validation/data_docs/<dataset>/ds=<ds>/`)."""
    return f"validation/data_docs/{dataset}/{partition_dir(ds)}"


def model_prefix(name: str) -> str:
    return f"models/{name}/"


def model_key(name: str, ds: date, file: str = "model.safetensors") -> str:
    """A model checkpoint in the lake's `models` zone (`models/<name>/ds=<ds>/<file>`)."""
    return f"models/{name}/{partition_dir(ds)}/{file}"


# -- key functions shared by writers and readers ---------------------------------------------------
def query_id(text: str) -> int:
    """Stable int64 id of a query text: the first 60 bits of its SHA-256 (Spark: `query_id_col`)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


# -- pipeline step timings (written by `growthgr.pipeline.timed`, read by `growthgr.report`) --------
def pipeline_step_key(ds: date, step: str) -> str:
    """One step's latest run for ds: step, status, seconds, start/end UTC
    (`reports/pipeline/ds=<ds>/steps/<step>.json`)."""
    return f"{report_prefix('pipeline', ds)}/steps/{step}.json"


def pipeline_step_log_key(ds: date, step: str) -> str:
    """The traceback of a failed step's latest run (`reports/pipeline/ds=<ds>/steps/<step>.log`)."""
    return f"{report_prefix('pipeline', ds)}/steps/{step}.log"


def pipeline_steps_prefix(ds: date) -> str:
    return f"{report_prefix('pipeline', ds)}/steps/"
