"""item_daily_stats, feature tables and gr_samples on the hand-built world of
`spark_fixtures` (expected values computed by hand), the Spark config, the CLI,
idempotence and backfill, and the lake data source's partition plan (Spark's own)."""

from __future__ import annotations

import math
import shutil
import sys
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from spark_fixtures import DS, at
from typer.testing import CliRunner

from foundation.catalog import query_id
from foundation.config import load_settings
from foundation.lake import Lake, ds_range
from spark_jobs import features, gr_samples, item_daily_stats
from spark_jobs.common import end_of_day, query_id_col
from spark_jobs.jobs import JOBS, backfill
from spark_jobs.lake_source import FileConf, Footer, plan, read_files
from spark_jobs.session import S3_CONNECTOR_CONF, python_exec, spark_conf, spark_url

pytest_plugins = ("spark_fixtures",)
D30, D33 = date(2026, 3, 4), date(2026, 3, 7)


def _funnel(raw):
    return {t: raw[t] for t in item_daily_stats.FUNNEL_TABLES}


def test_item_daily_stats_counts_each_funnel_stage_per_utc_day(spark, raw_dfs):
    out = item_daily_stats.transform(**_funnel(raw_dfs)).where(F.col("day").isin(D30, D33))
    expected = spark.createDataFrame([
        # day 30: request 14 at 00:00:00 exposes items 2 and 1, item 2 is clicked, item 1 bought (search)
        (1, D30, 1, 1, 0, 1, 10.0, 0, 0.0, 1, 10.0),
        (2, D30, 1, 1, 1, 0, 0.0, 0, 0.0, 0, 0.0),
        # day 33: two site orders, no search activity
        (1, D33, 0, 0, 0, 0, 0.0, 1, 10.0, 1, 10.0),
        (4, D33, 0, 0, 0, 0, 0.0, 1, 10.0, 1, 10.0),
    ], out.schema)
    assertDataFrameEqual(out, expected)


def test_gr_samples_funnel_sets_history_and_linked_site_orders(spark, raw_dfs):
    raw = raw_dfs
    cols = ["user_id", "item_id", "ts"]
    orders = raw["purchases"].select(*cols).unionByName(raw["site_orders"].select(*cols))
    out = gr_samples.transform(**_funnel(raw), history_clicks=raw["clicks"].select(*cols), history_orders=orders,
                               ds=DS)
    red = query_id("red shoes")
    # Request 15 (day 36, 10:00): history = items clicked/ordered strictly before 10:00, distinct,
    # most recent last (order of item 1 on day 29, site orders of items 1 and 4 on day 33);
    # the click at 10:01 and the order at 23:59:59 are not history. Site order 8 is linked to it.
    expected = spark.createDataFrame(
        [(15, 100, at(36, 10), "red shoes", red, 3, [1, 4], [1, 4], [3, 1], [3, 1], [1], [1], [3])], out.schema
    )
    assertDataFrameEqual(out, expected)
    day5 = gr_samples.transform(**_funnel(raw), history_clicks=raw["clicks"].select(*cols), history_orders=orders,
                                ds=date(2026, 2, 7))
    got = {r.request_id: (r.rank_candidate_ids, r.exposure_ids, r.click_ids, r.history_item_ids)
           for r in day5.collect()}
    assert got == {11: ([1], [1], [], []), 12: ([2, 1], [2, 1], [2], [])}


def test_feature_tables_hand_computed(raw_dfs):
    out = features.transform(**{k: v for k, v in raw_dfs.items() if k != "rank_candidates"}, ds=DS)
    users = {r.user_id: r for r in out.user_features.collect()}
    u = users[100]
    assert u.event_timestamp == end_of_day(DS).replace(tzinfo=None)  # collect() gives naive UTC
    assert str(end_of_day(DS)) == "2026-03-10 23:59:59.999999+00:00"
    assert (u.requests_1d, u.requests_7d, u.requests_30d, u.clicks_7d, u.clicks_30d, u.orders_30d) == (1, 1, 1, 1, 1, 5)
    assert u.category_affinity == [0.0, 0.0, 0.0, 1.0] + [0.0] * 12
    assert u.price_level_30d == 10.0 and u.tenure_days == 68
    assert (u.region, u.age_band) == ("region_3", "25-34")           # declared, copied from raw/users
    # distinct days of ds-29 .. ds (days 7..36) with a request: 100 on day 36 (day 0 is out),
    # 101 only on day 5 (out), 102 on days 29 and 30
    assert {uid: r.active_days_30d for uid, r in users.items()} == {100: 1, 101: 0, 102: 2}
    assert u.recent_item_ids == [4, 3, 1]   # order 4 on day 37 is after ds: not a feature of ds
    items = {r.item_id: r for r in out.item_features.collect()}
    i1 = items[1]
    assert (i1.age_days, i1.is_new) == (36, False)
    assert (i1.exposures_1d, i1.clicks_1d, i1.orders_1d, i1.gmv_1d, i1.ctr_1d, i1.cvr_1d) == (1, 1, 1, 10.0, 1.0, 1.0)
    assert (i1.exposures_7d, i1.clicks_7d, i1.orders_7d, i1.gmv_7d, i1.ctr_7d, i1.cvr_7d) == (2, 1, 3, 30.0, 0.5, 2.0)
    assert (i1.exposures_30d, i1.clicks_30d, i1.orders_30d, i1.cvr_30d) == (2, 1, 4, 3.0)
    assert sorted(items) == [1, 2, 3, 4]
    queries = {r.query_text: r for r in out.query_features.collect()}
    red, blue = queries["red shoes"], queries["blue hat"]
    assert red.query_id == query_id("red shoes") and blue.intent_category_id == 5
    assert (red.requests_1d, red.requests_7d, red.requests_30d, red.exposures_30d, red.ctr_30d) == (1, 1, 1, 2, 0.5)
    assert (blue.requests_1d, blue.requests_7d, blue.requests_30d, blue.exposures_30d) == (0, 1, 2, 3)
    assert math.isclose(blue.ctr_30d, 1 / 3) and blue.cvr_30d == 1.0
    assert math.isclose(blue.new_item_exposure_share_30d, 1 / 3)   # item 2 on day 29 is new, on day 30 not


def test_query_id_is_the_same_in_python_and_spark(spark):
    texts = ["red shoes", "blue hat", "", "ünïcode café"]
    df = spark.createDataFrame([(t,) for t in texts], "q string").select("q", query_id_col(F.col("q")).alias("id"))
    assert {r.q: r.id for r in df.collect()} == {t: query_id(t) for t in texts}
    assert all(0 <= query_id(t) < 2**60 for t in texts)


def test_backfill_equals_single_runs_and_rerun_is_identical(spark, spark_settings, hand_lake, tmp_path):
    other = Lake.open(str(tmp_path / "other"))
    shutil.copytree(hand_lake.store.uri, other.store.uri, dirs_exist_ok=True)
    days = ds_range("2026-03-03", "2026-03-05")
    rows = backfill(hand_lake, spark_settings.spark, spark_settings.storage, "item_daily_stats", days[0], days[-1])
    assert rows == {days[0]: {"item_daily_stats": 2}, days[1]: {"item_daily_stats": 2},
                    days[2]: {"item_daily_stats": 1}}   # day 31: the order of item 3
    for ds in days:
        item_daily_stats.run(spark, other, ds)
        assert hand_lake.read_partition("curated", "item_daily_stats", ds).equals(
            other.read_partition("curated", "item_daily_stats", ds))
    before = hand_lake.read_partition("curated", "item_daily_stats", days[1])
    backfill(hand_lake, spark_settings.spark, spark_settings.storage, "item_daily_stats", days[1], days[1])
    assert hand_lake.read_partition("curated", "item_daily_stats", days[1]).equals(before)
    assert hand_lake.list_partitions("curated", "item_daily_stats") == days


def test_cli_runs_a_job_and_reports_input_errors(hand_lake, spark, monkeypatch):
    from growthgr.cli import app

    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", hand_lake.store.uri)
    runner = CliRunner()
    res = runner.invoke(app, ["--profile", "tiny", "spark", "item-daily-stats", "--ds", "2026-03-04"])
    assert res.exit_code == 0, res.output
    assert '"item_daily_stats": 2' in res.output
    hand_lake.store.delete("raw/clicks/ds=2026-03-06/_SUCCESS")
    res = runner.invoke(app, ["--profile", "tiny", "spark", "item-daily-stats", "--start", "2026-03-05",
                              "--end", "2026-03-06"])
    assert res.exit_code == 1 and "raw/clicks/ds=2026-03-06: partition is missing" in res.output
    assert hand_lake.list_partitions("curated", "item_daily_stats") == ds_range("2026-03-04", "2026-03-05")


def test_cli_job_names_match_the_registry():
    from growthgr.cli.spark import JOB_NAMES

    assert JOB_NAMES == tuple(JOBS)


def test_spark_conf_local_and_s3a():
    local = load_settings("tiny", env={}, overrides={"lake_root": "/data/lake"})
    conf = spark_conf(local.spark, local.storage, local.lake_root)
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.sql.shuffle.partitions"] == "2"
    assert not any(k.startswith("spark.hadoop.fs.s3a") for k in conf)
    s3 = load_settings("large", env={}, overrides={
        "lake_root": "s3://bucket/lake", "storage": {"s3_endpoint_url": "http://127.0.0.1:9000"},
        "spark": {"master": "spark://10.0.0.1:7077", "jars_packages": ["org.apache.hadoop:hadoop-aws:3.4.2"],
                  "s3a_credentials_provider": "p.Provider"}})
    conf = spark_conf(s3.spark, s3.storage, s3.lake_root)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == "p.Provider"
    assert conf["spark.jars.packages"] == "org.apache.hadoop:hadoop-aws:3.4.2"
    assert conf["spark.sql.shuffle.partitions"] == "16"
    assert spark_url("s3://bucket/lake/raw/x.parquet") == "s3a://bucket/lake/raw/x.parquet"
    assert spark_url("/data/lake/raw/x.parquet") == "/data/lake/raw/x.parquet"
    assert conf[S3_CONNECTOR_CONF] == "auto" and S3_CONNECTOR_CONF not in spark_conf(local.spark, local.storage, "/l")
    assert conf.get("spark.driver.extraJavaOptions") is None       # the large profile keeps the JVM's defaults
    local_conf = spark_conf(local.spark, local.storage, local.lake_root)
    assert local_conf["spark.driver.extraJavaOptions"] == local_conf["spark.executor.extraJavaOptions"] \
        == "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def test_driver_jvm_runs_with_the_profiles_java_options(spark, spark_settings):
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(spark_settings.spark.java_options.split()) <= set(args), args


def test_python_workers_run_this_interpreter_in_local_mode():
    local = load_settings("tiny", env={}).spark
    cluster = local.model_copy(update={"master": "spark://10.0.0.1:7077"})
    assert python_exec(local, {}) == sys.executable
    assert python_exec(local, {"PYSPARK_PYTHON": "/opt/py"}) == "/opt/py"
    assert python_exec(cluster, {}) is None
    assert python_exec(cluster.model_copy(update={"python": "/venv/bin/python"}), {}) == "/venv/bin/python"


def _spark_read_layout(spark, files):
    """(partition, file, rows) of each file part `spark.read.parquet` reads, in read order."""
    df = spark.read.parquet(*files).select(F.spark_partition_id().alias("p"), F.input_file_name().alias("f"),
                                           F.monotonically_increasing_id().alias("i"))
    rows = df.groupBy("p", "f").agg(F.count("*").alias("n"), F.min("i").alias("i")).orderBy("p", "i").collect()
    return [(r.p, r.f.removeprefix("file://"), r.n) for r in rows]


def _planned_layout(footers, conf):
    return [(p, url, sum(pq.read_metadata(url).row_group(g).num_rows for g in groups))
            for p, part in enumerate(plan(footers, conf)) for url, groups in part if groups]


@pytest.mark.parametrize("max_bytes, open_cost", [("200000", "4MB"), ("200000", "10000"), ("1000000", "10000"),
                                                  ("128MB", "4MB")])
def test_lake_source_plans_the_input_partitions_of_sparks_file_source(spark, tmp_path, max_bytes, open_cost):
    """Same splits (a row group goes to the split holding its midpoint), same packing, same order:
    the S3 reader hands each task the rows `spark.read.parquet` would, so sums agree bit for bit."""
    from foundation.storage import FileReader

    rng = np.random.default_rng(0)
    files = []
    for k, n in enumerate([50_000, 3_000, 120_000, 800, 70_000]):
        files.append(str(tmp_path / f"f{k}.parquet"))
        pq.write_table(pa.table({"x": rng.integers(0, 1 << 40, n), "y": rng.random(n)}), files[-1], row_group_size=7_000)
    conf = {"spark.sql.files.maxPartitionBytes": max_bytes, "spark.sql.files.openCostInBytes": open_cost}
    try:
        for key, value in conf.items():
            spark.conf.set(key, value)
        footers = [Footer.read(FileReader(), f)[0] for f in files]
        assert _planned_layout(footers, FileConf.of(spark)) == _spark_read_layout(spark, files)
        schema = spark.read.parquet(files[0]).schema
        ours = read_files(spark, footers, schema, FileReader()).agg(F.sum("y").alias("s"), F.count("*").alias("n"))
        theirs = spark.read.parquet(*files).agg(F.sum("y").alias("s"), F.count("*").alias("n"))
        assert ours.collect() == theirs.collect()
    finally:
        for key in conf:
            spark.conf.unset(key)
