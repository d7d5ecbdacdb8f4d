"""The state store: pick SQLite or PostgreSQL by URL; see `base` for the contract."""

from __future__ import annotations

from pathlib import Path

from middleware.store.base import RecordRef, Store

__all__ = ["RecordRef", "Store", "open_store"]


def open_store(url: str, base_dir: str | Path | None = None) -> Store:
    """Open the store named by `url`.

    `sqlite://RELATIVE/path.db` is relative to `base_dir` (the config file's folder, so a
    project runs the same from any cwd), or to the cwd when `base_dir` is None;
    `sqlite:///abs/path.db` (or with four slashes) is absolute. A query string is ignored
    for SQLite. `postgresql://...` and `postgres://...` open PostgreSQL. Anything else raises
    ValueError, which callers turn into a configuration error.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        rest = rest.split("?", 1)[0]
        if not rest.strip("/"):
            raise ValueError(f"store URL {url!r} names no file: use sqlite://PATH, e.g. sqlite://.isthmus/state.db")
        if rest.startswith("/"):
            path = Path("/" + rest.lstrip("/"))
        else:
            path = Path(base_dir if base_dir is not None else Path.cwd()) / rest
        from middleware.store.sqlite import SqliteStore

        return SqliteStore(str(path), url=url)
    if sep and scheme in ("postgresql", "postgres"):
        from middleware.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url)
    raise ValueError(f"unknown store URL scheme in {url!r}: use sqlite://PATH or postgresql://URL")
