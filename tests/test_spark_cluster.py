"""The jobs run unchanged on a Spark standalone cluster: a master and a worker started from
pyspark's own `bin/spark-class` on 127.0.0.1, each job launched through the CLI with only the
master URL changed in config; its output equals local mode. One job also runs on an `s3://` lake
(moto's S3 API server): the executors read the committed files through the lake data source
(pyarrow, credentials from the worker's environment) and the driver commits the output."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
from spark_fixtures import DS

from foundation.config import load_settings
from spark_jobs import item_daily_stats, itemltv_labels

pytest_plugins = ("spark_fixtures",)
pytestmark = pytest.mark.slow
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def _alive_workers(ui_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
        return int(json.load(r).get("aliveworkers", 0))


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A master and one worker (1 core, 1 GiB) on loopback, shared by this module's tests; yields
    the master URL, the environment of the cluster's processes (the workers' Python is this
    interpreter, which imports the project) and the folder of the master's and worker's logs."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_CLASS.parents[1]),
           "PYSPARK_PYTHON": sys.executable,
           "SPARK_DAEMON_JAVA_OPTS": load_settings("tiny", env={}).spark.java_options}  # master and worker JVMs
    port, ui = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []
    with open(tmp_path / "master.log", "w") as mlog, open(tmp_path / "worker.log", "w") as wlog:
        procs.append(subprocess.Popen(
            [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui)], env=env, stdout=mlog, stderr=subprocess.STDOUT))
        try:
            _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None, "master")
            procs.append(subprocess.Popen(
                [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port()), url],
                env=env, stdout=wlog, stderr=subprocess.STDOUT))
            _wait(lambda: _alive_workers(ui) == 1, "worker")
            yield url, env, tmp_path
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def _cli_env(env: dict, url: str, lake_root: str) -> dict:
    """The driver's environment: the lake, the cluster's master, a small executor."""
    return {**env, "GROWTHGR_LAKE_ROOT": lake_root, "GROWTHGR_SPARK__MASTER": url,
            "GROWTHGR_SPARK__DRIVER_HOST": "127.0.0.1",
            "GROWTHGR_SPARK__EXTRA_CONF": '{"spark.executor.memory": "512m", "spark.cores.max": "1"}'}


def _run_cli(job_env: dict, *args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "growthgr"
    return subprocess.run([str(cli), "--profile", "tiny", *args], env=job_env, capture_output=True, text=True,
                          timeout=600)


def test_label_job_on_standalone_cluster_equals_local(standalone_cluster, hand_lake, spark, tmp_path):
    url, env, logs = standalone_cluster
    local_root = tmp_path / "local"
    shutil.copytree(hand_lake.store.uri, local_root)
    from foundation.lake import Lake

    local = Lake.open(str(local_root))
    itemltv_labels.run(spark, local, DS)
    res = _run_cli(_cli_env(env, url, hand_lake.store.uri), "spark", "itemltv-labels", "--ds", str(DS))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout) == {str(DS): {"itemltv_labels": 2, "itemltv_samples": 6}}
    for table in ("itemltv_labels", "itemltv_samples"):
        assert hand_lake.read_partition("samples", table, DS).equals(local.read_partition("samples", table, DS))
    assert "app-" in (logs / "master.log").read_text() + res.stderr   # the master ran an application


def test_job_on_standalone_cluster_reads_and_writes_an_s3_lake(standalone_cluster, s3_bucket, hand_lake, spark):
    from foundation.lake import Lake
    from foundation.storage import LocalStore

    url, env, logs = standalone_cluster
    endpoint, bucket = s3_bucket
    s3 = Lake.open(f"{bucket}/lake", endpoint)
    local = LocalStore(hand_lake.store.uri)
    for key in local.list("raw/"):
        s3.store.put_bytes(key, local.get_bytes(key))
    item_daily_stats.run(spark, hand_lake, DS)                                   # local mode, local lake
    job_env = {**_cli_env(env, url, s3.store.uri), "GROWTHGR_S3_ENDPOINT_URL": endpoint}
    res = _run_cli(job_env, "spark", "item-daily-stats", "--ds", str(DS))
    assert res.returncode == 0, res.stderr[-3000:]
    expected = hand_lake.read_partition("curated", "item_daily_stats", DS)
    assert json.loads(res.stdout) == {str(DS): {"item_daily_stats": expected.num_rows}} and expected.num_rows > 0
    assert s3.read_partition("curated", "item_daily_stats", DS).equals(expected)
    assert "S3AFileSystem" not in res.stderr
