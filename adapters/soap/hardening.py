"""Keeping hostile XML out: DTDs refused before parsing, sizes bounded, imports fenced in.

A SOAP message may not carry a document type declaration (SOAP 1.1 §3, SOAP 1.2 part 1
§5), and nothing Isthmus reads needs one, so any answer or WSDL document whose prolog
declares a DOCTYPE is refused *before* lxml sees it: no entity is ever declared, let alone
expanded (billion laughs) or resolved (`file:///etc/passwd`). zeep's own guards stay on
behind this one (`forbid_dtd`, `forbid_entities`, no `xml_huge_tree`, lxml without entity
resolution or network access). Bodies are read in chunks and refused past a size limit
counted after decompression (so a gzip bomb stops there too), and within a total deadline
(so a server trickling bytes cannot hold a call open forever). A WSDL may pull in other
documents only under the configured import policy: by default from its own origin.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
import zeep

CHUNK_BYTES = 64 * 1024


class XmlRefused(Exception):
    """An answer or document refused unread or unparsed: retrying cannot make it safe."""


class DoctypeRefused(XmlRefused):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} declares a DOCTYPE (a DTD, which could define entity bombs or external entities); "
            "refused without parsing"
        )


class ResponseTooLarge(XmlRefused):
    def __init__(self, what: str, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        size = f"{declared} bytes" if declared is not None else "more"
        super().__init__(f"{what} is larger than the limit of {limit} bytes ({size}); refused")


class ImportRefused(XmlRefused):
    def __init__(self, location: str, policy: str) -> None:
        super().__init__(
            f"the WSDL imports {location!r}, which the import policy {policy!r} does not allow "
            "(see wsdl_imports: same_origin, none, any)"
        )


def zeep_settings(strict: bool, forbid_external: bool) -> zeep.Settings:
    """zeep's parser settings: no DTDs, no entities, no huge trees."""
    return zeep.Settings(
        strict=strict,
        xml_huge_tree=False,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=forbid_external,
    )


def has_doctype(content: bytes) -> bool:
    """Whether the document's prolog (before the root element) declares a DOCTYPE."""
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = content[:65536].decode("utf-16", errors="ignore")
    else:
        text = content.decode("latin-1")  # markup is ASCII in every ASCII-compatible encoding
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n\ufeff\xef\xbb\xbf":  # whitespace, or a UTF-8 BOM read as latin-1
            i += 1
        elif text.startswith("<?", i):
            end = text.find("?>", i + 2)
            if end < 0:
                return False
            i = end + 2
        elif text.startswith("<!--", i):
            end = text.find("-->", i + 4)
            if end < 0:
                return False
            i = end + 3
        else:
            return text[i : i + 9].upper() == "<!DOCTYPE"
    return False


def refuse_doctype(content: bytes, what: str) -> None:
    if has_doctype(content):
        raise DoctypeRefused(what)


def looks_like_xml(content: bytes) -> bool:
    """A body that starts (after prolog whitespace) with markup, not e.g. a plain-text error."""
    return content.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"<")


def read_limited(response: requests.Response, limit: int, deadline: float, what: str) -> bytes:
    """The whole (decoded) body, or ResponseTooLarge past `limit` bytes, or Timeout past `deadline`."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and "Content-Encoding" not in response.headers:
        raise ResponseTooLarge(what, limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(what, limit)
        if time.monotonic() > deadline:
            raise requests.exceptions.ReadTimeout(f"{what} was not complete within the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def read_file_limited(path: str, limit: int, what: str) -> bytes:
    with open(path, "rb") as handle:
        content = handle.read(limit + 1)
    if len(content) > limit:
        raise ResponseTooLarge(what, limit)
    return content


class ImportPolicy:
    """Which documents the WSDL at `wsdl` may pull in (the WSDL itself is always allowed)."""

    def __init__(self, wsdl: str, mode: Literal["same_origin", "none", "any"]) -> None:
        self.mode = mode
        self.wsdl = wsdl
        parsed = urlparse(wsdl)
        self.remote = parsed.scheme in ("http", "https")
        self.origin = _origin(wsdl) if self.remote else None
        self.root = None if self.remote else local_path(wsdl)
        self.folder = None if self.root is None else os.path.dirname(self.root)

    def check(self, location: str) -> None:
        """Raise ImportRefused unless `location` may be loaded."""
        if self.is_wsdl(location) or self.mode == "any":
            return
        if self.mode == "none":
            raise ImportRefused(location, self.mode)
        remote = urlparse(location).scheme in ("http", "https")
        if self.remote:
            if remote and _origin(location) == self.origin:
                return
        elif not remote and self.folder is not None:
            target = local_path(location)
            if os.path.commonpath([self.folder, target]) == self.folder:
                return
        raise ImportRefused(location, self.mode)

    def is_wsdl(self, location: str) -> bool:
        if self.remote:
            return location == self.wsdl
        return urlparse(location).scheme not in ("http", "https") and local_path(location) == self.root


def local_path(location: str) -> str:
    """A file location (plain path or file:// URL) as an absolute real path."""
    if location.startswith("file://"):
        location = url2pathname(urlparse(location).path)
    return os.path.realpath(Path(location).expanduser())


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    default = 443 if parsed.scheme == "https" else 80
    return (parsed.scheme, (parsed.hostname or "").lower(), parsed.port or default)


def response_excerpt(content: Any, limit: int = 2000) -> bytes:
    """The start of a body for an error message (never the whole of a huge one)."""
    return bytes(content[:limit]) if isinstance(content, bytes | bytearray) else b""
