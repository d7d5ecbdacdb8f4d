"""REST/JSON adapter: `type: rest` systems (see `RestSystemConfig`)."""

from adapters.rest.adapter import RestAdapter
from adapters.rest.config import RestSystemConfig

__all__ = ["RestAdapter", "RestSystemConfig"]
