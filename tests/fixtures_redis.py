"""Redis fixtures for the quota and verdict-cache tests (real servers, no fakes).

- ``redis_url``: the shared server on 127.0.0.1:6379 (the test is skipped when it is not running).
- ``redis_prefix``: a unique key prefix per test; every key under it is deleted afterwards.
- ``RedisServer``: a ``redis-server`` of the test's own on a free port, which the test may
  ``kill()``, ``pause()`` (SIGSTOP: a hung server), ``resume()`` and ``start()`` again on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.procutil import free_port

SHARED_REDIS = os.environ.get("SLG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")




def delete_prefix(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="slg-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = redis.Redis(port=self.port, socket_timeout=0.5)
                if c.ping():
                    c.close()
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        c = redis.Redis.from_url(SHARED_REDIS, socket_timeout=1)
        c.ping()
        c.close()
    except redis.RedisError:
        pytest.skip(f"no Redis server at {SHARED_REDIS}")
    return SHARED_REDIS


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"slgtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.stop()


def _free_cluster_port() -> int:
    """A port p with p and p + 10000 (the cluster bus) both free."""
    import random

    for _ in range(200):
        p = random.randint(20000, 29999)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        return p
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterServers:
    """Three cluster-enabled redis-server masters (no replicas) joined into one cluster."""

    def __init__(self, nodes: int = 3) -> None:
        self.servers = [RedisServer(_free_cluster_port()) for _ in range(nodes)]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> RedisClusterServers:
        exe = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if exe is None or cli is None:
            pytest.skip("redis-server/redis-cli are not installed")
        for s in self.servers:
            s.proc = subprocess.Popen(
                [exe, "--port", str(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", s.dir],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )
        for s in self.servers:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if redis.Redis(port=s.port, socket_timeout=0.5).ping():
                        break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.servers[0].port, decode_responses=True).execute_command("CLUSTER INFO")
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state == "ok" or "cluster_state:ok" in str(info):
                return self
            time.sleep(0.1)
        raise RuntimeError("Redis Cluster did not become ready")

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
