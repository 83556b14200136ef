"""JSON Schema validation with one-line errors for the matrix files.

The schemas are package data (harness/schemas/*.json). A TOML file or a
report is validated as a whole; the first error that best explains the failure
becomes one line: "FILE: KEY.PATH: what is allowed".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from harness.core.errors import UserError

MATRIX = "matrix.schema.json"
BASELINE = "baseline.schema.json"
REPORT = "matrix-report.schema.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (one of MATRIX, BASELINE, REPORT) as a dict."""
    text = resources.files("harness").joinpath("schemas", name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validator(name: str, ref: str = "") -> jsonschema.Draft202012Validator:
    """A validator for the schema `name`, or for its `$defs/<ref>` when given."""
    schema = load_schema(name)
    if ref:
        schema = {**schema, "$ref": f"#/$defs/{ref}"}
        schema = {k: v for k, v in schema.items() if k in ("$schema", "$id", "$defs", "$ref")}
    return jsonschema.Draft202012Validator(schema)


def errors(name: str, data: Any, ref: str = "") -> list[ValidationError]:
    """Every schema error of `data` (empty when valid)."""
    return list(validator(name, ref).iter_errors(data))


def check(name: str, data: Any, where: str, ref: str = "", at: str = "") -> None:
    """Raise UserError with one line "WHERE: KEY: what is allowed" for the
    error of `data` that best explains why it is invalid; `at` prefixes the key."""
    found = errors(name, data, ref)
    if found:
        raise UserError(f"{where}: {explain(_best(found), at)}")


def _best(found: Iterable[ValidationError]) -> ValidationError:
    err: ValidationError = best_match(found)
    # best_match climbs to the deepest error of anyOf/oneOf; for if/then we want
    # the innermost error that carries a description of its own.
    while err.context:
        err = best_match(err.context)
    return err


def explain(err: ValidationError, at: str = "") -> str:
    """One error as "KEY: what is allowed"."""
    path = [*([at] if at else []), *(str(p) for p in err.absolute_path)]
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_allowed_keys(schema, err))
        if not allowed:
            return f"{'.'.join(path) or '(top level)'}: {err.message}"
        inst = err.instance
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        key = ".".join([*path, extra[0]]) if extra else ".".join(path) or "(top level)"
        return f"{key}: unknown key; allowed keys: {', '.join(allowed)}"
    if err.validator == "required":
        missing = str(err.message).split("'")[1] if "'" in str(err.message) else ""
        sub = schema.get("properties", {}).get(missing, {})
        text = sub.get("description") if isinstance(sub, dict) else None
        return f"{'.'.join([*path, missing])}: required: {text or err.message}"
    key = ".".join(path) or "(top level)"
    if err.validator == "propertyNames" or (err.validator == "enum" and not path):
        return f"{key}: {err.message}"
    if err.validator == "enum":
        return f"{key}: {err.instance!r} is not allowed; use one of: " + ", ".join(
            str(v) for v in cast(list[Any], err.validator_value)
        )
    text = schema.get("description") or _parent_description(err)
    return f"{key}: {err.instance!r} is not allowed; {text or err.message}"


def _allowed_keys(schema: dict[str, Any], err: ValidationError) -> set[str]:
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        defs = load_schema_of(err).get("$defs", {})
        keys |= set(defs.get(ref.removeprefix("#/$defs/"), {}).get("properties", {}))
    return keys


def load_schema_of(err: ValidationError) -> dict[str, Any]:
    """The root schema an error came from (its $defs resolve references)."""
    for name in (MATRIX, BASELINE, REPORT):
        schema = load_schema(name)
        if _contains(schema, err.schema):
            return schema
    return {}


def _contains(root: Any, part: Any) -> bool:
    if root is part:
        return True
    if isinstance(root, dict):
        return any(_contains(v, part) for v in root.values())
    if isinstance(root, list):
        return any(_contains(v, part) for v in root)
    return False


def _parent_description(err: ValidationError) -> str:
    """The description of the nearest schema above the failing keyword (an
    items schema's array, say), "" when none has one."""
    parent = err.parent
    while parent is not None:
        if isinstance(parent.schema, dict) and parent.schema.get("description"):
            return str(parent.schema["description"])
        parent = parent.parent
    return ""
