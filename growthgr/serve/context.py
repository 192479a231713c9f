"""Requests and the user context they are answered in (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from foundation.catalog import GR_SAMPLES, RAW
from foundation.lake import Lake
from foundation.samples import read_gr_samples
from foundation.sections.serve import ServeConfig

CONTEXT_COLUMNS = ["user_id", "ts", "query_text", "intent_category_id", "history_item_ids", "click_ids",
                   "purchase_ids"]


class RequestError(ValueError):
    """A request the service refuses: `status` is its HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Query(NamedTuple):
    user_id: int
    query: str
    k: int


def check_request(cfg: ServeConfig, user_id: int, query: str | None, k: int | None) -> Query:
    """The request as a `Query` (query stripped, k defaulted), or a 422 `RequestError` saying what is wrong."""
    text = (query or "").strip()
    if not text:
        raise RequestError(422, "query is empty: pass a non-empty `query`")
    if len(text) > cfg.max_query_chars:
        raise RequestError(422, f"query is {len(text)} characters long, at most {cfg.max_query_chars} are accepted")
    k = cfg.top_k_default if k is None else k
    if not 1 <= k <= cfg.top_k_max:
        raise RequestError(422, f"k must be between 1 and {cfg.top_k_max}, got {k}")
    return Query(int(user_id), text, int(k))


def normalise_query(text: str) -> str:
    return " ".join(str(text).lower().split())


class ContextRow(NamedTuple):
    """One request as the platform's prompt builders read it (`request_prompt`, DR's `query_vectors`)."""

    user_id: int
    query_text: str
    intent_category_id: int
    history_item_ids: list[int]


@dataclass(frozen=True)
class UserContext:
    """Registered users, their histories and the intent category of known query texts (package docstring)."""

    users: frozenset[int]
    histories: dict[int, list[int]]
    intents: dict[str, int]
    days: list[str]

    def row(self, q: Query) -> ContextRow:
        """The context of one request; 404 for an unregistered user."""
        if q.user_id not in self.users:
            raise RequestError(404, f"unknown user {q.user_id}: not a registered user of the platform "
                                    f"(raw/users up to {self.days[-1] if self.days else 'the release'})")
        intent = self.intents.get(normalise_query(q.query), -1)
        return ContextRow(q.user_id, q.query, intent, self.histories.get(q.user_id, []))


def latest_history(history: Sequence[int], clicks: Sequence[int], purchases: Sequence[int]) -> list[int]:
    """A request's history then its clicks and purchases: distinct items, most recent last."""
    seq = [int(x) for x in (*history, *clicks, *purchases)]
    return list(dict.fromkeys(reversed(seq)))[::-1]


def read_user_context(lake: Lake, ds: date, days: int) -> UserContext:
    """The user context as of `ds` (package docstring): `raw/users` up to ds, the newest `days`
    `samples/gr_samples` partitions up to ds, each user's latest request."""
    user_parts = lake.list_partitions(*RAW["users"], end=ds)
    users = frozenset(
        int(u) for d in user_parts for u in lake.read_partition(*RAW["users"], d, ["user_id"]).column(0).to_pylist()
    )
    sample_days = lake.list_partitions(*GR_SAMPLES, end=ds)[-days:]
    histories: dict[int, list[int]] = {}
    counts: dict[tuple[str, int], int] = {}
    for day in reversed(sample_days):
        frame = read_gr_samples(lake, [day], CONTEXT_COLUMNS)
        for (text, intent), n in frame.groupby([frame["query_text"].map(normalise_query),
                                                "intent_category_id"]).size().items():
            counts[(text, int(intent))] = counts.get((text, int(intent)), 0) + int(n)
        latest = frame.sort_values(["user_id", "ts"], kind="stable").drop_duplicates("user_id", keep="last")
        for r in latest[~latest["user_id"].isin(list(histories))].itertuples(index=False):
            histories[int(r.user_id)] = latest_history(r.history_item_ids, r.click_ids, r.purchase_ids)
    intents: dict[str, int] = {}
    for (text, intent), _ in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        intents.setdefault(text, intent)
    return UserContext(users, histories, intents, sample_days)
