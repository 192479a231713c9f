"""The SparkSession of a GrowthGR process, built from the `spark` and `storage` config
sections and the lake root.

One session per process (`getOrCreate`): `local[*]` by default, any master URL
from config (`spark://...`, `yarn`, `k8s://...`) with no code change. Session
time zone is UTC (every day boundary in the jobs is a UTC midnight), logs are
quiet (WARN), shuffle partitions come from the profile (2 for `tiny`). Python
workers (the lake reader's executor side) run `spark.python`: in local mode
this interpreter by default, on a cluster its own `PYSPARK_PYTHON`.

S3: a lake rooted at `s3://bucket/prefix` is read through the lake reader
(`spark_jobs.lake_source`, no jars needed) unless the session has Hadoop's S3A
connector (`spark.s3_connector`, recorded in the session conf as
`S3_CONNECTOR_CONF`); with S3A, lake URLs become `s3a://...` (`spark_url`) and
`spark_conf` sets the S3A endpoint, path-style access and credentials provider
from config. The `hadoop-aws` jars are not bundled with pyspark: add them with
`spark.jars_packages` or ship them in the cluster image.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from foundation.config import SparkConfig, StorageConfig

log = logging.getLogger(__name__)
S3_CONNECTOR_CONF = "spark.growthgr.s3Connector"


def spark_url(url: str) -> str:
    """The URL Spark must use for a lake file: `s3://` becomes `s3a://`, paths stay."""
    return "s3a://" + url[len("s3://"):] if url.startswith("s3://") else url


def spark_conf(cfg: SparkConfig, storage: StorageConfig, lake_root: str) -> dict[str, str]:
    """Every Spark conf key this process sets (pure: easy to test and to print)."""
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
    }
    if cfg.driver_host:
        conf["spark.driver.host"] = cfg.driver_host
        conf["spark.driver.bindAddress"] = cfg.driver_host
    if cfg.java_options:
        conf["spark.driver.extraJavaOptions"] = cfg.java_options
        conf["spark.executor.extraJavaOptions"] = cfg.java_options
    if cfg.jars_packages:
        conf["spark.jars.packages"] = ",".join(cfg.jars_packages)
    if lake_root.startswith("s3://"):
        conf[S3_CONNECTOR_CONF] = cfg.s3_connector
        conf.update(_s3a_conf(cfg, storage))
    conf.update(cfg.extra_conf)
    return conf


def _s3a_conf(cfg: SparkConfig, storage: StorageConfig) -> dict[str, str]:
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.path.style.access": str(cfg.s3a_path_style_access).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": storage.s3_region,
    }
    if storage.s3_endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = storage.s3_endpoint_url
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            storage.s3_endpoint_url.startswith("https")
        ).lower()
    if cfg.s3a_credentials_provider:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = cfg.s3a_credentials_provider
    return conf


def python_exec(cfg: SparkConfig, env: Mapping[str, str]) -> str | None:
    """The Python the session's Python workers run: `spark.python`, else `PYSPARK_PYTHON`, else
    this interpreter in local mode (pyspark would take `python3` from PATH, which may lack the
    project), else None (the cluster's default)."""
    return cfg.python or env.get("PYSPARK_PYTHON") or (sys.executable if cfg.master.startswith("local") else None)


def get_spark(cfg: SparkConfig, storage: StorageConfig, lake_root: str):
    """The process-wide SparkSession (created on first call, reused afterwards).

    A session that already exists keeps its master; the runtime SQL settings
    (time zone, shuffle partitions) are re-applied so every caller sees UTC.
    """
    from pyspark.sql import SparkSession

    conf = spark_conf(cfg, storage, lake_root)
    if python := python_exec(cfg, os.environ):
        os.environ["PYSPARK_PYTHON"] = python    # read once, when the SparkContext starts
    builder = SparkSession.builder.master(cfg.master).appName(cfg.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.shuffle.partitions", conf["spark.sql.shuffle.partitions"])
    spark.conf.set(S3_CONNECTOR_CONF, conf.get(S3_CONNECTOR_CONF, "auto"))
    log.debug("spark session %s on %s", spark.sparkContext.applicationId, spark.sparkContext.master)
    return spark
