"""A declarative guard registry.

Built-in guards are listed by name as ``module:Class`` strings and imported only when a policy
uses them (the semantic guard pulls in torch; the edge profile must not). Companies add their own
guards as packages through the ``shared_guards.guards`` entry-point group::

    [project.entry-points."shared_guards.guards"]
    acme_secrets = "acme_guards.secrets:SecretsGuard"
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from shared_guards.errors import ConfigError
from shared_guards.guard import Guard

ENTRY_POINT_GROUP = "shared_guards.guards"

BUILTIN_GUARDS: dict[str, str] = {
    "rbac": "shared_guards.guards.rbac:RBACGuard",
    "injection_pattern": "shared_guards.guards.injection_pattern:PatternGuard",
    "injection_semantic": "shared_guards.guards.injection_semantic:SemanticGuard",
    "injection_context": "shared_guards.guards.injection_context:ContextGuard",
    "injection": "shared_guards.guards.injection:InjectionGuard",
    "pii": "shared_guards.guards.pii:PIIGuard",
    "pii_patterns": "shared_guards.guards.pii_patterns:PatternPIIGuard",  # edge: no Presidio
    "quota": "shared_guards.guards.quota:QuotaGuard",
}

_extra: dict[str, type[Guard]] = {}


def register(cls: type[Guard]) -> type[Guard]:
    """Register a guard class in-process (tests, embedded use). Usable as a decorator."""
    _extra[cls.name] = cls
    return cls


@cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    return sorted({*BUILTIN_GUARDS, *_entry_point_targets(), *_extra})


def _load(target: str, name: str) -> type[Guard]:
    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"guard {name!r}: cannot load {target}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Guard)):
        raise ConfigError(f"guard {name!r}: {target} is not a Guard subclass")
    return obj


def get_guard_class(name: str) -> type[Guard]:
    """The guard class registered under ``name``; ConfigError when unknown.

    A name of the form ``package.module:Class`` imports that class directly (a guard shipped in
    the company's own code without an entry point)."""
    if ":" in name:
        return _load(name, name)
    if name in _extra:
        return _extra[name]
    target = BUILTIN_GUARDS.get(name) or _entry_point_targets().get(name)
    if target is None:
        raise ConfigError(f"unknown guard {name!r}; available: {', '.join(available())}")
    return _load(target, name)
