"""Redaction of secrets that may sit in values about to be logged (MLflow params, log lines)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(value: str) -> str:
    """``value`` without a URL's userinfo, query string and fragment; other strings unchanged.

    ``http://user:pw@host:8000/v1?key=k`` becomes ``http://host:8000/v1``. A string that has a
    scheme and a host but does not parse keeps only its scheme (``http://<redacted>``).
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or rest.startswith("/"):  # not a URL with a host (a path, sqlite:///x)
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed host or port
    except ValueError:
        return f"{scheme}://<redacted>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
