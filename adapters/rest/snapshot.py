"""Change detection for APIs with neither an updated-since filter nor an updated time.

Every poll reads the whole list; a record is emitted only when the hash of its content
differs from the hash recorded for its id by the previous complete read (or when its id is
new). Where the hashes live: in the source's **watermark** — the one string the poller
already persists in the state store (`watermarks` table, name `source:<source name>`)
after the records before it were published. No new table and no new store method: the
reader stays store-free, as every reader is.

The watermark is `snapshot:v1:` followed by compact JSON `{"<id>": "<hash>", ...}` with
sorted keys, so an unchanged snapshot produces the same string and the poller writes
nothing. Each hash is 16 hex digits (64-bit BLAKE2b) of the record's canonical JSON (sorted
keys; `hash_exclude` fields left out): about 20 bytes plus the id per record, so 100,000
records take roughly 3 MB, written once per poll in which something changed. With
`snapshot_every`, the time of the pass is kept too: `snapshot:v1@<unix seconds>:{...}`.

Memory (what a read holds): never the records — each page is handed on before the next is
read — only the hashes, as `Hashes`: id → 64-bit integer (not the 16-character text), for
the previous read and for the one in progress. Roughly 100 bytes per record in CPython,
whatever the size of the records.

What a caller may rely on:
* the watermark is handed back only on a final, empty page, after every record page of a
  complete read: a read that fails half way leaves the previous hashes in place, and the
  records it published are published again next time with the same version (the content
  hash), which the routes' idempotency keys absorb;
* ids missing from a complete read are dropped from the hashes (deletions are not
  emitted); a record that comes back is emitted as new;
* a watermark that is not a snapshot (e.g. a timestamp left from another mode) counts as
  no previous read: every record is emitted once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

PREFIX = "snapshot:v1"

Hashes = dict[str, int]  # record id → 64-bit content hash


def content_hash(record: dict[str, Any], exclude: Collection[str] = ()) -> str:
    """16 hex digits identifying the record's content, independent of key order."""
    content = {k: v for k, v in record.items() if k not in exclude} if exclude else record
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class Snapshot:
    """The hashes of one complete read and, with `snapshot_every`, when it finished (unix seconds)."""

    hashes: Hashes = field(default_factory=dict)
    taken_at: int | None = None


def _int_pairs(pairs: list[tuple[str, Any]]) -> Hashes:
    return {str(k): int(v, 16) for k, v in pairs if isinstance(v, str)}


def decode_snapshot(watermark: str | None) -> Snapshot:
    """The previous complete read; empty for none or a watermark of another kind."""
    if not watermark or not watermark.startswith(PREFIX):
        return Snapshot()
    rest = watermark[len(PREFIX) :]
    taken_at: int | None = None
    if rest.startswith("@"):
        stamp, _, rest = rest[1:].partition(":")
        taken_at = int(stamp) if stamp.isdigit() else None
    elif rest.startswith(":"):
        rest = rest[1:]
    else:
        return Snapshot()
    try:
        hashes = json.loads(rest, object_pairs_hook=_int_pairs)
    except ValueError:
        return Snapshot()
    return Snapshot(hashes if isinstance(hashes, dict) else {}, taken_at)


def decode(watermark: str | None) -> dict[str, str]:
    """The hashes of the previous complete read as hex text; {} for none or a watermark of another kind."""
    return {k: f"{v:016x}" for k, v in decode_snapshot(watermark).hashes.items()}


def encode(hashes: dict[str, str] | Hashes, taken_at: int | None = None) -> str:
    """The watermark for a complete read (sorted keys: the same hashes make the same string)."""
    parts = []
    for key in sorted(hashes):  # written pair by pair: no second dict of the whole list
        value = hashes[key]
        parts.append(f'{json.dumps(key, ensure_ascii=False)}:"{value if isinstance(value, str) else f"{value:016x}"}"')
    body = "{" + ",".join(parts) + "}"
    return f"{PREFIX}@{taken_at}:{body}" if taken_at is not None else f"{PREFIX}:{body}"
