#!/usr/bin/python3
"""`skiff serve` on bad input: every client error is a 4xx in OpenAI's error shape
{"error": {"message", "type", "param", "code"}}, never a crash or a 500, and the server keeps
serving afterwards.

- malformed JSON, an empty body, a body that is not an object -> 400;
- 100000 '[' (and '{"a":' nested as deep) -> 400, not a stack overflow;
- wrong types: max_tokens "ten", temperature "hot", messages not an array, ... -> 400 naming
  the field;
- max_tokens negative, zero, fractional, huge, over --max-tokens -> 400; n over the slots -> 400;
- token ids outside the vocabulary in a prompt array -> 400 (the last id is fine);
- a prompt longer than the context (or prompt + max_tokens) -> 400 context_length_exceeded;
- a body over --max-body -> 413; unknown routes -> 404 JSON; /health 200; /metrics has the
  skiff_* lines and counted the errors; the server exits 0 on SIGTERM.

Run: /usr/bin/python3 tests/cli/test_server_errors.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import setup  # noqa: E402
from server_harness import Server, is_openai_error  # noqa: E402

MAX_BODY_KIB = 1024
CEILING = 128
SLOTS = 2
MSGS = [{"role": "user", "content": "Hi"}]


def main() -> int:
    args, c = setup()
    info = subprocess.run([args.skiff, "info"], capture_output=True, text=True, check=True).stdout
    vocab = int(re.search(r"vocab (\d+)", info).group(1))

    with Server(args.skiff, "--parallel", SLOTS, "--max-tokens", CEILING, "--max-body", MAX_BODY_KIB,
                "-t", "1") as s:
        def bad(name: str, path: str, body, status: int = 400, param: str | None = None, code: str | None = None,
                err_type: str | None = "invalid_request_error"):
            try:
                st, j = s.post(path, body)
            except (OSError, http.client.HTTPException) as e:
                dead = s.proc.poll()
                c.check(name, False, f"{e!r}; the server {'exited with ' + str(dead) if dead is not None else 'lives'}")
                if dead is not None:
                    raise SystemExit(c.finish() or 1)
                return
            c.check(name, st == status and is_openai_error(j, err_type, code, param),
                    f"HTTP {st}: {json.dumps(j)[:300]}")

        comp, chat = "/v1/completions", "/v1/chat/completions"
        # Malformed bodies.
        bad("malformed JSON", comp, '{"prompt": "hi", "max_tokens": 4')
        bad("malformed JSON (trailing garbage)", chat, '{"messages": []} x')
        bad("malformed JSON (bad escape)", chat, '{"messages": "\\q"}')
        bad("invalid UTF-8 in a string", comp, b'{"prompt": "\xff\xfe", "max_tokens": 4}')
        bad("empty body", comp, "")
        bad("a JSON array, not an object", comp, "[1, 2, 3]")
        bad("a JSON string, not an object", chat, '"hello"')
        bad("100000 '[' -> 400", comp, "[" * 100000)
        bad("'{\"a\":' x 100000 -> 400", chat, '{"a":' * 100000)
        bad("70 levels inside a valid object", comp, '{"prompt": "hi", "x": ' + "[" * 70 + "]" * 70 + "}")
        deep = '{"prompt": "hi", "x": ' + "[" * 5000 + "]" * 5000 + "}"
        bad("5000 levels inside a valid object", comp, deep)
        st, _ = s.get("/health")
        c.check("alive after the nesting attacks", st == 200)

        # Wrong types.
        bad("max_tokens \"ten\"", comp, {"prompt": "hi", "max_tokens": "ten"}, param="max_tokens")
        bad("temperature \"hot\"", chat, {"messages": MSGS, "temperature": "hot"}, param="temperature")
        bad("messages a string", chat, {"messages": "hi"}, param="messages")
        bad("messages an object", chat, {"messages": {"role": "user", "content": "hi"}}, param="messages")
        bad("messages missing", chat, {"model": "x"}, param="messages")
        bad("messages empty", chat, {"messages": []}, param="messages")
        bad("message not an object", chat, {"messages": ["hi"]}, param="messages[0]")
        bad("role unknown", chat, {"messages": [{"role": "wizard", "content": "hi"}]}, param="messages[0].role")
        bad("content a number", chat, {"messages": [{"role": "user", "content": 5}]}, param="messages[0].content")
        bad("image content part", chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, param="messages[0].content")
        bad("stream \"yes\"", comp, {"prompt": "hi", "stream": "yes"}, param="stream")
        bad("n \"3\"", comp, {"prompt": "hi", "n": "3"}, param="n")
        bad("stop a number", comp, {"prompt": "hi", "stop": 5}, param="stop")
        bad("stop empty string", comp, {"prompt": "hi", "stop": [""]}, param="stop")
        bad("prompt a number", comp, {"prompt": 5}, param="prompt")
        bad("prompt empty array", comp, {"prompt": []}, param="prompt")
        bad("prompt missing", comp, {"max_tokens": 4}, param="prompt")
        bad("top_p 0", comp, {"prompt": "hi", "top_p": 0}, param="top_p")
        bad("temperature 3", comp, {"prompt": "hi", "temperature": 3}, param="temperature")
        bad("temperature NaN-like string", comp, '{"prompt": "hi", "temperature": NaN}')
        bad("logprobs 6 on completions", comp, {"prompt": "hi", "logprobs": 6}, param="logprobs")
        bad("top_logprobs without logprobs", chat, {"messages": MSGS, "top_logprobs": 2}, param="top_logprobs")
        bad("logit_bias key not a token", comp, {"prompt": "hi", "logit_bias": {"abc": 1}}, param="logit_bias")
        bad("logit_bias id out of range", comp, {"prompt": "hi", "logit_bias": {str(vocab): 1}}, param="logit_bias")
        bad("stream_options without stream", chat, {"messages": MSGS, "stream_options": {"include_usage": True}},
            param="stream_options")
        bad("tools are refused", chat, {"messages": MSGS, "tools": [{"type": "function"}]}, param="tools")
        bad("response_format type unknown", chat, {"messages": MSGS, "response_format": {"type": "xml"}},
            param="response_format")

        # max_tokens values.
        for v in (-1, 0, CEILING + 1, 10**6, 2**31, 2**63, 2**64 + 5, 1e300, 2.5, -1e9):
            bad(f"max_tokens {v}", comp, {"prompt": "hi", "max_tokens": v}, param="max_tokens")
        bad("max_completion_tokens 0", chat, {"messages": MSGS, "max_completion_tokens": 0},
            param="max_completion_tokens")
        st, j = s.post(comp, {"prompt": "hi", "max_tokens": 3.0, "temperature": 0})
        c.check("max_tokens 3.0 (integral) is fine", st == 200 and j["usage"]["completion_tokens"] == 3, str(j)[:300])

        # n.
        bad("n over the slots", comp, {"prompt": "hi", "n": SLOTS + 1, "max_tokens": 2}, param="n")
        bad("n 0", comp, {"prompt": "hi", "n": 0}, param="n")
        bad("n 1000000", chat, {"messages": MSGS, "n": 10**6}, param="n")
        bad("2 prompts x n=2 over 2 slots", comp, {"prompt": ["a", "b"], "n": 2, "max_tokens": 2}, param="n")

        # Token ids.
        for ids in ([1, 2, vocab], [1, -1], [10**12], [1, 2.5], [2**64]):
            bad(f"prompt ids {ids}", comp, {"prompt": ids, "max_tokens": 2}, param="prompt")
        bad("nested prompt ids out of range", comp, {"prompt": [[1, 2], [3, vocab + 7]], "max_tokens": 2},
            param="prompt")
        bad("embedding ids out of range", "/v1/embeddings", {"input": [vocab]}, param="input")
        bad("detokenize ids out of range", "/detokenize", {"tokens": [vocab]}, param="tokens")
        st, j = s.post(comp, {"prompt": [1, vocab - 1], "max_tokens": 2})
        c.check("the last token id is fine", st == 200, str(j)[:300])

        # Context length (256 positions).
        long_text = "Once upon a time there was a little dog. " * 60
        bad("prompt longer than the context", comp, {"prompt": long_text, "max_tokens": 4}, param=None,
            code="context_length_exceeded")
        bad("chat prompt longer than the context", chat,
            {"messages": [{"role": "user", "content": long_text}]}, code="context_length_exceeded")
        bad("token-id prompt longer than the context", comp, {"prompt": [1] * 300, "max_tokens": 1},
            code="context_length_exceeded")
        bad("prompt + max_tokens over the context", comp, {"prompt": [1] * 200, "max_tokens": 100},
            code="context_length_exceeded")
        bad("embedding input longer than the context", "/v1/embeddings", {"input": long_text},
            code="context_length_exceeded")
        st, j = s.post(comp, {"prompt": long_text, "max_tokens": 4, "skiff": {"truncate": True}})
        c.check("... unless truncation is asked for", st == 200 and j["usage"]["prompt_tokens"] <= 256, str(j)[:300])

        # Body size.
        big = json.dumps({"prompt": "x" * (MAX_BODY_KIB * 1024 + 100)})
        st, h, body = s.request("POST", comp, big)
        c.check(f"a body over --max-body ({MAX_BODY_KIB} KiB) -> 413",
                st == 413 and is_openai_error(json.loads(body or b"null")), f"HTTP {st}: {body[:200]!r}")
        st, j = s.post(comp, json.dumps({"prompt": "x " * 20000, "max_tokens": 2}))
        c.check("a body under --max-body with a too-long prompt -> 400, not 413",
                st == 400 and is_openai_error(j, code="context_length_exceeded"), f"HTTP {st}: {str(j)[:200]}")

        # Routes.
        for method, path in (("GET", "/v1/nothing"), ("POST", "/v2/chat/completions"), ("GET", "/v1/chat/completions"),
                             ("DELETE", "/v1/models"), ("GET", "/v1/models/../../etc/passwd")):
            st, h, body = s.request(method, path)
            j = json.loads(body) if body and h.get("content-type", "").startswith("application/json") else None
            c.check(f"{method} {path} -> 404/405 JSON", st in (404, 405) and is_openai_error(j), f"HTTP {st}: {body[:200]!r}")
        st, h, body = s.request("GET", "/health")
        c.check("/health 200", st == 200 and json.loads(body) == {"status": "ok"}, f"HTTP {st}: {body[:200]!r}")
        st, h, body = s.request("GET", "/metrics")
        text = body.decode()
        names = ("requests_total", "http_requests_total", "client_errors_total", "requests_rejected_busy_total",
                 "slow_connections_closed_total", "prompt_tokens_total", "generated_tokens_total", "queue_depth",
                 "slots_busy", "slots_total", "kv_cache_used_positions", "kv_cache_capacity_positions")
        missing = [n for n in names if not re.search(rf"^skiff_{n} [0-9.e+-]+$", text, re.M)]
        c.check("/metrics has the skiff_* lines", st == 200 and not missing and h["content-type"].startswith("text/plain"),
                f"HTTP {st}, missing {missing}")
        m = s.metrics()
        c.check("/metrics counted the client errors", m.get("skiff_client_errors_total", 0) >= 60,
                str(m.get("skiff_client_errors_total")))
        c.check("/metrics: slots_total", m.get("skiff_slots_total") == SLOTS, str(m))

        st, j = s.post(comp, {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
        c.check("still serving after all that", st == 200 and j["usage"]["completion_tokens"] == 8, str(j)[:300])
        rc = s.stop()
        c.check("exit code 0 on SIGTERM", rc == 0, f"rc {rc}\n{s.log[-2000:]}")
        c.check("nothing on stderr but the server's own lines",
                all(line.startswith("skiff serve:") for line in s.log.splitlines()), s.log[-2000:])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
