#!/usr/bin/python3
"""`skiff memory build|ask|eval` from the command line, on a knowledge base written by
scripts/knowledge_qa.py and the built-in model.

Run: /usr/bin/python3 tests/cli/test_memory.py --skiff build/skiff --shared ../shared

Checks: build writes a store and reports it; ask answers (retrieving, or reading --entries);
eval prints one row per method and hop count with every column, recall only for retrieving
methods, splice prefilling only the question; and bad input gets one-line errors: a
corrupted, truncated or foreign-model store, a malformed kb.jsonl line, k larger than the
store or than the context, unknown entries and methods. Large stores: build --ann on writes
STORE.hnsw, which ask and eval then search (the same entries as --exact here); a stale index
is refused; memory add gives the bytes of building from the concatenated knowledge base and
refuses duplicate ids, bad lines and another model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import one_line_error, setup  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
COLUMNS = ["method", "hops", "questions", "em", "recall_at_k", "ttft_ms_p50", "ttft_ms_p95", "questions_per_s",
           "prefill_tokens_per_question", "bytes_per_entry"]


def main() -> int:
    args, c = setup()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "kqa")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "knowledge_qa.py"), "--seed", "5",
                        "--entities", "12", "-o", data], check=True, capture_output=True)
        kb, questions = os.path.join(data, "kb.jsonl"), os.path.join(data, "questions.jsonl")
        store = os.path.join(tmp, "kb.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", store, "-t", 2)
        n_kb = sum(1 for _ in open(kb))
        c.check("build", r.returncode == 0 and f"{n_kb} entries" in r.stdout and os.path.exists(store),
                r.stderr + r.stdout)

        r = c.skiff("memory", "ask", "--store", store, "-p", "Where does Bomira live?", "-k", 3, "-v", "-n", 4)
        c.check("ask retrieves and answers", r.returncode == 0 and "time to first token" in r.stderr
                and r.stderr.count("\n[") + r.stderr.startswith("[") == 3, r.stderr)
        first_id = json.loads(open(kb).readline())["id"]
        r = c.skiff("memory", "ask", "--store", store, "-p", "Who?", "--entries", first_id, "-v", "-n", 2)
        c.check("ask --entries reads the given entry", r.returncode == 0 and f"[{first_id}]" in r.stderr, r.stderr)

        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "-k", 2, "--limit", 6, "-o", "json",
                    "-t", 2, timeout=300)
        try:
            rows = json.loads(r.stdout)
        except json.JSONDecodeError:
            rows = []
        methods = {row["method"] for row in rows}
        c.check("eval: every method", methods == {"none", "oracle", "read", "read-block", "splice",
                                                  "splice-uncorrected", "splice-recompute10"}, r.stdout + r.stderr)
        c.check("eval: every column", rows != [] and all(all(k in row for k in COLUMNS) for row in rows))
        by = {(row["method"], row["hops"]): row for row in rows}
        c.check("eval: recall only where entries are retrieved",
                all((row["recall_at_k"] is None) == (row["method"] in ("none", "oracle")) for row in rows)
                and all(row["recall_at_k"] is None or 0 <= row["recall_at_k"] <= 1 for row in rows))
        sp, rd = by.get(("splice", 1)), by.get(("read", 1))
        c.check("eval: splice prefills only BOS and the question, read prefills the entries too",
                sp is not None and rd is not None
                and sp["prefill_tokens_per_question"] + 20 < rd["prefill_tokens_per_question"], str((sp, rd)))
        rc = by.get(("splice-recompute10", 1))
        c.check("eval: splice-recompute prefills between the two",
                rc is not None and sp["prefill_tokens_per_question"] < rc["prefill_tokens_per_question"]
                < rd["prefill_tokens_per_question"], str((sp, rc, rd)))
        r = c.skiff("memory", "ask", "--store", store, "-p", "Who?", "--method", "splice-recompute", "--recompute", 0)
        c.check("ask --recompute 0 is refused", one_line_error(r, None) and "--recompute" in r.stderr, r.stderr)
        # memory retrieve: per question the entries ask -v reads, in its order.
        r = c.skiff("memory", "retrieve", "--store", store, "--questions", questions, "-k", 3)
        lines = [json.loads(l) for l in r.stdout.splitlines()] if r.returncode == 0 else []
        q0 = json.loads(open(questions).readline())["question"]
        a = c.skiff("memory", "ask", "--store", store, "-p", q0, "-k", 3, "-v", "-n", 1)
        shown = [l[1:l.index("]")] for l in a.stderr.splitlines() if l.startswith("[")]
        c.check("memory retrieve: a line per question, k ids, ask's entries in its order",
                len(lines) == sum(1 for _ in open(questions)) and all(len(l["ids"]) == 3 for l in lines)
                and lines[0]["question"] == q0 and lines[0]["ids"] == shown, r.stdout[:300] + r.stderr + str(shown))
        # --batch: the questions go through batched passes, with the same answers.
        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "-k", 2, "--limit", 6, "-o", "json",
                    "-t", 2, "--batch", 4, timeout=300)
        batched = {(row["method"], row["hops"]): row for row in json.loads(r.stdout or "[]")}
        c.check("eval --batch 4: the same exact match and prefill per method as one by one",
                batched.keys() == by.keys() and all(
                    batched[key]["em"] == row["em"]
                    and batched[key]["prefill_tokens_per_question"] == row["prefill_tokens_per_question"]
                    for key, row in by.items()), r.stdout + r.stderr)
        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "--batch", 0)
        c.check("eval --batch 0 is refused", one_line_error(r, None) and "--batch" in r.stderr, r.stderr)
        # Retrieving methods read what the retriever returns, never the gold entries: with k = 1
        # a two-hop question reads one entry where oracle reads two.
        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "-k", 1, "-o", "json",
                    "--methods", "oracle,read", "-t", 2, timeout=300)
        by = {(row["method"], row["hops"]): row for row in json.loads(r.stdout or "[]")}
        o2, r2 = by.get(("oracle", 2)), by.get(("read", 2))
        c.check("eval: read retrieves k entries, oracle reads one per hop",
                o2 is not None and r2 is not None
                and r2["prefill_tokens_per_question"] < o2["prefill_tokens_per_question"], str((o2, r2)))
        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "-k", 2, "--limit", 2,
                    "--methods", "none,splice")
        c.check("eval: markdown table", r.returncode == 0 and r.stdout.startswith("| method | hops |")
                and "| splice | 1 |" in r.stdout, r.stdout + r.stderr)

        # The HNSW index: written on request, used by ask and eval, refused when stale.
        indexed = os.path.join(tmp, "indexed.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", indexed, "--ann", "on", "-t", 2)
        c.check("build --ann on writes STORE.hnsw", r.returncode == 0 and "HNSW index" in r.stdout
                and os.path.exists(indexed + ".hnsw"), r.stdout + r.stderr)
        c.check("build --ann auto writes no index for a small store", not os.path.exists(store + ".hnsw"))
        q = "What pet does Bomira have?"
        a = c.skiff("memory", "ask", "--store", indexed, "-p", q, "-k", 4, "-v", "-n", 2, "--ef", 16)
        e = c.skiff("memory", "ask", "--store", indexed, "-p", q, "-k", 4, "-v", "-n", 2, "--exact")
        retrieved = lambda r: [l for l in r.stderr.splitlines() if l.startswith("[")]
        c.check("ask searches the index: the exact entries here", a.returncode == 0 and e.returncode == 0
                and len(retrieved(a)) == 4 and retrieved(a) == retrieved(e), a.stderr + e.stderr)
        r = c.skiff("memory", "eval", "--store", indexed, "--questions", questions, "-k", 2, "--limit", 3,
                    "--methods", "splice", "--ef", 32, "-o", "json")
        c.check("eval with an index", r.returncode == 0 and json.loads(r.stdout or "[]") != [], r.stdout + r.stderr)
        r = c.skiff("memory", "index", "--store", store)
        c.check("memory index", r.returncode == 0 and os.path.exists(store + ".hnsw"), r.stdout + r.stderr)
        os.remove(store + ".hnsw")
        open(store + ".hnsw", "wb").write(open(indexed + ".hnsw", "rb").read())
        r = c.skiff("memory", "ask", "--store", store, "-p", q)
        r2 = c.skiff("memory", "ask", "--store", store, "-p", q, "--exact", "-n", 2)
        os.remove(store + ".hnsw")
        # Built from the same knowledge base, the two stores have the same tables: the index fits.
        c.check("an index of an identical store is accepted; --exact ignores it",
                r.returncode == 0 and r2.returncode == 0, r.stderr + r2.stderr)
        lines = open(kb).read().splitlines(keepends=True)
        small_kb = os.path.join(tmp, "small.jsonl")
        open(small_kb, "w").writelines(lines[:-1])
        small = os.path.join(tmp, "small.skm")
        c.skiff("memory", "build", "--kb", small_kb, "-o", small, "-t", 2)
        open(small + ".hnsw", "wb").write(open(indexed + ".hnsw", "rb").read())
        r = c.skiff("memory", "ask", "--store", small, "-p", q)
        c.check("stale index refused", one_line_error(r) and "another store" in r.stderr, r.stderr)
        os.remove(small + ".hnsw")

        # memory add: the store built from the whole knowledge base, byte for byte.
        head, tail = os.path.join(tmp, "head.jsonl"), os.path.join(tmp, "tail.jsonl")
        half = len(lines) // 2
        open(head, "w").writelines(lines[:half])
        open(tail, "w").writelines(lines[half:])
        grown = os.path.join(tmp, "grown.skm")
        c.skiff("memory", "build", "--kb", head, "-o", grown, "-t", 2)
        r = c.skiff("memory", "add", "--store", grown, "--kb", tail, "-t", 2)
        c.check("add", r.returncode == 0 and f"{n_kb} entries ({n_kb - half} added)" in r.stdout, r.stdout + r.stderr)
        c.check("add == build from the concatenation", open(grown, "rb").read() == open(store, "rb").read())
        # Compressed memories: --slots M keeps M rows per entry; eval adds a splice-mM row;
        # add keeps the slot count (the same bytes as building the whole knowledge base).
        m4 = os.path.join(tmp, "m4.skm")
        r = c.skiff("memory", "build", "--kb", kb, "-o", m4, "--slots", 4, "-t", 2)
        c.check("build --slots 4", r.returncode == 0 and os.path.getsize(m4) < os.path.getsize(store), r.stderr)
        r = c.skiff("memory", "eval", "--store", store, "--compressed", m4, "--questions", questions, "-k", 2,
                    "--limit", 4, "--methods", "splice", "-o", "json", "-t", 2, timeout=300)
        by = {(row["method"], row["hops"]): row for row in json.loads(r.stdout or "[]")}
        sp, m = by.get(("splice", 1)), by.get(("splice-m4", 1))
        c.check("eval --compressed: a splice-m4 row, fewer bytes per entry, the same retrieval",
                sp is not None and m is not None and m["bytes_per_entry"] < sp["bytes_per_entry"]
                and m["recall_at_k"] == sp["recall_at_k"], r.stdout + r.stderr)
        r = c.skiff("memory", "ask", "--store", m4, "-p", "Who?", "--method", "splice-recompute")
        c.check("splice-recompute refuses a compressed store", one_line_error(r) and "whole entries" in r.stderr,
                r.stderr)
        r = c.skiff("memory", "eval", "--store", store, "--compressed", small, "--questions", questions)
        c.check("eval --compressed refuses a store of other entries", one_line_error(r) and "same entries" in r.stderr,
                r.stderr)
        grown4 = os.path.join(tmp, "grown4.skm")
        c.skiff("memory", "build", "--kb", head, "-o", grown4, "--slots", 4, "-t", 2)
        r = c.skiff("memory", "add", "--store", grown4, "--kb", tail, "-t", 2)
        c.check("add to a compressed store == build --slots of the concatenation",
                r.returncode == 0 and open(grown4, "rb").read() == open(m4, "rb").read(), r.stderr)
        r = c.skiff("memory", "build", "--kb", kb, "-o", os.path.join(tmp, "bad.skm"), "--slots", -1)
        c.check("build --slots -1 is refused", one_line_error(r, None) and "--slots" in r.stderr, r.stderr)
        r = c.skiff("memory", "add", "--store", grown, "--kb", tail, "-o", os.path.join(tmp, "never.skm"))
        c.check("add refuses ids already stored", one_line_error(r) and "already in" in r.stderr
                and not os.path.exists(os.path.join(tmp, "never.skm")), r.stderr)
        r = c.skiff("memory", "add", "-m", os.path.join(ROOT, "models", "stories260K.gguf"), "--store", grown,
                    "--kb", tail, "-o", os.path.join(tmp, "never.skm"))
        c.check("add refuses another model", one_line_error(r) and "built with another model" in r.stderr, r.stderr)
        badadd = os.path.join(tmp, "badadd.jsonl")
        open(badadd, "w").write('{"id": "new1", "kind": "qa", "text": "Q: x? A: y."}\n{"id": 5}\n')
        r = c.skiff("memory", "add", "--store", grown, "--kb", badadd)
        c.check("add refuses a bad kb line", one_line_error(r) and ":2:" in r.stderr, r.stderr)

        # Bad input: one line each, never a crash.
        blob = open(store, "rb").read()
        bad = os.path.join(tmp, "bad.skm")
        open(bad, "wb").write(blob[:8] + bytes([blob[8] ^ 1]) + blob[9:])
        r = c.skiff("memory", "ask", "--store", bad, "-p", "Who?")
        c.check("corrupt store", one_line_error(r) and "version" in r.stderr, r.stderr)
        open(bad, "wb").write(blob[: len(blob) // 2])
        r = c.skiff("memory", "ask", "--store", bad, "-p", "Who?")
        c.check("truncated store", one_line_error(r) and "truncated" in r.stderr, r.stderr)
        r = c.skiff("memory", "ask", "-m", os.path.join(ROOT, "models", "stories260K.gguf"), "--store", store,
                    "-p", "Who?")
        c.check("store of another model", one_line_error(r) and "built with another model" in r.stderr, r.stderr)
        badkb = os.path.join(tmp, "bad.jsonl")
        with open(badkb, "w") as f:
            f.write(open(kb).readline())
            f.write('{"id": "x", "kind": "passage"\n')
        r = c.skiff("memory", "build", "--kb", badkb, "-o", os.path.join(tmp, "never.skm"))
        c.check("malformed kb line", one_line_error(r) and ":2: not valid JSON" in r.stderr
                and not os.path.exists(os.path.join(tmp, "never.skm")), r.stderr)
        r = c.skiff("memory", "ask", "--store", store, "-p", "Who?", "-k", n_kb + 1)
        c.check("k larger than the store", one_line_error(r) and f"k = {n_kb + 1}" in r.stderr, r.stderr)
        r = c.skiff("memory", "ask", "--store", store, "-p", "Who?", "-k", 8, "-c", 40)
        c.check("k entries larger than the context", one_line_error(r) and "context" in r.stderr, r.stderr)
        r = c.skiff("memory", "ask", "--store", store, "-p", "Who?", "--entries", "nope")
        c.check("unknown entry", one_line_error(r) and '"nope"' in r.stderr, r.stderr)
        r = c.skiff("memory", "eval", "--store", store, "--questions", questions, "--methods", "splice,magic")
        c.check("unknown method", one_line_error(r) and '"magic"' in r.stderr, r.stderr)
        r = c.skiff("memory", "build", "--kb", kb, "-o", os.path.join(tmp, "x.skm"), "--kv-type", "q4_0")
        c.check("bad --kv-type", one_line_error(r) and "q4_0" in r.stderr, r.stderr)
        r = c.skiff("memory", "ask", "--store", os.path.join(tmp, "missing.skm"), "-p", "Who?")
        c.check("missing store", one_line_error(r) and "missing.skm" in r.stderr, r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
