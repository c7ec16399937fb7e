"""`slg quota status|reset`: inspect or reset one caller's (or a department's) shared quota in Redis.

    slg quota status config/policy.yaml --department rnd --user demo-rnd
    slg quota reset  config/policy.yaml --department rnd --user demo-rnd

The identity options mirror what the gateways know (LiteLLM: user / key alias; Kong: consumer).
Without Redis (no ``backends.redis_url`` and no ``REDIS_URL``) the counters live inside each
gateway process and cannot be reached from here.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared_guards.backends import MemoryBackend, Rule, build_backend
from shared_guards.backends.base import LimiterBackend
from shared_guards.errors import BackendUnavailable, ConfigError
from shared_guards.guard import RequestContext, Resources
from shared_guards.guards.quota import QuotaConfig, QuotaGuard, format_duration
from shared_guards.policy import LoadedPolicy, load_policy
from shared_guards.types import Identity


def register(sub: Any) -> None:
    p = sub.add_parser("quota", help="inspect or reset shared quotas (Redis)")
    qsub = p.add_subparsers(dest="quota_command", required=True)
    for name, helptext, fn in (("status", "remaining budget per limit", _status), ("reset", "delete the counters", _reset)):
        q = qsub.add_parser(name, help=helptext)
        q.add_argument("policy", help="policy file (config/policy.yaml)")
        q.add_argument("--department", required=True)
        q.add_argument("--user")
        q.add_argument("--key-alias")
        q.add_argument("--consumer", help="Kong consumer username or custom_id")
        q.add_argument("--tenant")
        q.add_argument("--scope", choices=("identity", "department", "all"), default="all")
        q.set_defaults(func=fn)


def _plan(args: argparse.Namespace) -> tuple[LimiterBackend, list[Rule], list[str]]:
    loaded: LoadedPolicy = load_policy(args.policy)
    policy = loaded.policy
    if args.department not in policy.departments:
        raise ConfigError(f"unknown department {args.department!r}; known: {', '.join(policy.departments)}")
    backend = build_backend(policy.backends)
    if not backend.shared:
        raise ConfigError("no Redis configured (backends.redis_url or REDIS_URL): quotas live in each gateway "
                          "process and reset when it restarts")
    resources = Resources(executor=ThreadPoolExecutor(1), backends={
        "kv": backend, "kv_fallback": MemoryBackend(), "kv_prefix": policy.backends.key_prefix})
    identity = Identity(user=args.user, key_alias=args.key_alias, consumer=args.consumer, tenant=args.tenant,
                        department=args.department)
    ctx = RequestContext("slg-quota", identity, args.department, policy.departments[args.department])
    rules: list[Rule] = []
    slot_keys: list[str] = []
    found = False
    for spec in policy.guards_for(args.department):
        if spec.name != "quota":
            continue
        found = True
        cfg = loaded.guard_config(args.department, spec.guard_id)
        assert isinstance(cfg, QuotaConfig)
        r, s = QuotaGuard(cfg, resources).plan(ctx, 0)
        rules += [x for x in r if args.scope == "all" or f".{args.scope}." in x.name]
        slot_keys += [x.key for x in s if args.scope == "all" or f".{args.scope}." in x.name]
    if not found:
        raise ConfigError(f"department {args.department!r} has no quota guard")
    return backend, rules, slot_keys


def _run(args: argparse.Namespace, reset: bool) -> int:
    try:
        backend, rules, slot_keys = _plan(args)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2

    async def go() -> int:
        try:
            if reset:
                await backend.delete([r.key for r in rules] + slot_keys)
                print(f"reset {len(rules)} limit(s) and {len(slot_keys)} concurrency set(s)")
                return 0
            res = await backend.check([Rule(r.key, r.limit, r.period_ms, 0, r.kind, r.name) for r in rules])
            print(f"{'rule':<42} {'limit':>14} {'remaining':>14}  full again in")
            for st in res.rules:
                print(f"{st.rule.name:<42} {st.rule.limit:>14} {st.remaining:>14}  {format_duration(st.reset_ms)}")
            return 0
        except BackendUnavailable as exc:
            print(f"error: {exc}")
            return 1
        finally:
            await backend.close()

    return asyncio.run(go())


def _status(args: argparse.Namespace) -> int:
    return _run(args, reset=False)


def _reset(args: argparse.Namespace) -> int:
    return _run(args, reset=True)
