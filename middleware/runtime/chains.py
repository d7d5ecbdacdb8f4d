"""Glue between the mapping engine and the things that run it: worker routes and preview.

The mapping package knows nothing about configs or stores; the worker knows nothing about how
mappings compile. This module is the one place that turns a route's list of mapping ids into
the single `payload -> dict | None` function a `RouteProcessor` calls per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from middleware.config import LoadedConfig
from middleware.errors import ConfigError, Problem
from middleware.mapping import (
    CompiledMapping,
    MappingChain,
    StoreMappingContext,
    load_mappings,
)
from middleware.store.base import Store

__all__ = ["build_route_mapper", "resolve_chain"]

MapFunction = Callable[[dict[str, Any]], dict[str, Any] | None]


def resolve_chain(paths: Sequence[str | Path], mapping_ids: Sequence[str]) -> CompiledMapping | MappingChain:
    """The compiled mapping (one id) or chain (several) from the files under `paths`.

    Raises ConfigError with every problem (bad files, unknown ids, chains that do not fit).
    """
    mapping_set = load_mappings([str(p) for p in paths])
    ids = [i.strip() for i in mapping_ids if i.strip()]
    if not ids:
        raise ConfigError([Problem("no mapping id given", None, "", "name at least one mapping id")])
    problems = mapping_set.chain_problems(ids)
    if problems:
        raise ConfigError(problems)
    if len(ids) == 1:
        return mapping_set[ids[0]]
    return mapping_set.chain(ids)


def build_route_mapper(config: LoadedConfig, mapping_ids: Sequence[str], store: Store) -> tuple[MapFunction, str]:
    """Compile a route's mappings once; return the per-message function and a label for DLQ headers.

    Cross-references are looked up in the worker's state store, so an order whose customer
    has not been synced yet raises XrefMissingError (transient) and is retried later.
    """
    mapping = resolve_chain(config.mapping_paths, mapping_ids)
    context = StoreMappingContext(store)
    apply_validated = mapping.apply_validated

    def map_record(payload: dict[str, Any]) -> dict[str, Any] | None:
        return apply_validated(payload, context)

    map_record.merge_keys = dict(mapping.merge_keys)  # type: ignore[attr-defined]  # read by RouteProcessor
    return map_record, "+".join(mapping_ids)
