"""Fixtures shared by every test: telemetry off, a real S3 API server on loopback, and the one
simulated tiny world (seed 1) that every Spark / MultiGR / DAG test starts from."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundation.logs import disable_telemetry

disable_telemetry()
# Fake credentials for the S3 API server, set before any JVM starts: Spark executors (Python
# workers of a session started by any earlier test) read an s3:// lake with the environment's.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)

# The longest modules first (measured module times). `make test` runs `pytest -n 3 --dist loadfile
# --no-loadscope-reorder`: xdist hands each worker one module in this order, then a second one in
# the same order (so with 3 workers the 4th module joins the 1st on its worker: a short one), then
# the next free worker takes the next module. (xdist's default reorder, most tests first, would
# start the one-test scheduler module last.)
LONGEST_FIRST = ("test_dag_daily.py", "test_dag_scheduler.py", "test_demo.py", "test_spark_cluster.py",
                 "test_dag_definition.py", "test_release_crash.py", "test_spark_jobs.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 API server on 127.0.0.1 (free port), in a process of its own so that it answers on
    the other core while a test's pipeline runs in this one; yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; yields (endpoint_url, 's3://bucket')."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50]
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return s3_server, f"s3://{name}"


TINY_WORLD = {"seed": 1, "start": "2026-01-01", "days": 45}    # 2026-01-01 .. 2026-02-14


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, worker_id) -> Path:
    """The tiny simulated platform (raw + truth + end-of-day states, so copies can be continued day
    by day), simulated once per test session and shared by the xdist workers (it is deterministic:
    the first worker to need it builds it under a file lock, the others wait and read it). Tests
    never write into it: they `copy_world`."""
    from filelock import FileLock

    from foundation.config import load_settings
    from foundation.lake import Lake
    from simulator.run import simulate

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root, done = shared / "tiny_world", shared / "tiny_world.done"
    with FileLock(str(shared / "tiny_world.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)          # a build killed half-way
            simulate(Lake.open(str(root)), load_settings("tiny", env={}).simulator, progress=False, **TINY_WORLD)
            done.touch()
    return root


@pytest.fixture(scope="session")
def copy_world(tiny_world):
    """`copy_world(dest)` -> dest: a private copy of the tiny world's lake."""
    def copy(dest) -> Path:
        shutil.copytree(tiny_world, dest)
        return Path(dest)
    return copy


@pytest.fixture(scope="module")
def redis_endpoint() -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (free port, no persistence); yields "127.0.0.1:PORT" and
    skips when the binary is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed (apt-get install -y redis-server)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
