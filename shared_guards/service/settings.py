"""Settings of the guard service (`slg serve`): limits, timeouts, caller authentication."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from shared_guards.errors import ConfigError

TOKEN_ENV = "SLG_SERVICE_TOKEN"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenSet:
    """Accepted bearer tokens, kept as SHA-256 digests and compared in constant time.

    A token file may hold several tokens, one per line (rotation: add the new one, roll the
    callers, remove the old one); blank lines and ``#`` comments are ignored."""

    digests: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, *tokens: str) -> TokenSet:
        cleaned = [t.strip() for t in tokens if t and t.strip()]
        for t in cleaned:
            if len(t) < 16:
                raise ConfigError("service token: use at least 16 characters")
        return cls(tuple(_digest(t) for t in cleaned))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TokenSet:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
        tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not tokens:
            raise ConfigError(f"token file {path} holds no token")
        return cls.of(*tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        d = _digest(presented)
        ok = False
        for expected in self.digests:  # no early exit: the time does not depend on which matched
            ok |= hmac.compare_digest(d, expected)
        return ok


@dataclass(frozen=True)
class ServiceSettings:
    policy_path: str = "config/policy.yaml"
    profile: str = "full"
    tokens: TokenSet = field(default_factory=TokenSet)
    # True when callers are authenticated by TLS client certificates (uvicorn verifies them).
    mtls: bool = False
    # Explicit opt-out of caller authentication (local development only).
    allow_anonymous: bool = False
    max_body_bytes: int = 1024 * 1024
    # Reading the request body and answering each have this budget (seconds).
    timeout: float = 30.0
    context_ttl: float = 900.0  # a request context waits this long for its answer
    stream_ttl: float = 300.0  # an idle stream is closed after this long
    max_streams: int = 10_000
    # After an answer was checked, a LiteLLM call's context lingers this long for more rounds
    # of the same streamed answer, then it is finished.
    generic_linger: float = 30.0
    # Characters of a checked streamed answer LiteLLM must hold back (a placeholder or PII value
    # may be cut at the end of what arrived so far).
    stream_holdback: int = 128
    sweep_interval: float = 5.0
    # Build every department's pipeline at start-up (models load before the first request).
    warm_up: bool = True

    def __post_init__(self) -> None:
        if not (self.tokens.enabled or self.mtls or self.allow_anonymous):
            raise ConfigError(
                "the guard service needs caller authentication: a token (--token-file or "
                f"${TOKEN_ENV}), TLS client certificates (--tls-client-ca), or an explicit --no-auth"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes must be at least 1024")
        if self.timeout <= 0:
            raise ConfigError("timeout must be positive")
