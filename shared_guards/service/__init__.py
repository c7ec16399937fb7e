"""The guard service: the core over HTTP for sidecars, other gateways and LiteLLM's Generic
Guardrail API. ``slg serve`` runs :func:`create_app` on uvicorn; see docs/service.md."""

from shared_guards.service.app import build_engine, create_app
from shared_guards.service.settings import ServiceSettings, TokenSet

__all__ = ["ServiceSettings", "TokenSet", "build_engine", "create_app"]
