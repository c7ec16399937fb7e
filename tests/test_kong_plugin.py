"""The Kong plugin, driven through the REAL kong-pdk plugin server by tests/kong_harness.py."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.kong_harness import PLUGIN_NAME, REPO, KongHarness, KongHarnessTimeout, PhaseResult, echo_completion
from tests.kong_test_guards import SECRET_TEXT

PROMPT = "Write a tagline for our spring sale."
OK: dict[str, Any] = {"model": "general", "messages": [{"role": "user", "content": PROMPT}]}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
FILE = {"type": "file", "file": {"file_id": "file-123"}}


def chat(model: str = "general", content: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def assert_openai_error(r: PhaseResult, status: int, rule: str | None) -> dict[str, Any]:
    assert r.exit_status == status, (r.exit_status, r.exit_body)
    body = r.exit_body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code", "param"}, body
    if rule:
        assert rule in body["error"]["message"], body
    assert r.exit_headers.get("Content-Type") == "application/json"
    error: dict[str, Any] = body["error"]
    return error


# -- plugin info (Kong's query_cmd) ------------------------------------------------------------------


def test_dump_is_the_plugin_info_kong_reads() -> None:
    out = subprocess.run([KongHarness.python(), str(REPO / "kong_plugins" / "secure_llm_guard.py"), "--dump"],
                         capture_output=True, timeout=60, check=True, cwd=str(REPO))
    info = json.loads(out.stdout)
    assert isinstance(info, list) and len(info) == 1  # Kong 3.9+ registers only the first entry
    plugin = info[0]
    assert plugin["Name"] == PLUGIN_NAME
    assert plugin["Priority"] > 777 > 770  # before every AI plugin (ai-request-transformer 777, ai-proxy 770)
    assert plugin["Priority"] < 1030  # after every bundled auth plugin (hmac-auth 1030 is the lowest)
    assert {"access", "response", "log"} <= set(plugin["Phases"])
    fields = plugin["Schema"]["fields"][0]["config"]["fields"]
    by_name = {k: v for f in fields for k, v in f.items()}
    assert by_name["policy_path"] == {"type": "string", "required": True}
    assert plugin["Schema"]["name"] == PLUGIN_NAME


# -- access phase: the decision table ----------------------------------------------------------------

ACCESS_CASES = [
    # id, consumer, body, expected status (None = proxied), rule id in the message
    ("marketing-general", "marketing", OK, None, None),
    ("rnd-coder", "rnd", chat("coder"), None, None),
    ("finance-general", "finance", chat(max_tokens=4096), None, None),
    ("marketing-coder", "marketing", chat("coder"), 403, "rbac.model"),
    ("finance-unknown-model", "finance", chat("gpt-4o"), 403, "rbac.model"),
    ("marketing-image", "marketing", chat(content=[{"type": "text", "text": "describe"}, IMAGE]), 403,
     "rbac.feature.images"),
    ("marketing-file", "marketing", chat(content=[{"type": "text", "text": "summarize"}, FILE]), 403,
     "rbac.feature.files"),
    ("finance-image-allowed", "finance", chat(content=[{"type": "text", "text": "describe"}, IMAGE]), None, None),
    ("finance-max-tokens", "finance", chat(max_tokens=5000), 403, "rbac.max_tokens"),
    ("no-consumer", None, OK, 401, "identity.missing"),
    ("unknown-consumer", "mallory", OK, 401, None),
    ("consumer-without-names", {"id": "c1", "username": None, "custom_id": None}, OK, 401, "identity.missing"),
    ("malformed-json", "finance", '{"model": "general", "messages": [', 400, None),
    ("json-array", "finance", "[1, 2]", 400, None),
    ("empty-body", "finance", "", 400, None),
    ("missing-messages", "finance", {"model": "general"}, 400, None),
    ("bad-role", "finance", {"model": "general", "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ("huge-body", "finance", chat(content="a" * (5 * 1024 * 1024)), 400, "request.too_large"),
    ("body-not-readable", "finance", None, 400, "request.too_large"),
]


@pytest.mark.parametrize(("consumer", "body", "status", "rule"), [c[1:] for c in ACCESS_CASES],
                         ids=[c[0] for c in ACCESS_CASES])
def test_access_decisions(kong_harness: KongHarness, consumer: Any, body: Any, status: int | None,
                          rule: str | None) -> None:
    r = kong_harness.access(body, consumer)
    assert r.unknown_calls == []
    if status is None:
        assert not r.exited, r.exit_body
        assert r.forwarded_body == body  # nothing to sanitize: forwarded unchanged
        assert not r.body_rewritten
        assert re.fullmatch(r"[0-9a-f]{32}", r.request_key or "")  # only an opaque key in kong.ctx.shared
        kong_harness.log(r)  # Kong always runs the log phase: releases the kept context
    else:
        assert_openai_error(r, status, rule)
        assert r.forwarded_body is None
        assert r.fake.ctx_shared == {}


def test_blocked_error_never_echoes_the_prompt(kong_harness: KongHarness) -> None:
    secret = "my card 4111 1111 1111 1111 and ssn 123-45-6789"
    r = kong_harness.access(chat("coder", secret), "marketing")
    err = assert_openai_error(r, 403, "rbac.model")
    assert "4111" not in json.dumps(err) and "123-45" not in json.dumps(err)


def test_consumer_by_custom_id(kong_harness: KongHarness) -> None:
    entity = {"id": "c-9", "username": None, "custom_id": "marketing", "created_at": 1}
    assert not kong_harness.access(OK, entity).exited
    assert_openai_error(kong_harness.access(chat("coder"), entity), 403, "rbac.model")


def test_few_pdk_calls_per_request(kong_harness: KongHarness) -> None:
    """Every PDK call is a socket round trip inside Kong: the body is read exactly once."""
    r = kong_harness.access(OK, "marketing")
    assert r.methods.count("kong.request.get_raw_body") == 1
    assert len(r.methods) <= 5, r.methods
    assert "kong.client.get_consumer_groups" not in r.methods  # the demo policy matches no groups
    blocked = kong_harness.access(OK, None)
    assert "kong.request.get_raw_body" not in blocked.methods  # refused before reading the body


def test_audit_records_identify_kong_without_prompt_text(kong_harness: KongHarness) -> None:
    marker = "zebra-quartz-audit-marker"
    kong_harness.access(chat("audit-probe-model", marker), "marketing")
    rec = kong_harness.wait_for_audit(lambda r: r.get("model") == "audit-probe-model")
    assert rec["gateway"] == "kong"
    assert rec["violation"]["rule_id"] == "rbac.model"
    assert rec["identity"]["consumer"] == "marketing"
    assert marker not in kong_harness.audit_path.read_text()


# -- response phase ----------------------------------------------------------------------------------


def test_response_phase_passes_the_answer_through(kong_harness: KongHarness) -> None:
    acc = kong_harness.access(OK, "marketing")
    resp = kong_harness.response(acc)
    assert not resp.exited, resp.exit_body
    assert resp.final_status == 200
    assert resp.final_body["choices"][0]["message"]["content"] == PROMPT
    assert resp.methods[:1] == ["kong.ctx.shared.get"]
    assert "kong.service.response.get_raw_body" in resp.methods
    # the context was released: a replay of the response phase finds no state and withholds the answer
    again = kong_harness.response(acc)
    assert_openai_error(again, 503, "guard.state_lost")


def test_response_upstream_error_passes_untouched(kong_harness: KongHarness) -> None:
    acc = kong_harness.access(OK, "finance")
    resp = kong_harness.response(acc, status=500, body={"error": {"message": "upstream down"}})
    assert not resp.exited
    assert "kong.service.response.get_raw_body" not in resp.methods


def sse(*deltas: str, usage: bool = True) -> str:
    chunks = [{"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "general",
               "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    chunks.append({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "general",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append({"id": "chatcmpl-s", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def sse_text(raw: Any) -> str:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out = ""
    for line in text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices", []):
                out += c["delta"].get("content") or ""
    return out


def test_streamed_answer_is_checked_and_passed_through(kong_harness: KongHarness) -> None:
    acc = kong_harness.access(chat(stream=True), "finance")
    resp = kong_harness.response(acc, body=sse("Hel", "lo"), headers={"Content-Type": "text/event-stream"})
    assert not resp.exited  # unchanged: Kong sends the upstream's stream as it was
    kong_harness.wait_for_audit(lambda r: r.get("stage") == "response" and r.get("gateway") == "kong")


@pytest.mark.parametrize("body", ["<html>upstream proxy error page</html>", "data: not-json\n\n", "[1, 2]"])
def test_answer_that_is_no_chat_completion_is_withheld(kong_harness: KongHarness, body: str) -> None:
    acc = kong_harness.access(OK, "finance")
    resp = kong_harness.response(acc, body=body, headers={"Content-Type": "text/html"})
    err = assert_openai_error(resp, 502, "guard.unchecked_response")
    assert err["code"] == "unchecked_response"


def test_gzip_answer_is_read(kong_harness: KongHarness) -> None:
    import gzip

    acc = kong_harness.access(OK, "finance")
    assert acc.fake.service_request_headers.get("Accept-Encoding") == "identity"
    resp = kong_harness.response(acc, body=gzip.compress(json.dumps(echo_completion(OK)).encode()))
    assert not resp.exited  # decompressed, parsed, checked, passed through


def test_log_phase_releases_a_request_whose_response_never_ran(kong_harness: KongHarness) -> None:
    acc = kong_harness.access(OK, "marketing")  # e.g. a lower-priority plugin answered instead of the upstream
    kong_harness.log(acc)
    assert_openai_error(kong_harness.response(acc), 503, "guard.state_lost")


# -- the edge catches everything ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kong.ctx.shared.set", "kong.client.get_consumer",
                                    "kong.service.request.set_header"])
def test_pdk_failure_gives_clean_500_and_server_keeps_serving(kong_harness: KongHarness, method: str) -> None:
    r = kong_harness.access(OK, "marketing", pdk_errors={method: "simulated Kong failure"})
    err = assert_openai_error(r, 500, "guard.internal")
    assert "simulated" not in err["message"]
    assert not kong_harness.access(OK, "marketing").exited


def test_response_pdk_failure_gives_clean_500(kong_harness: KongHarness) -> None:
    acc = kong_harness.access(OK, "marketing")
    resp = kong_harness.response(acc, pdk_errors={"kong.service.response.get_raw_body": "boom"})
    assert_openai_error(resp, 500, "guard.internal")


def test_python_style_pdk_errors(test_policy: Path) -> None:
    """Under ``--no-lua-style`` PDK errors are raised as PDKException: handled the same way."""
    h = KongHarness(test_policy, lua_style=False).start()
    try:
        assert not h.access(OK, "marketing").exited
        assert_openai_error(h.access(chat("coder"), "marketing"), 403, "rbac.model")
        assert_openai_error(h.access(None, "marketing"), 400, "request.too_large")
        assert_openai_error(h.access(OK, "marketing", pdk_errors={"kong.ctx.shared.set": "x"}), 500, "guard.internal")
        acc = h.access(OK, "marketing")
        assert not h.response(acc).exited
    finally:
        h.stop()


def test_a_raising_handler_would_hang_kong_and_the_harness_says_so(tmp_path: Path) -> None:
    """Why every handler catches everything: a raise leaves Kong waiting forever."""
    plugin = tmp_path / "raising_plugin.py"
    plugin.write_text(textwrap.dedent('''
        class Plugin:
            def __init__(self, config):
                pass

            def access(self, kong):
                kong.request.get_raw_body()
                raise RuntimeError("unhandled")

        if __name__ == "__main__":
            from kong_pdk.cli import start_dedicated_server
            start_dedicated_server("secure-llm-guard", Plugin, "0", 1, [])
    '''))
    h = KongHarness(plugin_file=plugin, timeout=2.0).start()
    try:
        with pytest.raises(KongHarnessTimeout, match="would hang"):
            h.access(OK, "marketing")
    finally:
        h.stop()


# -- custom policies: guards that raise, modify; groups; instances -----------------------------------

TEST_POLICY = """
version: "kong-tests"
defaults: {unknown_identity: deny, mode: enforce, on_error: fail_closed}
departments:
  marketing:
    match: {consumers: [marketing]}
    models: [general]
    deny_features: [images, files]
  closed:
    match: {consumers: [closed]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:RaisingGuard", id: boom, on_error: fail_closed}]
  open:
    match: {consumers: [open]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:RaisingGuard", id: boom, on_error: fail_open}]
  late:
    match: {consumers: [late]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:RaisingGuard", id: boom, options: {stage: response}}]
  swap:
    match: {consumers: [swap]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:SwapWordGuard", id: swap}]
  engineers:
    match: {consumer_groups: [engineering]}
    models: ["code-*"]
  slow:
    match: {consumers: [slow]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:SleepGuard", id: slow, timeout_ms: 60000, options: {seconds: 1.5}}]
  probe:
    match: {consumers: [probe]}
    models: [general]
    guards: [{name: "tests.kong_test_guards:CompletionProbeGuard", id: probe, options: {path: "PROBE_FILE"}}]
"""


@pytest.fixture(scope="module")
def test_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("kong-policy") / "policy.yaml"
    p.write_text(TEST_POLICY.replace("PROBE_FILE", str(p.with_name("completed.txt"))))
    return p


def completed(policy: Path, probe: str) -> list[str]:
    """The ``ok`` flags the probe guard recorded for one request (one entry per finish)."""
    try:
        lines = policy.with_name("completed.txt").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.split()[0] == probe]


@pytest.fixture(scope="module")
def custom(kong_harness_factory: Any, test_policy: Path) -> KongHarness:
    h: KongHarness = kong_harness_factory(test_policy)
    return h


def test_guard_raising_fail_closed_gives_clean_503(custom: KongHarness) -> None:
    r = custom.access(OK, "closed")
    err = assert_openai_error(r, 503, "boom")
    assert SECRET_TEXT not in json.dumps(r.exit_body)
    assert err["type"] == "service_unavailable_error" and err["code"] == "guard_unavailable"
    custom.wait_for_audit(lambda rec: rec.get("violation", {}).get("rule_id") == "boom.error")
    assert SECRET_TEXT not in custom.log_text()


def test_guard_raising_fail_open_lets_the_request_through(custom: KongHarness) -> None:
    r = custom.access(OK, "open")
    assert not r.exited
    assert r.forwarded_body == OK


def test_guard_raising_in_response_withholds_the_answer(custom: KongHarness) -> None:
    acc = custom.access(OK, "late")
    assert not acc.exited
    resp = custom.response(acc)
    assert_openai_error(resp, 503, "boom")
    assert SECRET_TEXT not in json.dumps(resp.exit_body)


def test_sanitized_request_is_forwarded_and_answer_restored(custom: KongHarness) -> None:
    body = chat(content="tell me about alpha and alpha again")
    acc = custom.access(body, "swap")
    assert not acc.exited and acc.body_rewritten
    fwd = acc.forwarded_body
    assert fwd["messages"][0]["content"] == "tell me about <WORD_1> and <WORD_1> again"
    assert "alpha" not in (acc.forwarded_raw or b"").decode()
    assert acc.request_key and "alpha" not in json.dumps(acc.fake.ctx_shared)  # the vault stays in-process
    resp = custom.response(acc)  # the echo upstream answers with the placeholders
    assert resp.exit_status == 200
    assert resp.exit_body["choices"][0]["message"]["content"] == "tell me about alpha and alpha again"
    assert resp.exit_body["usage"]["total_tokens"] == 10  # the rest of the answer is kept


def test_streamed_answer_is_restored_as_a_stream(custom: KongHarness) -> None:
    acc = custom.access(chat(content="alpha", stream=True), "swap")
    assert acc.forwarded_body["messages"][0]["content"] == "<WORD_1>"
    resp = custom.response(acc, body=sse("about <WO", "RD_1> today"), headers={"Content-Type": "text/event-stream"})
    assert resp.exit_status == 200
    assert resp.exit_headers["Content-Type"] == "text/event-stream"
    assert sse_text(resp.exit_raw) == "about alpha today"  # the placeholder split across chunks is restored
    assert resp.exit_raw.rstrip().endswith("data: [DONE]")
    assert '"usage"' in resp.exit_raw


def test_streamed_answer_refused_by_a_failing_guard(custom: KongHarness) -> None:
    acc = custom.access(chat(stream=True), "late")
    resp = custom.response(acc, body=sse("hi"), headers={"Content-Type": "text/event-stream"})
    assert_openai_error(resp, 503, "boom")


def test_consumer_group_identity(custom: KongHarness) -> None:
    r = custom.access(chat("code-large"), "dana", groups=["engineering"])
    assert not r.exited and "kong.client.get_consumer_groups" in r.methods
    assert_openai_error(custom.access(chat("general"), "dana", groups=["engineering"]), 403, "rbac.model")
    assert_openai_error(custom.access(chat("code-large"), "dana", groups=["sales"]), 401, None)
    # Lua sends an empty group list as an empty map
    assert_openai_error(custom.access(chat("code-large"), "dana", groups={}), 401, None)


def test_instances_per_config_share_one_engine(custom: KongHarness, test_policy: Path) -> None:
    other = test_policy.with_name("other.yaml")
    other.write_text("departments:\n  finance:\n    match: {consumers: [finance]}\n    models: [general]\n")
    a = custom.start_instance({"policy_path": str(test_policy)})
    b = custom.start_instance({"policy_path": str(test_policy), "timeout_seconds": 10})
    c = custom.start_instance({"policy_path": str(other)})
    assert len({a, b, c}) == 3
    # each instance decides by its own policy: 'finance' exists only in the other policy
    assert_openai_error(custom.access(OK, "finance"), 401, None)
    assert not custom.access(OK, "finance", config={"policy_path": str(other)}).exited
    # a context kept by instance a is found by instance b: one engine per policy per process
    from tests.kong_harness import FakeKongRequest

    acc = custom.handle_event(a, "access", FakeKongRequest(raw_body=json.dumps(chat(content="alpha")).encode(),
                                                           consumer={"username": "swap"}))
    assert acc.body_rewritten
    acc2 = PhaseResult("access", acc.fake, 0.0, b)
    resp = custom.response(acc2)
    assert resp.exit_body["choices"][0]["message"]["content"] == "alpha"
    custom.close_instance(c)
    with pytest.raises(AssertionError, match="no plugin instance"):  # Kong restarts the instance on this
        custom.handle_event(c, "access", FakeKongRequest(raw_body=b"{}", consumer={"username": "x"}))


def test_missing_policy_gives_clean_503(custom: KongHarness, tmp_path: Path) -> None:
    r = custom.access(OK, "marketing", config={"policy_path": str(tmp_path / "nope.yaml")})
    err = assert_openai_error(r, 503, "guard.config")
    assert "nope.yaml" not in err["message"]


def test_guard_responses_off_keeps_no_state(custom: KongHarness, test_policy: Path) -> None:
    cfg = {"policy_path": str(test_policy), "guard_responses": False}
    acc = custom.access(OK, "marketing", config=cfg)
    assert not acc.exited and acc.fake.ctx_shared == {}
    assert "kong.service.request.set_header" not in acc.methods
    resp = custom.response(acc)
    assert not resp.exited and resp.methods == ["kong.ctx.shared.get"]


# -- shipped configuration ---------------------------------------------------------------------------


def _kong_conf() -> dict[str, str]:
    out = {}
    for line in (REPO / "config" / "kong.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_kong_conf_matches_the_plugin_server() -> None:
    conf = _kong_conf()
    assert conf["plugins"].split(",") == ["bundled", PLUGIN_NAME]
    names = conf["pluginserver_names"].split(",")
    assert names == ["secure_llm_guard"]  # one server per Python plugin (Kong 3.9+)
    start = conf["pluginserver_secure_llm_guard_start_cmd"].split()
    query = conf["pluginserver_secure_llm_guard_query_cmd"].split()
    prefix = start[start.index("-p") + 1]
    # the socket Kong connects to is the one the dedicated server creates: <prefix>/<name>.sock
    assert conf["pluginserver_secure_llm_guard_socket"] == f"{prefix}/{PLUGIN_NAME}.sock"
    assert start[-3].endswith("kong_plugins/secure_llm_guard.py")
    assert query[-2:] == [start[-3], "--dump"]
    assert not {"-m", "--multiprocessing", "-g", "--gevent"} & set(start)  # contexts live in one process
    # the server preloads the policy the declarative config points the plugin at
    import yaml

    decl = yaml.safe_load((REPO / "config" / "kong.yml").read_text())
    cfg = next(p["config"] for p in decl["services"][0]["routes"][0]["plugins"] if p["name"] == PLUGIN_NAME)
    assert f"SLG_POLICY={cfg['policy_path']}" in start


def test_declarative_config_matches_schema_and_policy(kong_harness: KongHarness) -> None:
    import yaml

    decl = yaml.safe_load((REPO / "config" / "kong.yml").read_text())
    assert decl["_format_version"] == "3.0"
    route = decl["services"][0]["routes"][0]
    plugins = [p["name"] for p in route["plugins"]]
    assert plugins.index("key-auth") < plugins.index(PLUGIN_NAME)
    cfg = next(p["config"] for p in route["plugins"] if p["name"] == PLUGIN_NAME)
    fields = {k: v for f in kong_harness.dump()[0]["Schema"]["fields"][0]["config"]["fields"] for k, v in f.items()}
    assert set(cfg) <= set(fields)
    assert {k for k, v in fields.items() if v.get("required")} <= set(cfg)
    # every consumer is a department of the demo policy, and every department has a consumer
    departments = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())["departments"]
    consumers = {c["username"] for c in decl["consumers"]}
    assert consumers == {c for d in departments.values() for c in d.get("match", {}).get("consumers", [])}
    assert all(c["keyauth_credentials"] for c in decl["consumers"])
    # the shipped plugin config, pointed at the repo's policy, lets each consumer use `general`
    shipped = {**cfg, "policy_path": str(REPO / "config" / "policy.yaml")}
    for name in sorted(consumers):
        r = kong_harness.access(OK, name, config=shipped)
        assert not r.exited, (name, r.exit_body)
        kong_harness.log(r)


# -- docs/kong.md: its snippets are the shipped files, its example runs ------------------------------


def _blocks(lang: str) -> list[str]:
    text = (REPO / "docs" / "kong.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_docs_kong_conf_lines_are_the_shipped_ones() -> None:
    shipped = _kong_conf()
    (ini,) = _blocks("ini")
    for line in ini.strip().splitlines():
        k, _, v = line.partition("=")
        assert shipped.get(k.strip()) == v.strip(), line


def test_docs_plugin_yaml_is_the_shipped_one() -> None:
    import yaml

    decl = yaml.safe_load((REPO / "config" / "kong.yml").read_text())
    shipped = next(p for p in decl["services"][0]["routes"][0]["plugins"] if p["name"] == PLUGIN_NAME)
    (doc,) = [b for b in _blocks("yaml") if PLUGIN_NAME in b]
    assert yaml.safe_load(doc) == [shipped]


def test_docs_python_example_runs(kong_harness: KongHarness) -> None:
    (code,) = _blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/kong.md", "exec"), namespace)
    tests = [v for k, v in namespace.items() if k.startswith("test_")]
    assert tests
    for t in tests:
        t(kong_harness)


# -- concurrency and reload --------------------------------------------------------------------------


def test_concurrent_requests_keep_their_own_state(kong_harness: KongHarness) -> None:
    """Many requests at once (Kong's workers do that): each answer is restored from its own vault."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, str, Any, Any]:
        email = f"person{i}.x{i * 7}@example.org"
        if i % 3 == 2:  # a refused request in the mix
            r = kong_harness.access(chat("coder", f"mail {email}"), "finance")
            return i, email, r.exit_status, None
        acc = kong_harness.access(chat(content=f"Please write to {email} today."), "finance")
        assert not acc.exited, acc.exit_body
        assert email not in (acc.forwarded_raw or b"").decode()  # pseudonymized before the upstream
        resp = kong_harness.response(acc)
        return i, email, resp.final_status, resp.final_body["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    for i, email, status, answer in results:
        if i % 3 == 2:
            assert status == 403
        else:
            assert status == 200 and answer == f"Please write to {email} today.", (i, answer)


def test_policy_edit_is_picked_up_by_the_plugin_server(kong_harness_factory: Any, tmp_path: Path) -> None:
    import os
    import time

    policy = tmp_path / "reload.yaml"
    policy.write_text("departments:\n  ops:\n    match: {consumers: [ops]}\n    models: [general]\n")
    h = kong_harness_factory(policy)
    assert_openai_error(h.access(chat("coder"), "ops"), 403, "rbac.model")
    policy.write_text("departments:\n  ops:\n    match: {consumers: [ops]}\n    models: [general, coder]\n")
    os.utime(policy, (time.time() + 5, time.time() + 5))  # a distinct mtime even on coarse clocks
    deadline = time.monotonic() + 10
    while h.access(chat("coder"), "ops").exited:
        assert time.monotonic() < deadline, "the edited policy was not reloaded"
        time.sleep(0.3)
    # a broken edit keeps the last good policy
    policy.write_text("departments:\n  ops:\n    models: [general, coder]\n    colour: blue\n")
    os.utime(policy, (time.time() + 10, time.time() + 10))
    time.sleep(1.5)
    assert not h.access(chat("coder"), "ops").exited


def test_every_request_is_finished_exactly_once(custom: KongHarness, test_policy: Path) -> None:
    def body(probe: str, model: str = "general") -> dict[str, Any]:
        return {**chat(model), "metadata": {"probe": probe}}

    # proxied and answered: finished by the response phase, ok
    acc = custom.access(body("answered"), "probe")
    custom.log(custom.response(acc))
    # refused in access: finished by the engine
    assert custom.access(body("refused", "coder"), "probe").exit_status == 403
    # a later plugin answered instead of the upstream: finished by the log phase, not ok
    custom.log(custom.access(body("cut-short"), "probe"))
    # a PDK call failed after the decision: finished by access before its 500
    assert custom.access(body("pdk-failed"), "probe", pdk_errors={"kong.ctx.shared.set": "x"}).exit_status == 500
    # upstream error: finished by the response phase, not ok
    acc = custom.access(body("upstream-500"), "probe")
    custom.log(custom.response(acc, status=500, body={"error": {"message": "down"}}))
    assert completed(test_policy, "answered") == ["True"]
    assert completed(test_policy, "refused") == ["False"]
    assert completed(test_policy, "cut-short") == ["False"]
    assert completed(test_policy, "pdk-failed") == ["False"]
    assert completed(test_policy, "upstream-500") == ["False"]


def test_decision_slower_than_timeout_seconds_gives_clean_503(custom: KongHarness, test_policy: Path) -> None:
    import time

    cfg = {"policy_path": str(test_policy), "timeout_seconds": 0.3}
    t0 = time.monotonic()
    r = custom.access(OK, "slow", config=cfg)
    assert time.monotonic() - t0 < 1.4  # answered at the plugin's deadline, not the guard's
    err = assert_openai_error(r, 503, "guard.timeout")
    assert err["type"] == "service_unavailable_error"


def test_plugin_server_restart_between_phases_withholds_the_answer(test_policy: Path) -> None:
    """Kong respawns a dead plugin server; the request's state died with it."""
    h = KongHarness(test_policy).start()
    try:
        acc = h.access(chat(content="alpha"), "swap")
        assert acc.body_rewritten
        h.restart()
        resp = h.response(acc)  # Kong gets "no plugin instance", starts the instance again, retries
        assert_openai_error(resp, 503, "guard.state_lost")
        assert not h.access(OK, "marketing").exited  # and the new server serves
    finally:
        h.stop()
