"""Feast's SQLite online store with a bulk writer (the local environment's online store).

`BulkSqliteOnlineStore` is Feast's `SqliteOnlineStore` (same file, tables, keys, value
encoding and read path) whose `online_write_batch` sends one `executemany` per batch
instead of one `execute` per feature value: materialising a day of the demo world
(~108k entities, ~2M feature values) spent most of its time in those 2M calls. Stores
with vector search or the OpenAI-compatible `value_num` column fall back to Feast's
writer. Selected with `type: growthgr.feast_online.BulkSqliteOnlineStore` in
`feature_repo/feature_store.yaml` (`feast.online_store: sqlite` picks Feast's stock one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.utils import to_naive_utc

TYPE = "growthgr.feast_online.BulkSqliteOnlineStore"


class BulkSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Same options as Feast's `sqlite` online store."""

    type: Literal["growthgr.feast_online.BulkSqliteOnlineStore"] = TYPE  # type: ignore[assignment]


class BulkSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store, writing each batch with one `executemany` upsert."""

    def online_write_batch(self, config, table, data: list[tuple[Any, dict, datetime, datetime | None]],
                           progress: Callable[[int], Any] | None) -> None:
        store = config.online_store
        if store.vector_enabled or getattr(store, "enable_openai_compatible_store", False):
            return super().online_write_batch(config, table, data, progress)
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        upsert = (
            f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts;"
        )
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, ts, created in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            ts, created = to_naive_utc(ts), (to_naive_utc(created) if created is not None else None)
            rows.extend((key, feature, val.SerializeToString(), extract_text_and_num(val, False)[0], ts, created)
                        for feature, val in values.items())
        conn = self._get_conn(config)
        with conn:
            conn.executemany(upsert, rows)
        if progress:
            progress(len(data))
