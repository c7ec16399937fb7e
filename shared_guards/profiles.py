"""Deployment profiles: a declarative rewrite of the policy before it is validated.

``full`` runs the policy as written. ``edge`` keeps what needs no model: patterns, context
validation, RBAC, quotas and PII *pattern* recognizers; no torch, no spaCy NER, small memory.
The rewrite happens on the parsed YAML, before validation, so the guards it removes are never
imported (importing the semantic guard or Presidio pulls in torch and spaCy).

Built-in guards are rewritten from :data:`EDGE_RULES` (by name, without importing them). A guard
from a package (entry point or ``module:Class``) may declare a classmethod
``edge_options(options: dict) -> dict | None``: the options to run with under ``edge``, or None to
drop it; a guard without it is kept as written.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared_guards.errors import ConfigError
from shared_guards.registry import BUILTIN_GUARDS, get_guard_class

log = logging.getLogger("shared_guards.profiles")


class Profile(StrEnum):
    FULL = "full"
    EDGE = "edge"


@dataclass(frozen=True)
class EdgeRule:
    """What the edge profile does with one built-in guard."""

    reason: str
    drop: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # merged over the policy's options
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # options -> options
    unsupported: str | None = None  # the guard cannot run under edge: refuse to start, say why
    replace_with: str | None = None  # another guard (same options, same id) runs instead


def _without_semantic_layer(options: dict[str, Any]) -> dict[str, Any]:
    layers = options.get("layers", ["pattern", "semantic", "context"])
    if isinstance(layers, list):
        options = {**options, "layers": [layer for layer in layers if layer != "semantic"]}
    return options


EDGE_RULES: dict[str, EdgeRule] = {
    "rbac": EdgeRule("pure Python"),
    "quota": EdgeRule("Redis counters"),
    "injection_pattern": EdgeRule("compiled pattern sets"),
    "injection_context": EdgeRule("context validation, pure Python"),
    "injection_semantic": EdgeRule("embedding model (torch): dropped", drop=True),
    "pii_patterns": EdgeRule("PII pattern recognizers"),
    "injection": EdgeRule("pattern and context layers; the semantic layer (torch) is removed",
                          rewrite=_without_semantic_layer),
    # The PII guard analyzes with Presidio, whose import loads spaCy and torch: under edge the
    # pattern-only PII guard runs instead, with the same options and id (no NER entities).
    "pii": EdgeRule("PII pattern recognizers only (no NER: PERSON, LOCATION... not detected)",
                    replace_with="pii_patterns"),
}

# Modules an edge process must never import (checked by tests and the benchmark).
HEAVY_MODULES: tuple[str, ...] = ("torch", "spacy", "transformers", "sentence_transformers", "presidio_analyzer")


def _edge_spec(spec: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return spec  # type: ignore[no-any-return]  # left for validation to report
    name = spec["name"]
    options = spec.get("options") or {}
    rule = EDGE_RULES.get(name)
    if rule is None and name not in BUILTIN_GUARDS:
        hook: Callable[[dict[str, Any]], dict[str, Any] | None] | None = getattr(
            get_guard_class(name), "edge_options", None)
        if hook is None:
            return spec
        new_options = hook(dict(options))
        if new_options is None:
            log.info("edge profile: %s (%s) dropped by the guard's edge_options", spec.get("id") or name, where)
            return None
        return {**spec, "options": new_options}
    if rule is None:
        return spec
    if rule.unsupported:
        raise ConfigError(f"edge profile: guard {spec.get('id') or name!r} ({where}): {rule.unsupported}")
    if rule.drop:
        log.info("edge profile: %s (%s) dropped: %s", spec.get("id") or name, where, rule.reason)
        return None
    if rule.replace_with is not None:
        spec = {**spec, "name": rule.replace_with, "id": spec.get("id") or name}
    if rule.rewrite is not None and isinstance(options, dict):
        options = rule.rewrite(dict(options))
    if rule.options:
        options = {**options, **rule.options}
    return {**spec, "options": options} if options != (spec.get("options") or {}) else dict(spec)


def edge_policy(data: Any) -> Any:
    """The policy mapping rewritten for the edge profile (the input is not modified)."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    lists: list[tuple[str, dict[str, Any]]] = []
    if isinstance(out.get("defaults"), dict):
        lists.append(("defaults", out["defaults"]))
    for dep_name, dep in (out.get("departments") or {}).items() if isinstance(out.get("departments"), dict) else ():
        if isinstance(dep, dict):
            lists.append((f"departments.{dep_name}", dep))
    for where, holder in lists:
        guards = holder.get("guards")
        if isinstance(guards, list):
            kept = [_edge_spec(s, where) for s in guards]
            holder["guards"] = [s for s in kept if s is not None]
    return out


def profile_transform(profile: str | Profile) -> Callable[[Any], Any] | None:
    """The policy transform of a profile (None for ``full``)."""
    p = Profile(profile)
    return edge_policy if p is Profile.EDGE else None
