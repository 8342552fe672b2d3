"""Credentials in URLs never leave loadgrid: records, pages, logs and Locust's command line get them masked.

`https://user:secret@host/x?token=abc` -> `https://user:***@host/x?token=***`. A URL's password and the
values of query parameters that name a secret are masked; everything else is kept, so a reader still sees
which endpoint was measured.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are secrets (matched case-insensitively, anywhere in the name).
SECRET_PARAMS = ("token", "key", "secret", "password", "passwd", "pwd", "auth", "signature", "sig", "credential")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def url(value: str | None) -> str | None:
    """One URL with its password and secret query values masked; anything not a URL comes back as it was."""
    if not value or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{MASK}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_secret(k) for k, _ in pairs):
                query = urlencode([(k, MASK if _secret(k) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # too malformed to split (a bad IPv6 literal, say): mask what could be credentials, keep the rest, so
        # the error that quotes it still shows the mistake
        return re.sub(r"://[^/?#]*@", f"://{MASK}@", value)


def text(value: str) -> str:
    """Every URL inside a free text (an error message, a log line) masked."""
    return _URL.sub(lambda m: url(m.group(0)) or "", value)


def has_credentials(value: str | None) -> bool:
    return bool(value) and url(value) != value


def _secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMS)
