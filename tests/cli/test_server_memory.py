#!/usr/bin/python3
"""`skiff serve --memory NAME=STORE`: requests with "skiff": {"memory": NAME, "k": K} splice the
retrieved entries' stored KV between BOS and the prompt.

Checks, on a knowledge base from scripts/knowledge_qa.py and the built-in reader model: a
completion with a memory request retrieves the same entries and gives the same greedy answer
as `skiff memory ask --method splice` (an independent path through memory/reader.cpp), streamed
and not, and with "recompute": N as `--method splice-recompute --recompute N`; chat requests retrieve with the last user message; usage counts the spliced positions
as cached; the next request on the slot does not reuse the spliced KV (same answer again); and
bad requests get 400s naming the field (unknown store, k out of range, with n > 1, with
truncation, a token prompt without skiff.query), a bad --memory flag or a store built with
another model stops the server with a one-line error.

Run: /usr/bin/python3 tests/cli/test_server_memory.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import setup  # noqa: E402
from server_harness import Server, is_openai_error, sse_events  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
READER = os.path.join(ROOT, "models", "stories3M-reader.gguf")


def ask(c, store: str, question: str, k: int, *flags) -> tuple[str, list[str]]:
    """`skiff memory ask --method splice` (or what `flags` name): the answer and the ids of the entries read."""
    r = c.skiff("memory", "ask", "--store", store, "-p", question, "-k", k, *(flags or ("--method", "splice")), "-v",
                "-n", 8)
    ids = [line[1:line.index("]")] for line in r.stderr.splitlines() if line.startswith("[") and "]" in line]
    return r.stdout.strip(), ids


def main() -> int:
    args, c = setup()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "kqa")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "knowledge_qa.py"), "--seed", "5",
                        "--entities", "12", "-o", data], check=True, capture_output=True)
        kb = os.path.join(data, "kb.jsonl")
        store = os.path.join(tmp, "kb.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", store, "-t", 2)
        c.check("build", r.returncode == 0, r.stderr)
        questions = [json.loads(line)["question"] for line in open(os.path.join(data, "questions.jsonl"))][:3]

        with Server(args.skiff, "-m", READER, "--memory", f"kb={store}", "--parallel", 2, "-t", 2) as s:
            answers = []
            for q in questions:
                want, want_ids = ask(c, store, q, 3)
                answers.append(want)
                body = {"prompt": f"Q: {q} A:", "max_tokens": 8, "temperature": 0, "stop": ["\n"],
                        "skiff": {"memory": "kb", "k": 3, "query": q}}
                st, j = s.post("/v1/completions", body)
                ok = st == 200 and "choices" in j
                got = j["choices"][0]["text"].strip() if ok else ""
                ids = j.get("skiff", {}).get("memory_entries") if ok else None
                c.check(f"completion == memory ask --method splice: {q!r}", ok and got == want and ids == want_ids,
                        f"server {got!r} {ids} vs ask {want!r} {want_ids}: {str(j)[:300]}")
                if ok:
                    u = j["usage"]
                    c.check("usage: spliced positions are cached, the rest prefilled",
                            u["prompt_tokens_details"]["cached_tokens"] > 0
                            and u["prompt_tokens"] > u["prompt_tokens_details"]["cached_tokens"], str(u))
                # Again: the slot must not reuse the spliced KV as a plain prefix.
                st2, j2 = s.post("/v1/completions", body)
                c.check("the same request again gives the same answer", st2 == 200 and j2["choices"][0]["text"].strip() == got,
                        str(j2)[:300])

            c.check("the answers compared are not empty", any(answers), str(answers))
            # "recompute": N is `memory ask --method splice-recompute --recompute N`; the recomputed
            # tokens are prefilled, not cached.
            for q in questions:
                want, want_ids = ask(c, store, q, 3, "--method", "splice-recompute", "--recompute", 4)
                body = {"prompt": f"Q: {q} A:", "max_tokens": 8, "temperature": 0, "stop": ["\n"],
                        "skiff": {"memory": "kb", "k": 3, "query": q}}
                st0, j0 = s.post("/v1/completions", body)
                body["skiff"]["recompute"] = 4
                st, j = s.post("/v1/completions", body)
                ok = st == 200 and st0 == 200 and "choices" in j
                got = j["choices"][0]["text"].strip() if ok else ""
                c.check(f"recompute 4 == memory ask --method splice-recompute: {q!r}",
                        ok and got == want and j.get("skiff", {}).get("memory_entries") == want_ids,
                        f"server {got!r} vs ask {want!r}: {str(j)[:300]}")
                if ok:
                    cached = lambda x: x["usage"]["prompt_tokens_details"]["cached_tokens"]  # noqa: E731
                    c.check("recompute: 4 tokens per entry fewer cached than the splice",
                            cached(j) == cached(j0) - 4 * 3 and j["usage"]["prompt_tokens"] == j0["usage"]["prompt_tokens"],
                            f"{j['usage']} vs {j0['usage']}")
            q = questions[0]
            want, want_ids = ask(c, store, q, 2)
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            conn.request("POST", "/v1/completions", body=json.dumps(
                {"prompt": f"Q: {q} A:", "max_tokens": 8, "temperature": 0, "stop": ["\n"], "stream": True,
                 "skiff": {"memory": "kb", "k": 2, "query": q}}), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            st = resp.status
            events = [json.loads(e) for e in sse_events(resp) if e != "[DONE]"] if st == 200 else []
            text = "".join(ch.get("text") or "" for e in events for ch in e.get("choices", []))
            first_ids = events[0].get("skiff", {}).get("memory_entries") if events else None
            conn.close()
            c.check("streamed memory completion == ask", st == 200 and text.strip() == want and first_ids == want_ids,
                    f"{text!r} {first_ids} vs {want!r} {want_ids}")

            st, j = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": q}], "max_tokens": 4,
                                                     "temperature": 0, "skiff": {"memory": "kb", "k": 3}})
            c.check("chat: retrieves with the last user message", st == 200 and
                    j.get("skiff", {}).get("memory_entries") == ask(c, store, q, 3)[1], str(j)[:300])

            def bad(body: dict, param: str, what: str) -> None:
                st, j = s.post("/v1/completions", {"max_tokens": 4, **body})
                c.check(f"400: {what}", st == 400 and is_openai_error(j) and j["error"]["param"] == param,
                        f"{st} {str(j)[:300]}")

            bad({"prompt": "Q: x A:", "skiff": {"memory": "nope"}}, "skiff.memory", "unknown store")
            bad({"prompt": "Q: x A:", "skiff": {"memory": 3}}, "skiff.memory", "store name not a string")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "k": 0}}, "skiff.k", "k = 0")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "k": 1000}}, "skiff.k", "k too large")
            bad({"prompt": "Q: x A:", "n": 2, "skiff": {"memory": "kb"}}, "skiff.memory", "n > 1")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "truncate": True}}, "skiff.memory", "truncation")
            bad({"prompt": [1, 2, 3], "skiff": {"memory": "kb"}}, "skiff.query", "token prompt without a query")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "query": ""}}, "skiff.query", "empty query")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "recompute": -1}}, "skiff.recompute", "recompute < 0")
            bad({"prompt": "Q: x A:", "skiff": {"memory": "kb", "recompute": "4"}}, "skiff.recompute",
                "recompute not an integer")
            st, j = s.post("/v1/completions", {"prompt": "Q: x A:", "max_tokens": 4})
            c.check("plain requests still work beside memory ones", st == 200, str(j)[:300])
            c.check("exit 0", s.stop() == 0, s.log[-1000:])

        # A store with an HNSW index (memory build --ann on): the server searches it as ask does.
        indexed = os.path.join(tmp, "indexed.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", indexed, "--ann", "on", "-t", 2)
        c.check("build --ann on", r.returncode == 0 and os.path.exists(indexed + ".hnsw"), r.stderr)
        slots = os.path.join(tmp, "m4.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", slots, "--slots", 4, "-t", 2)
        c.check("build --slots 4", r.returncode == 0, r.stderr)
        with Server(args.skiff, "-m", READER, "--memory", f"kb={indexed}", "--memory", f"m4={slots}", "-t", 2) as s:
            st, j = s.post("/v1/completions", {"prompt": "Q: x A:", "max_tokens": 4,
                                               "skiff": {"memory": "m4", "k": 2, "recompute": 4}})
            c.check("400: recompute on a compressed store", st == 400 and is_openai_error(j)
                    and j["error"]["param"] == "skiff.recompute" and "whole entries" in j["error"]["message"],
                    f"{st} {str(j)[:300]}")
            q = questions[1]
            want, want_ids = ask(c, indexed, q, 4)
            st, j = s.post("/v1/completions", {"prompt": f"Q: {q} A:", "max_tokens": 8, "temperature": 0,
                                               "stop": ["\n"], "skiff": {"memory": "kb", "k": 4, "query": q}})
            c.check("indexed store: same entries and answer as ask", st == 200 and
                    j["choices"][0]["text"].strip() == want and j.get("skiff", {}).get("memory_entries") == want_ids,
                    f"{str(j)[:300]} vs {want!r} {want_ids}")

        for flag, what in ((f"kb:{store}", "no '='"), ("kb=" + os.path.join(tmp, "missing.skm"), "missing store")):
            r = subprocess.run([args.skiff, "serve", "-m", READER, "--port", "0", "--memory", flag],
                               capture_output=True, text=True, timeout=60)
            c.check(f"--memory {what}: one-line error, exit != 0", r.returncode != 0 and "error:" in r.stderr,
                    r.stderr[-500:])
        r = subprocess.run([args.skiff, "serve", "--port", "0", "--memory", f"kb={store}"],  # the layerskip model
                           capture_output=True, text=True, timeout=60)
        c.check("--memory with a store of another model: refused", r.returncode != 0 and "error:" in r.stderr,
                r.stderr[-500:])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
