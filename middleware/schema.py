"""JSON Schemas of the envelope and the canonical entities (`isthmus schema`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from middleware.entities import ENTITIES
from middleware.errors import ConfigError
from middleware.message import Envelope
from middleware.problems import did_you_mean


def all_models() -> dict[str, type[BaseModel]]:
    return {"Envelope": Envelope, **ENTITIES}


def export_schemas(out: Path | None, only: str | None = None) -> list[Path]:
    """Write `<Name>.schema.json` files into `out`, or print one JSON object keyed by name."""
    models = all_models()
    if only:
        if only not in models:
            raise ConfigError(f"no schema named {only!r}; {did_you_mean(only, models)}")
        models = {only: models[only]}
    schemas = {name: model.model_json_schema() for name, model in models.items()}
    if out is None:
        print(json.dumps(schemas if not only else schemas[only], indent=2))
        return []
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder to write <Name>.schema.json files into")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
