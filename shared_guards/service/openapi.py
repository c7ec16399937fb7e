"""The OpenAPI 3.1 document of the guard service, generated from :mod:`.schemas`."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared_guards.service import schemas as s

_INPUTS: tuple[type[BaseModel], ...] = (
    s.GuardRequestIn, s.GuardResponseIn, s.ChunkIn, s.StreamEndIn, s.GenericGuardrailRequestIn,
)
_OUTPUTS: tuple[type[BaseModel], ...] = (
    s.RequestDecisionOut, s.ResponseDecisionOut, s.ChunkOut, s.StreamEndOut, s.GenericGuardrailResponseOut,
    s.OpenAIErrorBody, s.HealthOut, s.ReadyOut,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON or a body that does not match the schema.",
        401: "The caller is not authenticated (service token).",
        404: "Unknown or expired context id.",
        408: "The request body did not arrive in time.",
        413: "The request body is larger than --max-body-bytes.",
        429: "Too many open streams.",
        503: "The check did not finish within --timeout.",
    }
    return {str(c): _json(s.OpenAIErrorBody, text[c]) for c in codes}


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


_SECURED: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_ID_PARAM = {
    "name": "context_id", "in": "path", "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
_IDENTITY_HEADERS = [
    {"name": f"X-SLG-{h}", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 256},
     "description": d}
    for h, d in (
        ("User", "End user id."), ("Team", "Team id or alias."), ("Key-Alias", "API key alias."),
        ("Consumer", "Kong consumer."), ("Groups", "Comma-separated consumer/IdP groups."),
        ("Department", "Department, when the gateway resolved it."), ("Tenant", "Tenant."),
    )
]


def _op(summary: str, body: dict[str, Any] | None, ok: dict[str, Any], errors: tuple[int, ...],
        params: list[dict[str, Any]] | None = None, secured: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if secured:
        op["security"] = _SECURED
    return op


@cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in _INPUTS] + [(m, "serialization") for m in _OUTPUTS],
        ref_template="#/components/schemas/{model}",
    )
    common = (400, 401, 408, 413, 503)
    paths: dict[str, Any] = {
        "/v1/guard/request": {"post": _op(
            "Check a chat request; returns the decision, the sanitized body and a context id.",
            _body(s.GuardRequestIn), _json(s.RequestDecisionOut, "The decision (a block is a decision too)."),
            common, params=_IDENTITY_HEADERS)},
        "/v1/guard/response": {"post": _op(
            "Check a complete answer; restores pseudonymized values.",
            _body(s.GuardResponseIn), _json(s.ResponseDecisionOut, "The decision."), (*common, 404))},
        "/v1/guard/stream/{context_id}/chunk": {"post": _op(
            "Feed one text delta of a streamed answer; returns the text to emit now.",
            _body(s.ChunkIn), _json(s.ChunkOut, "Text to emit."), (*common, 404, 429), params=[_ID_PARAM])},
        "/v1/guard/stream/{context_id}/end": {"post": _op(
            "End a streamed answer; returns the held-back text and releases the context.",
            _body(s.StreamEndIn, required=False), _json(s.StreamEndOut, "Flushed text."), (*common, 404),
            params=[_ID_PARAM])},
        "/beta/litellm_basic_guardrail_api": {"post": _op(
            "LiteLLM Generic Guardrail API (guardrail: generic_guardrail_api, api_base: this service).",
            _body(s.GenericGuardrailRequestIn),
            _json(s.GenericGuardrailResponseOut, "BLOCKED, NONE or GUARDRAIL_INTERVENED with rewritten texts."),
            common)},
        "/healthz": {"get": _op("Liveness.", None, _json(s.HealthOut, "Alive."), (), secured=False)},
        "/readyz": {"get": {
            "summary": "Readiness: policy loaded, backends reachable.",
            "responses": {"200": _json(s.ReadyOut, "Ready."), "503": _json(s.ReadyOut, "Not ready.")},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics.",
            "responses": {"200": {"description": "Prometheus text format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "secure-llm-gateway guard service",
            "version": "1",
            "description": "The guard core over HTTP (`slg serve`). See docs/service.md.",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "The service token (--token-file / $SLG_SERVICE_TOKEN). The same "
                                              "token is accepted in an x-api-key header (LiteLLM's api_key)."},
            },
        },
    }
