"""Property-based tests of the running guard service from its OpenAPI schema (schemathesis):
no 5xx, no hang, answers that match the published schema.

The schema is loaded from the same document the service serves (asserted below): schemathesis'
lazy fixture loader does not work with pytest 9 (``Function._nodeid``), the eager one does.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from shared_guards.service.openapi import openapi_document
from tests.fixtures_service import SESSION_TOKEN, ServiceProcess

# 413 (body over --max-body-bytes) and 408 are refusals too.
_REJECTIONS = [400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 428, 429]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": _REJECTIONS}}}
)
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@schema.auth()
class ServiceToken:
    """The service token as schemathesis auth, so its ``ignored_auth`` check can also probe
    requests without it and with a wrong one (both must be 401)."""

    def get(self, case: Any, ctx: Any) -> str:
        return SESSION_TOKEN

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def test_served_schema_is_the_generated_one(guard_service: ServiceProcess) -> None:
    served = guard_service.get("/openapi.json").json()
    assert served == openapi_document()
    assert served["openapi"].startswith("3.1")


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_service_api(case: Any, guard_service: ServiceProcess) -> None:
    case.call_and_validate(base_url=guard_service.url, timeout=15)
