"""JSON Schemas for sources/ and recipes/, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from curate.model.recipe import Recipe, SourceSpec

SCHEMAS = {"source.schema.json": SourceSpec, "recipe.schema.json": Recipe}


def render_schemas() -> dict[str, str]:
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://github.com/curate-medical/curate/schemas/{name}"
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas().items():
        p = dest / name
        p.write_text(text)
        paths.append(p)
    return paths
