#!/usr/bin/env python3
"""Self-speculative decoding in skiff next to speculative decoding in llama.cpp, on a planted
early exit (issue 16), in the same run.

The models: `skiff synth --planted-exit E --planted-scale S` (the attn_output and ffn_down matrices
of layers >= E scaled by S, so the exit at layer E agrees often with the full model) for each
--types entry, and for each exit layer in --spec the truncated draft `skiff convert
--first-layers E` (what a llama.cpp user would draft with). Each round runs, per type and prompt,
every config back to back, their order rotated for each prompt and round:

  skiff plain        skiff generate --temp 0 -t T
  skiff self-spec    skiff generate --temp 0 --self-spec E --draft-max D --draft-p-min 0
                     (E:Da: --draft-adaptive, D the most; E:DlN: --lookup N as well;
                    E:Dh8 / E:Dh4: --draft-head q8_0 / q4_0; E:Dx: --dynamic-exit;
                     E:Dc8 / E:Dc4: --draft-copy q8_0 / q4_0, drafts in a quantized copy of layers
                     0..E-1 + head with its own KV cache)
  llama.cpp plain    llama-cli -no-cnv --temp 0
  llama.cpp spec     llama-speculative -md FIRST-E.gguf --draft-max D --temp 0, and the same with
                     FIRST-E quantized to --llama-draft-quant (default q8_0: what a llama.cpp user
                     would do with a draft; skipped where the type is no larger than that)

Reported per config: tokens/s (median over rounds of the round's total tokens / total seconds over the prompts;
decode only, and end to end = generated / (prompt + decode time)), the speedup against the same
program's plain decoding (end to end: the median over every round and prompt of the config's rate
against its plain decoding's on that prompt, run next to it), the acceptance rate, tokens per
round, and the ideal speedup from the measured acceptance a, drafting cost per drafted token c_d and
verification cost c_v (both relative to one plain decode step), assuming each draft is accepted
independently with probability a and every round drafts D tokens:

  ideal = E[tokens per round] / (round cost) = ((1 - a^(D+1)) / (1 - a)) / (D * c_d + c_v)

and `predicted`: the same costs with the tokens per round and drafts per round actually seen (for
adaptive configs, where D varies, only this one). Achieved close to predicted means a round costs
what its weight reading predicts, nothing more.

c_d, c_v are measured once per type and config before the rounds: skiff from `skiff bench
<the config's flags> -r 2 -o json` on the first prompt (draft_cost_per_token: a round's drafting,
the D draft steps plus the last draft's own early pass, over D; verify_cost), llama.cpp from
llama-bench -r 3: c_d = tg(full) / tg(draft), c_v = (D+1) * tg(full) / pp_{D+1}(full).
Greedy texts must agree: skiff self-spec == skiff plain, llama-speculative == llama-cli (over
the shorter text: llama-speculative may emit a few tokens more than -n); the exit code is 1 when
skiff's differ (skiff's greedy speculative decoding is exact by construction; llama.cpp's batched
verification is not bit-exact against single-token decoding, so there a difference is reported).

  bench/compare_speculative.py [--quick] [--shape tinyllama] [--types f16,bf16,q8_0]
      [--planted-exit 4] [--planted-scale 0.03] [--spec 4:2,4:3,4:4,4:8a,6:4] [--rounds 3] [-n 64] [-t 2]
      [--dir /tmp/skiff-spec-models] [--skiff build/skiff] [--peer DIR] [--json OUT]
      [--llama-args "--poll 0"]
  --quick: --shape small --rounds 1 -n 32 (unless given). DIR: llama.cpp's bin folder (default:
  ../shared/peers/build-llamacpp.sh, which builds it once and prints it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play in the park with her red ball.",
    "Summarize the story: Tom and his dog Max went to the beach. The sun was hot and the sand was soft.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
]


def die(msg: str) -> None:
    sys.exit(f"error: {msg}")


def run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                       errors="replace")
    if p.returncode != 0:
        die(f"{shlex.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return p


def peer_bin(arg: str | None) -> str:
    if arg:
        return arg
    script = os.path.join(HERE, "..", "..", "shared", "peers", "build-llamacpp.sh")
    return subprocess.run(["bash", script], check=True, capture_output=True, text=True).stdout.strip()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Spec(tuple):
    """(E, D, adaptive, lookup N, head): `E:D` drafts D tokens per round (--draft-p-min 0); a suffix `a`
    makes D the most and the cost model decide (--draft-adaptive); `lN` drafts from prompt lookup
    first (--lookup N). llama.cpp runs the plain E:D items only."""

    def __new__(cls, e: int, d: int, adaptive: bool = False, lookup: int = 0, head: str = "", dynamic: bool = False,
                copy: str = ""):
        return super().__new__(cls, (e, d, adaptive, lookup, head, dynamic, copy))

    e = property(lambda s: s[0])
    d = property(lambda s: s[1])
    adaptive = property(lambda s: s[2])
    lookup = property(lambda s: s[3])
    head = property(lambda s: s[4])
    dynamic = property(lambda s: s[5])
    copy = property(lambda s: s[6])
    plain = property(lambda s: not s[2] and not s[3] and not s[4] and not s[5] and not s[6])

    def flags(self) -> list[str]:
        f = ["--self-spec", str(self.e), "--draft-max", str(self.d)]
        f += ["--draft-adaptive"] if self.adaptive else ["--draft-p-min", "0"]
        f += ["--draft-head", self.head] if self.head else []
        f += ["--dynamic-exit"] if self.dynamic else []
        f += ["--draft-copy", self.copy] if self.copy else []
        return f + (["--lookup", str(self.lookup)] if self.lookup else [])

    def label(self) -> str:
        extra = (" adaptive" if self.adaptive else "") + (f" + lookup {self.lookup}" if self.lookup else "") + \
            (f" head {self.head}" if self.head else "") + (" dynamic exit" if self.dynamic else "") + \
            (f" copy {self.copy}" if self.copy else "")
        return f"E={self.e} D={'<=' if self.adaptive else ''}{self.d}{extra}"


def parse_spec(text: str) -> list[Spec]:
    out = []
    for item in filter(None, text.split(",")):
        m = re.fullmatch(r"(\d+):(\d+)(a?)(?:l(\d+))?(?:h([48]))?(x?)(?:c([48]))?", item)
        if not m:
            die(f"--spec item '{item}' is not E:D[a][lN][h8|h4][x][c8|c4]")
        quant = {"8": "q8_0", "4": "q4_0"}
        out.append(Spec(int(m.group(1)), int(m.group(2)), m.group(3) == "a", int(m.group(4) or 0),
                        quant.get(m.group(5) or "", ""), m.group(6) == "x", quant.get(m.group(7) or "", "")))
    return out


# --- one generation per program: (text, generated tokens, prompt seconds, decode seconds, drafted, accepted)
def skiff_generate(skiff: str, model: str, prompt: str, n: int, t: int, extra: list[str]) -> dict:
    p = run([skiff, "generate", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", str(t), *extra])
    m = re.search(r"prompt: (\d+) tokens, ([0-9.]+) tok/s \| generated: (\d+) tokens, ([0-9.]+) tok/s", p.stderr)
    if not m:
        die(f"no timing line from skiff generate: {p.stderr[-500:]}")
    pt, pr, gt, gr = int(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
    r = {"text": p.stdout.rstrip("\n"), "tokens": gt, "prompt_s": pt / pr if pr > 0 else 0.0,
         "decode_s": gt / gr if gr > 0 else 0.0, "drafted": 0, "accepted": 0}
    a = re.search(r": (\d+) rounds, acceptance [0-9.]+% \((\d+)/(\d+)\)", p.stderr)
    if a:
        r["rounds"], r["accepted"], r["drafted"] = int(a.group(1)), int(a.group(2)), int(a.group(3))
    return r


def strip_prompt(out: str, prompt: str) -> str:
    i = out.find(prompt)
    return out[i + len(prompt):] if i >= 0 else out


LLAMA_ARGS: list[str] = []  # --llama-args, for every llama.cpp program


def llama_cli(peer: str, model: str, prompt: str, n: int, t: int) -> dict:
    p = run([os.path.join(peer, "llama-cli"), "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", str(t),
             "-no-cnv", "-c", "1024", *LLAMA_ARGS])
    pe = re.search(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens", p.stderr)
    ev = re.search(r"\beval time =\s*([0-9.]+) ms /\s*(\d+) runs", p.stderr.replace("prompt eval time", ""))
    if not pe or not ev:
        die(f"no timings from llama-cli: {p.stderr[-800:]}")
    runs = int(ev.group(2))
    return {"text": strip_prompt(p.stdout, prompt).rstrip(), "tokens": runs + 1, "prompt_s": float(pe.group(1)) / 1e3,
            "decode_s": float(ev.group(1)) / 1e3, "drafted": 0, "accepted": 0,
            "decode_tokens": runs}


def llama_speculative(peer: str, model: str, draft: str, prompt: str, n: int, t: int, d: int) -> dict:
    p = run([os.path.join(peer, "llama-speculative"), "-m", model, "-md", draft, "-p", prompt, "-n", str(n),
             "--temp", "0", "-t", str(t), "-td", str(t), "--draft-max", str(d), "-c", "1024", "-cd", "1024",
             *LLAMA_ARGS])
    enc = re.search(r"encoded\s+(\d+) tokens in\s+([0-9.]+) seconds", p.stderr)
    dec = re.search(r"decoded\s+(\d+) tokens in\s+([0-9.]+) seconds", p.stderr)
    nd = re.search(r"n_drafted = (\d+)", p.stderr)
    na = re.search(r"n_accept  = (\d+)", p.stderr)
    if not (enc and dec and nd and na):
        die(f"no timings from llama-speculative: {p.stderr[-800:]}")
    return {"text": strip_prompt(p.stdout, prompt).strip(), "tokens": int(dec.group(1)),
            "prompt_s": float(enc.group(2)), "decode_s": float(dec.group(2)),
            "drafted": int(nd.group(1)), "accepted": int(na.group(1))}


# --- costs, measured once per type -------------------------------------------------------------
def skiff_costs(skiff: str, model: str, sp: Spec, t: int, prompts_file: str, n: int) -> tuple[float, float]:
    """c_d: a round's drafting per drafted token (the D draft steps and the last draft's own early
    pass, over D), c_v: a steady verification; both in plain decode steps."""
    p = run([skiff, "bench", "-m", model, *sp.flags(), "--prompts", prompts_file, "--spec-tokens", str(n),
             "-r", "2", "-t", str(t), "-o", "json"])
    rows = json.loads(p.stdout)
    row = next((r for r in rows if r.get("task") == "all"), rows[-1])
    return row["draft_cost_per_token"], row["verify_cost"]


def llama_bench(peer: str, model: str, t: int, pp: list[int], tg: int) -> dict[str, float]:
    cmd = [os.path.join(peer, "llama-bench"), "-m", model, "-t", str(t), "-r", "3", "-o", "json",
           "-p", ",".join(map(str, pp)) or "0", "-n", str(tg), *LLAMA_ARGS]
    out = {}
    for r in json.loads(run(cmd).stdout):
        key = f"tg{r['n_gen']}" if r["n_prompt"] == 0 else f"pp{r['n_prompt']}"
        out[key] = r["avg_ts"]
    return out


def ideal_speedup(a: float, d: int, c_d: float, c_v: float) -> float:
    tokens = d + 1 if a >= 1.0 else (1 - a ** (d + 1)) / (1 - a)
    cost = d * c_d + c_v
    return tokens / cost if cost > 0 else 0.0


def same_text(a: str, b: str, prefix_ok: bool) -> bool:
    if not prefix_ok:
        return a == b
    # llama-cli and llama-speculative print the prompt differently (a leading space, "<s>").
    short, long_ = sorted((a.strip(), b.strip()), key=len)
    return len(short) > 0 and long_.startswith(short)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shape, 1 round, 32 tokens")
    ap.add_argument("--shape")
    ap.add_argument("--types", default="f16,bf16,q8_0")
    ap.add_argument("--planted-exit", type=int, default=4)
    ap.add_argument("--planted-scale", type=float, default=0.03)
    ap.add_argument("--spec", default="4:2,4:3,4:4,4:8a,6:4",
                    help="self-spec / draft configs E:D (exit layer : drafts), suffix a: adaptive (D the most), "
                         "lN: prompt lookup first, h8 / h4: --draft-head q8_0 / q4_0, x: --dynamic-exit (E the first)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("-n", type=int)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/skiff-spec-models")
    ap.add_argument("--skiff", default=os.path.join(HERE, "..", "build", "skiff"))
    ap.add_argument("--peer", help="llama.cpp's bin folder")
    ap.add_argument("--json", help="also write every sample here")
    ap.add_argument("--llama-draft-quant", default="q8_0",
                    help="also run llama-speculative with the truncated draft quantized to this type (skiff quantize) "
                         "where the model's type is larger; '' for none")
    ap.add_argument("--llama-args", default="--poll 0",
                    help="more arguments for llama-cli, llama-speculative and llama-bench (default '--poll 0': "
                         "with ggml's default polling its threads spin and single runs here varied 1.5-30 t/s)")
    a = ap.parse_args()
    LLAMA_ARGS[:] = shlex.split(a.llama_args)
    shape = a.shape or ("small" if a.quick else "tinyllama")
    rounds = a.rounds or (1 if a.quick else 3)
    n = a.n or (32 if a.quick else 64)
    types = [x for x in a.types.split(",") if x]
    spec = parse_spec(a.spec)
    if not os.access(a.skiff, os.X_OK):
        die(f"{a.skiff} not found (build first)")
    peer = peer_bin(a.peer)
    os.makedirs(a.dir, exist_ok=True)

    # Models: planted file per type, truncated draft per (type, E).
    files: dict[str, dict] = {}
    for ty in types:
        tag = f"{shape}-{ty}-planted{a.planted_exit}-s{a.planted_scale:g}"
        full = os.path.join(a.dir, tag + ".gguf")
        if not os.path.exists(full):
            run([a.skiff, "synth", "--shape", shape, "--type", ty, "-o", full, "-t", str(a.t),
                 "--planted-exit", str(a.planted_exit), "--planted-scale", str(a.planted_scale)])
            print(f"made {full}", file=sys.stderr, flush=True)
        drafts = {}
        for e in sorted({sp.e for sp in spec}):
            dr = os.path.join(a.dir, f"{tag}-first{e}.gguf")
            if not os.path.exists(dr):
                run([a.skiff, "convert", "--first-layers", str(e), full, dr])
                print(f"made {dr}", file=sys.stderr, flush=True)
            drafts[(e, "")] = dr
            if a.llama_draft_quant and ty in ("f32", "f16", "bf16"):
                dq = os.path.join(a.dir, f"{tag}-first{e}-{a.llama_draft_quant}.gguf")
                if not os.path.exists(dq):
                    run([a.skiff, "quantize", dr, dq, a.llama_draft_quant])
                    print(f"made {dq}", file=sys.stderr, flush=True)
                drafts[(e, a.llama_draft_quant)] = dq
        files[ty] = {"full": full, "drafts": drafts}

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = uptime()
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"

    # Costs (once per type, before the rounds).
    prompts_file = os.path.join(a.dir, "prompts.jsonl")
    with open(prompts_file, "w") as f:
        for p in PROMPTS[:1]:
            f.write(json.dumps({"task": "cost", "prompt": p}) + "\n")
    costs: dict[tuple, tuple[float, float]] = {}
    for ty in types:
        full, drafts = files[ty]["full"], files[ty]["drafts"]
        for sp in spec:
            costs[(ty, "skiff", sp, "")] = skiff_costs(a.skiff, full, sp, a.t, prompts_file, min(n, 32))
        lb = llama_bench(peer, full, a.t, sorted({sp.d + 1 for sp in spec if sp.plain}), 16)
        for (e, dq), dr in drafts.items():
            lbd = llama_bench(peer, dr, a.t, [], 16)
            for sp in (sp for sp in spec if sp.plain and sp.e == e):
                costs[(ty, "llama", sp, dq)] = (lb["tg16"] / lbd["tg16"], (sp.d + 1) * lb["tg16"] / lb[f"pp{sp.d + 1}"])
        print(f"costs measured for {ty} (load {open('/proc/loadavg').read().split()[0]})", file=sys.stderr, flush=True)

    # Configs per type: (name, program, Spec or None for plain decoding, llama.cpp draft quant or "").
    def configs_for(ty: str) -> list[tuple]:
        c = [("skiff plain", "skiff", None, "")] + [(f"skiff self-spec {sp.label()}", "skiff", sp, "") for sp in spec]
        c += [("llama.cpp plain", "llama", None, "")]
        for dq in ("", a.llama_draft_quant):
            c += [(f"llama.cpp spec first-{sp.e}{' ' + dq if dq else ''} D={sp.d}", "llama", sp, dq)
                  for sp in spec if sp.plain and (sp.e, dq) in files[ty]["drafts"]]
        return c
    # samples[ty][config][round] = list of per-prompt results. Every config runs a prompt
    # right after the others ran it (the order rotated per prompt and round), so that a config
    # and its plain decoding meet the same memory bandwidth, which on a shared machine moves
    # by 2x within minutes.
    samples = {ty: {c[0]: [] for c in configs_for(ty)} for ty in types}
    for r in range(rounds):
        for ty in types:
            full, drafts = files[ty]["full"], files[ty]["drafts"]
            configs = configs_for(ty)
            for name, *_ in configs:
                samples[ty][name].append([])
            for i, p in enumerate(PROMPTS):
                k = (r * len(PROMPTS) + i) % len(configs)
                for name, prog, sp, dq in configs[k:] + configs[:k]:
                    if prog == "skiff":
                        res = skiff_generate(a.skiff, full, p, n, a.t, sp.flags() if sp else [])
                    elif sp is None:
                        res = llama_cli(peer, full, p, n, a.t)
                    else:
                        res = llama_speculative(peer, full, drafts[(sp.e, dq)], p, n, a.t, sp.d)
                    samples[ty][name][-1].append(res)
        print(f"round {r + 1}/{rounds} done (load {open('/proc/loadavg').read().split()[0]})", file=sys.stderr,
              flush=True)
    load_after = uptime()

    def tps(res: list[dict], e2e: bool) -> float:
        toks = sum(x["tokens"] for x in res)
        secs = sum(x["decode_s"] + (x["prompt_s"] if e2e else 0.0) for x in res)
        if not e2e:  # llama-cli's decode timing covers the tokens after the first
            toks = sum(x.get("decode_tokens", x["tokens"]) for x in res)
        return toks / secs if secs > 0 else 0.0

    print(f"{started}, skiff {commit}, llama.cpp c392e50 ({a.llama_args or 'defaults'}), shape {shape} planted exit "
          f"{a.planted_exit} scale {a.planted_scale:g}, {len(PROMPTS)} prompts x {n} tokens, greedy, {a.t} threads, "
          f"{rounds} rounds")
    print(f"load before: {load_before}")
    print(f"load after:  {load_after}")
    print()
    print("| type | config | decode t/s | e2e t/s | speedup (e2e) | acceptance | tokens/round | c_d | c_v "
          "| ideal speedup | predicted | same text |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    summary = []
    all_same = True
    for ty in types:
        for name, prog, sp, dq in configs_for(ty):
            rs = samples[ty][name]
            plain_name = "skiff plain" if prog == "skiff" else "llama.cpp plain"
            plain = samples[ty][plain_name]
            dec = statistics.median(tps(x, False) for x in rs)
            e2e = statistics.median(tps(x, True) for x in rs)
            # Per (round, prompt): the config against its program's plain decoding of that prompt.
            ratios = [tps([x], True) / tps([y], True) for res, pres in zip(rs, plain) for x, y in zip(res, pres)]
            drafted = sum(x["drafted"] for res in rs for x in res)
            accepted = sum(x["accepted"] for res in rs for x in res)
            acc = accepted / drafted if drafted else None
            same = all(same_text(x["text"], y["text"], prog == "llama")
                       for res, pres in zip(rs, plain) for x, y in zip(res, pres))
            if prog == "skiff":
                all_same &= same
            rounds_run = sum(x.get("rounds", 0) for res in rs for x in res)
            per_round = sum(x["tokens"] for res in rs for x in res) / rounds_run if rounds_run else None
            row = {"type": ty, "config": name, "program": prog, "exit_layer": sp.e if sp else 0,
                   "draft_max": sp.d if sp else 0, "adaptive": bool(sp and sp.adaptive),
                   "lookup": sp.lookup if sp else 0, "draft_head": sp.head if sp else "",
                   "dynamic_exit": bool(sp and sp.dynamic), "draft_copy": sp.copy if sp else "",
                   "llama_draft_quant": dq,
                   "tokens_per_round": per_round,
                   "decode_tps": dec, "e2e_tps": e2e, "speedup_e2e": statistics.median(ratios),
                   "speedup_pairs": ratios, "acceptance": acc, "same_text": same,
                   "samples": [[{k: v for k, v in x.items() if k != "text"} for x in res] for res in rs],
                   "texts_round1": [x["text"] for x in rs[0]]}
            cd = cv = ideal = predicted = None
            if sp:
                cd, cv = costs[(ty, prog, sp, dq)]
                if not (sp.adaptive or sp.lookup or sp.dynamic):  # D drafts every round
                    ideal = ideal_speedup(acc or 0.0, sp.d, cd, cv)
                if per_round and rounds_run:
                    # The cost model on the tokens per round actually seen (no independence assumption).
                    predicted = per_round / (drafted / rounds_run * cd + cv)
                row.update({"draft_cost_per_token": cd, "verify_cost": cv, "ideal_speedup": ideal,
                            "predicted_speedup": predicted})
            summary.append(row)
            f2 = lambda v, s="": "" if v is None else f"{v:.2f}{s}"  # noqa: E731
            print(f"| {ty} | {name} | {dec:.2f} | {e2e:.2f} | {row['speedup_e2e']:.2f}x | "
                  f"{'' if acc is None else f'{100 * acc:.1f}%'} | {f2(per_round)} | {f2(cd)} | {f2(cv)} | "
                  f"{f2(ideal, 'x')} | {f2(predicted, 'x')} | {'yes' if same else 'NO'} |")
    print()
    print("speedup: median over (round, prompt) pairs of (config e2e t/s / same program's plain e2e t/s on that "
          "prompt, run next to it). ideal: "
          "((1-a^(D+1))/(1-a)) / (D*c_d + c_v), c_d (drafting per drafted token) and c_v in plain decode steps. "
          "predicted: the same costs with the tokens per round seen and the mean drafts per round.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"started": started, "commit": commit, "llama_args": a.llama_args, "shape": shape, "planted_exit": a.planted_exit,
                       "planted_scale": a.planted_scale, "n_predict": n, "threads": a.t, "rounds": rounds,
                       "prompts": PROMPTS, "load_before": load_before, "load_after": load_after,
                       "results": summary}, f, indent=2)
    if not all_same:
        print("error: skiff's self-speculative greedy text differs from plain decoding", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
