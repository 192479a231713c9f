"""Crash injection: a publish process SIGKILLed before each of its object writes in turn.

The scenario publishes ds D, then backfills D-2, D-1 (through `publish_release`). For
every put N of the whole scenario, a subprocess runs it and kills itself (SIGKILL) right before
put N. After each kill: no incomplete release looks complete, CURRENT is readable and points at
a complete release and never at an older day than D, and the history parses. Then a clean re-run
finishes the scenario with CURRENT on D. Run as a script: `python <this file> ROOT ENDPOINT N`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

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
        assert store._served(store._moves(), current)[-1:] == [current]


def _crash_and_recover(root: str, endpoint: str | None, tmp_path) -> None:
    total = count_puts(probe := _store(str(tmp_path / "probe"), None))
    scenario(probe)
    assert total[0] >= 15, total                         # every file, manifest, history and CURRENT write
    for n in range(1, total[0] + 1):
        run_root = f"{root}/n{n}"
        proc = subprocess.run([sys.executable, __file__, run_root, endpoint or "", str(n)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, (n, proc.stderr[-2000:])
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


if __name__ == "__main__":
    root, endpoint, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = _store(root, endpoint)
    count_puts(store, crash_at)
    scenario(store)
