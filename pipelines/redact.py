"""Credentials never leave dxpipe in a URI it prints or writes.

A tracking URI may carry a password (`http://user:secret@host/`), a token in the query string
(`?token=...`), or database credentials (`postgresql://user:pw@db/mlflow`). Every message, status report,
marker file and log line that shows a URI shows `redact_uri(uri)` instead.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_KEYS = re.compile(r"(pass|pwd|secret|token|key|auth|sig|credential)", re.IGNORECASE)
# A fallback for strings urlsplit cannot take apart: anything like "scheme://user:pw@".
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact_uri(uri: str | None) -> str:
    """Returns `uri` with any user, password and secret query parameters replaced by `***`.

    Args:
        uri: Any URI or plain path (None becomes "").

    Returns:
        The URI safe to print; paths and URIs without credentials come back unchanged.
    """
    if not uri:
        return ""
    text = str(uri)
    try:
        parts = urlsplit(text)
    except ValueError:
        return _USERINFO.sub(r"\g<scheme>***@", text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*")
    redacted = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    # urlunsplit drops an empty netloc ("sqlite:///x" -> "sqlite:/x"); keep the original form then.
    if parts.netloc == "" and text.startswith(f"{parts.scheme}:///"):
        redacted = f"{parts.scheme}://{redacted[len(parts.scheme) + 1 :]}"
    return _USERINFO.sub(r"\g<scheme>***@", redacted)


def redact_text(text: str, uri: str | None) -> str:
    """Replaces every occurrence of `uri` in `text` with its redacted form (for wrapped library errors)."""
    if not uri or not text:
        return text
    return text.replace(uri, redact_uri(uri))
