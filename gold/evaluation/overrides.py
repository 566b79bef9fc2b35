"""`--set SECTION.KEY=VALUE`: spec fields changed for a sensitivity run, checked against the spec
schema, and the name suffix that keeps such a run apart."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shared.spec import RunSpec


def parse_overrides(raw: list[str]) -> dict[str, Any]:
    """`--set loop.selection_band=[0.2,0.5]` options as {dotted path: value}; the value is YAML."""
    overrides: dict[str, Any] = {}
    for item in raw:
        path, sep, value = item.partition("=")
        path = path.strip()
        if not sep or not path or any(not part for part in path.split(".")):
            raise ValueError(
                f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. loop.selection_band=[0.2,0.5]"
            )
        try:
            overrides[path] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not YAML ({exc})") from exc
    return overrides


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    """The fields of a pydantic model annotation (`X | None` included); None for anything else."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate.model_fields
    return None


def apply_overrides(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec with each dotted path set, named apart (`sst2-selection_band=0.2_0.5`), checked
    against the spec schema so a typo fails here rather than after the stack has started."""
    if not overrides:
        return spec
    out = copy.deepcopy(spec)
    for path, value in overrides.items():
        keys = path.split(".")
        if keys[0] == "name":
            raise ValueError(f"--set {path}: the name is derived from the overrides; it cannot be set")
        if keys[0] not in RunSpec.model_fields:
            known = sorted(set(RunSpec.model_fields) - {"name"})
            raise ValueError(f"--set {path}: unknown section {keys[0]!r}; choose from {known}")
        node: dict[str, Any] = out
        fields: dict[str, Any] | None = RunSpec.model_fields  # None below a field that is no model
        for depth, key in enumerate(keys):
            if fields is not None and key not in fields:
                where = ".".join(keys[:depth])
                raise ValueError(f"--set {path}: {where} has no field {key!r}; it has {sorted(fields)}")
            if depth == len(keys) - 1:
                node[key] = value
                break
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ValueError(f"--set {path}: {where} is a {type(child).__name__}, not a mapping")
            node, fields = child, _model_fields(fields[key].annotation) if fields is not None else None
    out["name"] = f"{spec['name']}-{override_suffix(overrides)}"
    try:
        RunSpec.model_validate(out)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"--set: the spec with these overrides is not valid: {problems}") from exc
    return out


def override_suffix(overrides: dict[str, Any]) -> str:
    """A short, file-name-safe description of the overrides: each leaf key and its value, cut
    and completed by a hash of them all when that would be long (the result JSON lists them)."""
    parts = []
    for path, value in overrides.items():
        shown = re.sub(r"[^A-Za-z0-9.+-]+", "_", json.dumps(value)).strip("_")
        parts.append(f"{path.rsplit('.', 1)[-1]}={shown}")
    suffix = "-".join(parts)
    if len(suffix) > 48:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
        suffix = f"{suffix[:39].rstrip('-_=.')}-{digest}"
    return suffix
