#!/usr/bin/python3
"""The chat page `skiff serve` serves at GET /, driven in headless Chromium over the Chrome
DevTools Protocol (a minimal websocket client from the standard library; no Selenium).

- the page loads with no console error, exception or failed request;
- a message typed into #prompt and sent with a real click on Send streams a reply: #status
  ends with the "N tokens, X tokens/s, first token after T ms" line and sets
  data-tokens-per-second; the reply is non-empty;
- at temperature 0 the reply equals the server's own non-streamed reply to the same
  conversation at the page's settings, and N is that reply's usage.completion_tokens;
- a second turn carries the first (the conversation so far is sent) and again equals the
  non-streamed reply; the finished line is that turn's, not the first's.

Skips (prints SKIP, exits 0) only when no Chromium is installed; scripts/bootstrap.sh installs
Debian's `chromium`, so CI runs it.

Run: /usr/bin/python3 tests/cli/test_chat_page.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import setup  # noqa: E402

MSG1 = "Tell me a story about a dog."
MSG2 = "What was the dog's name?"


def find_chromium() -> str | None:
    # Debian's /usr/bin/chromium is a shell wrapper; the binary behind it takes the same flags.
    for path in ("/usr/lib/chromium/chromium",):
        if os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """Just enough of RFC 6455 for CDP: masked text frames out, unmasked frames in."""

    def __init__(self, url: str, timeout: float):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise ValueError(f"not a ws:// url: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("the websocket handshake was cut")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the websocket was closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("the browser closed the websocket")
            if opcode in (0x1, 0x2, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Cdp:
    """Commands to one page target; events are kept, the console's problems among them."""

    def __init__(self, ws_url: str):
        self.ws = WebSocket(ws_url, timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_event(self, method: str, timeout: float) -> dict | None:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + timeout
        self.ws.sock.settimeout(timeout)
        try:
            while time.monotonic() < deadline:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
                    if msg["method"] == method:
                        return msg
        finally:
            self.ws.sock.settimeout(20)
        return None

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads among them)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                 for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out


def start_server(skiff: str) -> tuple[subprocess.Popen, int, list[str]]:
    proc = subprocess.Popen([skiff, "serve", "--port", "0"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    port = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
        if "skiff serve: ready" in line:
            break
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, port, lines


def start_chromium(chromium: str, profile: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--no-first-run",
                             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                             "--disable-background-networking", "--disable-component-update", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Chromium writes the port it chose (and the browser's websocket path) to DevToolsActivePort.
    active = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(active, encoding="utf-8") as f:
                first = f.readline().strip()
            if first:
                return proc, int(first)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return proc, 0


def page_target(port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            for t in json.load(r):
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return t["webSocketDebuggerUrl"]
        if time.monotonic() > deadline:
            raise RuntimeError("chromium shows no page target")
        time.sleep(0.1)


def server_reply(port: int, messages: list[dict], settings: dict) -> dict:
    """The non-streamed reply at the page's settings (an empty number field is left out)."""
    body = {"messages": messages}
    if settings["temperature"] != "":
        body["temperature"] = float(settings["temperature"])
    if settings["max_tokens"] != "":
        body["max_tokens"] = int(settings["max_tokens"])
    if settings["truncate"]:
        body["skiff"] = {"truncate": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return {"error": f"HTTP {e.code}: {e.read()[:500]!r}"}


def type_and_send(cdp: Cdp, text: str) -> None:
    """Types into #prompt as a keyboard would and clicks Send with the mouse."""
    cdp.eval("document.getElementById('prompt').focus()")
    cdp.call("Input.insertText", text=text)
    box = cdp.eval("(() => { const r = document.getElementById('send').getBoundingClientRect();"
                   " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        cdp.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def wait_finished(cdp: Cdp, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state = {}
    while time.monotonic() < deadline:
        state = cdp.eval("""(() => {
            const s = document.getElementById('status');
            const replies = [...document.querySelectorAll('#log .assistant')].map(e => e.textContent);
            return {status: s.textContent, tps: s.dataset.tokensPerSecond ?? null, replies,
                    busy: !document.getElementById('stop').disabled};
        })()""")
        if state["tps"] is not None or state["status"].startswith("error"):
            return state
        time.sleep(0.1)
    return state



def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

def main() -> int:
    args, c = setup()
    chromium = find_chromium()
    if chromium is None:
        print("SKIP: chromium is not installed (scripts/bootstrap.sh installs it)")
        return 0

    server, port, server_log = start_server(args.skiff)
    browser = None
    profile = tempfile.mkdtemp(prefix="skiff-chromium-")
    try:
        if not c.check("skiff serve starts", port > 0 and server.poll() is None, "".join(server_log)[-1000:]):
            return c.finish()
        browser, devtools_port = start_chromium(chromium, profile)
        if not c.check("chromium starts with a DevTools port", devtools_port > 0, f"exit {browser.poll()}"):
            return c.finish()
        cdp = Cdp(page_target(devtools_port))
        for domain in ("Page", "Runtime", "Log"):
            cdp.call(f"{domain}.enable")
        cdp.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        loaded = cdp.wait_event("Page.loadEventFired", 10)
        title = cdp.eval("document.title") if loaded else None
        c.check("the page loads", loaded is not None and title == "skiff chat", str(title))
        time.sleep(0.2)  # a failed favicon load and the like arrive just after load
        c.check("no console errors on load", not cdp.problems(), "\n  ".join(cdp.problems()))

        # Greedy decoding, so the page's reply is the server's reply.
        cdp.eval("document.getElementById('temperature').value = '0'")
        settings = cdp.eval("({system: document.getElementById('system').value,"
                            " temperature: document.getElementById('temperature').value,"
                            " max_tokens: document.getElementById('max_tokens').value,"
                            " truncate: document.getElementById('truncate').checked})")
        conversation = [{"role": "system", "content": settings["system"]}] if settings["system"] else []

        for turn, msg in enumerate((MSG1, MSG2), 1):
            t0 = time.monotonic()
            type_and_send(cdp, msg)
            state = wait_finished(cdp, 20)
            status, replies = state.get("status", ""), state.get("replies", [])
            m = re.fullmatch(r"(\d+) tokens, ([\d.]+) tokens/s, first token after \d+ ms", status)
            c.check(f"turn {turn}: #status shows the finished line with tokens/s",
                    m is not None and state["tps"] is not None and float(state["tps"]) > 0
                    and not state["busy"], json.dumps(state)[:600])
            c.check(f"turn {turn}: the prompt was cleared",
                    cdp.eval("document.getElementById('prompt').value") == "")
            reply = replies[-1] if replies else ""
            c.check(f"turn {turn}: one non-empty reply per turn", len(replies) == turn and reply.strip() != "",
                    repr(replies))
            conversation.append({"role": "user", "content": msg})
            expected = server_reply(port, conversation, settings)
            if not c.check(f"turn {turn}: the server answers the same conversation", "choices" in expected,
                           str(expected)):
                break
            want = expected["choices"][0]["message"]["content"]
            c.check(f"turn {turn}: the reply equals the server's non-streamed reply", reply == want,
                    f"\n  page   {reply!r}\n  server {want!r}")
            c.check(f"turn {turn}: the token count is the server's usage",
                    m is not None and int(m.group(1)) == expected["usage"]["completion_tokens"],
                    f"{status!r} vs {expected['usage']}")
            conversation.append({"role": "assistant", "content": want})
            print(f"  turn {turn}: {time.monotonic() - t0:.1f}s, {status}", flush=True)

        c.check("no console errors", not cdp.problems(), "\n  ".join(cdp.problems()))
        cdp.ws.close()
    finally:
        if browser is not None:
            stop_process(browser)
        stop_process(server)
        for _ in range(20):  # chromium's helpers may still be writing to the profile as they exit
            shutil.rmtree(profile, ignore_errors=True)
            if not os.path.exists(profile):
                break
            time.sleep(0.1)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
