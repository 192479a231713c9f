"""Secrets out of every output: passwords in URLs and connection strings, values of secret-named keys.

    redact(text)          the text with `scheme://user:PASSWORD@`, `password=...`-style pairs masked
    redact_tree(data)     a JSON-like tree with every string redacted and secret-named keys masked

Used where configuration or a subprocess's output reaches a person: `growthgr config show`,
configuration errors (which echo the rejected value) and failed Airflow CLI calls (whose output can
hold the metadata database URL).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme://[user]:password@host  (redis://:pw@h, postgresql+psycopg2://u:pw@h/db, s3 endpoints)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*):(?P<secret>[^@/\s]+)@")
# key=value pairs of connection strings (Feast's `host:port,password=...`, query strings)
_PAIR = re.compile(r"(?i)(?P<head>\b(?:password|passwd|pwd|secret|token|api_key|access_key|secret_access_key)=)"
                   r"(?P<secret>[^,\s;&'\"]+)")
_SECRET_KEY = re.compile(r"(?i)(^|_)(password|passwd|secret|token|api_key|access_key|credentials?)$")


def redact(text: str) -> str:
    """`text` with URL passwords and secret `key=value` pairs replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PAIR.sub(lambda m: f"{m['head']}{MASK}", text)


def is_secret_key(key: str) -> bool:
    """Whether a setting's name says it holds a secret (`password`, `token`, `secret_access_key`, ...)."""
    return bool(_SECRET_KEY.search(key))


def redact_tree(data: Any, key: str = "") -> Any:
    """A copy of a JSON-like tree: strings redacted, non-empty values of secret-named keys masked."""
    if isinstance(data, dict):
        return {k: redact_tree(v, str(k)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_tree(v, key) for v in data]
    if key and is_secret_key(key) and data not in (None, ""):
        return MASK
    return redact(data) if isinstance(data, str) else data
