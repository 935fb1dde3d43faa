#!/usr/bin/python3
"""Soak test for `skiff serve`: client threads send random valid and invalid requests for a
while; then checks that

- the server never crashed (and exits 0 on SIGTERM at the end, with nothing but its own lines
  on stderr);
- every valid request succeeded: 200, a whole response (streams end with [DONE]), and at
  temperature 0 the same text every time the same request is sent (streamed or not, whatever
  else is in the batch); 10% of the streams are abandoned by their client midway;
- every invalid request got a 4xx in the OpenAI error shape (never a 5xx or a dropped
  connection);
- resident memory (VmRSS, sampled every 0.5 s) is flat after the warm-up: the median of the
  last 10% of the run is within max(--rss-slack-mib, 10%) of the median just after warm-up
  (reported but not judged for an AddressSanitizer build, whose allocator keeps growing).

Prints a JSON summary; exit code 0 when every check holds.

Not in CTest at this length: `tests/server/soak.py --skiff build/skiff --seconds 120 --clients 16`.
CTest runs a short version (tests/cli/test_server_soak.py: 15 s, 8 clients).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli"))
from server_harness import TRUNCATED, Server, is_openai_error, parse_json, sse_events  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park. They saw", "The little dog was sad because",
           "Tom had a red ball.", "One day, a cat named Kitty", "There was a big tree in the garden."]
USER = ["Tell me a story about a cat.", "What did the dog eat?", "Hi!", "Write about a red ball.",
        "Who is Lily?"]
SLOTS = 4
CTX = 256


class Client:
    """One thread's keep-alive connection (reconnected when the server closes it)."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def send(self, method: str, path: str, body: bytes | None, fresh: bool = False, timeout: float = 120):
        """(status, response) with the response unread. One retry when a reused connection
        turns out to be closed before anything came back (keep-alive limits)."""
        for attempt in range(2):
            reused = self.conn is not None and not fresh
            if self.conn is None or fresh:
                self.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused or attempt == 1:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def valid_request(rng: random.Random) -> tuple[str, str, dict | None, str]:
    """(method, path, body, kind) of a request the server must answer 200."""
    r = rng.random()
    if r < 0.35:
        body = {"prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(1, 40)}
        kind = "completion"
    elif r < 0.70:
        msgs = [{"role": "user", "content": rng.choice(USER)}]
        if rng.random() < 0.3:
            msgs = [{"role": "system", "content": "You tell stories."}, *msgs,
                    {"role": "assistant", "content": "Once upon a time, there was a cat."},
                    {"role": "user", "content": rng.choice(USER)}]
        body = {"messages": msgs, "max_tokens": rng.randint(1, 40)}
        kind = "chat"
    elif r < 0.80:
        inputs = [rng.choice(PROMPTS) for _ in range(rng.randint(1, 6))]
        return "POST", "/v1/embeddings", {"input": inputs if len(inputs) > 1 else inputs[0]}, "embeddings"
    elif r < 0.86:
        return "POST", "/tokenize", {"content": rng.choice(PROMPTS)}, "tokenize"
    elif r < 0.90:
        return "POST", "/detokenize", {"tokens": [rng.randint(0, 400) for _ in range(rng.randint(1, 20))]}, "detokenize"
    elif r < 0.94:
        return "GET", "/v1/models", None, "models"
    elif r < 0.97:
        return "GET", "/health", None, "health"
    else:
        return "GET", "/metrics", None, "metrics"
    # Generation options.
    if rng.random() < 0.5:
        body["temperature"] = 0
    else:
        body["temperature"] = rng.choice([0.5, 1.0, 1.5])
        body["seed"] = rng.randint(0, 2**31)
        body["top_p"] = rng.choice([1.0, 0.9])
    if rng.random() < 0.2:
        body["stop"] = rng.choice(["\n", ".", [" the", "!"]])
    if rng.random() < 0.15:
        body["n"] = 2
    if rng.random() < 0.15:
        if kind == "chat":
            body.update(logprobs=True, top_logprobs=rng.randint(0, 3))
        else:
            body["logprobs"] = rng.randint(0, 3)
    if rng.random() < 0.5:
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    return "POST", path, body, kind


def invalid_request(rng: random.Random) -> tuple[str, str, bytes | dict | None, str, tuple[int, ...]]:
    """(method, path, body, kind, acceptable statuses) of a request the server must refuse."""
    comp, chat = "/v1/completions", "/v1/chat/completions"
    cases = [
        ("POST", comp, b'{"prompt": "hi", "max_tokens": ', "malformed", (400,)),
        ("POST", chat, b"[" * rng.randint(65, 50000), "deep", (400,)),
        ("POST", comp, {"prompt": "hi", "max_tokens": rng.choice(["ten", -5, 0, 10**9, 2.5])}, "max_tokens", (400,)),
        ("POST", chat, {"messages": rng.choice(["hi", {}, [], [1], [{"role": "x", "content": "y"}]])}, "messages",
         (400,)),
        ("POST", comp, {"prompt": "hi", "temperature": rng.choice(["hot", -1, 3])}, "temperature", (400,)),
        ("POST", comp, {"prompt": [1, 2, rng.choice([512, -1, 10**10])], "max_tokens": 2}, "token_ids", (400,)),
        ("POST", comp, {"prompt": "Once upon a time " * 80, "max_tokens": 4}, "too_long", (400,)),
        ("POST", comp, {"prompt": "hi", "n": rng.choice([0, SLOTS + 1, 100])}, "n", (400,)),
        ("POST", chat, {"messages": [{"role": "user", "content": "hi"}], "tools": []}, "tools", (400,)),
        ("GET", "/v1/nowhere", None, "404", (404,)),
        ("POST", "/v1/embeddings", {"input": []}, "embeddings", (400,)),
        ("POST", comp, b"\xff\xfe{}", "binary", (400,)),
    ]
    return rng.choice(cases)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.failures: list[str] = []
        self.failure_count = 0
        self.latency: list[float] = []
        self.disconnects = 0

    def count(self, key: str, status) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    def fail(self, msg: str) -> None:
        with self.lock:
            self.failure_count += 1
            if len(self.failures) < 20:
                self.failures.append(msg[:400])


def read_stream(resp) -> tuple[str, bool, str]:
    """(text of choice 0, ended with [DONE], problem or "")."""
    text, done = "", False
    for e in sse_events(resp):
        if e == TRUNCATED:
            return text, False, "chunked body cut off"
        if e == "[DONE]":
            done = True
            continue
        j = parse_json(e.encode())
        if "error" in j:
            return text, False, f"error event {e[:200]}"
        if "raw" in j:
            return text, False, f"bad event {e[:200]}"
        for ch in j.get("choices", []):
            if ch.get("index") == 0:
                text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
    return text, done, "" if done else "no [DONE]"


def text_of(j: dict) -> str:
    ch = [c for c in j["choices"] if c["index"] == 0][0]
    return ch["text"] if "text" in ch else ch["message"]["content"]


def worker(port: int, seed: int, until: float, stop: threading.Event, stats: Stats, reference: dict,
           ref_lock: threading.Lock) -> None:
    rng = random.Random(seed)
    client = Client(port)
    while time.monotonic() < until and not stop.is_set():
        try:
            if rng.random() < 0.25:
                method, path, body, kind, ok_status = invalid_request(rng)
                data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
                resp = client.send(method, path, data, fresh=True)
                raw = resp.read()
                client.close()
                stats.count(f"invalid.{kind}", resp.status)
                if resp.status not in ok_status or (resp.status != 200 and not is_openai_error(parse_json(raw))):
                    stats.fail(f"invalid {kind}: HTTP {resp.status} {raw[:200]!r}")
                continue
            method, path, body, kind = valid_request(rng)
            leave_early = body is not None and body.get("stream") and rng.random() < 0.1
            data = None if body is None else json.dumps(body).encode()
            t0 = time.monotonic()
            resp = client.send(method, path, data)
            if resp.status != 200:
                raw = resp.read()
                stats.count(f"valid.{kind}", resp.status)
                stats.fail(f"valid {kind} {json.dumps(body)[:200]}: HTTP {resp.status} {raw[:200]!r}")
                continue
            if leave_early:  # a client that leaves mid-stream
                resp.read1(64)
                client.close()
                stats.count(f"valid.{kind}.left", resp.status)
                with stats.lock:
                    stats.disconnects += 1
                continue
            if body is not None and body.get("stream"):
                text, done, problem = read_stream(resp)
                if problem:
                    stats.fail(f"valid {kind} stream {json.dumps(body)[:200]}: {problem}")
                    client.close()
            else:
                raw = resp.read()
                j = parse_json(raw)
                text = text_of(j) if kind in ("completion", "chat") and "choices" in j else None
                if kind in ("completion", "chat") and text is None:
                    stats.fail(f"valid {kind}: no choices in {raw[:200]!r}")
                if kind == "embeddings" and len(j.get("data", [])) != (len(body["input"]) if isinstance(body["input"], list) else 1):
                    stats.fail(f"embeddings: {len(j.get('data', []))} vectors for {body['input']!r}"[:300])
            stats.count(f"valid.{kind}", 200)
            with stats.lock:
                stats.latency.append(time.monotonic() - t0)
            # Greedy requests must give what the same request gave before (any load, any batch).
            if body is not None and body.get("temperature") == 0 and kind in ("completion", "chat") and text is not None:
                key = json.dumps({k: v for k, v in body.items() if k not in ("stream", "stream_options")}, sort_keys=True)
                with ref_lock:
                    want = reference.setdefault(key, text)
                if text != want:
                    stats.fail(f"greedy text changed under load for {key[:200]}: {text[:80]!r} != {want[:80]!r}")
        except (OSError, http.client.HTTPException) as e:
            stats.fail(f"connection error: {e!r}")
            client.close()
    client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", help="unused (CTest passes it to every script)")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the run before memory is judged")
    ap.add_argument("--rss-slack-mib", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    # Under AddressSanitizer freed memory sits in a quarantine of up to 256 MiB, which would look
    # like growth: keep it small (no effect on other builds).
    with open(args.skiff, "rb") as f:
        sanitized = b"AddressSanitizer" in f.read()
    asan = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=8"
    t_start = time.monotonic()
    server = Server(args.skiff, "--parallel", SLOTS, "-c", CTX, "--max-queue", 64, "-t", "1")
    stats = Stats()
    reference: dict = {}
    ref_lock = threading.Lock()
    rss: list[tuple[float, int]] = []
    ok = True
    try:
        start = time.monotonic()
        until = start + args.seconds
        stop = threading.Event()
        threads = [threading.Thread(target=worker, args=(server.port, args.seed * 1000 + i, until, stop, stats,
                                                          reference, ref_lock), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        crashed = False
        while time.monotonic() < until:
            if server.proc.poll() is not None:
                crashed = True
                stop.set()
                break
            rss.append((time.monotonic() - start, server.rss_kib()))
            time.sleep(0.5)
        for t in threads:
            t.join(150)
        hung = sum(t.is_alive() for t in threads)
        alive = server.proc.poll() is None
        final_metrics = server.metrics() if alive else {}
        exit_code = server.stop(30) if alive else server.proc.returncode
    finally:
        server.kill()

    # Memory after the warm-up: the first 10% of the judged window against the last 10%.
    judged = [kib for t, kib in rss if t >= args.warmup * args.seconds]
    k = max(1, len(judged) // 10)
    warm = statistics.median(judged[:k]) if judged else 0
    end = statistics.median(judged[-k:]) if judged else 0
    growth_kib = end - warm
    # Least-squares slope of the judged samples, KiB per minute.
    pts = [(t, kib) for t, kib in rss if t >= args.warmup * args.seconds]
    slope = 0.0
    if len(pts) >= 2:
        mt = statistics.fmean(t for t, _ in pts)
        mk = statistics.fmean(k for _, k in pts)
        den = sum((t - mt) ** 2 for t, _ in pts)
        slope = 60 * sum((t - mt) * (k - mk) for t, k in pts) / den if den else 0.0
    profile = [kib for t, kib in rss][:: max(1, len(rss) // 12)]
    allowed_kib = max(args.rss_slack_mib * 1024, 0.10 * warm)
    lat = sorted(stats.latency)
    stderr_noise = [line for line in server.log.splitlines() if not line.startswith("skiff serve:")]
    valid = {k: v for k, v in stats.counts.items() if k.startswith("valid.")}
    invalid = {k: v for k, v in stats.counts.items() if k.startswith("invalid.")}
    checks = {
        "no_crash": not crashed and alive and exit_code == 0,
        "no_hung_clients": hung == 0,
        "no_failures": stats.failure_count == 0,
        # Under ASan the allocator's quarantine and metadata grow for a while: not judged.
        "rss_flat": growth_kib <= allowed_kib or sanitized,
        "clean_stderr": not stderr_noise,
        "did_work": sum(valid.values()) > args.clients and sum(invalid.values()) > 0,
    }
    ok = all(checks.values())
    summary = {
        "ok": ok,
        "server_exit": "crashed" if crashed else "alive until the end",
        "checks": checks,
        "seconds": args.seconds,
        "clients": args.clients,
        "slots": SLOTS,
        "requests": sum(stats.counts.values()),
        "requests_per_second": round(sum(stats.counts.values()) / args.seconds, 1),
        "valid": sum(valid.values()),
        "invalid": sum(invalid.values()),
        "streams_left_early": stats.disconnects,
        "statuses": dict(sorted(stats.statuses.items())),
        "by_kind": dict(sorted(stats.counts.items())),
        "greedy_references": len(reference),
        "valid_latency_s": {"p50": round(lat[len(lat) // 2], 3) if lat else None,
                            "p99": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
                            "max": round(lat[-1], 3) if lat else None},
        "rss_kib": {"start": rss[0][1] if rss else None, "after_warmup": warm, "end": end,
                    "max": max(kib for _, kib in rss) if rss else None, "growth_after_warmup": growth_kib,
                    "allowed_growth": round(allowed_kib), "slope_after_warmup_kib_per_min": round(slope, 1),
                    "samples": len(rss), "profile": profile,
                    "judged": "no (AddressSanitizer build)" if sanitized else "yes"},
        "server": {"exit_code": exit_code,
                   "metrics": {k: v for k, v in final_metrics.items() if k in (
                       "skiff_requests_total", "skiff_http_requests_total", "skiff_client_errors_total",
                       "skiff_requests_rejected_busy_total", "skiff_generated_tokens_total",
                       "skiff_prompt_tokens_total", "skiff_prompt_tokens_cached_total", "skiff_slots_busy",
                       "skiff_queue_depth")},
                   "stderr_noise": stderr_noise[:10]},
        "failures": stats.failure_count,
        "first_failures": stats.failures,
        "wall_seconds": round(time.monotonic() - t_start, 1),
    }
    print(json.dumps(summary, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
