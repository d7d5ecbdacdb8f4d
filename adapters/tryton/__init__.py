"""Tryton ERP adapter: `type: tryton` systems (see `TrytonSystemConfig`)."""

from adapters.tryton.adapter import TrytonAdapter
from adapters.tryton.config import TrytonSystemConfig

__all__ = ["TrytonAdapter", "TrytonSystemConfig"]
