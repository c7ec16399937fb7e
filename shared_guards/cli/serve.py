"""`slg serve`: the guard service (ASGI on uvicorn). See docs/service.md."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from typing import Any

from shared_guards.errors import ConfigError, PolicyError


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the guard service (HTTP API, LiteLLM Generic Guardrail API)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="listen port (default 8787)")
    p.add_argument("--policy", default=os.environ.get("SLG_POLICY", "config/policy.yaml"),
                   help="policy file (default $SLG_POLICY, else config/policy.yaml)")
    p.add_argument("--profile", choices=("full", "edge"), default="full",
                   help="edge: patterns, context validation, RBAC and PII patterns only (no torch, no spaCy)")
    auth = p.add_argument_group("caller authentication (one is required)")
    auth.add_argument("--token-file", help="file with the bearer token(s), one per line (else $SLG_SERVICE_TOKEN)")
    auth.add_argument("--token", help="bearer token (visible in the process list: prefer --token-file)")
    auth.add_argument("--tls-cert", help="server certificate (PEM): serve HTTPS")
    auth.add_argument("--tls-key", help="server private key (PEM)")
    auth.add_argument("--tls-client-ca", help="CA bundle (PEM): require client certificates signed by it")
    auth.add_argument("--no-auth", action="store_true", help="no caller authentication (local development only)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-body-bytes", type=int, default=1024 * 1024, help="larger bodies get 413 (default 1 MiB)")
    lim.add_argument("--timeout", type=float, default=30.0, help="seconds to read a body and to answer (default 30)")
    lim.add_argument("--context-ttl", type=float, default=900.0, help="seconds a context waits for its answer")
    lim.add_argument("--max-streams", type=int, default=10_000, help="streams open at once (default 10000)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace) -> Any:
    from shared_guards.service.settings import TOKEN_ENV, ServiceSettings, TokenSet

    if args.token_file:
        tokens = TokenSet.from_file(args.token_file)
    elif args.token:
        tokens = TokenSet.of(args.token)
    elif os.environ.get(TOKEN_ENV):
        tokens = TokenSet.of(os.environ[TOKEN_ENV])
    else:
        tokens = TokenSet()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    return ServiceSettings(policy_path=args.policy, profile=args.profile, tokens=tokens,
                           mtls=bool(args.tls_client_ca), allow_anonymous=args.no_auth,
                           max_body_bytes=args.max_body_bytes, timeout=args.timeout, context_ttl=args.context_ttl,
                           max_streams=args.max_streams)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shared_guards.service import create_app

    try:
        settings = settings_from_args(args)
        app = create_app(settings)
    except (PolicyError, ConfigError) as exc:
        print(f"slg serve: {exc}", file=sys.stderr)
        return 2
    ssl_options: dict[str, Any] = {}
    if args.tls_cert:
        ssl_options = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
        if args.tls_client_ca:
            ssl_options.update(ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_keep_alive=5, timeout_graceful_shutdown=10, **ssl_options)
    return 0
