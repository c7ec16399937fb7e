"""An OpenAI-compatible echo upstream (stdlib only) so the demo and the tests need no API key.

``POST /v1/chat/completions`` answers with the text of the last user message it received, as one
JSON answer or, with ``"stream": true``, as several SSE chunks followed by ``data: [DONE]``.
``GET /v1/models`` lists the served models, ``GET /v1/echo/received`` returns the last request
bodies it got (what actually reached the "model" after the guards), ``DELETE`` clears them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MODELS = ("general", "coder")


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (text parts joined with newlines), or ``""``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            return "\n".join(t for t in texts if isinstance(t, str))
        return ""
    return ""


def _tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


def split_chunks(text: str, n: int = 4) -> list[str]:
    """Split ``text`` into at most ``n`` pieces (word boundaries kept with their spaces)."""
    if not text:
        return [""]
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    pieces = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    return [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]


class _Handler(BaseHTTPRequestHandler):
    server: EchoHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: no access log lines

    # -- helpers ---------------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, message: str, code: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                           "code": code, "param": None}})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        if path in ("/v1/models", "/models"):
            now = int(time.time())
            self._send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": now, "owned_by": "echo"} for m in self.server.models]})
        elif path in ("/v1/echo/received", "/echo/received"):
            self._send_json(200, self.server.received())
        elif path in ("", "/health"):
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"No route GET {path}.", "not_found")

    def do_DELETE(self) -> None:
        if self._path() in ("/v1/echo/received", "/echo/received"):
            self.server.clear()
            self._send_json(200, {"cleared": True})
        else:
            self._error(404, "No such route.", "not_found")

    def do_POST(self) -> None:
        path = self._path()
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"No route POST {path}.", "not_found")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(400, "Missing, invalid or too large Content-Length.", "invalid_request")
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._error(400, "Request body is not valid JSON.", "invalid_json")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._error(400, "Request body must be an object with a messages list.", "invalid_request")
            return
        self.server.record(body)
        text = last_user_text(body)
        model = str(body.get("model") or "echo")
        if body.get("stream"):
            self._stream(text, model, bool((body.get("stream_options") or {}).get("include_usage", True)))
        else:
            self._send_json(200, self._completion(text, model, body))

    def _completion(self, text: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
        prompt_tokens = sum(_tokens(last_user_text({"messages": [m]})) for m in body["messages"]
                            if isinstance(m, dict))
        return {
            "id": f"chatcmpl-echo-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(text),
                      "total_tokens": prompt_tokens + _tokens(text)},
        }

    def _stream(self, text: str, model: str, include_usage: bool) -> None:
        cid = f"chatcmpl-echo-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> None:
            payload: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                       "model": model,
                                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                payload["choices"] = []
                payload["usage"] = usage
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        try:
            chunk({"role": "assistant", "content": ""})
            for piece in split_chunks(text):
                if self.server.stream_delay:
                    time.sleep(self.server.stream_delay)
                chunk({"content": piece})
            chunk({}, finish="stop")
            if include_usage:
                chunk({}, usage={"prompt_tokens": _tokens(text), "completion_tokens": _tokens(text),
                                 "total_tokens": 2 * _tokens(text)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


class EchoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], models: tuple[str, ...] = DEFAULT_MODELS,
                 keep: int = 100, stream_delay: float = 0.0) -> None:
        super().__init__(address, _Handler)
        self.models = models
        self.stream_delay = stream_delay
        self._received: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._received.append(body)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


class EchoUpstream:
    """The echo server on a background thread: ``with EchoUpstream(port=0) as echo: echo.base_url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4001, *, keep: int = 100,
                 stream_delay: float = 0.0) -> None:
        self.server = EchoHTTPServer((host, port), keep=keep, stream_delay=stream_delay)
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> EchoUpstream:
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="echo-upstream", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()

    def received(self) -> list[dict[str, Any]]:
        return self.server.received()

    def clear(self) -> None:
        self.server.clear()

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m shared_guards.demo.echo [--host H] [--port P]``: serve until interrupted."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m shared_guards.demo.echo", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4001)
    args = ap.parse_args(argv)
    echo = EchoUpstream(args.host, args.port)
    print(f"echo upstream on {echo.base_url}", flush=True)
    try:
        echo.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        echo.server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
