"""ClickHouse DSNs as they may be shown: an `http://user:password@host` DSN never prints its
password, in errors, logs or reprs. The password may be a reference, `${env:NAME}` or
`${file:PATH}`, which the process that connects reads (events/log/secrets.py): then the DSN that
travels to the projection host carries no secret."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

from events.log.secrets import is_reference, resolve_value


def redacted(dsn: str) -> str:
    """The DSN as it may be shown: its password (`http://user:PASSWORD@host`) masked."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def with_password(dsn: str, password: str) -> str:
    """The DSN with `password` (a value, or a reference) as its password; the user `default`
    when it names none."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'default'}:{quote(password, safe='')}@{host}"))


def resolved(dsn: str) -> str:
    """The DSN to connect with: a password given by reference read now, by this process."""
    password = urlsplit(dsn).password
    reference = unquote(password) if password is not None else None
    if reference is None or not is_reference(reference):
        return dsn
    return with_password(dsn, resolve_value("the ClickHouse password", reference))


def scrubbed(text: str, dsn: str) -> str:
    """`text` (an error message) with the DSN's password, in any spelling of it, masked."""
    password = urlsplit(dsn).password or ""
    for secret in {password, quote(password), unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return text
