"""`growthgr.lineage` without Airflow: dataset names under the OpenLineage naming spec, the
transports `orchestration.lineage` selects, and the events the file transport writes (read back).
The events of real DAG runs and dbt builds: tests/test_dag_daily.py, tests/test_dag_definition.py."""

from __future__ import annotations

import json

import pytest

from foundation.config import ConfigError, LineageConfig, load_settings
from foundation.schemas import RAW_TABLES
from growthgr import lineage
from growthgr.steps import DAILY


def test_dataset_names_follow_the_naming_spec(tmp_path):
    assert lineage.lake_dataset("s3://bucket/pre/fix", "raw/items") == ("s3://bucket", "pre/fix/raw/items")
    assert lineage.lake_dataset("s3://bucket", "raw/items") == ("s3://bucket", "raw/items")
    assert lineage.lake_dataset(str(tmp_path / "lake"), "raw/items") == ("file", f"{tmp_path}/lake/raw/items")
    s = load_settings("tiny", env={"GROWTHGR_LAKE_ROOT": str(tmp_path / "lake"),
                                   "GROWTHGR_RELEASES_ROOT": "s3://rel/releases"})
    assert lineage.dataset(s, lineage.RELEASES) == ("s3://rel", "releases")
    namespace, name = lineage.dataset(s, lineage.WAREHOUSE)
    assert namespace == "file" and name.endswith("growthgr.duckdb")
    assert lineage.expand(("raw", "curated/item_sids")) == [*(f"raw/{t}" for t in RAW_TABLES), "curated/item_sids"]


def test_every_daily_step_declares_what_it_reads_or_writes():
    assert all(s.reads or s.writes for s in DAILY)
    assert all(s.writes for s in DAILY if s.gate), [s.name for s in DAILY if s.gate and not s.writes]


def test_transports(tmp_path):
    default = LineageConfig()
    assert lineage.transport(default, tmp_path) == {
        "type": "file", "log_file_path": str(tmp_path / "lineage" / "openlineage.jsonl"), "append": True}
    env = lineage.airflow_env(default, tmp_path)
    assert json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])["type"] == "file" and (tmp_path / "lineage").is_dir()
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "growthgr" and env["AIRFLOW__OPENLINEAGE__DISABLED"] == "False"
    http = LineageConfig(transport="http", url="http://127.0.0.1:5000", timeout_s=2)
    assert lineage.transport(http) == {"type": "http", "url": "http://127.0.0.1:5000", "timeout": 2}
    assert lineage.airflow_env(LineageConfig(transport="off"), tmp_path) == {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    assert lineage.emit_dbt(LineageConfig(transport="off"), tmp_path) == 0
    with pytest.raises(ConfigError, match="lineage"):
        load_settings("tiny", env={"GROWTHGR_ORCHESTRATION__LINEAGE__TRANSPORT": "http"})


def test_file_transport_events_read_back(tmp_path):
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    cfg = LineageConfig(file=str(tmp_path / "events" / "ol.jsonl"))
    s = load_settings("tiny", env={"GROWTHGR_LAKE_ROOT": str(tmp_path / "lake")})
    inputs, outputs = lineage.step_datasets(s, ("raw",), ("curated/item_sids",))
    client = lineage.client(cfg)
    for state in (RunState.START, RunState.COMPLETE):
        client.emit(RunEvent(eventType=state, eventTime="2026-02-15T06:00:00+00:00",
                             run=Run(runId="01890000-0000-7000-8000-000000000000"),
                             job=Job(namespace=cfg.namespace, name="growthgr_daily.tokenize"),
                             producer=lineage.PRODUCER, inputs=inputs, outputs=outputs))
    events = lineage.read_events(lineage.events_file(cfg))
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {i["name"] for i in events[1]["inputs"]} == {f"{tmp_path}/lake/raw/{t}" for t in RAW_TABLES}
    assert [(o["namespace"], o["name"]) for o in events[1]["outputs"]] == [("file", f"{tmp_path}/lake/curated/item_sids")]
    assert lineage.read_events(tmp_path / "none.jsonl") == []
