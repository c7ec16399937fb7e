"""Stores for quotas and the verdict cache: Redis when configured, per-process memory otherwise.

:func:`ensure_backends` fills the engine's ``Resources.backends`` from the policy's ``backends:``
section (the ``REDIS_URL`` environment variable wins over ``backends.redis_url``):

* ``"kv"``: the primary limiter, a :class:`ResilientBackend` around :class:`RedisBackend`, or a
  :class:`MemoryBackend` when no Redis is configured;
* ``"kv_fallback"``: a per-process :class:`MemoryBackend` used when Redis fails and the policy
  says ``fail_open``;
* ``"kv_prefix"``: the key prefix;
* ``"verdict_cache"``: the :class:`~shared_guards.cache.VerdictCache`, or None when disabled.

Backends passed to the engine explicitly (tests, embedded use) are kept as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from shared_guards.backends.base import CheckResult, LimiterBackend, Rule, RuleState, Slot, SlotState
from shared_guards.backends.breaker import CircuitBreaker, ResilientBackend
from shared_guards.backends.memory import MemoryBackend
from shared_guards.backends.redis import RedisBackend, hash_tag

if TYPE_CHECKING:
    from shared_guards.policy import BackendSettings

__all__ = [
    "CheckResult",
    "CircuitBreaker",
    "LimiterBackend",
    "MemoryBackend",
    "RedisBackend",
    "ResilientBackend",
    "Rule",
    "RuleState",
    "Slot",
    "SlotState",
    "build_backend",
    "ensure_backends",
    "hash_tag",
    "redis_url",
]

_SIGNATURE = "kv_signature"


def redis_url(settings: BackendSettings, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("REDIS_URL") or settings.redis_url or None


def build_backend(settings: BackendSettings, env: Mapping[str, str] | None = None) -> LimiterBackend:
    """The primary limiter for these settings: Redis behind a breaker, or process memory."""
    url = redis_url(settings, env)
    if not url:
        return MemoryBackend()
    timeout = settings.redis_timeout_ms / 1000
    inner = RedisBackend(url, timeout_s=timeout, pool_size=settings.redis_pool_size, cluster=settings.redis_cluster)
    breaker = CircuitBreaker(failures=settings.breaker_failures, max_backoff_s=settings.breaker_max_backoff_ms / 1000)
    return ResilientBackend(inner, timeout_s=timeout, breaker=breaker)


def ensure_backends(
    backends: MutableMapping[str, Any], settings: BackendSettings, env: Mapping[str, str] | None = None
) -> None:
    """Fill ``backends`` for ``settings`` (idempotent; rebuilt when the settings change)."""
    from shared_guards.cache import VerdictCache

    signature = (redis_url(settings, env), settings.model_dump_json())
    if backends.get(_SIGNATURE) == signature:
        return
    injected = "kv" in backends and _SIGNATURE not in backends
    if not injected:
        backends["kv"] = build_backend(settings, env)
        backends["kv_fallback"] = backends.get("kv_fallback") or MemoryBackend()
        backends["kv_prefix"] = settings.key_prefix
        backends[_SIGNATURE] = signature
    backends.setdefault("kv_fallback", MemoryBackend())
    backends.setdefault("kv_prefix", settings.key_prefix)
    vc = settings.verdict_cache
    if "verdict_cache" not in backends or not injected:
        kv = backends["kv"]
        remote = kv if vc.redis and getattr(kv, "shared", False) else None
        backends["verdict_cache"] = (
            VerdictCache(max_entries=vc.max_entries, ttl_seconds=vc.ttl_seconds, remote=remote,
                         prefix=settings.key_prefix)
            if vc.enabled and (vc.max_entries > 0 or remote is not None)
            else None
        )
