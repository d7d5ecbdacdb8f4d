"""Keeping personal data and secrets out of log lines: one structlog processor.

Two kinds of value never reach a log line as they are:

* **Secrets** — tokens, passwords, API keys, webhook secrets. The code that holds one
  registers it (`register_secret`; the REST transport and the webhook receiver do) and
  every occurrence in any logged string becomes `***`; so does the password of any
  `scheme://user:password@host` URL. The adapters already keep secrets out of their
  error texts; this is the second line, for whatever text a remote system echoes back.
* **Personal data** — the configured PII fields (`observability.pii_fields`: emails, phone
  numbers, names, tax ids by default). A log entry whose key is such a field is masked,
  at any depth of nested dicts and lists; inside free text (an error body a target
  echoed, a record's repr) `"email": "…"`, `'email': '…'` and `email=…` are masked when the
  key is a PII field, and so is anything shaped like an email address or an
  international phone number (`+49 30 1234`) whatever its key.

What is not caught: a bare national phone number or a name in prose with no key beside
it. Error texts that Isthmus itself writes name fields and record ids, not their values.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MASK = "***"

DEFAULT_PII_FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "mobile",
    "fax",
    "name",
    "first_name",
    "last_name",
    "full_name",
    "contact_name",
    "company",
    "account_name",
    "vat",
    "vat_number",
    "vat_id",
    "tax_id",
    "tax_number",
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_INTERNATIONAL_PHONE = re.compile(r"(?<![\w+])\+\d[\d ().-]{6,}\d")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s'\"]*):[^/@\s'\"]+@")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LENGTH = 4  # shorter strings would mask half of every line


def register_secret(*values: str | None) -> None:
    """Never log these strings (process-wide; values shorter than 4 characters are ignored)."""
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)


def registered_secrets() -> frozenset[str]:
    with _secrets_lock:
        return frozenset(_secrets)


class LogMasker:
    """A structlog processor: masks registered secrets and the configured PII fields.

    Built once at logging setup (the field patterns are compiled then); per log line it
    walks the event dict and rewrites only the strings that need it.
    """

    def __init__(self, pii_fields: Iterable[str] = DEFAULT_PII_FIELDS) -> None:
        self.fields = frozenset(f.strip().lower() for f in pii_fields if f.strip())
        names = "|".join(sorted((re.escape(f) for f in self.fields), key=len, reverse=True))
        # "field": "value" / 'field': 'value' (JSON, Python reprs) and field=value (key=value text)
        self._quoted_key = (
            re.compile(
                rf"""(?P<key>(?P<q>["'])(?i:{names})(?P=q)\s*:\s*)"""
                r"""(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s,;}\]]+)"""
            )
            if names
            else None
        )
        self._assigned_key = (
            re.compile(rf"""(?P<key>(?<![\w.-])(?i:{names})=)(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s,;&)}}\]]+)""")
            if names
            else None
        )

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        secrets = registered_secrets()
        for key, value in event_dict.items():
            event_dict[key] = self._value(key, value, secrets)
        return event_dict

    def _value(self, key: Any, value: Any, secrets: frozenset[str]) -> Any:
        if isinstance(key, str) and key.lower() in self.fields and value is not None:
            return MASK
        if isinstance(value, str):
            return self.mask_text(value, secrets)
        if isinstance(value, Mapping):
            return {k: self._value(k, v, secrets) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(None, v, secrets) for v in value]
        return value

    def mask_text(self, text: str, secrets: Iterable[str] | None = None) -> str:
        """`text` with secrets, URL passwords, keyed PII values, emails and phone numbers masked."""
        for secret in registered_secrets() if secrets is None else secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
        if self._quoted_key is not None and ("'" in text or '"' in text):
            text = self._quoted_key.sub(rf'\g<key>"{MASK}"', text)
        if self._assigned_key is not None and "=" in text:
            text = self._assigned_key.sub(rf"\g<key>{MASK}", text)
        if "@" in text:
            text = _EMAIL.sub(MASK, text)
        if "+" in text:
            text = _INTERNATIONAL_PHONE.sub(MASK, text)
        return text
