#!/usr/bin/env python3
"""skiff bench's tests as llama-bench names and measures them: comma lists for -p/-n, -pg
PP,TG (one test ppPP+tgTG whose tokens/s count prompt and generated tokens over the total
time), JSON rows with n_prompt/n_gen, and one-line errors for malformed -pg values. KV cache
types (-ctk/-ctv, --cache-type-k/-v): the bytes bench and info report, generate's greedy text
unchanged by an F16 cache on the built-in model, and one-line errors for other values."""
from __future__ import annotations

import json
import sys

from harness import one_line_error, setup


def main() -> int:
    _, c = setup()
    r = c.skiff("bench", "-p", "16,32", "-n", "8", "-pg", "16,8", "-r", "2", "-t", "1", "--no-membw", "-o", "json")
    ok = c.check("bench with lists and -pg runs", r.returncode == 0, r.stderr[-500:])
    rows = json.loads(r.stdout) if ok else []
    got = [(row["test"], row["n_prompt"], row["n_gen"]) for row in rows]
    c.check("tests in llama-bench's order (pp, tg, pp+tg)",
            got == [("pp16", 16, 0), ("pp32", 32, 0), ("tg8", 0, 8), ("pp16+tg8", 16, 8)], str(got))
    c.check("every test has positive t/s and 2 samples",
            all(row["avg_ts"] > 0 and len(row["samples_ts"]) == 2 for row in rows), str(rows)[:300])
    pg = [row for row in rows if row["test"] == "pp16+tg8"]
    tg = [row for row in rows if row["test"] == "tg8"]
    pp = [row for row in rows if row["test"] == "pp16"]
    if pg and tg and pp:
        # avg_ts is the mean of the per-repetition rates, as llama-bench defines it. (No check
        # that pp+tg falls between tg and pp: on a loaded CI machine rates measured at different
        # moments need not be ordered.)
        c.check("avg_ts is the mean of samples_ts (pp, tg and pp+tg)",
                all(abs(row[0]["avg_ts"] - sum(row[0]["samples_ts"]) / 2) <= 1e-6 * row[0]["avg_ts"]
                    for row in (pg, tg, pp)), str(pg[0]))
    r = c.skiff("bench", "--pg", "8,4", "-p", "0", "-n", "0", "-r", "1", "-t", "1", "--no-membw")
    c.check("--pg alone, markdown", r.returncode == 0 and "pp8+tg4" in r.stdout, r.stdout + r.stderr)
    for bad in ("16", "16,0", "a,4", "8,4,2", "-3,4"):
        r = c.skiff("bench", "-pg", bad, "-r", "1", "-t", "1", "--no-membw")
        c.check(f"-pg {bad} is a one-line error", one_line_error(r, None), r.stderr)

    # KV cache types. The built-in model: 8 layers, kv dim 64 (2 heads of 32).
    per = {"f32": 8 * 2 * 64 * 4, "f16": 8 * 2 * 64 * 2, "q8_0": 8 * 2 * 2 * 34}
    for k, v in (("f16", "f16"), ("q8_0", "q8_0"), ("f16", "q8_0")):
        r = c.skiff("bench", "-p", "16", "-n", "4", "-ctk", k, "-ctv", v, "-r", "1", "-t", "1", "--no-membw", "-o", "json")
        ok = r.returncode == 0
        rows = json.loads(r.stdout) if ok else []
        want = per[k] // 2 + per[v] // 2
        c.check(f"bench -ctk {k} -ctv {v}: types and KV bytes in the JSON",
                ok and all(row["type_k"] == k and row["type_v"] == v and row["kv_bytes_per_token"] == want
                           and row["kv_bytes"] == want * 16 for row in rows), r.stdout[-400:] + r.stderr)
    r = c.skiff("bench", "-p", "8", "-n", "0", "--cache-type-k", "f16", "-r", "1", "-t", "1")
    c.check("bench markdown names the KV cache", r.returncode == 0 and "KV cache f16/f32" in r.stdout, r.stdout)
    r = c.skiff("info", "-ctv", "q8_0", "-c", "100")
    c.check("info: KV bytes per position for the types asked and for each type",
            r.returncode == 0 and "KV cache f32/q8_0: 2.53 KiB per position" in r.stdout and "q8_0 1.06 KiB/token" in r.stdout,
            r.stdout[-600:])
    texts = {}
    for t in ("f32", "f16"):
        r = c.skiff("generate", "-p", "Once upon a time", "-n", "24", "--temp", "0", "-ctk", t, "-ctv", t, "-t", "1")
        texts[t] = r.stdout if r.returncode == 0 else None
    c.check("generate with an f16 cache gives the same greedy text as f32 (built-in model)",
            texts["f32"] is not None and texts["f32"] == texts["f16"], str(texts))
    for cmd in (("bench",), ("generate", "-p", "x"), ("perplexity", "-f", "/dev/null"), ("chat",), ("serve",)):
        for flag, bad in (("-ctk", "q4_0"), ("--cache-type-v", "f64")):
            r = c.skiff(*cmd, flag, bad)
            c.check(f"{cmd[0]} {flag} {bad} is a one-line error", one_line_error(r, None) and "f32, f16 or q8_0" in r.stderr,
                    r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
