"""Test helper: validate payloads against both official jambonz JSON Schema sets (draft 2020-12).

Two sources, kept apart because they share `$id`s: the schemas inside the installed
`jambonz-python-sdk` (`jambonz_sdk/schema/`) and the npm `@jambonz/schema` package the current
`@jambonz/sdk` is built on (`tests/peers/node_modules`, pinned in `tests/peers/package.json`).
Each source's files are loaded into one `referencing.Registry` keyed by `$id`, so the relative
`$ref`s between `callbacks/`, `verbs/` and `components/` resolve offline. A payload is valid when
both sources accept it; each error names the source that raised it. No network I/O.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jambonz_sdk
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_BASE = "https://jambonz.org/schema"
SCHEMA_DIR = Path(jambonz_sdk.__file__).parent / "schema"
NODE_SCHEMA_DIR = Path(__file__).parent / "peers" / "node_modules" / "@jambonz" / "schema"
SOURCES = {"jambonz-python-sdk": SCHEMA_DIR, "@jambonz/schema": NODE_SCHEMA_DIR}


@cache
def registry(source: str = "jambonz-python-sdk") -> Registry[Any]:
    """Every schema file of `source` (a key of SOURCES), keyed by `$id`."""
    directory = SOURCES[source]
    resources: list[tuple[str, Resource[Any]]] = []
    for sub in ("callbacks", "commands", "components", "verbs"):
        for path in sorted((directory / sub).rglob("*.json")):
            contents = json.loads(path.read_text(encoding="utf-8"))
            schema_id = contents.get("$id")
            if not isinstance(schema_id, str):
                raise AssertionError(f"{path}: schema without $id")
            resources.append((schema_id, Resource.from_contents(contents)))
    app = directory / "jambonz-app.schema.json"
    if app.exists():
        contents = json.loads(app.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    if not resources:
        raise AssertionError(f"no jambonz schemas under {directory} (run `make peers`)")
    return Registry().with_resources(resources)


@cache
def _validator(source: str, schema_id: str) -> Draft202012Validator:
    schema = registry(source).contents(schema_id)
    return Draft202012Validator(schema, registry=registry(source))


def _errors(schema_id: str, data: object) -> list[str]:
    found: list[str] = []
    for source in SOURCES:
        errors = _validator(source, schema_id).iter_errors(data)
        for e in sorted(errors, key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in e.absolute_path) or "<root>"
            found.append(f"[{source}] {where}: {e.message}")
    return found


def validate_callback(name: str, data: dict[str, Any]) -> list[str]:
    """Errors of `data` against `callbacks/<name>` (e.g. "session-new", "gather", "call-status")."""
    return _errors(f"{SCHEMA_BASE}/callbacks/{name}", data)


def assert_valid_callback(name: str, data: dict[str, Any]) -> None:
    errors = validate_callback(name, data)
    assert not errors, f"callback {name} invalid: {errors}"


def validate_app(verbs: list[Any]) -> list[str]:
    """Errors of a verb array (in `{"verb": ...}` form) against `jambonz-app`."""
    return _errors(f"{SCHEMA_BASE}/jambonz-app", verbs)


def assert_valid_app(verbs: list[Any]) -> None:
    errors = validate_app(verbs)
    assert not errors, f"verb array invalid: {errors}"
