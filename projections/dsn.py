"""ClickHouse DSNs as they may be shown: an `http://user:password@host` DSN never prints its
password, in errors, logs or reprs."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit


def redacted(dsn: str) -> str:
    """The DSN as it may be shown: its password (`http://user:PASSWORD@host`) masked."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scrubbed(text: str, dsn: str) -> str:
    """`text` (an error message) with the DSN's password, in any spelling of it, masked."""
    password = urlsplit(dsn).password or ""
    for secret in {password, quote(password), unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return text
