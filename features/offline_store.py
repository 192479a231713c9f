"""Feast's DuckDB offline store, reading feature views through the lake's commit markers.

A stock `FileSource` is a path or glob that Feast hands to DuckDB, and any glob over the lake
also matches the files of uncommitted or crashed writes and stray copies of a partition. Here a
source's path names a lake table, `<lake root>/<zone>/<table>` (see `feature_repo/definitions.py`),
and every read resolves it to `Lake.committed_files` at that moment: training sets, point-in-time
joins and `materialize` see exactly the committed partitions, with no `feast apply` per write.

An `s3://` lake: DuckDB's httpfs extension is not bundled with the pinned wheel, so the committed
files are read with pyarrow (`Lake.read_files`, endpoint and region from the store config's
`s3_endpoint_url` / `s3_region`, credentials from the environment or an instance role) and handed
to ibis as an in-memory table: the same rows, read whole on every call (no pushdown).

Selected in `feature_repo/feature_store.yaml` as `type: features.offline_store.LakeOfflineStore`
(Feast imports the class by that name, and this module only when it does: it loads Feast).
"""

from __future__ import annotations

import functools
import inspect
from typing import Literal

import ibis
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores import ibis as feast_ibis

from foundation.lake import Lake, PartitionNotFound
from foundation.storage import FileReader

TYPE = "features.offline_store.LakeOfflineStore"
_DuckDB = feast_duckdb.DuckDBOfflineStore


def table_path(lake_root: str, zone: str, table: str) -> str:
    """The `FileSource` path that names one lake table."""
    return f"{lake_root.rstrip('/')}/{zone}/{table}"


def read_lake_table(data_source, repo_path: str, files: FileReader = FileReader()):
    """An ibis table over the committed files of the lake table `data_source.path` names (an
    `s3://` one read by pyarrow through `files`, see the module docstring)."""
    root, zone, table = data_source.path.rsplit("/", 2)
    lake = Lake.open(root, files.endpoint_url, files.region)
    urls = lake.committed_files(zone, table)
    if not urls:
        raise PartitionNotFound(f"{data_source.name}: no committed partition of {zone}/{table} in {root}")
    if root.startswith("s3://"):
        return ibis.memtable(lake.read_files(urls))
    return ibis.read_parquet(urls)


def _through_lake(ibis_fn, duckdb_method):
    """`duckdb_method`'s signature, running `ibis_fn` with the lake reader instead of a glob."""
    signature = inspect.signature(duckdb_method)

    @functools.wraps(duckdb_method)
    def method(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        store = bound.arguments["config"].offline_store
        reader = functools.partial(read_lake_table, files=FileReader(store.s3_endpoint_url, store.s3_region))
        return ibis_fn(**bound.arguments, data_source_reader=reader,
                       data_source_writer=feast_duckdb._write_data_source,
                       staging_location=store.staging_location,
                       staging_location_endpoint_override=store.staging_location_endpoint_override)

    return staticmethod(method)


class LakeOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: Literal["features.offline_store.LakeOfflineStore"] = TYPE
    s3_endpoint_url: str | None = None     # an s3:// lake's endpoint (None: AWS)
    s3_region: str = "us-east-1"


class LakeOfflineStore(_DuckDB):
    get_historical_features = _through_lake(feast_ibis.get_historical_features_ibis, _DuckDB.get_historical_features)
    pull_latest_from_table_or_query = _through_lake(feast_ibis.pull_latest_from_table_or_query_ibis,
                                                    _DuckDB.pull_latest_from_table_or_query)
    pull_all_from_table_or_query = _through_lake(feast_ibis.pull_all_from_table_or_query_ibis,
                                                 _DuckDB.pull_all_from_table_or_query)
