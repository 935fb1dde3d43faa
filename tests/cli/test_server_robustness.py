#!/usr/bin/python3
"""`skiff serve` against misbehaving clients and load, each on a server of its own:

- slow client: headers sent a byte at a time (and a body that stalls) with --read-timeout 2:
  the server closes it within a few seconds and serves other requests normally meanwhile;
- a client that disconnects mid-stream: its slot is free again within a couple of seconds
  (/metrics skiff_slots_busy back to 0, the generation stopped early), the next request works;
- a client that leaves a long non-streamed request: the slot is free within 1.5 s (the server
  watches the socket while it waits), long before the generation would have ended;
- --stream-interval: a fast model's stream writes at most once per 5 ms (same text, a logprob for
  every token); with 0, a chunk per token; with 1000, the end is not held back by the interval;
- "timings" (llama-server's): in answers and a stream's last chunks, consistent with usage and
  with what the client saw;
- a flood beyond the queue (--parallel 1 --max-queue 2, 12 requests at once): some 429 in the
  OpenAI error shape, every accepted one completes with 200 and the full greedy text;
- SIGTERM during a stream: the stream completes (or ends cleanly, never mid-event) and the
  process exits 0; new connections are refused meanwhile.

Run: /usr/bin/python3 tests/cli/test_server_robustness.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import setup  # noqa: E402
from server_harness import TRUNCATED, Server, is_openai_error, sse_events  # noqa: E402

PROMPT = "Once upon a time"


def completion(s: Server, max_tokens: int = 16, timeout: float = 60, **extra) -> tuple[int, dict]:
    return s.post("/v1/completions", {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, **extra},
                  timeout=timeout)


def open_stream(s: Server, body: dict, timeout: float = 60) -> tuple[socket.socket, http.client.HTTPResponse]:
    """A streamed completion: its socket (close it when done) and the response."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
    conn.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}),
                 headers={"Content-Type": "application/json"})
    sock = conn.sock
    return sock, conn.getresponse()


def closed_by_peer(sock: socket.socket, until: float) -> float | None:
    """Seconds until the server closed `sock` (EOF or reset), or None if it did not by `until`."""
    start = time.monotonic()
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - start
    return None


def slow_client(c, skiff: str) -> None:
    with Server(skiff, "--parallel", 2, "--read-timeout", 2, "-t", "1") as s:
        _, want = completion(s)
        want = want["choices"][0]["text"]
        for what in ("headers", "body"):
            sock = socket.create_connection(("127.0.0.1", s.port))
            body = json.dumps({"prompt": PROMPT, "max_tokens": 4}).encode()
            head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            if what == "body":
                sock.sendall(head + body[:5])  # then nothing more
            stop = threading.Event()
            sent = {"bytes": 0, "error": None}

            def trickle():
                try:
                    for b in head:
                        if stop.wait(0.3):
                            return
                        sock.send(bytes([b]))
                        sent["bytes"] += 1
                except OSError as e:
                    sent["error"] = e

            t0 = time.monotonic()
            t = threading.Thread(target=trickle, daemon=True)
            if what == "headers":
                t.start()
            # Meanwhile, normal requests are served normally.
            served, slowest = 0, 0.0
            while time.monotonic() - t0 < 2.5:
                a = time.monotonic()
                st, j = completion(s, timeout=20)
                slowest = max(slowest, time.monotonic() - a)
                served += st == 200 and j["choices"][0]["text"] == want
            gone = closed_by_peer(sock, t0 + 8)  # measured from t0 + 2.5
            stop.set()
            if t.is_alive():
                t.join(2)
            if gone is not None:
                print(f"   slow client ({what}): closed within {gone + 2.5:.1f} s", flush=True)
            sock.close()
            elapsed = time.monotonic() - t0
            c.check(f"slow client ({what}): closed by the server within 8 s",
                    gone is not None, f"still open after {elapsed:.1f} s, {sent['bytes']} bytes sent")
            c.check(f"slow client ({what}): others served meanwhile", served >= 2 and slowest < 5,
                    f"{served} served, slowest {slowest:.2f} s")
        m = s.metrics()
        c.check("slow clients counted in skiff_slow_connections_closed_total",
                m.get("skiff_slow_connections_closed_total", 0) >= 2, str(m.get("skiff_slow_connections_closed_total")))
        st, _ = s.get("/health")
        c.check("slow client: healthy afterwards", st == 200)
        c.check("slow client: exit 0", s.stop() == 0, s.log[-1000:])


def disconnect_mid_stream(c, skiff: str) -> None:
    with Server(skiff, "--parallel", 1, "-t", "1") as s:
        _, alone = completion(s, max_tokens=20)
        before = s.metrics()["skiff_generated_tokens_total"]
        max_tokens = 240
        sock, resp = open_stream(s, {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0})
        events = sse_events(resp)
        got = [next(events) for _ in range(3)]
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        t0 = time.monotonic()
        busy = s.wait_metric("skiff_slots_busy", 0, 3.0)
        took = time.monotonic() - t0
        c.check("disconnect mid-stream: events arrived first", all(g.startswith("{") for g in got), str(got))
        c.check("disconnect mid-stream: skiff_slots_busy back to 0 within 2 s", busy == 0 and took < 2.0,
                f"slots_busy {busy} after {took:.2f} s")
        generated = s.metrics()["skiff_generated_tokens_total"] - before
        print(f"   disconnect: slot free {took:.2f} s after the client left, {generated:.0f} tokens generated",
              flush=True)
        c.check("disconnect mid-stream: the generation stopped early", generated < max_tokens,
                f"{generated:.0f} of {max_tokens} tokens generated")
        st, j = completion(s, max_tokens=20)
        c.check("disconnect mid-stream: the next request gets the slot", st == 200 and
                j["choices"][0]["text"] == alone["choices"][0]["text"], str(j)[:300])
        # Leaving before the first byte of the answer (a non-streamed request) frees it too.
        sock = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}).encode()
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.05)
        sock.close()
        busy = s.wait_metric("skiff_slots_busy", 0, 15.0)
        c.check("a non-streamed request whose client left ends too", busy == 0, f"slots_busy {busy}")
        c.check("disconnect: exit 0", s.stop() == 0, s.log[-1000:])


def disconnect_non_streamed(c, skiff: str) -> None:
    """A client that leaves a long non-streamed request: the server notices from the socket
    (no write is due until the answer) and frees the slot long before the generation would end."""
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "small.gguf")
        subprocess.run([skiff, "synth", "--shape", "small", "--type", "q8_0", "-o", model], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Server(skiff, "-m", model, "--parallel", 1, "-t", "1", "-c", 1024) as s:
            max_tokens = 1000  # ~5 s on one thread: the request outlives the client by far
            before = s.metrics()["skiff_generated_tokens_total"]
            sock = socket.create_connection(("127.0.0.1", s.port))
            body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                               "logit_bias": {"2": -100}}).encode()
            sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            busy = s.wait_metric("skiff_slots_busy", 1, 5.0)
            time.sleep(0.3)
            sock.close()
            t0 = time.monotonic()
            busy = s.wait_metric("skiff_slots_busy", 0, 5.0)
            took = time.monotonic() - t0
            generated = s.metrics()["skiff_generated_tokens_total"] - before
            print(f"   non-streamed disconnect: slot free {took:.2f} s after the client left, "
                  f"{generated:.0f} of {max_tokens} tokens generated", flush=True)
            c.check("non-streamed disconnect: skiff_slots_busy back to 0 within 1.5 s", busy == 0 and took < 1.5,
                    f"slots_busy {busy} after {took:.2f} s")
            c.check("non-streamed disconnect: the generation stopped early", generated < max_tokens / 2,
                    f"{generated:.0f} of {max_tokens} tokens generated")
            st, j = completion(s, max_tokens=8)
            c.check("non-streamed disconnect: the next request works", st == 200, str(j)[:300])
            c.check("non-streamed disconnect: exit 0", s.stop() == 0, s.log[-1000:])


def stream_interval(c, skiff: str) -> None:
    """--stream-interval: a fast model's tokens share chunks (same text, logprobs for every
    token); with 0 every token gets its own chunk."""
    body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "logprobs": 1, "logit_bias": {"2": -100}}
    for interval in (None, 0):
        flags = ["--parallel", 1, "-t", "1"] + ([] if interval is None else ["--stream-interval", interval])
        with Server(skiff, *flags) as s:
            st, plain = completion(s, **{k: v for k, v in body.items() if k != "prompt"})
            sock, resp = open_stream(s, body)
            chunks, arrived = [], []
            for e in sse_events(resp):
                if e.startswith("{"):
                    chunks.append(json.loads(e))
                    arrived.append(time.monotonic())
            sock.close()
            texts = [ch["text"] for e in chunks for ch in e.get("choices", []) if ch.get("text")]
            tokens = sum(len(ch["logprobs"]["tokens"]) for e in chunks for ch in e.get("choices", [])
                         if ch.get("logprobs"))
            n = plain["usage"]["completion_tokens"] if st == 200 else -1
            name = "default interval" if interval is None else "--stream-interval 0"
            c.check(f"{name}: streamed text == non-streamed", st == 200 and "".join(texts) == plain["choices"][0]["text"])
            c.check(f"{name}: a logprob for every token", tokens == n, f"{tokens} logprobs for {n} tokens")
            if interval is None:
                # At most one write per 5 ms, whatever the machine's speed (ASan builds are slow).
                span_ms = (arrived[-1] - arrived[0]) * 1000 if arrived else 0
                c.check(f"{name}: at most one chunk per 5 ms", 0 < len(texts) <= span_ms / 5 + 3,
                        f"{len(texts)} chunks for {n} tokens in {span_ms:.0f} ms")
            else:
                # Not merged even when the writer lags behind the generation (a loaded machine).
                per_chunk = [len(ch["logprobs"]["tokens"]) for e in chunks for ch in e.get("choices", [])
                             if ch.get("logprobs")]
                c.check(f"{name}: a chunk per token", len(per_chunk) == n and set(per_chunk) == {1},
                        f"{len(per_chunk)} chunks for {n} tokens")
            c.check(f"{name}: exit 0", s.stop() == 0, s.log[-1000:])
    # The end of a stream is not held back by the interval: with 1000 ms, the first chunk goes
    # at once, the rest when the generation ends (64 tokens take well under a second here, even
    # under ASan), never a full interval later.
    with Server(skiff, "--parallel", 1, "-t", "1", "--stream-interval", 1000) as s:
        t0 = time.monotonic()
        sock, resp = open_stream(s, {**body, "max_tokens": 64})
        events = list(sse_events(resp))
        took = time.monotonic() - t0
        sock.close()
        c.check("--stream-interval 1000: the stream ends with the generation, not an interval later",
                events and events[-1] == "[DONE]" and took < 0.9, f"{took:.3f} s, {len(events)} events")
        c.check("--stream-interval 1000: exit 0", s.stop() == 0, s.log[-1000:])


def timings(c, skiff: str) -> None:
    """llama-server's "timings": in a non-streamed answer, and in a stream's last finish chunk
    and its usage chunk; counts agree with usage, per-second figures with their counts and
    times, and the decode time with what the client saw (one chunk per token)."""
    with Server(skiff, "--parallel", 1, "-t", "1", "--stream-interval", 0) as s:
        n = 32
        body = {"prompt": PROMPT, "max_tokens": n, "temperature": 0, "logit_bias": {"2": -100}}
        t0 = time.monotonic()
        st, plain = completion(s, **{k: v for k, v in body.items() if k != "prompt"})
        took_ms = (time.monotonic() - t0) * 1000
        t = plain.get("timings") or {}
        u = plain.get("usage") or {}
        c.check("timings: in a non-streamed answer", st == 200 and t.get("predicted_n") == n == u.get(
            "completion_tokens") and t.get("prompt_n") == u["prompt_tokens"] - u["prompt_tokens_details"]["cached_tokens"],
            json.dumps(t))
        c.check("timings: prompt and decode times within the request's", st == 200 and 0 < t["prompt_ms"] and
                0 < t["predicted_ms"] and t["prompt_ms"] + t["predicted_ms"] <= took_ms, f"{t} in {took_ms:.1f} ms")
        c.check("timings: per second = steps after the first token / time",
                st == 200 and abs(t["predicted_per_second"] - (n - 1) * 1000 / t["predicted_ms"]) < 1e-6 * n * 1000 /
                t["predicted_ms"] and abs(t["prompt_per_second"] - t["prompt_n"] * 1000 / t["prompt_ms"]) < 1e-3,
                json.dumps(t))

        sock, resp = open_stream(s, {**body, "stream_options": {"include_usage": True}})
        events, arrived = [], []
        for e in sse_events(resp):
            if e.startswith("{"):
                events.append(json.loads(e))
                arrived.append(time.monotonic())
        sock.close()
        texts = [i for i, e in enumerate(events) for ch in e.get("choices", []) if ch.get("text")]
        finishes = [e for e in events for ch in e.get("choices", []) if ch.get("finish_reason")]
        usage = [e for e in events if e.get("usage")]
        ft = finishes[-1].get("timings") if finishes else None
        ut = usage[-1].get("timings") if usage else None
        c.check("timings: on the last finish chunk and the usage chunk, the same",
                ft is not None and ft == ut and ft["predicted_n"] == n, f"{ft} / {ut}")
        seen_ms = (arrived[texts[-1]] - arrived[texts[0]]) * 1000 if len(texts) > 1 else -1
        # The client sees the first and last token a write later than the server made them.
        c.check("timings: decode time close to the span the client saw",
                ft is not None and abs(ft["predicted_ms"] - seen_ms) < max(50.0, 0.5 * seen_ms),
                f"server {ft and ft['predicted_ms']:.1f} ms, client {seen_ms:.1f} ms")
        others = [e for e in events if "timings" in e and e not in (finishes[-1], usage[-1])] if ft else events
        c.check("timings: on no other chunk", not others, str(others[:1]))
        c.check("timings: exit 0", s.stop() == 0, s.log[-1000:])


def flood(c, skiff: str) -> None:
    with Server(skiff, "--parallel", 1, "--max-queue", 2, "-t", "1") as s:
        max_tokens = 32
        _, ref = completion(s, max_tokens=max_tokens)
        want = ref["choices"][0]["text"]
        results: list = [None] * 12
        gate = threading.Barrier(len(results))

        def client(i: int) -> None:
            gate.wait()
            try:
                if i % 2:
                    results[i] = completion(s, max_tokens=max_tokens, timeout=120)
                    return
                sock, resp = open_stream(s, {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}, 120)
                if resp.status != 200:
                    results[i] = (resp.status, json.loads(resp.read()))
                    return
                text, done = "", False
                for e in sse_events(resp):
                    if e == "[DONE]":
                        done = True
                        break
                    for ch in json.loads(e)["choices"]:
                        text += ch.get("text", "")
                sock.close()
                results[i] = (200, {"choices": [{"text": text}], "done": done})
            except Exception as e:  # noqa: BLE001
                results[i] = (-1, {"exception": repr(e)})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        ok = [r for r in results if r and r[0] == 200]
        busy = [r for r in results if r and r[0] == 429]
        other = [r for r in results if not r or r[0] not in (200, 429)]
        print(f"   flood: {len(ok)} accepted, {len(busy)} refused with 429", flush=True)
        c.check("flood: every request answered 200 or 429", not other, str(other)[:500])
        c.check("flood: some 429 (queue of 2 behind 1 slot)", len(busy) >= 1, f"{len(ok)} ok, {len(busy)} busy")
        # One in the slot and two queued; two if both queued before the slot took the first.
        c.check("flood: at least 2 accepted", len(ok) >= 2, f"{len(ok)} ok")
        c.check("flood: 429s in the OpenAI error shape",
                all(is_openai_error(j, "rate_limit_error", "rate_limit_exceeded") for _, j in busy), str(busy)[:300])
        full = [j["choices"][0]["text"] == want and j.get("done", True) for _, j in ok]
        c.check("flood: every accepted request has the full greedy text", all(full),
                str([j for _, j in ok][:3])[:500])
        m = s.metrics()
        c.check("flood: 429s counted", m.get("skiff_requests_rejected_busy_total") == len(busy), str(m))
        st, j = completion(s, max_tokens=8)
        c.check("flood: served normally afterwards", st == 200, str(j)[:200])
        c.check("flood: exit 0", s.stop() == 0, s.log[-1000:])


def sigterm_mid_stream(c, skiff: str) -> None:
    s = Server(skiff, "--parallel", 2, "-t", "1")
    try:
        _, ref = completion(s, max_tokens=200)
        want = ref["choices"][0]["text"]
        sock, resp = open_stream(s, {"prompt": PROMPT, "max_tokens": 200, "temperature": 0})
        events = sse_events(resp)
        first = [next(events) for _ in range(2)]
        plain: list = []
        t = threading.Thread(target=lambda: plain.append(completion(s, max_tokens=200, timeout=30)), daemon=True)
        t.start()
        s.wait_metric("skiff_slots_busy", 2, 5.0)  # both requests running
        t0 = time.monotonic()
        s.proc.terminate()
        text, done, truncated, bad = "", False, False, []
        for e in [*first, *events]:
            if e == "[DONE]":
                done = True
            elif e == TRUNCATED:
                truncated = True
            else:
                try:
                    text += "".join(ch.get("text", "") for ch in json.loads(e).get("choices", []))
                except ValueError:
                    bad.append(e)
        sock.close()
        t.join(30)
        c.check("SIGTERM: a non-streamed request in flight completes",
                bool(plain) and plain[0][0] == 200 and plain[0][1]["choices"][0]["text"] == want, str(plain)[:300])
        c.check("SIGTERM mid-stream: every event whole JSON", not bad, str(bad)[:300])
        c.check("SIGTERM mid-stream: the stream completed with [DONE] and the full text "
                "(requests in flight finish within --shutdown-grace)",
                done and text == want and not truncated,
                f"done {done}, chunked body {'cut off' if truncated else 'ended'}, "
                f"{len(text)} of {len(want)} chars")
        try:
            rc = s.proc.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        c.check("SIGTERM mid-stream: the process exits 0", rc == 0,
                f"rc {rc} after {time.monotonic() - t0:.1f} s\n{s.log[-1500:]}")
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        c.check("SIGTERM: the port is closed afterwards", refused)
    finally:
        s.kill()


def main() -> int:
    args, c = setup()
    for case in (slow_client, disconnect_mid_stream, disconnect_non_streamed, stream_interval, timings, flood,
                 sigterm_mid_stream):
        t0 = time.monotonic()
        case(c, args.skiff)
        print(f"-- {case.__name__}: {time.monotonic() - t0:.1f} s", flush=True)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
