"""Kong's side of the pluginserver protocol, to drive the REAL kong-pdk plugin server in tests.

Kong Gateway cannot be installed here, so this harness plays Kong: it starts
``python kong_plugins/secure_llm_guard.py -p TMPDIR`` (the dedicated kong-pdk server, as Kong's
``pluginserver_secure_llm_guard_start_cmd`` would), connects to ``TMPDIR/secure-llm-guard.sock``
and speaks msgpack-RPC exactly as Kong's ``kong/runloop/plugin_servers/rpc/mp_rpc.lua`` does:

* request ``[0, msgid, "plugin.Method", [arg]]``, response ``[1, msgid, error, result]``;
* ``plugin.StartInstance {Name, Config: <JSON string>}`` → ``{Id, ...}`` (one instance per config);
* ``plugin.HandleEvent {InstanceId, EventName}`` → ``{EventId, Data}``; while ``Data`` is not
  ``"ret"`` it is a PDK call ``{Method, Args}`` that Kong executes and answers with
  ``plugin.Step {EventId, Data: value}`` (typed: ``StepConsumer``, ``StepCredential``,
  ``StepMultiMap``...; ``StepError`` with the message when the PDK call fails);
* ``kong.response.exit`` / ``kong.response.error`` are terminal: Kong sends nothing back;
* raw bodies travel as msgpack binary; header maps as ``{name: [values]}``.

PDK calls are answered from a per-request :class:`FakeKongRequest` (method, path, headers, raw
body, consumer, consumer groups, ``kong.ctx.shared``, the service's response) which records what
the plugin did (exit, forwarded body, headers set, log lines). Every socket read has a timeout: a
plugin that never answers (a raising phase handler hangs the request inside Kong) fails the test
with :class:`KongHarnessTimeout` instead of hanging it.

Fixtures: ``kong_harness`` (demo policy ``config/policy.yaml``) and
``kong_harness_factory(policy_path, env=None)``, both session-scoped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.procutil import read_jsonl, read_log

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FILE = REPO / "kong_plugins" / "secure_llm_guard.py"
PLUGIN_NAME = "secure-llm-guard"
DEMO_POLICY = REPO / "config" / "policy.yaml"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TOKENIZERS_PARALLELISM": "false",
}

TERMINAL_METHODS = frozenset({"kong.response.exit", "kong.response.error"})

# As Kong's mp_rpc.lua: the typed Step method a PDK call's result is returned with.
STEP_METHODS = {
    "kong.client.get_credential": "plugin.StepCredential",
    "kong.client.load_consumer": "plugin.StepConsumer",
    "kong.client.get_consumer": "plugin.StepConsumer",
    "kong.client.authenticate": "plugin.StepCredential",
    "kong.node.get_memory_stats": "plugin.StepMemoryStats",
    "kong.router.get_route": "plugin.StepRoute",
    "kong.router.get_service": "plugin.StepService",
    "kong.request.get_query": "plugin.StepMultiMap",
    "kong.request.get_headers": "plugin.StepMultiMap",
    "kong.response.get_headers": "plugin.StepMultiMap",
    "kong.service.response.get_headers": "plugin.StepMultiMap",
}


class KongHarnessError(AssertionError):
    """The plugin server misbehaved (an RPC error, a protocol violation)."""


class KongHarnessTimeout(KongHarnessError):
    """The plugin server did not answer in time: inside Kong this request would hang."""


class PdkError(Exception):
    """Raised by a fake PDK method: Kong answers ``plugin.StepError`` with the message."""


def _multimap(headers: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kong's ``fix_mmap``: every header value becomes a list of strings."""
    out: dict[str, list[str]] = {}
    for k, v in headers.items():
        out[k.lower()] = [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)]
    return out


def _maybe_json(raw: Any) -> Any:
    if isinstance(raw, bytes | str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def consumer_entity(name: str, *, custom_id: str | None = None, by_custom_id: bool = False) -> dict[str, Any]:
    """A consumer as Kong's DAO returns it (null fields arrive as nil)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"consumer.{name}")),
        "username": None if by_custom_id else name,
        "custom_id": name if by_custom_id else custom_id,
        "created_at": 1764115200,
        "tags": None,
    }


@dataclass
class FakeKongRequest:
    """One request as Kong sees it; answers the plugin's PDK calls and records what it did."""

    raw_body: bytes | None = b""
    method: str = "POST"
    path: str = "/v1/chat/completions"
    headers: dict[str, Any] = field(default_factory=dict)
    consumer: Any = None
    groups: Any = None
    ctx_shared: dict[str, Any] = field(default_factory=dict)
    # the upstream's answer, for the response phase
    service_status: int | None = None
    service_body: bytes | None = None
    service_headers: dict[str, Any] = field(default_factory=dict)
    # PDK methods that fail (Kong answers StepError with this message)
    pdk_errors: dict[str, str] = field(default_factory=dict)
    # recorded
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    unknown_calls: list[str] = field(default_factory=list)
    exit: tuple[int, Any, dict[str, Any]] | None = None
    set_raw_body: list[bytes] = field(default_factory=list)
    service_request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return str(v[0] if isinstance(v, list | tuple) else v)
        return None

    def call(self, method: str, args: list[Any]) -> Any:
        """Execute one PDK call like Kong would; PdkError → StepError."""
        self.calls.append((method, list(args)))
        if method in self.pdk_errors:
            raise PdkError(self.pdk_errors[method])
        a = list(args) + [None] * 4
        if method.startswith("kong.log."):
            self.logs.append((method.rsplit(".", 1)[1], "".join(str(x) for x in args)))
            return None
        handler = _PDK.get(method)
        if handler is None:  # Kong: "could not find pdk method", answers nil
            self.unknown_calls.append(method)
            return None
        return handler(self, a)


def _raw_body(r: FakeKongRequest, a: list[Any]) -> Any:
    if r.raw_body is None:
        raise PdkError("request body did not fit into client body buffer, consider raising 'client_body_buffer_size'")
    return r.raw_body


def _headers_of(r: FakeKongRequest, which: str) -> dict[str, str]:
    """``service``: headers sent upstream; ``response``: headers of the answer to the client."""
    return r.service_request_headers if which == "service" else r.response_headers


def _set_headers(which: str) -> Any:
    def f(r: FakeKongRequest, a: list[Any]) -> None:
        _headers_of(r, which).update({str(k): str(v) for k, v in (a[0] or {}).items()})

    return f


def _set_one_header(which: str) -> Any:
    def f(r: FakeKongRequest, a: list[Any]) -> None:
        _headers_of(r, which)[str(a[0])] = str(a[1])

    return f


def _set_raw_body(r: FakeKongRequest, a: list[Any]) -> None:
    body = a[0]
    r.set_raw_body.append(body.encode() if isinstance(body, str) else bytes(body))


def _service_body(r: FakeKongRequest, a: list[Any]) -> Any:
    if r.service_body is None:
        raise PdkError("service body is only available with buffered proxying")
    return r.service_body


def _service_header(r: FakeKongRequest, a: list[Any]) -> Any:
    for k, v in r.service_headers.items():
        if k.lower() == str(a[0]).lower():
            return str(v)
    return None


_PDK: dict[str, Any] = {
    "kong.request.get_raw_body": _raw_body,
    "kong.request.get_method": lambda r, a: r.method,
    "kong.request.get_path": lambda r, a: r.path,
    "kong.request.get_path_with_query": lambda r, a: r.path,
    "kong.request.get_scheme": lambda r, a: "http",
    "kong.request.get_host": lambda r, a: "kong.test",
    "kong.request.get_header": lambda r, a: r.header(str(a[0])),
    "kong.request.get_headers": lambda r, a: _multimap(r.headers),
    "kong.client.get_consumer": lambda r, a: r.consumer,
    "kong.client.get_consumer_groups": lambda r, a: r.groups,
    "kong.client.get_credential": lambda r, a: ({"id": "cred", "consumer": {"id": r.consumer.get("id")}}
                                                if isinstance(r.consumer, dict) else None),
    "kong.client.get_ip": lambda r, a: "127.0.0.1",
    "kong.client.get_forwarded_ip": lambda r, a: "127.0.0.1",
    "kong.ctx.shared.get": lambda r, a: r.ctx_shared.get(a[0]),
    "kong.ctx.shared.set": lambda r, a: r.ctx_shared.__setitem__(a[0], a[1]),
    "kong.service.request.set_raw_body": _set_raw_body,
    "kong.service.request.set_header": _set_one_header("service"),
    "kong.service.request.add_header": _set_one_header("service"),
    "kong.service.request.set_headers": _set_headers("service"),
    "kong.service.request.clear_header": lambda r, a: r.service_request_headers.pop(str(a[0]), None),
    "kong.service.response.get_status": lambda r, a: r.service_status,
    "kong.service.response.get_raw_body": _service_body,
    "kong.service.response.get_headers": lambda r, a: _multimap(r.service_headers),
    "kong.service.response.get_header": _service_header,
    "kong.response.get_status": lambda r, a: r.service_status,
    "kong.response.set_header": _set_one_header("response"),
    "kong.response.add_header": _set_one_header("response"),
    "kong.response.set_headers": _set_headers("response"),
}


@dataclass
class PhaseResult:
    """What one phase did, as Kong would apply it."""

    phase: str
    fake: FakeKongRequest
    elapsed_ms: float
    instance_id: int

    @property
    def exited(self) -> bool:
        return self.fake.exit is not None

    @property
    def exit_status(self) -> int | None:
        return self.fake.exit[0] if self.fake.exit else None

    @property
    def exit_raw(self) -> Any:
        return self.fake.exit[1] if self.fake.exit else None

    @property
    def exit_body(self) -> Any:
        """The exit body, decoded from JSON when it is JSON."""
        return _maybe_json(self.exit_raw)

    @property
    def exit_headers(self) -> dict[str, Any]:
        return dict(self.fake.exit[2] or {}) if self.fake.exit else {}

    @property
    def body_rewritten(self) -> bool:
        return bool(self.fake.set_raw_body)

    @property
    def forwarded_raw(self) -> bytes | None:
        """The body the upstream gets (None when the plugin exited in access)."""
        if self.phase != "access" or self.exited:
            return None
        return self.fake.set_raw_body[-1] if self.fake.set_raw_body else (self.fake.raw_body or b"")

    @property
    def forwarded_body(self) -> Any:
        return _maybe_json(self.forwarded_raw)

    @property
    def request_key(self) -> str | None:
        """The opaque key the plugin stored in ``kong.ctx.shared`` (never a context itself)."""
        values = [v for v in self.fake.ctx_shared.values() if isinstance(v, str)]
        return values[0] if values else None

    @property
    def final_status(self) -> int | None:
        """Response phase: the status the client gets."""
        return self.exit_status if self.exited else self.fake.service_status

    @property
    def final_body(self) -> Any:
        """Response phase: the body the client gets (decoded when JSON)."""
        return self.exit_body if self.exited else _maybe_json(self.fake.service_body)

    @property
    def methods(self) -> list[str]:
        return [m for m, _ in self.fake.calls]

    @property
    def logs(self) -> list[tuple[str, str]]:
        return self.fake.logs

    @property
    def unknown_calls(self) -> list[str]:
        return self.fake.unknown_calls


class _Conn:
    """One msgpack-RPC connection to the plugin server (Kong keeps a keepalive pool of these)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.msgid = 0

    def call(self, method: str, arg: Any, timeout: float) -> Any:
        self.msgid += 1
        msgid = self.msgid
        self.sock.settimeout(timeout)
        self.sock.sendall(msgpack.packb([0, msgid, method, [arg]], use_bin_type=True))
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.unpacker:
                if not isinstance(msg, list) or len(msg) != 4 or msg[0] != 1:
                    raise KongHarnessError(f"{method}: not an RPC response: {msg!r:.200}")
                if msg[1] != msgid:
                    raise KongHarnessError(f"{method}: response id {msg[1]} != request id {msgid}")
                if msg[2] is not None:
                    raise RpcError(method, str(msg[2]))
                return msg[3]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise KongHarnessError(f"{method}: the plugin server closed the connection")
            self.unpacker.feed(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class RpcError(KongHarnessError):
    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method} failed: {message}")
        self.method = method
        self.message = message


class KongHarness:
    """Starts the real plugin server and plays Kong against it."""

    def __init__(
        self,
        policy_path: str | os.PathLike[str] = DEMO_POLICY,
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = 15.0,
        lua_style: bool = True,
        plugin_file: Path = PLUGIN_FILE,
    ) -> None:
        self.policy_path = str(Path(policy_path).resolve())
        self.env = dict(env or {})
        self.timeout = timeout
        self.lua_style = lua_style
        self.plugin_file = plugin_file
        self.tmpdir = Path(tempfile.mkdtemp(prefix="slg-kong-"))
        self.socket_path = str(self.tmpdir / f"{PLUGIN_NAME}.sock")
        self.audit_path = self.tmpdir / "audit.jsonl"
        self.log_path = self.tmpdir / "pluginserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._pool: list[_Conn] = []
        self._pool_lock = threading.Lock()
        self._instances: dict[str, int] = {}
        self._config_of: dict[int, dict[str, Any]] = {}
        self._seq = 0

    # -- process -----------------------------------------------------------------------------------

    @staticmethod
    def python() -> str:
        venv = REPO / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable

    def command(self, *extra: str) -> list[str]:
        cmd = [self.python(), str(self.plugin_file), "-p", str(self.tmpdir)]
        if not self.lua_style:
            cmd.append("--no-lua-style")
        return [*cmd, *extra]

    def process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env["SLG_AUDIT_PATH"] = str(self.audit_path)
        env["SLG_POLICY"] = self.policy_path  # preload: the socket appears once models are loaded
        env.update(self.env)
        return env

    def start(self, wait: float = 240.0) -> KongHarness:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.command(), cwd=str(self.tmpdir), env=self.process_env(),
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KongHarnessError(f"plugin server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if os.path.exists(self.socket_path):
                try:
                    self._release(self._acquire())
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise KongHarnessTimeout(f"plugin server socket {self.socket_path} not ready after {wait}s:\n"
                                 f"{self.log_text()[-3000:]}")

    def _terminate(self) -> None:
        with self._pool_lock:
            for c in self._pool:
                c.close()
            self._pool.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def restart(self) -> KongHarness:
        """Kill and start the plugin server again (as Kong respawns a dead one). Kong keeps its
        instance ids; the next event for one gets "no plugin instance" and Kong starts it again."""
        self._terminate()
        return self.start()

    def log_text(self) -> str:
        return read_log(self.log_path)

    def audit_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.audit_path)

    def wait_for_audit(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The first audit record matching ``predicate``; the audit trail is written in the background."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.audit_records():
                if predicate(rec):
                    return rec
            if time.monotonic() > deadline:
                raise KongHarnessTimeout(f"no matching audit record within {timeout}s in {self.audit_path}")
            time.sleep(0.05)

    def dump(self) -> Any:
        """``--dump``: the plugin info Kong's ``query_cmd`` reads (a JSON list)."""
        out = subprocess.run(self.command("--dump"), env=self.process_env(), capture_output=True,
                             timeout=60, check=True)
        return json.loads(out.stdout)

    # -- RPC ---------------------------------------------------------------------------------------

    def _acquire(self) -> _Conn:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return _Conn(self.socket_path, self.timeout)

    def _release(self, conn: _Conn) -> None:
        with self._pool_lock:
            self._pool.append(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[_Conn]:
        conn = self._acquire()
        try:
            yield conn
        except BaseException:
            conn.close()  # the stream may be mid-message: never reuse it
            raise
        self._release(conn)

    def rpc(self, method: str, arg: Any, timeout: float | None = None) -> Any:
        with self.connection() as conn:
            return self._call(conn, method, arg, timeout)

    def _call(self, conn: _Conn, method: str, arg: Any, timeout: float | None) -> Any:
        t = timeout or self.timeout
        try:
            return conn.call(method, arg, t)
        except TimeoutError:
            raise KongHarnessTimeout(
                f"plugin server did not answer {method} within {t}s: the phase handler probably raised "
                f"or blocked (inside Kong this request would hang).\n{self.log_text()[-2000:]}"
            ) from None

    # -- instances ---------------------------------------------------------------------------------

    def start_instance(self, config: Mapping[str, Any] | None = None) -> int:
        """``plugin.StartInstance`` with the config as Kong sends it (a JSON string, with Kong's
        own ``__seq__`` and ``__plugin_id`` keys and nulls for unset optional fields)."""
        cfg: dict[str, Any] = {"policy_path": self.policy_path, "timeout_seconds": None, "guard_responses": None}
        cfg.update(config or {})
        self._seq += 1
        cfg.setdefault("__plugin_id", str(uuid.uuid4()))
        cfg.setdefault("__seq__", self._seq)
        status = self.rpc("plugin.StartInstance", {"Name": PLUGIN_NAME, "Config": json.dumps(cfg)},
                          timeout=max(self.timeout, 60.0))
        if not isinstance(status, dict) or "Id" not in status:
            raise KongHarnessError(f"StartInstance answered {status!r:.200}")
        return int(status["Id"])

    def instance(self, config: Mapping[str, Any] | None = None) -> int:
        """The instance for this configuration, started once (Kong: one per plugin config)."""
        key = json.dumps(dict(config or {}), sort_keys=True)
        if key not in self._instances:
            self._instances[key] = self.start_instance(config)
            self._config_of[self._instances[key]] = dict(config or {})
        return self._instances[key]

    def run_phase(self, instance_id: int, phase: str, fake: FakeKongRequest,
                  timeout: float | None = None) -> PhaseResult:
        """``handle_event`` as Kong's ``Rpc:handle_event`` does it: on "no plugin instance" (the server
        restarted) start the instance for the same config again and retry once."""
        try:
            return self.handle_event(instance_id, phase, fake, timeout)
        except RpcError as exc:
            if "no plugin instance" not in exc.message.lower() or instance_id not in self._config_of:
                raise
        config = self._config_of.pop(instance_id)
        for k, v in list(self._instances.items()):
            if v == instance_id:
                del self._instances[k]
        return self.handle_event(self.instance(config), phase, fake, timeout)

    def close_instance(self, instance_id: int) -> Any:
        for k, v in list(self._instances.items()):
            if v == instance_id:
                del self._instances[k]
        self._config_of.pop(instance_id, None)
        return self.rpc("plugin.CloseInstance", instance_id)

    def instance_status(self, instance_id: int) -> Any:
        return self.rpc("plugin.InstanceStatus", instance_id)

    # -- events ------------------------------------------------------------------------------------

    def handle_event(self, instance_id: int, phase: str, fake: FakeKongRequest,
                     timeout: float | None = None) -> PhaseResult:
        """Kong's ``bridge_loop``: HandleEvent, then answer PDK calls until ``ret`` or a terminal call."""
        t0 = time.perf_counter()
        with self.connection() as conn:
            step = self._call(conn, "plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase}, timeout)
            event_id = step["EventId"]
            while True:
                data = step["Data"]
                if data == "ret":
                    break
                if not isinstance(data, dict) or "Method" not in data:
                    raise KongHarnessError(f"{phase}: unexpected step data {data!r:.200}")
                method, args = str(data["Method"]), list(data.get("Args") or [])
                if method in TERMINAL_METHODS:
                    fake.calls.append((method, args))
                    a = args + [None] * 3
                    fake.exit = (int(a[0]), a[1], dict(a[2] or {}))
                    break  # ngx.exit: Kong sends nothing back
                try:
                    value = fake.call(method, args)
                    step_method = STEP_METHODS.get(method, "plugin.Step")
                except PdkError as exc:
                    value, step_method = str(exc), "plugin.StepError"
                if isinstance(value, bytes | bytearray):
                    value = bytes(value)  # msgpack bin, as Kong's fix_raw
                step = self._call(conn, step_method, {"EventId": event_id, "Data": value}, timeout)
        return PhaseResult(phase, fake, (time.perf_counter() - t0) * 1000, instance_id)

    def access(
        self,
        body: Any = None,
        consumer: Any = "finance",
        groups: Any = (),
        headers: Mapping[str, Any] | None = None,
        path: str = "/v1/chat/completions",
        *,
        method: str = "POST",
        config: Mapping[str, Any] | None = None,
        pdk_errors: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> PhaseResult:
        """Run the access phase for one request.

        ``body``: a dict (sent as JSON), str/bytes (sent as is) or None (Kong cannot read the body:
        it was buffered to disk). ``consumer``: a name (→ a consumer entity with that username), a
        dict (the entity as is), None (no authenticated consumer). ``groups``: names or entities.
        """
        if isinstance(body, Mapping):
            raw: bytes | None = json.dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body
        entity = consumer_entity(consumer) if isinstance(consumer, str) else consumer
        group_entities: Any = groups
        if isinstance(groups, list | tuple):
            group_entities = [g if isinstance(g, Mapping) else {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, str(g))),
                                                                  "name": str(g)} for g in groups] or None
        fake = FakeKongRequest(raw_body=raw, method=method, path=path, headers=dict(headers or {}),
                               consumer=entity, groups=group_entities, pdk_errors=dict(pdk_errors or {}))
        return self.run_phase(self.instance(config), "access", fake, timeout)

    def response(
        self,
        access_result: PhaseResult,
        status: int = 200,
        body: Any = None,
        headers: Mapping[str, Any] | None = None,
        *,
        pdk_errors: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> PhaseResult:
        """Run the response phase of the same request, with the upstream's answer. ``body``: a dict
        (JSON), str/bytes, or None for an echo of the forwarded request's last user message."""
        if access_result.exited:
            raise KongHarnessError("access exited: Kong would not proxy this request, there is no response phase")
        if body is None:
            body = echo_completion(access_result.forwarded_body)
        raw = json.dumps(body).encode() if isinstance(body, Mapping) else (body.encode() if isinstance(body, str)
                                                                           else body)
        prev = access_result.fake
        fake = FakeKongRequest(raw_body=prev.raw_body, method=prev.method, path=prev.path, headers=prev.headers,
                               consumer=prev.consumer, groups=prev.groups, ctx_shared=prev.ctx_shared,
                               service_status=status, service_body=raw,
                               service_headers=dict(headers or {"Content-Type": "application/json"}),
                               pdk_errors=dict(pdk_errors or {}))
        return self.run_phase(access_result.instance_id, "response", fake, timeout)

    def log(self, result: PhaseResult, timeout: float | None = None) -> PhaseResult:
        """Run the log phase of the same request (Kong runs it for every request, in a timer)."""
        prev = result.fake
        fake = FakeKongRequest(raw_body=prev.raw_body, consumer=prev.consumer, groups=prev.groups,
                               ctx_shared=prev.ctx_shared, service_status=prev.service_status)
        return self.run_phase(result.instance_id, "log", fake, timeout)

    def roundtrip(self, body: Any, consumer: Any = "finance", **kw: Any) -> tuple[PhaseResult, PhaseResult | None]:
        """access, then (when proxied) response with an echo upstream, then log."""
        acc = self.access(body, consumer, **kw)
        resp = None if acc.exited else self.response(acc)
        self.log(resp or acc)
        return acc, resp


def echo_completion(request_body: Any, text: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion answering with the last user text of ``request_body`` (an echo)."""
    if text is None:
        text = ""
        for m in (request_body or {}).get("messages", []) if isinstance(request_body, dict) else []:
            if isinstance(m, dict) and m.get("role") == "user":
                c = m.get("content")
                text = c if isinstance(c, str) else " ".join(
                    p.get("text", "") for p in c or [] if isinstance(p, dict) and p.get("type") == "text")
    model = request_body.get("model", "general") if isinstance(request_body, dict) else "general"
    return {
        "id": "chatcmpl-echo", "object": "chat.completion", "created": 1764115200, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kong_harness_factory() -> Iterator[Any]:
    """``factory(policy_path, env=None)`` → a started :class:`KongHarness`, one per (policy, env)."""
    started: dict[tuple[str, tuple[tuple[str, str], ...]], KongHarness] = {}
    lock = threading.Lock()

    def make(policy_path: str | os.PathLike[str] = DEMO_POLICY, env: Mapping[str, str] | None = None) -> KongHarness:
        key = (str(Path(policy_path).resolve()), tuple(sorted((env or {}).items())))
        with lock:
            h = started.get(key)
            if h is None:
                h = started[key] = KongHarness(policy_path, env).start()
            return h

    yield make
    for h in started.values():
        h.stop()


@pytest.fixture(scope="session")
def kong_harness(kong_harness_factory: Any) -> KongHarness:
    """The plugin server with the demo policy (config/policy.yaml)."""
    h: KongHarness = kong_harness_factory(DEMO_POLICY)
    return h
