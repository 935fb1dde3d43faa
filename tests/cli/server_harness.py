"""`skiff serve` for the Python server tests (tests/cli/test_server_*.py, tests/server/soak.py).

Server(skiff, *flags) starts `skiff serve --port 0 *flags` on a free loopback port and waits
until it is ready; use it as a context manager. It is stopped (SIGTERM, then SIGKILL) when the
block ends, at interpreter exit, and by the kernel if the test process dies (PR_SET_PDEATHSIG),
so no server outlives its test.

Plus small raw-HTTP helpers (http.client, one connection per call) that return the status, the
headers and the body as it came, for checking what the server answers to bad input.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

_live: set[subprocess.Popen] = set()


@atexit.register
def _kill_all() -> None:
    for p in list(_live):
        if p.poll() is None:
            p.kill()
            p.wait()


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    def __init__(self, skiff: str, *flags: str, ready_timeout: float = 120, launcher: tuple[str, ...] = (),
                 env: dict | None = None):
        """`launcher`: a command that starts skiff (mpirun ...); `env`: its environment."""
        self.argv = [*launcher, skiff, "serve", "--port", "0", *map(str, flags)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent, env=env)
        _live.add(self.proc)
        self.port = 0
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout) or not self.port:
            self.kill()
            raise RuntimeError(f"skiff serve did not get ready:\n{self.log}")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if line.startswith("skiff serve: ready:"):
                self._ready.set()
        self._ready.set()  # exited: wake the constructor

    @property
    def log(self) -> str:
        return "".join(self._lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        if self.proc.poll() is None:
            pid = self.signal_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        _live.discard(self.proc)
        return self.proc.returncode

    def signal_pid(self) -> int | None:
        """The process SIGTERM goes to (the server itself; under mpirun, rank 0)."""
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        _live.discard(self.proc)

    # --- HTTP -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers lower-cased, body bytes)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def post(self, path: str, body, **kw) -> tuple[int, dict]:
        """POST; (status, the JSON body or {"raw": text} when it is not JSON)."""
        status, _, data = self.request("POST", path, body, **kw)
        return status, parse_json(data)

    def get(self, path: str, **kw) -> tuple[int, bytes]:
        status, _, data = self.request("GET", path, **kw)
        return status, data

    def metrics(self) -> dict[str, float]:
        status, data = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics: HTTP {status}")
        out = {}
        for line in data.decode().splitlines():
            if line.startswith("skiff_"):
                name, value = line.split()
                out[name] = float(value)
        return out

    def wait_metric(self, name: str, want: float, timeout: float) -> float:
        """Polls /metrics until `name` == want or `timeout` passes; the last value."""
        until = time.monotonic() + timeout
        while True:
            v = self.metrics().get(name, float("nan"))
            if v == want or time.monotonic() > until:
                return v
            time.sleep(0.05)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def parse_json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return {"raw": data.decode(errors="replace")}


def is_openai_error(body, status_type: str | None = None, code: str | None = None, param: str | None = None) -> bool:
    """{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}, nothing else."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return False
    e = body["error"]
    if not isinstance(e, dict) or set(e) != {"message", "type", "param", "code"}:
        return False
    if not isinstance(e["message"], str) or not e["message"] or not isinstance(e["type"], str):
        return False
    if not all(e[k] is None or isinstance(e[k], str) for k in ("param", "code")):
        return False
    if status_type is not None and e["type"] != status_type:
        return False
    if code is not None and e["code"] != code:
        return False
    return param is None or e["param"] == param


TRUNCATED = "<the connection closed in the middle of the chunked body>"


def sse_events(resp: http.client.HTTPResponse):
    """The data: payloads of a server-sent event stream, as they arrive ("[DONE]" included);
    TRUNCATED last if the server closed the connection without ending the chunked body."""
    buf = b""
    while True:
        try:
            chunk = resp.read1(65536)
        except (http.client.IncompleteRead, ConnectionError):
            yield TRUNCATED
            return
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    yield line[len(b"data: "):].decode()
