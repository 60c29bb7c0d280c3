"""Test helper: validate payloads against the official jambonz JSON Schemas (draft 2020-12).

The schemas ship inside the installed `jambonz-python-sdk` (`jambonz_sdk/schema/`). Every file is
loaded into one `referencing.Registry` keyed by its `$id`, so the relative `$ref`s between
`callbacks/`, `verbs/` and `components/` resolve offline. Performs no network I/O.
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


@cache
def registry() -> Registry[Any]:
    """Every schema file under `jambonz_sdk/schema/`, keyed by `$id`."""
    resources: list[tuple[str, Resource[Any]]] = []
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        schema_id = contents.get("$id")
        if not isinstance(schema_id, str):
            raise AssertionError(f"{path}: schema without $id")
        resources.append((schema_id, Resource.from_contents(contents)))
    if not resources:
        raise AssertionError(f"no jambonz schemas found under {SCHEMA_DIR}")
    return Registry().with_resources(resources)


@cache
def _validator(schema_id: str) -> Draft202012Validator:
    schema = registry().contents(schema_id)
    return Draft202012Validator(schema, registry=registry())


def _errors(schema_id: str, data: object) -> list[str]:
    errors = sorted(_validator(schema_id).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


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
