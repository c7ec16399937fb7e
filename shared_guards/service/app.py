"""The guard service's ASGI application (Starlette). ``slg serve`` runs it on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared_guards.backends import ensure_backends
from shared_guards.engine import GuardEngine
from shared_guards.profiles import profile_transform
from shared_guards.service import schemas
from shared_guards.service.generic_guardrail import PATH as GENERIC_PATH
from shared_guards.service.generic_guardrail import GenericGuardrail
from shared_guards.service.guard_api import GuardApi
from shared_guards.service.http import Api, Metrics, error_response
from shared_guards.service.openapi import openapi_document
from shared_guards.service.sessions import Sessions
from shared_guards.service.settings import ServiceSettings
from shared_guards.service.state import ServiceState

log = logging.getLogger("shared_guards.service")


def build_engine(settings: ServiceSettings) -> GuardEngine:
    return GuardEngine(settings.policy_path, policy_transform=profile_transform(settings.profile))


async def _ping(backend: Any) -> None:
    ping = getattr(backend, "ping", None)
    if ping is None:
        return
    result = ping()
    if asyncio.iscoroutine(result):
        result = await result
    if result is False:
        raise ConnectionError("ping failed")


def create_app(settings: ServiceSettings, engine: GuardEngine | None = None) -> Starlette:
    engine = engine or build_engine(settings)
    metrics = Metrics()
    sessions = Sessions(engine, ttl=settings.context_ttl, stream_ttl=settings.stream_ttl,
                        max_streams=settings.max_streams)
    state = ServiceState(engine, settings, sessions, metrics)
    api = Api(settings, metrics)
    guard = GuardApi(state)
    generic = GenericGuardrail(state)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "profile": settings.profile})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        version = None
        try:
            loaded = engine.loaded
            version = loaded.version
            checks["policy"] = "ok" if engine.store.last_error is None else "stale: last reload failed"
        except Exception as exc:
            checks["policy"] = f"error: {type(exc).__name__}"
        for department, error in warm_errors.items():
            try:
                engine.pipeline(department)  # built since (e.g. a fixed policy or artifact)?
                checks[f"pipeline:{department}"] = "ok"
            except Exception:
                checks[f"pipeline:{department}"] = f"error: {error}"
        try:  # the backends the guards use (Redis when REDIS_URL or the policy names one)
            ensure_backends(engine.resources.backends, engine.loaded.policy.backends)
        except Exception as exc:
            checks["backends"] = f"error: {type(exc).__name__}"
        for name, backend in list(engine.resources.backends.items()):
            if not callable(getattr(backend, "ping", None)):
                continue
            try:
                await asyncio.wait_for(_ping(backend), 1.0)
                checks[f"backend:{name}"] = "ok"
            except Exception as exc:
                checks[f"backend:{name}"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" or v.startswith("stale") for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "profile": settings.profile,
                "policy_version": version, "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.contexts.set(len(sessions))
        metrics.streams.set(sessions.open_streams)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code=code,
                              headers=dict(exc.headers) if exc.headers else None)

    warm_errors: dict[str, str] = {}

    def warm_up() -> None:
        """Build every department's pipeline (models, rule packs) before traffic arrives; a
        department whose guards cannot be built makes /readyz fail, naming it."""
        warm_errors.update(engine.warm_up())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.warm_up:
            warm_up()  # in the loop's thread: no traffic is accepted before start-up completes
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(settings.sweep_interval)
                try:
                    await sessions.sweep()
                    metrics.contexts.set(len(sessions))
                    metrics.streams.set(sessions.open_streams)
                except Exception as exc:
                    log.error("sweep failed: %s", type(exc).__name__)

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sessions.close_all()

    routes = [
        Route("/v1/guard/request", api.endpoint("request", schemas.GuardRequestIn, guard.request), methods=["POST"]),
        Route("/v1/guard/response", api.endpoint("response", schemas.GuardResponseIn, guard.response),
              methods=["POST"]),
        Route("/v1/guard/stream/{context_id}/chunk", api.endpoint("stream_chunk", schemas.ChunkIn, guard.chunk),
              methods=["POST"]),
        Route("/v1/guard/stream/{context_id}/end",
              api.endpoint("stream_end", schemas.StreamEndIn, guard.end, optional_body=True), methods=["POST"]),
        Route(GENERIC_PATH, api.endpoint("litellm_generic", schemas.GenericGuardrailRequestIn, generic.handle),
              methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.service = state
    return app
