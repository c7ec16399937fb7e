"""The README's curl examples, executed against the real demo proxy (ports rewritten to the
session's proxy and echo upstream), so the README cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- readme-examples", 1)[1].split("<!-- /readme-examples -->", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def run_block(block: str, proxy: Any, upstream: Any) -> list[Any]:
    upstream_root = upstream.base_url.removesuffix("/v1")
    script = block.replace("http://127.0.0.1:4000", proxy.url).replace("http://127.0.0.1:4001", upstream_root)
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    decoder = json.JSONDecoder()
    out, docs, i = res.stdout, [], 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(out, i)
        docs.append(doc)
    return docs


def test_readme_has_the_examples() -> None:
    assert len(readme_blocks()) == 4


@pytest.fixture(scope="module")
def blocks() -> list[str]:
    return readme_blocks()


def test_allowed_example(blocks: list[str], litellm_proxy: Any, echo_upstream: Any) -> None:
    (answer,) = run_block(blocks[0], litellm_proxy, echo_upstream)
    assert "Write a tagline for our bakery" in answer["choices"][0]["message"]["content"]


def test_forbidden_model_example(blocks: list[str], litellm_proxy: Any, echo_upstream: Any) -> None:
    (err,) = run_block(blocks[1], litellm_proxy, echo_upstream)
    # LiteLLM's proxy reports the HTTP status as the error code; the rule id is in the message.
    assert err["error"]["type"] == "permission_error" and err["error"]["code"] == "403"
    assert "rbac.model" in err["error"]["message"]


def test_injection_example(blocks: list[str], litellm_proxy: Any, echo_upstream: Any) -> None:
    (err,) = run_block(blocks[2], litellm_proxy, echo_upstream)
    assert err["error"]["type"] == "invalid_request_error"
    assert "injection" in err["error"]["message"]
    assert "Ignore all previous" not in err["error"]["message"]


def test_finance_desensitization_example(blocks: list[str], litellm_proxy: Any, echo_upstream: Any) -> None:
    answer, received = run_block(blocks[3], litellm_proxy, echo_upstream)
    content = answer["choices"][0]["message"]["content"]
    assert "John Smith" in content, "the pseudonymized name is restored in the answer"
    assert "078-05-1120" not in content, "the SSN was masked before the model saw it"
    seen_by_model = json.dumps(received[-1])
    assert "John Smith" not in seen_by_model and "078-05-1120" not in seen_by_model
    assert "1120" in seen_by_model or "<US_SSN" in seen_by_model or "***" in seen_by_model
