"""Webhook signature schemes: which header carries the signature and what it is computed over.

Two schemes, both HMAC-SHA256 with the endpoint's `secret`:

* `hmac_sha256` (the default): the header holds `<prefix><digest of the raw body>`, e.g.
  `X-Isthmus-Signature: sha256=<hex>` (GitHub's `X-Hub-Signature-256` has the same shape;
  `prefix: ""` and `encoding: base64` fit senders such as Shopify).
* `timestamped`: the header holds `t=<unix seconds>,v1=<hex>` and the digest is computed over
  `<t>.<raw body>` (the scheme Stripe popularised). Several `v1=` values may be sent (during
  a secret rotation); one matching is enough. A `t` further than `tolerance_s` from now —
  in the past or the future — is refused: a captured request cannot be replayed later.

Verification is over the raw bytes received, before any JSON parsing, in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HEADER = "X-Isthmus-Signature"


class HeaderLookup(Protocol):
    def get(self, name: str, /) -> str | None: ...


class SignatureSettings(BaseModel):
    """How an endpoint's requests are signed (requires the endpoint's `secret`)."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["hmac_sha256", "timestamped"] = Field(
        default="hmac_sha256",
        description="hmac_sha256: HMAC of the raw body; timestamped: `t=<unix>,v1=<hex>` over `<t>.<raw body>`.",
    )
    header: str = Field(default=DEFAULT_HEADER, description="Request header carrying the signature.")
    prefix: str = Field(default="sha256=", description="hmac_sha256: text before the digest ('' for none).")
    encoding: Literal["hex", "base64"] = Field(default="hex", description="hmac_sha256: digest encoding.")
    tolerance_s: float = Field(
        default=300.0, gt=0, description="timestamped: replay window; older or newer timestamps are refused."
    )


def _digest(secret: str | bytes, payload: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, payload, hashlib.sha256).digest()


def sign_body(secret: str | bytes, body: bytes, settings: SignatureSettings | None = None) -> str:
    """The `hmac_sha256` header value for `body` (default settings: `sha256=<hex>`)."""
    settings = settings or SignatureSettings()
    digest = _digest(secret, body)
    encoded = digest.hex() if settings.encoding == "hex" else base64.b64encode(digest).decode("ascii")
    return settings.prefix + encoded


def sign_timestamped(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The `timestamped` header value: `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>`."""
    return f"t={timestamp},v1={_digest(secret, str(timestamp).encode() + b'.' + body).hex()}"


def verify(settings: SignatureSettings, secret: str, body: bytes, headers: HeaderLookup, now: float) -> str | None:
    """None when the request is signed correctly (and, timestamped, recent); else why not."""
    given = (headers.get(settings.header) or "").strip()
    missing = f"bad or missing {settings.header} signature"
    if settings.scheme == "hmac_sha256":
        expected = sign_body(secret, body, settings)
        return None if hmac.compare_digest(given.encode(), expected.encode()) else missing
    timestamp: str | None = None
    candidates: list[str] = []
    for part in given.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not timestamp.isdigit() or not candidates:
        return missing + " (expected t=<unix seconds>,v1=<hex>)"
    wanted = _digest(secret, timestamp.encode() + b"." + body).hex().encode()
    if not any(hmac.compare_digest(candidate.encode(), wanted) for candidate in candidates):
        return missing
    if abs(now - int(timestamp)) > settings.tolerance_s:
        return f"signature timestamp outside the replay window of {settings.tolerance_s:g} s"
    return None
