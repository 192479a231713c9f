"""The FastAPI service: batching, hot reload, cache and metrics around the serving `Retriever`."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name
# objects built per app (the body model, the query parameters) that a string could not resolve

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Query as QueryParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from foundation.config import Settings
from foundation.releases import ReleaseStore
from foundation.sections.serve import ServeConfig
from growthgr.serve.cache import cache_key, open_cache
from growthgr.serve.context import Query, RequestError, check_request
from growthgr.serve.metrics import ServiceMetrics, instrument
from growthgr.serve.retriever import Retriever, load_last_good, load_warm, set_threads

log = logging.getLogger(__name__)


class Overloaded(RequestError):
    """The service sheds this request (queue full, or its deadline passed): 503 with Retry-After."""

    def __init__(self, message: str):
        super().__init__(503, message)


# -- batching and hot reload -----------------------------------------------------------------------
class Batcher:
    """Runs queued queries in batches on one worker thread, each batch on the retriever serving then."""

    def __init__(self, current: Callable[[], Retriever], cfg: ServeConfig, metrics: ServiceMetrics):
        self.current, self.cfg, self.metrics = current, cfg, metrics
        self.queue: asyncio.Queue[tuple[Query, asyncio.Future]] = asyncio.Queue(maxsize=cfg.max_queue)

    async def submit(self, q: Query) -> tuple[str, list[dict[str, Any]]]:
        """(release id that answered, items); a full queue (`serve.max_queue` waiting queries) sheds
        the query at once with a 503 `Overloaded` instead of letting every answer wait longer."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((q, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.cfg.max_queue} queries already wait (serve.max_queue): retry shortly") from None
        return await future

    async def _collect(self) -> list[tuple[Query, asyncio.Future]]:
        """The next batch: the first queued query, then whatever else is queued or arrives within
        `batch_wait_ms`, up to `max_batch`."""
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.cfg.batch_wait_ms / 1000
        while len(batch) < self.cfg.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return [(q, f) for q, f in batch if not f.done()]      # a cancelled request needs no answer

    async def run(self) -> None:
        while True:
            batch, retriever = await self._collect(), self.current()
            ok = []
            for q, future in batch:
                try:
                    retriever.context.row(q)
                    ok.append((q, future))
                except RequestError as err:
                    future.set_exception(err)
            if ok:
                await self._run_batch(retriever, ok)

    async def _run_batch(self, retriever: Retriever, batch: list[tuple[Query, asyncio.Future]]) -> None:
        self.metrics.batch_size.observe(len(batch))
        try:
            answers = await asyncio.to_thread(retriever.retrieve, [q for q, _ in batch])
        except Exception as err:  # noqa: BLE001 -- each waiting request gets the error (a 500)
            answers = [err] * len(batch)
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result((retriever.release_id, answer))


class ServiceState:
    """The serving retriever (swapped by the reload task), cache, metrics and batcher of one app."""

    def __init__(self, settings: Settings, retriever: Retriever, metrics: ServiceMetrics):
        self.settings, self.retriever, self.metrics = settings, retriever, metrics
        self.cache = open_cache(settings.serve)
        self.cache_timeout_s = settings.serve.cache_timeout_ms / 1000
        self.request_timeout_s = settings.serve.request_timeout_ms / 1000
        self.batcher = Batcher(lambda: self.retriever, settings.serve, metrics)
        self.failed_release: str | None = None    # CURRENT names it, it could not be loaded
        self.failures, self.retry_at = 0, 0.0     # consecutive failed loads of it; when to try again
        self.current_release = retriever.release_id
        self.tasks: list[asyncio.Task] = []       # the batcher and the reload watcher, once started
        metrics.serving(retriever.release_id)

    def not_ready(self) -> str | None:
        """Why this instance should get no new traffic now (None: ready): its batcher or reload
        watcher stopped, or its queue is full. A stale release is still ready (it answers)."""
        for task, name in zip(self.tasks, ("batcher", "reload watcher"), strict=False):
            if task.done():
                return f"the {name} stopped"
        if self.batcher.queue.full():
            return f"{self.settings.serve.max_queue} queries wait (serve.max_queue)"
        return None

    def load_failed(self, release_id: str) -> None:
        """A failed load of `release_id`: tried again after a backoff that doubles (poll interval x
        2^failures, at most `RELOAD_BACKOFF_MAX_S`), as a store or lake hiccup may have caused it."""
        self.failures = self.failures + 1 if release_id == self.failed_release else 1
        self.failed_release = self.current_release = release_id
        delay = min(self.settings.serve.reload_poll_s * 2 ** self.failures, RELOAD_BACKOFF_MAX_S)
        self.retry_at = time.monotonic() + delay
        self.metrics.reload_failures.inc()

    async def reload_once(self, store: ReleaseStore) -> bool:
        """Swap to the release `CURRENT` names when it moved (built fully first); whether it swapped.
        A release that failed to load is tried again after its backoff."""
        current = await asyncio.to_thread(store.current_id)
        if current is None or current == self.retriever.release_id:
            self.current_release = current or self.current_release
            self.failed_release = None if current == self.retriever.release_id else self.failed_release
            return False
        if current == self.failed_release and time.monotonic() < self.retry_at:
            return False
        try:
            new = await asyncio.to_thread(load_warm, self.settings, current)
        except Exception:  # noqa: BLE001 -- a release that cannot be served must not stop the service
            log.exception("release %s could not be loaded; still serving %s", current, self.retriever.release_id)
            self.load_failed(current)
            return False
        self.retriever, self.failed_release, self.failures, self.current_release = new, None, 0, current
        self.metrics.reloads.inc()
        self.metrics.serving(new.release_id)
        log.info("now serving release %s", new.release_id)
        return True

    async def watch(self) -> None:
        store = ReleaseStore.from_settings(self.settings)
        while True:
            await asyncio.sleep(self.settings.serve.reload_poll_s)
            try:
                await self.reload_once(store)
            except Exception:  # noqa: BLE001 -- e.g. the store unreachable for a moment: poll again
                log.exception("polling CURRENT failed")

    async def answer(self, q: Query) -> dict[str, Any]:
        """The answer of one checked query: from the cache when there, else from a batch."""
        release_id = self.retriever.release_id
        key = cache_key(release_id, q)
        cached = await self._cache_get(key)
        if cached is not None:
            return {**json.loads(cached), "cached": True}
        try:
            release_id, items = await asyncio.wait_for(self.batcher.submit(q), self.request_timeout_s)
        except TimeoutError:
            raise Overloaded(f"no answer within serve.request_timeout_ms={self.request_timeout_s * 1000:g}") from None
        body = {"release_id": release_id, "user_id": q.user_id, "query": q.query, "k": q.k, "items": items}
        await self._cache_set(cache_key(release_id, q), json.dumps(body))
        return {**body, "cached": False}

    async def _cache_get(self, key: str) -> str | None:
        try:
            value = await asyncio.wait_for(self.cache.get(key), self.cache_timeout_s)
        except Exception:  # noqa: BLE001 -- the cache is an optimisation: a failure or a timeout is a miss
            log.warning("cache get failed", exc_info=True)
            self.metrics.cache_errors.inc()
            value = None
        (self.metrics.cache_misses if value is None else self.metrics.cache_hits).inc()
        return value

    async def _cache_set(self, key: str, value: str) -> None:
        try:
            await asyncio.wait_for(self.cache.set(key, value), self.cache_timeout_s)
        except Exception:  # noqa: BLE001
            log.warning("cache set failed", exc_info=True)
            self.metrics.cache_errors.inc()


# -- the FastAPI application -----------------------------------------------------------------------
# A query holds at least one character that `str.strip()` keeps (JSON Schema `pattern`: a search).
# Spelled as a class of exactly those whitespace characters, so JavaScript (JSON Schema), Rust
# (pydantic) and Python regexes agree (`\S` differs among them on U+001C-U+001F, U+0085, U+FEFF).
NON_BLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _json_integer(value):
    """JSON Schema's `integer` is any number with no fractional part: 3.0 is the integer 3."""
    return int(value) if type(value) is float and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_json_integer)]


class ErrorBody(BaseModel):
    """The body of a refusal that is not a validation error (404: unknown user)."""

    detail: str


def retrieve_body(cfg: ServeConfig) -> type[BaseModel]:
    """The JSON body of `POST /retrieve` with the service's limits in its schema: `user_id` a JSON
    integer (not a boolean or string), `query` 1..`max_query_chars` characters with a non-space one,
    `k` in 1..`top_k_max` (default `serve.top_k_default`)."""
    return create_model(
        "RetrieveBody", __config__=ConfigDict(extra="forbid"),
        user_id=(JsonInt, ...),
        query=(Annotated[str, StringConstraints(min_length=1, max_length=cfg.max_query_chars, pattern=NON_BLANK)], ...),
        k=(Annotated[StrictInt, Field(ge=1, le=cfg.top_k_max), BeforeValidator(_json_integer)] | None, None))


RETRY_AFTER_S = 1
RELOAD_BACKOFF_MAX_S = 300.0


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before it is parsed: by its
    Content-Length, or, for a body that streams in without one, after reading at most `max_bytes` + 1
    of it (a body within the cap is then passed on as read)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    async def _refuse(self, send) -> None:
        await _refuse(send, 413, f"request body over {self.max_bytes} bytes (serve.max_body_bytes)")


class InFlightLimit:
    """ASGI middleware: at most `limit` `/retrieve` requests in the app at once; one more is answered
    503 + Retry-After at once, before routing or parsing (`on_shed` counts it). The batcher's queue
    bounds only the queries waiting for a batch; this bounds everything a request waits for inside the
    process (the event loop, parsing, the cache, the batch), so under overload the answered requests
    keep their latency and the rest are shed. Other paths (health, readiness, metrics) always pass."""

    def __init__(self, app, limit: int, on_shed: Callable[[], None]):
        self.app, self.limit, self.on_shed, self.in_flight = app, limit, on_shed, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/retrieve"):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            self.on_shed()
            return await _refuse(send, 503, f"{self.limit} requests in flight (serve.max_in_flight): retry shortly",
                                 [(b"retry-after", str(RETRY_AFTER_S).encode())])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _refuse(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer a raw ASGI request with `{"detail": ...}` (the documented `ErrorBody`)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then=None):
    """An ASGI `receive` that gives `messages` first, then defers to `then` (e.g. a disconnect)."""
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()
    return receive


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `app` serves at `path` (Starlette's 405 names the first route's only)."""
    methods = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app: `GET|POST /retrieve`, `/healthz` (liveness: answers while the process runs),
    `/readyz` (readiness: 503 while the instance should get no traffic), `/metrics` (Prometheus),
    OpenAPI docs at `/docs`."""
    cfg = settings.serve

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        set_threads(cfg)
        retriever, failed = await asyncio.to_thread(load_last_good, settings)
        state = ServiceState(settings, retriever, metrics)
        if failed:       # CURRENT names a release that cannot be served: counted, retried after a backoff
            state.load_failed(failed[0])
            metrics.reload_failures.inc(len(failed) - 1)     # older ones tried on the way back
        app.state.service = state
        state.tasks = [asyncio.create_task(state.batcher.run()), asyncio.create_task(state.watch())]
        try:
            yield
        finally:
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await state.cache.close()

    app = FastAPI(title="GrowthGR retrieval", lifespan=lifespan,
                  description="New items for a user and query from the current GrowthGR release.")
    metrics = instrument(app)                  # GET /metrics: Prometheus text
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(InFlightLimit, limit=cfg.max_in_flight, on_shed=metrics.shed.inc)   # outermost: first

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        if err.status == 422:     # the documented validation-error body (`HTTPValidationError`)
            return JSONResponse({"detail": [{"loc": ["query"], "msg": str(err), "type": "value_error"}]}, 422)
        if isinstance(err, Overloaded):
            request.app.state.service.metrics.shed.inc()
            return JSONResponse({"detail": str(err)}, 503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{**e, "input": e["input"].decode("utf-8", "replace")} if isinstance(e.get("input"), bytes) else e
                  for e in err.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=headers)

    body_model = retrieve_body(cfg)
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "Request body is not UTF-8 text"},
        404: {"model": ErrorBody, "description": "Unknown user"},
        413: {"model": ErrorBody, "description": "Request body over serve.max_body_bytes"},
        503: {"model": ErrorBody, "description": "Overloaded (too many requests in flight, queue full or deadline "
                                                 "passed): retry after Retry-After s"}}
    query_param = QueryParam(min_length=1, max_length=cfg.max_query_chars, pattern=NON_BLANK,
                        description="The search query (a non-space character, at most serve.max_query_chars).")
    k_param = QueryParam(ge=1, le=cfg.top_k_max, description="Items to return (default serve.top_k_default).")

    @app.get("/retrieve", summary="Top-k new items for a user and a query", responses=refusals)
    async def retrieve_get(request: Request, user_id: int, query: Annotated[str, query_param],
                           k: Annotated[int | None, k_param] = None) -> dict:
        return await request.app.state.service.answer(check_request(cfg, user_id, query, k))

    @app.post("/retrieve", summary="Top-k new items for a user and a query (JSON body)", responses=refusals)
    async def retrieve_post(request: Request, body: body_model) -> dict:  # type: ignore[valid-type]
        return await request.app.state.service.answer(check_request(cfg, body.user_id, body.query, body.k))

    @app.get("/readyz", summary="Readiness: 200 while this instance takes traffic, else 503 with the reason",
             responses={503: {"model": ErrorBody, "description": "Not ready: batcher stopped or queue full"}})
    async def readyz(request: Request) -> dict:
        state = request.app.state.service
        reason = state.not_ready()
        if reason is not None:
            raise StarletteHTTPException(503, f"not ready: {reason}")
        return {"ready": True, "release_id": state.retriever.release_id}

    @app.get("/healthz", summary="Liveness: the serving release, the CURRENT one, staleness and the models loaded")
    async def healthz(request: Request) -> dict:
        state = request.app.state.service
        return {"status": "ok", **state.retriever.describe(), "current_release": state.current_release,
                "stale": state.failed_release is not None, "cache": cfg.cache,
                "threads": {"torch": cfg.torch_threads, "faiss": cfg.faiss_threads}}

    return app
