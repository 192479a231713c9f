"""Crash injection: a publish process SIGKILLed before each of its object writes in turn.

The scenario publishes ds D, then backfills D-2, D-1 (through `publish_release`). For
every put N of the whole scenario, a forked child of the test process runs it and kills itself
(SIGKILL) right before put N (forked, not a fresh interpreter: no start-up and imports per kill).
After each kill: no incomplete release looks complete, CURRENT is readable and points at a
complete release and never at an older day than D, and the history parses. Then a clean re-run
finishes the scenario with CURRENT on D.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback

import numpy as np
import pandas as pd

DAYS = ["2026-03-10", "2026-03-08", "2026-03-09"]


def _store(root: str, endpoint: str | None):
    from foundation.releases import ReleaseStore

    return ReleaseStore.open(root, endpoint_url=endpoint or None)


def scenario(store) -> None:
    from safetensors.numpy import save

    from growthgr.publish import ReleaseInputs, publish_release

    for i, ds in enumerate(DAYS):
        ids = np.arange(10, 20, dtype=np.int64)
        pool = pd.DataFrame({"item_id": ids, "score": np.linspace(1, 0, 10) + i, "rank": np.arange(10)})
        emb = np.random.default_rng(i).normal(size=(10, 4)).astype("float32")
        inputs = ReleaseInputs(ds, pool, ids, emb, {"with_uplift": {"mse": 0.1}}, [f"raw/x/ds={ds}"], "v1",
                               files={"itemltv.safetensors": save({"w": np.full((2, 2), i, "float32")})})
        publish_release(store, inputs, {"raw": True}, "cfg", max_regression=0.0,
                        score=lambda blobs: {"scores": {name: {"mse": 0.1} for name in blobs}})


def count_puts(store, crash_at: int = 0) -> list[int]:
    """Wrap the store's `put_bytes` to count calls; SIGKILL this process before call `crash_at`."""
    calls, real = [0], store.store.put_bytes

    def put(key, data):
        calls[0] += 1
        if calls[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real(key, data)

    store.store.put_bytes = put
    return calls


def check_consistent(store) -> None:
    """Complete releases have all their files; CURRENT is on a complete release of D, logged."""
    from foundation.releases import release_ds

    for row in store.list():
        if row["complete"]:
            release = store.get(row["release_id"])
            for name, size in release.manifest["files"].items():
                assert len(store.read(row["release_id"], name)) == size, (row, name)
    current = store.current_id()
    if current is not None:
        assert release_ds(store.get(current)) == DAYS[0], current   # complete, and never demoted
        # the history knows the pointer (written before it), so rollback works from here
        assert store._served(store.history(), current)[-1:] == [current]


def _publish_until_killed(run_root: str, endpoint: str | None, crash_at: int, errors) -> None:
    """The forked child: publish the scenario into a fresh store, SIGKILLed before put `crash_at`.

    It builds its own boto3 clients after the fork (the release store writes through boto3), so it
    shares no connection with the parent. An error is sent back on `errors`.
    """
    try:
        store = _store(run_root, endpoint)
        count_puts(store, crash_at)
        scenario(store)
    except BaseException:
        errors.send(traceback.format_exc()[-2000:])   # small: fits the pipe, never blocks
        raise


def _run_killed(run_root: str, endpoint: str | None, crash_at: int) -> None:
    """Run `_publish_until_killed` in a forked child; assert it died by SIGKILL within 120 s."""
    fork = multiprocessing.get_context("fork")
    errors, child_errors = fork.Pipe(duplex=False)
    proc = fork.Process(target=_publish_until_killed, args=(run_root, endpoint, crash_at, child_errors))
    proc.start()
    child_errors.close()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise AssertionError(f"publish child for put {crash_at} still running after 120 s")
    try:
        error = errors.recv()                            # the child's traceback, if it failed
    except EOFError:                                     # none: the child died without sending
        error = ""
    errors.close()
    assert proc.exitcode == -signal.SIGKILL, (crash_at, proc.exitcode, error)


def _crash_and_recover(root: str, endpoint: str | None, tmp_path) -> None:
    total = count_puts(probe := _store(str(tmp_path / "probe"), None))
    scenario(probe)
    assert total[0] >= 15, total                         # every file, manifest, history and CURRENT write
    for n in range(1, total[0] + 1):
        run_root = f"{root}/n{n}"
        _run_killed(run_root, endpoint, n)
        store = _store(run_root, endpoint)
        check_consistent(store)
        scenario(store)                                   # the retry finishes the job
        check_consistent(store)
        rows = store.list()
        assert [r["complete"] for r in rows] == [True] * len(DAYS), rows
        assert store.current_id().startswith(f"ds={DAYS[0]}-")


def test_publish_killed_at_every_put_local(tmp_path):
    _crash_and_recover(str(tmp_path / "releases"), None, tmp_path)


def test_publish_killed_at_every_put_s3(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    _crash_and_recover(f"{bucket}/releases", endpoint, tmp_path)
