"""S3 slow and failing, through a loopback proxy in front of moto's real S3 API server
(`fault_proxy.FaultProxy`): waits stay bounded, dropped requests are retried, a dead endpoint is a
clear error within the timeouts, and a publish that fails half-way publishes nothing."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import urlparse

import pandas as pd
import pytest
from fault_proxy import FaultProxy

from foundation import storage
from foundation.lake import Lake
from foundation.releases import ReleaseStore

DF = pd.DataFrame({"id": [1, 2, 3], "v": [0.1, 0.2, 0.3]})


@pytest.fixture
def proxy(s3_bucket, monkeypatch):
    """(proxy, bucket URI): S3 clients made from here on wait at most 1 s per try, 2 tries."""
    monkeypatch.setattr(storage, "S3_REQUEST_TIMEOUT_S", 1.0)
    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 2)
    endpoint, bucket = s3_bucket
    with FaultProxy(urlparse(endpoint).port) as p:
        yield p, bucket


def test_a_slow_s3_within_its_timeout_is_only_slow(proxy):
    p, bucket = proxy
    lake = Lake.open(f"{bucket}/lake", endpoint_url=p.url, grace=timedelta(0))
    p.delay_s = 0.3
    started = time.monotonic()
    lake.write_partition("raw", "t", "2026-01-01", DF)
    assert time.monotonic() - started >= 0.3 and p.requests >= 3       # lock, file, marker: each delayed
    assert lake.read_partition("raw", "t", "2026-01-01").num_rows == 3


def test_a_slow_s3_past_its_timeout_fails_within_the_bound_and_publishes_nothing(proxy, s3_bucket):
    p, bucket = proxy
    store = ReleaseStore.open(f"{bucket}/releases", endpoint_url=p.url)
    store.publish("ds=2026-01-01-a", {"pool.parquet": b"a"}, {"ds": "2026-01-01"})
    p.delay_s = 3.0                                              # 3 x the request timeout
    started = time.monotonic()
    with pytest.raises(Exception, match="(?i)timeout|timed out"):
        store.publish("ds=2026-01-02-b", {"pool.parquet": b"b"}, {"ds": "2026-01-02"})
    assert time.monotonic() - started < 15                       # 2 tries of 1 s, plus backoff
    direct = ReleaseStore.open(f"{bucket}/releases", endpoint_url=s3_bucket[0])
    assert direct.current_id() == "ds=2026-01-01-a"
    assert {r["release_id"]: r["complete"] for r in direct.list()}.get("ds=2026-01-02-b", False) is False


def test_dropped_requests_are_retried_and_a_dead_s3_is_a_clear_error(proxy, s3_bucket):
    p, bucket = proxy
    lake = Lake.open(f"{bucket}/lake", endpoint_url=p.url, grace=timedelta(0))
    p.fail_requests = 1                                          # one dropped request: retried, unseen
    lake.write_partition("raw", "t", "2026-01-01", DF)
    assert p.dropped == 1
    p.fail_requests = -1                                         # every request dropped from now on
    started = time.monotonic()
    with pytest.raises(Exception, match="(?i)connection|closed|aborted|reset"):
        lake.write_partition("raw", "t", "2026-01-01", DF.head(1))
    assert time.monotonic() - started < 15
    direct = Lake.open(f"{bucket}/lake", endpoint_url=s3_bucket[0])
    assert direct.read_partition("raw", "t", "2026-01-01").num_rows == 3     # the last commit stands
