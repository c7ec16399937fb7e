"""Use the guard core directly from any Python service (no gateway).

    python examples/direct_use.py [config/policy.yaml]

Checks a request for the demo's marketing department, forwards the (possibly sanitized) body,
and shows what a blocked request returns to a client.
"""

from __future__ import annotations

import asyncio
import json
import sys

from shared_guards import GuardEngine, Identity, apply_request, parse_chat_request


async def main(policy_path: str) -> int:
    engine = GuardEngine.shared(policy_path)
    body = {"model": "general", "messages": [{"role": "user", "content": "Draft a friendly product FAQ."}]}
    decision, ctx = await engine.check_request(parse_chat_request(body, Identity(team="marketing")))
    print("allowed:", decision.action.value, "guards:", [t.guard for t in decision.timings])
    forwarded = apply_request(body, decision.request) if decision.changed else body
    assert ctx is not None
    await engine.finish(ctx, ok=True)

    bad = {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}
    decision, _ = await engine.check_request(parse_chat_request(bad, Identity(team="marketing")))
    assert decision.violation is not None
    print("blocked:", decision.violation.http_status, json.dumps(decision.violation.to_openai()))
    return 0 if forwarded["model"] == "general" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "config/policy.yaml")))
