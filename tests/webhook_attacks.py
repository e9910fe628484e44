"""The attacks of issue 9 on the webhook port, and real reviews measured while they run.

Used by tests/test_webhook_load.py (issue-sized attacks, short phases, bounds
asserted) and benchmarks/webhook_attacks.py (the same, longer, figures printed).
The target is gatewatch as `gatewatch run` starts it, in a process of its own
(benchmarks/webhook_servers.py), so its memory is measured alone.

- ``unserved_flood``: POSTs of 8 MiB of ``[{},{},...]`` to a path gatewatch does not serve;
- ``forged_exec``: a 7.7 MB pods/exec review whose command has 1.1 million elements;
- ``repeat``: connections sending a body again and again;
- ``half_bodies``: TLS connections that send headers and half a body, then nothing
  (blocking ``ssl`` sockets in a thread: asyncio's TLS would cost the attacker
  256 KiB a connection, more than this process should hold for 2,000 of them);
- ``RealReviews``: harmless Pod CREATE reviews on fresh connections, one after
  another, as the API server sends them, with their latency and answer.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
SERVERS = REPO / "benchmarks" / "webhook_servers.py"
MiB = 1024 * 1024
NAMESPACE = "bench"  # the namespace webhook_servers.py's emulator knows


# --- the target ----------------------------------------------------------------------------------


def read_ready(process: subprocess.Popen[str], *, timeout: float = 60.0) -> int:
    """The port a webhook_servers.py process announces with ``READY <port>``."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline() if process.stdout else ""),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0] if result else ""
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"{SERVERS.name} did not start: {line!r}")
    return int(line.split()[1])


@dataclass
class Target:
    """gatewatch (and its Kubernetes API emulator) in processes of their own."""

    gatewatch: subprocess.Popen[str]
    emulator: subprocess.Popen[str]
    port: int
    tls_dir: Path

    @classmethod
    def start(cls, work_dir: Path, *, mode: str = "warn") -> "Target":
        sys.path.insert(0, str(REPO / "tests"))
        from webhook_serving import write_tls_files

        tls_dir = work_dir / "tls"
        write_tls_files(tls_dir)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        emulator = subprocess.Popen([sys.executable, str(SERVERS), "emulator", "--lifetime", "900"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        api_port = read_ready(emulator)
        gatewatch = subprocess.Popen(
            [sys.executable, str(SERVERS), "gatewatch", "--tls-dir", str(tls_dir), "--mode", mode,
             "--api-url", f"http://127.0.0.1:{api_port}", "--lifetime", "900"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            port = read_ready(gatewatch)
        except BaseException:
            emulator.kill()
            raise
        return cls(gatewatch=gatewatch, emulator=emulator, port=port, tls_dir=tls_dir)

    async def stop(self, *, patience: float = 20.0) -> None:
        """Close the servers' stdin (they stop), kill what has not stopped after ``patience`` seconds.
        Polled on the event loop: subprocess's own timed wait sleeps in a way faketime breaks."""
        for process in (self.gatewatch, self.emulator):  # gatewatch first: its shutdown uses the API
            if process.stdin is not None:
                process.stdin.close()
            deadline = asyncio.get_running_loop().time() + patience
            while process.poll() is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                process.kill()
                process.wait()

    def memory(self) -> tuple[float, float]:
        """gatewatch's resident memory now and its peak so far (VmRSS, VmHWM), in MiB."""
        fields = {}
        with open(f"/proc/{self.gatewatch.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=(self.tls_dir / "ca.crt").read_text())

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


# --- bodies ------------------------------------------------------------------------------------------


def empty_objects_body(size: int = 8 * MiB) -> bytes:
    """``[{},{},...]`` of ``size`` bytes: about 72 bytes of Python for each 3 bytes, once parsed."""
    count = (size - 2) // 3
    return b"[" + b"{}," * (count - 1) + b"{}]"


def exec_review(command: list[str], *, uid: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "exec",
        "requestKind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"}, "requestSubResource": "exec",
        "operation": "CONNECT", "namespace": NAMESPACE, "name": "web",
        "userInfo": {"username": "mallory", "groups": ["system:authenticated"]},
        "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "tty": True,
                   "container": "c0", "command": command},
    }}


def forged_exec_body(elements: int = 1_100_000) -> bytes:
    """The issue's 7.7 MB pods/exec review: a command of 1.1 million short elements."""
    return json.dumps(exec_review(["curl", *(["-vv"] * (elements - 1))])).encode()


def pod_review(*, uid: str, image: str = "nginx:1.27") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "namespace": NAMESPACE, "name": f"web-{uid[:8]}",
        "userInfo": {"username": "alice@example.com", "uid": "u-7", "groups": ["system:authenticated"]},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"web-{uid[:8]}", "namespace": NAMESPACE, "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]}},
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}, "dryRun": False,
    }}


# --- attacks -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the attacker's requests got back: status -> count (0: the connection was closed, no answer)."""

    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


async def post_once(session: aiohttp.ClientSession, url: str, body: bytes, context: ssl.SSLContext) -> int:
    try:
        async with session.post(url, data=body, ssl=context,
                                headers={"Content-Type": "application/json"}) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
        return 0


async def unserved_flood(target: Target, *, concurrent: int = 4, rounds: int = 1, size: int = 8 * MiB) -> Tally:
    """``concurrent`` POSTs at once of ``size`` bytes of ``[{},{},...]`` to /validate/nothing, ``rounds`` times."""
    body = empty_objects_body(size)
    tally = Tally()
    context = target.client_context()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(rounds):
            statuses = await asyncio.gather(*(post_once(session, target.url("/validate/nothing"), body, context)
                                              for _ in range(concurrent)))
            for status in statuses:
                tally.add(status)
    return tally


async def repeat(target: Target, body: bytes, *, path: str, connections: int, seconds: float) -> Tally:
    """``connections`` clients each sending ``body`` again and again for ``seconds``."""
    tally = Tally()
    context = target.client_context()
    deadline = asyncio.get_running_loop().time() + seconds

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while asyncio.get_running_loop().time() < deadline:
                tally.add(await post_once(session, target.url(path), body, context))

    await asyncio.gather(*(client() for _ in range(connections)))
    return tally


@dataclass
class HalfBodies:
    """TLS connections that sent headers and half their body, and what became of them."""

    opened: int = 0
    refused: int = 0  # could not even connect or finish TLS (the server was at its limit)
    sockets: list[ssl.SSLSocket] = field(default_factory=list)

    def still_open(self) -> int:
        """Connections the server has neither answered and closed nor closed: reading one gives
        neither data nor end of file."""
        count = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                while sock.recv(65536):  # an answer (408), then end of file
                    pass
            except (ssl.SSLWantReadError, BlockingIOError):
                count += 1
            except (OSError, ssl.SSLError):
                pass  # reset: closed
        return count

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        self.sockets.clear()


def half_bodies(target: Target, *, count: int = 2000, body_size: int = 1 * MiB) -> HalfBodies:
    """``count`` TLS connections to /validate/pods announcing ``body_size`` bytes and sending half.
    Blocking; run it in a thread."""
    result = HalfBodies()
    context = target.client_context()
    head = (f"POST /validate/pods HTTP/1.1\r\nHost: gatewatch\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_size}\r\n\r\n").encode()
    half = b'{"apiVersion": "admission.k8s.io/v1", "request": {"x": "' + b"a" * (body_size // 2)
    for _ in range(count):
        try:
            raw = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(head)
            sock.setblocking(False)
            sent = 0
            try:  # as much of the half as the socket takes now: the server need not be reading
                while sent < len(half):
                    sent += sock.send(half[sent:sent + 65536])
            except (ssl.SSLWantWriteError, BlockingIOError, ssl.SSLError, OSError):
                pass
            result.sockets.append(sock)
            result.opened += 1
        except (OSError, ssl.SSLError):
            result.refused += 1
    return result


# --- real reviews ----------------------------------------------------------------------------------------


@dataclass
class RealReviews:
    """Real reviews, each on a fresh TLS connection as the API server may send it, one after another."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def send(self, target: Target, *, count: int | None = None, until: asyncio.Event | None = None,
                   pause: float = 0.05) -> "RealReviews":
        context = target.client_context()
        sent = 0
        while (count is None or sent < count) and not (until is not None and until.is_set()):
            uid = str(uuid.uuid4())
            body = json.dumps(pod_review(uid=uid)).encode()
            started = time.perf_counter()
            try:
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
                    async with session.post(target.url("/validate/pods"), data=body, ssl=context) as response:
                        text = await response.text()
                elapsed = time.perf_counter() - started
                answer = json.loads(text).get("response", {}) if response.status == 200 else {}
                if response.status != 200 or answer.get("uid") != uid or answer.get("allowed") is not True:
                    self.failures.append(f"HTTP {response.status}: {text[:200]}")
                else:
                    self.latencies.append(elapsed)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            sent += 1
            await asyncio.sleep(pause)
        return self

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def worst(self) -> float:
        return max(self.latencies) if self.latencies else float("nan")

    def summary(self) -> str:
        return (f"{len(self.latencies)} answered, {len(self.failures)} failed, median {self.median * 1000:.1f} ms, "
                f"worst {self.worst * 1000:.1f} ms")


async def while_running(attack: Any, target: Target, *, pause: float = 0.05) -> tuple[Any, RealReviews]:
    """Run ``attack`` (an awaitable) and send real reviews until it is done."""
    done = asyncio.Event()
    reviews = RealReviews()

    async def attack_then_stop() -> Any:
        try:
            return await attack
        finally:
            done.set()

    outcome, _ = await asyncio.gather(attack_then_stop(), reviews.send(target, until=done, pause=pause))
    return outcome, reviews
