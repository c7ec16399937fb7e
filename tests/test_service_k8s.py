"""The Kubernetes examples deploy what the tests run: ConfigMaps equal the repository's config
files, every command line parses with the real CLI, env and paths line up, and the guard
sidecar's exact arguments start a working service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared_guards.cli import build_parser
from tests.fixtures_litellm import OFFLINE_ENV, REPO, free_port
from tests.fixtures_service import SESSION_TOKEN, slg_executable

K8S = REPO / "examples" / "k8s"
PLUGIN = REPO / "kong_plugins" / "secure_llm_guard.py"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for p in K8S.glob("*/deployment.yaml") for d in _docs(p)}


def _configmap(name: str) -> dict[str, str]:
    for p in K8S.glob("*/configmap.yaml"):
        for d in _docs(p):
            if d["metadata"]["name"] == name:
                return d["data"]  # type: ignore[no-any-return]
    raise KeyError(name)


def _containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = dep["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def _mounted_file(dep: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The content a container sees at ``path`` (from a ConfigMap volume)."""
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    for m in container.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if "configMap" not in vol:
            continue
        data = _configmap(vol["configMap"]["name"])
        if m.get("subPath") and m["mountPath"] == path:
            return data[m["subPath"]]
        if not m.get("subPath") and path.startswith(m["mountPath"].rstrip("/") + "/"):
            return data[path[len(m["mountPath"].rstrip("/")) + 1:]]
    raise AssertionError(f"{container['name']}: nothing mounted at {path}")


def _is_secret_mount(dep: dict[str, Any], container: dict[str, Any], path: str) -> bool:
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    return any("secret" in volumes[m["name"]] and path.startswith(m["mountPath"] + "/")
               for m in container.get("volumeMounts", []))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _serve_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = [(dep, c) for dep in _deployments().values() for c in _containers(dep).values()
           if c.get("command", [])[:2] == ["slg", "serve"]]
    assert len(out) == 2
    return out


def test_configmaps_are_rendered_from_the_repository_files() -> None:
    proc = subprocess.run([sys.executable, str(K8S / "render.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _configmap("slg-litellm-config")["litellm.yaml"] == (REPO / "config" / "litellm.yaml").read_text()
    assert _configmap("slg-litellm-generic-config")["litellm.yaml"] == (
        REPO / "config" / "litellm_generic_guardrail.yaml").read_text()


def test_slg_serve_commands_parse_with_the_real_cli() -> None:
    for dep, c in _serve_containers():
        args = build_parser().parse_args(c["command"][1:])  # exits (fails the test) on an unknown flag
        assert args.func.__module__ == "shared_guards.cli.serve"
        assert args.token_file and _is_secret_mount(dep, c, args.token_file)
        yaml.safe_load(_mounted_file(dep, c, args.policy))  # the policy is mounted there
        for probe in ("readinessProbe", "startupProbe"):
            http = c[probe]["httpGet"]
            assert http["path"] in ("/healthz", "/readyz")
            assert http["port"] in (args.port, "guard")


@pytest.mark.parametrize("deployment", ["litellm", "litellm-generic"])
def test_litellm_containers_have_every_env_their_config_reads(deployment: str) -> None:
    dep = _deployments()[deployment]
    c = _containers(dep)["litellm"]
    assert c["command"][:2] == ["litellm", "--config"]
    config = _mounted_file(dep, c, c["command"][2])
    needed = set(re.findall(r"os\.environ/([A-Z0-9_]+)", json.dumps(yaml.safe_load(config))))  # values, not comments
    assert needed and needed <= set(_env(c)), needed - set(_env(c))
    assert "SLG_POLICY" in _env(c)  # custom_auth reads the policy
    yaml.safe_load(_mounted_file(dep, c, _env(c)["SLG_POLICY"]))


def test_generic_guardrail_points_at_the_sidecar() -> None:
    dep = _deployments()["litellm-generic"]
    containers = _containers(dep)
    guard = build_parser().parse_args(containers["guard"]["command"][1:])
    url = _env(containers["litellm"])["SLG_GUARD_URL"]
    assert url == f"http://{guard.host}:{guard.port}"
    token_ref = _env(containers["litellm"])["SLG_SERVICE_TOKEN"]["secretKeyRef"]
    token_vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "token")
    assert token_vol["secret"]["secretName"] == token_ref["name"]


def test_kong_wiring_matches_the_plugin() -> None:
    dep = _deployments()["kong"]
    c = _containers(dep)
    env = _env(c["kong"])
    assert "secure-llm-guard" in env["KONG_PLUGINS"].split(",")
    assert env["KONG_PLUGINSERVER_NAMES"] == "secure-llm-guard"
    assert "KONG_PLUGINSERVER_SECURE_LLM_GUARD_START_CMD" not in env  # the sidecar runs it
    server = c["plugin-server"]["command"]
    assert server[:2] == ["python", "kong_plugins/secure_llm_guard.py"]
    prefix = server[server.index("-p") + 1]
    assert env["KONG_PLUGINSERVER_SECURE_LLM_GUARD_SOCKET"] == f"{prefix}/secure-llm-guard.sock"
    dump_file = env["KONG_PLUGINSERVER_SECURE_LLM_GUARD_QUERY_CMD"].removeprefix("cat ")
    assert dump_file in c["plugin-info"]["command"][-1] and "--dump" in c["plugin-info"]["command"][-1]
    help_text = subprocess.run([sys.executable, str(PLUGIN), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    for flag in [a for a in server[2:] if a.startswith("-")]:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}[\s,]", help_text), flag
    kong_yml = yaml.safe_load(_mounted_file(dep, c["kong"], "/etc/kong/kong.yml"))
    plugin = next(p for p in kong_yml["plugins"] if p["name"] == "secure-llm-guard")
    yaml.safe_load(_mounted_file(dep, c["plugin-server"], plugin["config"]["policy_path"]))
    assert c["plugin-server"]["volumeMounts"][0]["mountPath"] == prefix


def test_plugin_info_dump_is_what_kong_reads() -> None:
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("SLG_POLICY", None)
    out = subprocess.run([sys.executable, str(PLUGIN), "--dump"], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env=env).stdout
    info = json.loads(out)
    plugins = info["Plugins"] if isinstance(info, dict) else info  # Kong reads either shape
    assert plugins[0]["Name"] == "secure-llm-guard"
    assert "policy_path" in json.dumps(plugins[0]["Schema"])


def test_the_sidecar_arguments_start_a_working_service(tmp_path: Path) -> None:
    _, c = next((d, c) for d, c in _serve_containers() if d["metadata"]["name"] == "litellm-generic")
    args = list(c["command"][1:])
    token_file = tmp_path / "token"
    token_file.write_text(SESSION_TOKEN)
    port = free_port()
    # The demo policy's PII guard imports Presidio (~20-40 s here): the small test policy keeps
    # this fast; everything else is the manifest's argument list.
    swap = {"/etc/slg/policy.yaml": str(REPO / "tests" / "policies" / "service.yaml"),
            "/var/run/secrets/slg/token": str(token_file), "8787": str(port)}
    args = [swap.get(a, a) for a in args]
    env = {**os.environ, **OFFLINE_ENV, "SLG_AUDIT_PATH": str(tmp_path / "audit.jsonl")}
    env["PYTHONPATH"] = str(REPO)  # the test policy's stand-in guards live in tests/
    proc = subprocess.Popen([slg_executable(), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        ready = None
        for _ in range(300):
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, ready.text if ready else "not up"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/guard/request", timeout=60,
                       headers={"authorization": f"Bearer {SESSION_TOKEN}"},
                       json={"body": {"model": "general", "messages": [{"role": "user", "content": "hi"}]},
                             "identity": {"api_key": "sk-marketing"}})
        assert r.status_code == 200 and r.json()["department"] == "marketing"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
