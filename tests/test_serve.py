"""The retrieval service against a real uvicorn on 127.0.0.1 and a real redis-server: answers come from
the current release (valid pool SIDs only), malformed requests get 4xx (never 500), the cache hit rate
rises on repeated requests, and switching CURRENT under concurrent load loses no request. `/metrics` is
Prometheus text; `growthgr.serve.summary` reads the figures asserted on from one scrape."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import time

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_fixtures import UNKNOWN_USER, World, build_world, uvicorn_thread

from growthgr.serve import MemoryCache, summary
from growthgr.serve.app import NON_BLANK
from growthgr.serve.cache import ENTRY_OVERHEAD

pytest_plugins = ("serve_fixtures",)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    # A generous deadline, in-flight cap and cache timeout: the suite shares two cores with other test
    # workers, where loading release B while answering can take seconds and a Redis reply over 50 ms
    # (the default cache timeout) is a miss; each limit is tested with its own settings.
    return build_world(tmp_path_factory.mktemp("serve"),
                       serve={"request_timeout_ms": 60_000, "max_in_flight": 1000, "cache_timeout_ms": 5_000})


@pytest.fixture(scope="module")
def memory_server(world):
    with uvicorn_thread(world.settings) as url:
        yield url


@pytest.fixture(scope="module")
def redis_server(world, redis_url):
    settings = world.settings.model_copy(update={"serve": world.settings.serve.model_copy(
        update={"cache": "redis", "redis_url": redis_url})})
    with uvicorn_thread(settings) as url:
        yield url


@pytest.fixture(scope="module")
def pools(world) -> dict[str, dict[int, list[int]]]:
    """Per release: item id -> SID of its pool."""
    frames = {rid: pd.read_parquet(io.BytesIO(world.store.read(rid, "item_sids.parquet"))) for rid in ("A", "B")}
    return {rid: {int(r.item_id): [int(r.c1), int(r.c2), int(r.c3)] for r in f.itertuples()}
            for rid, f in frames.items()}


def assert_valid(pools: dict[str, dict[int, list[int]]], body: dict) -> None:
    """Every item of an answer is in the answering release's pool, with its SID there."""
    assert body["items"], body
    for item in body["items"]:
        assert pools[body["release_id"]].get(item["item_id"]) == item["sid"], (body["release_id"], item)


def scrape(url: str) -> dict:
    """`summary` of one `/metrics` scrape."""
    return summary(httpx.get(f"{url}/metrics").text)


def test_answers_come_from_the_current_release(world, pools, memory_server):
    health = httpx.get(f"{memory_server}/healthz").json()
    assert health["release_id"] == "A" and health["status"] == "ok"
    assert health["models"]["dense"] is None and health["reranker"].startswith("none: beam order")
    found = 0
    for i, user in enumerate(world.active_users[:12]):
        r = httpx.get(f"{memory_server}/retrieve", params={"user_id": int(user), "query": world.queries[i], "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["release_id"] == "A" and len(body["items"]) == 5
        assert_valid(pools, body)
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)
        found += int(world.pool_items[i]) in [item["item_id"] for item in body["items"]]
    assert found >= 10                       # the query names the item it buys: the model learnt it
    post = httpx.post(f"{memory_server}/retrieve", json={"user_id": int(world.active_users[0]),
                                                         "query": world.queries[0]}).json()
    assert len(post["items"]) == world.settings.serve.top_k_default
    cold = httpx.get(f"{memory_server}/retrieve", params={"user_id": world.cold_user, "query": "brand3 shoes"})
    assert cold.status_code == 200 and cold.json()["items"]      # registered, no history: cold start
    assert httpx.get(f"{memory_server}/openapi.json").json()["paths"].keys() >= {"/retrieve", "/healthz", "/readyz",
                                                                                "/metrics"}
    assert httpx.get(f"{memory_server}/readyz").json() == {"ready": True, "release_id": "A"}


def test_cli_retrieve_prints_the_same_answer(world, memory_server, monkeypatch):
    from typer.testing import CliRunner

    from growthgr.cli import app

    monkeypatch.setenv("GROWTHGR_LAKE_ROOT", world.settings.lake_root)
    monkeypatch.setenv("GROWTHGR_RELEASES_ROOT", world.settings.releases_root)
    user, query = int(world.active_users[1]), world.queries[1]
    out = CliRunner().invoke(app, ["--profile", "tiny", "retrieve", "--user", str(user), "--query", query, "--k", "4"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    served = httpx.get(f"{memory_server}/retrieve", params={"user_id": user, "query": query, "k": 4}).json()
    assert [i["item_id"] for i in printed["items"]] == [i["item_id"] for i in served["items"]]
    unknown = CliRunner().invoke(app, ["--profile", "tiny", "retrieve", "--user", str(UNKNOWN_USER), "--query", "x"])
    assert unknown.exit_code == 1 and "unknown user" in unknown.output


@pytest.mark.parametrize(("params", "status", "message"), [
    ({"user_id": UNKNOWN_USER, "query": "brand1 shoes"}, 404, "unknown user"),
    ({"user_id": 0, "query": ""}, 422, "at least 1 character"),
    ({"user_id": 0, "query": "   "}, 422, "should match pattern"),
    ({"user_id": 0}, 422, "Field required"),
    ({"user_id": 0, "query": "x" * 1000}, 422, "at most 256 characters"),
    ({"user_id": 0, "query": "shoes", "k": 0}, 422, "greater than or equal to 1"),
    ({"user_id": 0, "query": "shoes", "k": 10_000}, 422, "less than or equal to"),
    ({"user_id": 0, "query": "shoes", "k": "many"}, 422, "k"),
    ({"user_id": "abc", "query": "shoes"}, 422, "user_id"),
    ({"query": "shoes"}, 422, "user_id"),
    ({"user_id": 10**30, "query": "shoes"}, 404, "unknown user"),
])
def test_malformed_requests_get_4xx_with_a_message(world, memory_server, params, status, message):
    r = httpx.get(f"{memory_server}/retrieve", params=params)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_malformed_json_bodies_get_4xx_and_no_request_got_a_500(memory_server):
    for content in (b"{not json", b"[]", b'{"user_id": 0}', b'{"user_id": 0, "query": "", "k": 3}',
                    b'{"user_id": true, "query": "shoes"}', b'{"user_id": "1", "query": "shoes"}',
                    b'{"user_id": 0, "query": "shoes", "k": 2.5}', b'{"user_id": 0, "query": "shoes", "x": 1}'):
        r = httpx.post(f"{memory_server}/retrieve", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content, r.text)
    assert scrape(memory_server)["errors_5xx"] == 0


def test_metrics_are_prometheus_text(world, memory_server):
    """The instrumentator counts `/retrieve` by status class and times it (not `/metrics` itself); the
    service's own counters and the serving release are on the same registry."""
    before = scrape(memory_server)
    ok = httpx.get(f"{memory_server}/retrieve", params={"user_id": int(world.active_users[2]),
                                                        "query": world.queries[2], "k": 2})
    unknown = httpx.get(f"{memory_server}/retrieve", params={"user_id": UNKNOWN_USER, "query": "x"})
    assert (ok.status_code, unknown.status_code) == (200, 404)
    r = httpx.get(f"{memory_server}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = [s for f in text_string_to_metric_families(r.text) for s in f.samples]
    names = {s.name for s in samples}
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "growthgr_serve_cache_hits_total",
            "growthgr_serve_cache_misses_total", "growthgr_serve_cache_errors_total", "growthgr_serve_batch_size_count",
            "growthgr_serve_reloads_total", "growthgr_serve_reload_failures_total",
            "growthgr_serve_release_info", "process_start_time_seconds"} <= names
    assert not any(s.labels.get("handler") == "/metrics" for s in samples)
    after = summary(r.text)
    assert after["release_id"] == "A" and after["errors_5xx"] == 0
    assert (after["requests"] - before["requests"], after["errors_4xx"] - before["errors_4xx"]) == (2, 1)
    timed = sum(s.value for s in samples
                if s.name == "http_request_duration_seconds_count" and s.labels["handler"] == "/retrieve")
    assert timed == after["requests"] and after["batches"] >= 1 and after["batched_requests"] >= after["batches"]


def test_memory_cache_is_an_lru_with_a_ttl_bounded_in_bytes():
    """`serve.cache = "memory"`: at most `cache_max_mb` of entries, the least recently used evicted
    first, an entry gone once its TTL passed, an answer larger than the whole cache never kept."""
    async def run() -> tuple[list, list]:
        cache = MemoryCache(max_bytes=2 * (1 + ENTRY_OVERHEAD), ttl_s=0.3)     # two one-byte answers
        await cache.set("big", "x" * 1000)
        assert await cache.get("big") is None and cache.entries.currsize == 0
        await cache.set("a", "1")
        await cache.set("b", "2")
        assert await cache.get("a") == "1"              # "b" is now the least recently used
        await cache.set("c", "3")
        kept = [await cache.get(k) for k in "abc"]
        await asyncio.sleep(0.4)
        return kept, [await cache.get(k) for k in "ac"]

    kept, expired = asyncio.run(run())
    assert kept == ["1", None, "3"] and expired == [None, None]


@pytest.mark.parametrize("server", ["memory_server", "redis_server"])
def test_cache_hit_rate_rises_on_repeated_requests(world, server, request):
    """Distinct requests miss, the same requests again all hit (same items), and the hit rate rises."""
    url = request.getfixturevalue(server)
    params = [{"user_id": int(u), "query": world.queries[(i + 20) % len(world.queries)], "k": 3}
              for i, u in enumerate(world.active_users[:10])]
    before = scrape(url)
    first = [httpx.get(f"{url}/retrieve", params=p).json() for p in params]
    middle = scrape(url)
    again = [httpx.get(f"{url}/retrieve", params=p).json() for p in params]
    after = scrape(url)
    assert not any(b["cached"] for b in first) and all(b["cached"] for b in again)
    assert [b["items"] for b in again] == [b["items"] for b in first]
    assert (middle["cache_misses"] - before["cache_misses"], middle["cache_hits"] - before["cache_hits"]) == (10, 0)
    assert (after["cache_misses"] - middle["cache_misses"], after["cache_hits"] - middle["cache_hits"]) == (0, 10)
    assert after["cache_hit_rate"] > middle["cache_hit_rate"] and after["cache_errors"] == 0
    assert httpx.get(f"{url}/healthz").json()["cache"] == server.removesuffix("_server")


@contextlib.contextmanager
def hung_redis():
    """A TCP server on loopback that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"


def test_a_hung_redis_costs_each_request_its_cache_timeout_only(world, pools):
    with hung_redis() as url:
        settings = world.settings.model_copy(update={"serve": world.settings.serve.model_copy(
            update={"cache": "redis", "redis_url": url, "cache_timeout_ms": 100.0})})
        with uvicorn_thread(settings) as server:
            for i in range(5):
                started = time.monotonic()
                r = httpx.get(f"{server}/retrieve", params=params(world, i), timeout=10)
                assert r.status_code == 200 and time.monotonic() - started < 2.0, (r.status_code, r.text)
                assert_valid(pools, r.json())
                assert not r.json()["cached"]
            assert scrape(server)["cache_errors"] >= 10          # every get and set timed out: a miss


def params(world: World, i: int) -> dict:
    return {"user_id": int(world.active_users[i % len(world.active_users)]),
            "query": world.queries[i % len(world.queries)], "k": 5}


async def load(url: str, world: World, n: int, concurrency: int) -> list[httpx.Response]:
    """`n` requests, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def one(i: int) -> httpx.Response:
            async with sem:
                return await client.get("/retrieve", params=params(world, i))
        return await asyncio.gather(*(one(i) for i in range(n)))


async def switch_under_load(url: str, world: World, workers: int = 16, after_switch: int = 100,
                            timeout_s: float = 40) -> list[httpx.Response]:
    """Closed-loop load from `workers` clients; CURRENT moves to B after the first 100 answers; the load
    stops once `after_switch` answers named B (or after `timeout_s`)."""
    responses: list[httpx.Response] = []
    deadline = time.monotonic() + timeout_s

    def named_b() -> int:
        return sum(r.status_code == 200 and r.json()["release_id"] == "B" for r in responses)

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def worker(w: int) -> None:
            i = w
            while named_b() < after_switch and time.monotonic() < deadline:
                responses.append(await client.get("/retrieve", params=params(world, i)))
                i += workers

        async def promote() -> None:
            while len(responses) < 100:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(world.store.set_current, "B")

        await asyncio.gather(promote(), *(worker(w) for w in range(workers)))
    return responses


def test_release_switch_under_load_loses_no_request(world, pools, redis_server):
    """Last in the module: it moves CURRENT to release B (MultiGR + DR, another pool) while 16 clients
    keep requesting; every request is answered (200, valid SIDs of the release that answered)."""
    assert httpx.get(f"{redis_server}/healthz").json()["release_id"] == "A"
    responses = asyncio.run(switch_under_load(redis_server, world))
    assert [r.status_code for r in responses] == [200] * len(responses)
    releases = [r.json()["release_id"] for r in responses]
    assert releases.count("A") >= 100 and releases.count("B") >= 100, (len(releases), releases.count("B"))
    for r in responses:
        assert_valid(pools, r.json())
    health = httpx.get(f"{redis_server}/healthz").json()
    assert health["release_id"] == "B" and health["reranker"] == "dense retriever (two-stage)"
    assert health["models"]["dense"]["items_with_vectors"] == 200
    later = asyncio.run(load(redis_server, world, 50, 8))
    assert {r.json()["release_id"] for r in later} == {"B"}
    metrics = scrape(redis_server)
    assert metrics["reloads"] == 1 and metrics["reload_failures"] == 0 and metrics["errors_5xx"] == 0
    assert metrics["requests"] >= len(responses) + 50 and metrics["release_id"] == "B"


def test_a_release_that_cannot_be_served_is_skipped(world, redis_server):
    """CURRENT moved to a release without MultiGR: counted as a failed reload, B keeps serving."""
    files = {name: world.store.read("B", name) for name in ("sid_trie.npz", "item_sids.parquet")}
    world.store.publish("C", files, {"ds": "2026-01-10"})
    deadline = time.monotonic() + 30
    while (metrics := scrape(redis_server))["reload_failures"] == 0:
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    assert metrics["release_id"] == "B" and metrics["reload_failures"] == 1
    r = httpx.get(f"{redis_server}/retrieve", params=params(world, 3))
    assert r.status_code == 200 and r.json()["release_id"] == "B"


def test_metrics_ignore_an_inherited_multiprocess_dir(tmp_path, monkeypatch):
    """Importing Feast sets PROMETHEUS_MULTIPROC_DIR in the process (`feast.metrics`); the service's
    `/metrics` still reports its own registry (the instrumentator's endpoint would scrape that dir)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from growthgr.serve.metrics import instrument

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = FastAPI()
    service = instrument(app)

    @app.get("/retrieve")
    def retrieve() -> dict:
        service.cache_hits.inc()
        return {}

    client = TestClient(app)
    assert all(client.get("/retrieve").status_code == 200 for _ in range(3))
    got = summary(client.get("/metrics").text)
    assert got["requests"] == 3 and got["cache_hits"] == 3 and got["errors_4xx"] == 0


# -- the API's contract: its OpenAPI schema states what it enforces (fuzzed: test_serve_schemathesis.py) --
def test_the_openapi_schema_states_every_constraint_and_405_names_every_method(world, memory_server):
    spec = httpx.get(f"{memory_server}/openapi.json").json()
    cfg = world.settings.serve
    get = {p["name"]: p for p in spec["paths"]["/retrieve"]["get"]["parameters"]}
    assert get["query"]["required"] and get["query"]["schema"]["minLength"] == 1
    assert get["query"]["schema"]["maxLength"] == cfg.max_query_chars and get["query"]["schema"]["pattern"] == NON_BLANK
    k = next(s for s in get["k"]["schema"]["anyOf"] if s.get("type") == "integer")
    assert (k["minimum"], k["maximum"]) == (1, cfg.top_k_max)
    body = spec["components"]["schemas"]["RetrieveBody"]
    assert body["properties"]["user_id"]["type"] == "integer" and body["additionalProperties"] is False
    assert "404" in spec["paths"]["/retrieve"]["post"]["responses"]
    r = httpx.put(f"{memory_server}/retrieve")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers


def _serving(world: World, **serve):
    return uvicorn_thread(world.settings.model_copy(update={"serve": world.settings.serve.model_copy(update=serve)}))


def test_overload_is_shed_with_503_and_retry_after_not_queued(world, pools):
    """A full queue sheds requests at once (503 + Retry-After); the others are answered."""
    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.get(f"{url}/retrieve", params=params(world, i)) for i in range(60)))

    with _serving(world, max_queue=1, max_batch=1, batch_wait_ms=0.0) as url:
        responses = asyncio.run(burst(url))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
        shed = [r for r in responses if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "serve.max_queue" in r.json()["detail"] for r in shed)
        for r in responses:
            if r.status_code == 200:
                assert_valid(pools, r.json())
        assert scrape(url)["shed"] == codes.count(503)


def test_requests_over_the_in_flight_cap_are_shed_at_once_and_health_still_answers(world, pools):
    async def burst(url: str) -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.get(f"{url}/retrieve", params=params(world, i)) for i in range(40)]
            *answers, health = await asyncio.gather(*calls, client.get(f"{url}/healthz"))
            return answers, health

    with _serving(world, max_in_flight=2) as url:
        responses, health = asyncio.run(burst(url))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2, codes
        shed = [r for r in responses if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "serve.max_in_flight" in r.json()["detail"] for r in shed)
        assert all(assert_valid(pools, r.json()) is None for r in responses if r.status_code == 200)
        assert health.status_code == 200                     # not counted, never shed
        assert scrape(url)["shed"] == codes.count(503)


def test_an_answer_past_its_deadline_is_a_503_not_a_wait(world):
    with _serving(world, request_timeout_ms=0.5) as url:
        started = time.monotonic()
        r = httpx.get(f"{url}/retrieve", params=params(world, 7), timeout=30)
        assert r.status_code == 503 and "serve.request_timeout_ms" in r.json()["detail"], r.text
        assert r.headers["retry-after"] == "1" and time.monotonic() - started < 5


def test_a_body_over_the_cap_is_refused_before_it_is_parsed(world, memory_server):
    cap = world.settings.serve.max_body_bytes
    big = json.dumps({"user_id": 0, "query": "shoes", "pad": "x" * (cap + 10)}).encode()
    r = httpx.post(f"{memory_server}/retrieve", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "serve.max_body_bytes" in r.json()["detail"]

    def chunks():                     # no Content-Length: the cap holds while the body streams in
        for _ in range(cap // 1000 + 2):
            yield b" " * 1000

    r = httpx.post(f"{memory_server}/retrieve", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    ok = httpx.post(f"{memory_server}/retrieve", json={"user_id": int(world.active_users[0]), "query": "brand1 shoes"})
    assert ok.status_code == 200


def test_the_service_starts_on_the_last_good_release_when_current_cannot_be_served(world, pools):
    """CURRENT names C (no MultiGR, published by the test above, or here): a new service starts on
    the release served before it, says it is stale in /healthz, and answers from it."""
    if world.store.current_id() != "C":
        files = {name: world.store.read("B", name) for name in ("sid_trie.npz", "item_sids.parquet")}
        world.store.publish("C", files, {"ds": "2026-01-10"})
    with _serving(world) as url:
        health = httpx.get(f"{url}/healthz").json()
        assert (health["release_id"], health["current_release"], health["stale"]) == ("B", "C", True)
        assert httpx.get(f"{url}/readyz").status_code == 200           # stale, and still answering
        r = httpx.get(f"{url}/retrieve", params=params(world, 5))
        assert r.status_code == 200 and r.json()["release_id"] == "B"
        assert_valid(pools, r.json())
        assert scrape(url)["reload_failures"] >= 1              # and again after each backoff


def test_readiness_fails_while_liveness_holds_when_the_batcher_stops(world):
    """`/readyz` is 503 with the reason once the batcher is gone (no request could be answered);
    `/healthz` (liveness: the process answers) stays 200."""
    from fastapi.testclient import TestClient

    from growthgr.serve import create_app

    with TestClient(create_app(world.settings)) as client:
        assert client.get("/readyz").status_code == 200
        service = client.app.state.service
        client.portal.call(service.tasks[0].cancel)
        deadline = time.monotonic() + 10
        while not service.tasks[0].done():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"detail": "not ready: the batcher stopped"}
        assert client.get("/healthz").status_code == 200


def test_a_redis_that_is_down_is_a_miss_not_an_error(world, pools):
    from serve_fixtures import free_port

    settings = world.settings.model_copy(update={"serve": world.settings.serve.model_copy(
        update={"cache": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})})   # nothing listens
    with uvicorn_thread(settings) as server:
        for i in range(3):
            r = httpx.get(f"{server}/retrieve", params=params(world, i), timeout=10)
            assert r.status_code == 200 and not r.json()["cached"], r.text
            assert_valid(pools, r.json())
        assert scrape(server)["cache_errors"] >= 6 and scrape(server)["errors_5xx"] == 0


def _own_releases(world: World, tmp_path) -> tuple:
    """A copy of the world's release store, with CURRENT on B: (settings serving it, the store)."""
    import shutil

    from foundation.releases import ReleaseStore

    root = tmp_path / "releases"
    shutil.copytree(world.settings.releases_root, root)
    settings = world.settings.model_copy(update={"releases_root": str(root)})
    store = ReleaseStore.from_settings(settings)
    store.set_current("B")
    return settings, store


def _wait_metrics(url: str, done, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while not done(metrics := scrape(url)):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.05)
    return metrics


def test_a_truncated_release_is_never_served_and_is_retried_with_backoff_until_whole(world, pools, tmp_path):
    """CURRENT moves to D, whose MultiGR file is truncated: every load fails its manifest check, the
    service keeps answering from B and says it is stale; once the file is whole again a retry serves D."""
    from pathlib import Path

    settings, store = _own_releases(world, tmp_path)
    files = {name: store.read("B", name) for name in store.get("B").manifest["files"]}
    store.publish("D", files, {"ds": "2026-01-11"}, make_current=False)
    weights = Path(settings.releases_root) / "D" / "multigr.safetensors"
    weights.write_bytes(files["multigr.safetensors"][:1000])
    with uvicorn_thread(settings) as url:
        store.set_current("D")
        _wait_metrics(url, lambda m: m["reload_failures"] >= 2)          # tried again after its backoff
        health = httpx.get(f"{url}/healthz").json()
        assert (health["release_id"], health["current_release"], health["stale"]) == ("B", "D", True)
        r = httpx.get(f"{url}/retrieve", params=params(world, 2))
        assert r.status_code == 200 and r.json()["release_id"] == "B"
        weights.write_bytes(files["multigr.safetensors"])                  # repaired
        _wait_metrics(url, lambda m: m["release_id"] == "D")
        assert httpx.get(f"{url}/healthz").json()["stale"] is False
        r = httpx.get(f"{url}/retrieve", params=params(world, 3))
        assert r.status_code == 200 and r.json()["release_id"] == "D" and r.json()["items"]


def test_a_corrupt_current_keeps_the_service_answering_and_a_missing_one_stops_its_start(world, pools, tmp_path):
    from fastapi.testclient import TestClient

    from foundation.releases import POINTER, ReleaseError
    from growthgr.serve import create_app

    settings, store = _own_releases(world, tmp_path)
    with uvicorn_thread(settings) as url:
        store.store.put_bytes(POINTER, b"{not json")
        time.sleep(3 * settings.serve.reload_poll_s)                        # polled: an error, logged
        r = httpx.get(f"{url}/retrieve", params=params(world, 4))
        assert r.status_code == 200 and r.json()["release_id"] == "B"
        assert httpx.get(f"{url}/readyz").status_code == 200
    empty = settings.model_copy(update={"releases_root": str(tmp_path / "none")})
    with pytest.raises(ReleaseError, match="no CURRENT release"):
        with TestClient(create_app(empty)):
            pass
