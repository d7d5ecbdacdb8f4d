"""Keeping passwords out of logs, errors and reprs: one place that knows URL credentials.

Broker and store URLs may carry a password (`amqp://user:pw@host`, `postgresql://u:pw@h/db`,
or `?password=` for libpq); every message that shows such a URL goes through here.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s']*):[^/@\s']*@")


def redact_url(url: str) -> str:
    """The URL with any password (in the user info or a `password` parameter) as `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        query = [(name, "***" if name == "password" else value) for name, value in query]
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))
    return urlunsplit(parts._replace(netloc=netloc))


def mask_url_credentials(text: str) -> str:
    """Free text with `user:password@` of every URL in it masked (for echoed config values)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
