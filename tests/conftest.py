"""Fixtures shared by every test: telemetry off, a real S3 API server on loopback, and the one
simulated tiny world (seed 1) that every Spark / MultiGR / DAG test starts from."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foundation.logs import disable_telemetry

disable_telemetry()
# Fake credentials for the S3 API server, set before any JVM starts: Spark executors (Python
# workers of a session started by any earlier test) read an s3:// lake with the environment's.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)

# The longest modules first (measured module times). `make test` runs `pytest -n 4 --dist loadfile
# --no-loadscope-reorder`: xdist hands each worker one module in this order, then a second one in
# the same order (the 5th module queues behind the 1st on its worker, and so on: short ones here),
# then the next free worker takes the next module. (xdist's default reorder, most tests first,
# would start the one-test scheduler module last.)
LONGEST_FIRST = ("test_dag_daily.py", "test_dag_scheduler.py", "test_demo.py", "test_dag_s3.py",
                 "test_foundation_config.py", "test_models_smoke.py", "test_foundation_cli.py", "test_checkpoint.py",
                 "test_spark_cluster.py", "test_dag_definition.py", "test_release_crash.py", "test_spark_jobs.py",
                 "test_itemltv_pipeline.py", "test_spark_e2e.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))


class SerialWrites:
    """WSGI middleware: one mutating request (PUT, POST, DELETE) at a time. moto checks a
    conditional write's precondition (`If-None-Match: *`, `If-Match`) and then writes without a
    lock, so two concurrent conditional PUTs of one key can both succeed, which S3 never allows
    (a lock race test saw two holders). Reads stay concurrent."""

    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") not in ("PUT", "POST", "DELETE"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 API server (its WSGI app, as `moto.server.ThreadedMotoServer` serves it, with
    writes serialised: `SerialWrites`) bound to 127.0.0.1 on a free port; yields its endpoint URL."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, SerialWrites(DomainDispatcherApplication(create_backend_app)), threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto-s3")
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; yields (endpoint_url, 's3://bucket')."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50]
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return s3_server, f"s3://{name}"


TINY_WORLD = {"seed": 1, "start": "2026-01-01", "days": 45}    # 2026-01-01 .. 2026-02-14


def build_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`root/name`, built by `build(folder)` once per test session: the first caller (any xdist
    worker) builds it under a file lock, the others wait for it and reuse it. A failed build
    leaves nothing, so the next caller builds again. Callers never write into a product: they
    copy it first."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.touch()
    return folder


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """Where the products of `build_once` live: the session's temp root, which every xdist worker
    of the session shares (each worker's own base temp is a folder in it)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory) -> Path:
    """This worker's local Airflow home for in-process DAG runs (`airflow_local.prepare` migrates it
    once per process). Airflow binds a process to the metadata DB configured when it is first
    imported, so its environment is set here, before any test imports Airflow; tests that start
    services on a home of their own set that home's environment only for themselves."""
    from growthgr.airflow_local import airflow_env

    home = tmp_path_factory.getbasetemp() / "airflow"
    os.environ.update(airflow_env(home))
    return home


def scheduler_env(top: Path, sql_conn: str | None = None, **settings: str) -> dict[str, str]:
    """The environment of a test that starts a real Airflow on the home `top/airflow` (its task
    processes inherit it): tiny profile, lake and release store under `top`, Spark on loopback,
    plus `settings` (`GROWTHGR_...` names). `start_airflow` exports the home's variables too."""
    from growthgr.airflow_local import airflow_env

    return {"GROWTHGR_PROFILE": "tiny", "GROWTHGR_LAKE_ROOT": str(top / "lake"),
            "GROWTHGR_RELEASES_ROOT": str(top / "releases"), "GROWTHGR_SPARK__DRIVER_HOST": "127.0.0.1",
            "SPARK_LOCAL_IP": "127.0.0.1", **settings, **airflow_env(top / "airflow", sql_conn)}


@pytest.fixture(scope="session")
def tiny_world(shared_root) -> Path:
    """The tiny simulated platform, simulated once per test session for every worker (raw +
    truth + end-of-day states, so copies can be continued day by day). Tests never write into it:
    they `copy_world`."""
    from foundation.config import load_settings
    from foundation.lake import Lake
    from simulator.run import simulate

    return build_once(shared_root, "tiny_world", lambda root: simulate(
        Lake.open(str(root)), load_settings("tiny", env={}).simulator, progress=False, **TINY_WORLD))


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
