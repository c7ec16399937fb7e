"""HTTP plumbing of the guard service: caller authentication, bounded body reading, JSON and
schema validation, timeouts, and OpenAI-style errors. A client's input never becomes a 5xx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared_guards.errors import GuardError, GuardViolation, MalformedRequest
from shared_guards.openai_format import parse_json_body
from shared_guards.service.schemas import integral_floats
from shared_guards.service.settings import ServiceSettings

log = logging.getLogger("shared_guards.service")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, M, dict[str, Any]], Awaitable[Response]]


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, message, code=code, type_=type_, param=param, headers=headers)


def error_response(status: int, message: str, *, code: str, type_: str = "invalid_request_error",
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def violation_response(v: GuardViolation) -> JSONResponse:
    return JSONResponse(v.to_openai(), status_code=v.http_status, headers=dict(v.headers) or None)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("slg_service_requests_total", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.decisions = Counter("slg_service_decisions_total", "Decisions by endpoint and action",
                                 ["endpoint", "action"], registry=self.registry)
        self.latency = Histogram("slg_service_request_seconds", "Time to answer, by endpoint", ["endpoint"],
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                 registry=self.registry)
        self.contexts = Gauge("slg_service_open_contexts", "Request contexts kept for an answer",
                              registry=self.registry)
        self.streams = Gauge("slg_service_open_streams", "Streamed answers in progress", registry=self.registry)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "literal"})


def _union_tag(part: int | str) -> bool:
    """pydantic puts the tried union member into an error's location ("str", "list[...]",
    "ContentPartIn"); our field names are lower snake_case."""
    return isinstance(part, str) and (part in _TYPE_TAGS or part[:1].isupper() or any(c in part for c in "[-"))


def _presented_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


class Api:
    """Wraps a handler: authenticate, read and validate the body, run with a timeout, map errors."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def authenticate(self, request: Request) -> None:
        tokens = self.settings.tokens
        if not tokens.enabled:
            return  # mTLS (verified by the TLS layer) or explicitly anonymous
        if not tokens.check(_presented_token(request)):
            raise HttpError(401, "Missing or invalid service token (Authorization: Bearer ... or x-api-key).",
                            code="invalid_service_token", type_="authentication_error",
                            headers={"WWW-Authenticate": "Bearer"})

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        too_large = HttpError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise too_large
            except ValueError:
                raise HttpError(400, "Invalid Content-Length header.", code="invalid_request") from None
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, "The request body did not arrive in time.", code="request_timeout") from None
        return b"".join(chunks)

    async def parse(self, request: Request, model: type[M], optional: bool) -> tuple[M, dict[str, Any]]:
        raw = await self.read_body(request)
        data: dict[str, Any] = {} if optional and not raw.strip() else parse_json_body(raw, self.settings.max_body_bytes)
        try:
            return model.model_validate(integral_floats(data)), data
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"] if not _union_tag(p)) or "body"
            raise MalformedRequest(f"Invalid request: {loc}: {err['msg']}.", rule_id="request.schema",
                                   param=loc) from None

    def endpoint(self, name: str, model: type[M], handler: Handler[M], *, optional_body: bool = False
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                self.authenticate(request)
                obj, data = await self.parse(request, model, optional_body)
                async with asyncio.timeout(self.settings.timeout):
                    response = await handler(request, obj, data)
            except HttpError as e:
                response = e.response
            except GuardViolation as v:
                response = violation_response(v)
            except GuardError as exc:  # a guard could not be built or reached: not the caller's fault
                log.error("%s: guard unavailable: %s", name, exc)
                response = error_response(503, "The guard is unavailable (configuration or backend error).",
                                          code="guard_unavailable", type_="service_unavailable_error")
            except TimeoutError:
                response = error_response(503, "The check did not finish in time.", code="guard_timeout",
                                          type_="service_unavailable_error")
            except Exception as exc:  # a bug: log its type only (the text may hold the prompt)
                log.error("%s failed: %s", name, type(exc).__name__)
                response = error_response(500, "Internal error of the guard service.", code="internal_error",
                                          type_="server_error")
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
            return response

        return run
