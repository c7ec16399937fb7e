"""Policy loading: valid demo policy, clear errors naming the field path, reload semantics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shared_guards.errors import PolicyError
from shared_guards.policy import PolicyStore, load_policy, parse_policy
from shared_guards.types import Identity

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "policy.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_policy_is_valid() -> None:
    loaded = load_policy(DEMO)
    assert set(loaded.policy.departments) >= {"marketing", "finance", "rnd"}
    assert loaded.version.startswith(loaded.policy.version + "+")


def _minimal(**dep: object) -> dict:
    d = {"models": ["general"], **dep}
    return {"departments": {"ops": d}}


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs"),
        (lambda d: d["departments"]["ops"].update(modles=["x"]), "departments.ops.modles", "Extra inputs"),
        (lambda d: d["departments"]["ops"].update(models=["gpt-[4"]), "departments.ops.models", "unclosed"),
        (lambda d: d["departments"]["ops"].update(models=["gpt 4"]), "departments.ops.models", "bad model glob"),
        (lambda d: d["departments"]["ops"].update(deny_features=["teleport"]), "departments.ops.deny_features[0]", "images"),
        (lambda d: d["departments"]["ops"].update(max_tokens=0), "departments.ops.max_tokens", "greater than 0"),
        (lambda d: d["departments"]["ops"].update(mode="sometimes"), "departments.ops.mode", "enforce"),
        (lambda d: d["departments"]["ops"].update(guards=[{"name": "no_such_guard"}]), "departments.ops.guards[0].name", "unknown guard"),
        (lambda d: d["departments"]["ops"].update(guards=[{"name": "rbac", "timeout_ms": -5}]), "departments.ops.guards[0].timeout_ms", "greater than 0"),
        (lambda d: d["departments"]["ops"].update(guards=[{"name": "rbac", "action": "explode"}]), "departments.ops.guards[0].action", "block"),
        (lambda d: d["departments"]["ops"].update(guards=[{"name": "rbac", "options": {"threshold": 2}}]), "departments.ops.guards[0].options.threshold", "Extra inputs"),
        (lambda d: d.update(api_keys=[{"key": "k", "department": "nobody"}]), "<root>", "unknown department"),
        (lambda d: d.update(defaults={"unknown_identity": "nobody"}), "<root>", "unknown department"),
    ],
)
def test_policy_errors_name_the_field(mutate, path: str, fragment: str) -> None:
    data = _minimal()
    mutate(data)
    with pytest.raises(PolicyError) as err:
        parse_policy(data, "test.yaml")
    paths = [p for p, _ in err.value.problems]
    assert any(p.startswith(path) for p in paths), err.value.problems
    assert fragment in str(err.value)


def test_department_guards_extend_defaults_and_replace_by_id() -> None:
    data = {
        "defaults": {"guards": [{"name": "rbac", "id": "a"}, {"name": "rbac", "id": "b", "action": "alert"}]},
        "departments": {
            "one": {"models": ["*"], "guards": [{"name": "rbac", "id": "b", "action": "log"}, {"name": "rbac", "id": "c"}]},
            "two": {"models": ["*"], "inherit_default_guards": False, "guards": [{"name": "rbac", "id": "c"}]},
            "three": {"models": ["*"], "guards": [{"name": "rbac", "id": "a", "enabled": False}]},
        },
    }
    policy = parse_policy(data).policy
    assert [(s.guard_id, s.action.value) for s in policy.guards_for("one")] == [("a", "block"), ("b", "log"), ("c", "block")]
    assert [s.guard_id for s in policy.guards_for("two")] == ["c"]
    assert [s.guard_id for s in policy.guards_for("three")] == ["b"]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (Identity(team="finance"), "finance"),
        (Identity(consumer="rnd"), "rnd"),
        (Identity(department="marketing"), "marketing"),
        (Identity(department="nope"), None),
        (Identity(user="stranger"), None),
        (Identity(), None),
    ],
)
def test_identity_resolution(identity: Identity, expected: str | None) -> None:
    assert load_policy(DEMO).policy.resolve(identity) == expected


def test_api_keys_by_plaintext_and_digest() -> None:
    import hashlib

    data = _minimal()
    data["api_keys"] = [
        {"key": "sk-one", "department": "ops"},
        {"key_sha256": hashlib.sha256(b"sk-two").hexdigest(), "department": "ops", "user": "u2"},
    ]
    policy = parse_policy(data).policy
    assert policy.lookup_key("sk-one") is not None
    two = policy.lookup_key("sk-two")
    assert two is not None and two.user == "u2"
    assert policy.lookup_key("sk-three") is None


def test_store_reloads_and_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_minimal()))
    store = PolicyStore(path, check_interval=0.0)
    v1 = store.get().version
    data = _minimal(models=["general", "coder"])
    path.write_text(yaml.safe_dump(data))
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert store.get().policy.departments["ops"].allows_model("coder")
    v2 = store.get().version
    assert v2 != v1
    path.write_text("departments: {ops: {models: [general], bogus: 1}}\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    with caplog.at_level("ERROR"):
        assert store.get().version == v2  # the bad edit is refused
    assert "bogus" in (store.last_error or "")
    assert any("keeping version" in r.getMessage() for r in caplog.records)


def test_cli_validate_and_schema(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "shared_guards.cli", "policy", "validate", str(DEMO)],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("departments: {ops: {models: ['x'], guards: [{name: nope}]}}\n")
    res = subprocess.run([sys.executable, "-m", "shared_guards.cli", "policy", "validate", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1
    assert "departments.ops.guards[0].name" in res.stderr
    schema = subprocess.run([sys.executable, "-m", "shared_guards.cli", "policy", "schema"],
                            capture_output=True, text=True, cwd=ROOT)
    assert schema.returncode == 0
    import json

    doc = json.loads(schema.stdout)
    assert "departments" in doc["properties"]
