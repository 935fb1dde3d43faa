#!/usr/bin/python3
"""`skiff train` against an independent float64 PyTorch autograd reference (train_reference.py).

Run: /usr/bin/python3 tests/reference/test_train_reference.py --skiff build/skiff --shared ../shared
Prints one line per check and ends with "N passed, M failed"; exit 0 only when nothing failed.

Checks
- Gradients of every parameter (`skiff train-check`) vs autograd on random tiny models (GQA
  2:1 untied with partial rotary, MQA tied, MHA), with FIXED layer-dropout masks written by
  the test and the early-exit loss on (curricula none, rotational:2, gradual): per tensor
  max|g - g_ref| / max|g_ref| <= 1e-4; losses, exit layers and scales too.
- The first 10 losses of a fixed-seed `skiff train` run (layer dropout, early-exit loss,
  warm-up + cosine, clipping, weight decay, accumulation) equal the reference replaying the
  same batches and masks (which skiff writes with a hidden --debug-dump flag).
- The same run again, and with one thread, gives bit-identical losses.
- The checkpoint GGUF loads in the engine: `skiff dump-logits` equals the trainer's forward
  and the reference; `skiff generate -m ckpt.gguf` works.
- SIGKILL at random moments (and while a checkpoint temp file exists) always leaves a
  checkpoint that loads (GGUF and state); resuming it ends with weights bit-identical to an
  uninterrupted run; so does a kill between a checkpoint's model and its state (a test hook), and
  a state is never left without its model.
- NaN in the gradients stops training with a clear message; the last checkpoint is intact.
- Block attention (memory-augmented episodes): gradients with random first_visible layouts
  (`train-check --first-visible`: causal text, episode rows, self-only entries) and random
  ignored targets (`--loss-mask`), with layer-dropout masks, exits and ReLU + L1 too.
- Exit self-distillation (--exit-distill W): gradients with masks, with and without a curriculum,
  with block attention and ignored targets; the loss, its distill part and each exit's KL; that
  the term moves the gradients; a `skiff train --exit-distill` run's first losses equal the
  reference's; a resume with another weight is refused; the flag's errors.
- `skiff train --episodes` (mixed with text): the first losses equal the reference replaying the
  dumped tokens and masks; from scratch the loss falls and a resumed run ends bit-identical; a
  resume with another --episode-mix is refused; an episode longer than --seq-len names its line.
- ReLU (skiff.ffn_activation = relu): gradients with masks and the early-exit loss, with and
  without the activation L1 penalty (--activation-l1), the penalty and the fraction of zero
  activations too; ReLU-fication (`train -m SILU --activation relu --activation-l1 L`): the
  first losses equal the reference replaying the batches, the checkpoint carries the key, the
  engine's logits equal the reference's ReLU forward, `generate` runs, `--resume` keeps the
  activation (and refuses flags that would change it); --activation-l1 on a SiLU model fails
  with a clear message.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402
import llama_reference as ref  # noqa: E402
import train_reference as tr  # noqa: E402

TIMEOUT_S = 120
GRAD_TOL = 1e-4


class Results:
    def __init__(self, only=None):
        self.passed = 0
        self.failed = 0
        self.only = only

    def run(self, name, fn):
        if self.only and self.only not in name:
            return
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - any error is a failed check, with its reason
            ok, detail = False, f"{type(e).__name__}: {e}"
            traceback.print_exc()
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def write_model(path, cfg, seed, activation="silu"):
    weights = ref.random_weights(cfg, seed)
    w, deq = ref.build_writer(cfg, weights)
    if activation != "silu":
        w.add_string("skiff.ffn_activation", activation)
    w.write(path)
    return deq


def rel_err(got, want):
    denom = float(np.max(np.abs(want)))
    diff = float(np.max(np.abs(got - want)))
    return diff / denom if denom > 0 else diff


# ---------------------------------------------------------------------------------------------
def read_loss_file(path):
    """train-check's loss.txt: (loss, [(exit, scale, loss)], {sparsity_loss, sparsity, distill_loss,
    exit_kl: [per exit]})."""
    loss, exits, stats = None, [], {"exit_kl": []}
    for line in open(path).read().split("\n"):
        f = line.split()
        if not f:
            continue
        if f[0] == "loss":
            loss = float(f[1])
        elif f[0] == "exit":
            exits.append((int(f[1]), float(f[2]), float(f[3])))
            stats["exit_kl"].append(float(f[4]))
        else:
            stats[f[0]] = float(f[1])
    return loss, exits, stats


def random_block_layout(rng, T):
    """first_visible [T] of a random mix of causal text rows (0), episodes' shared rows (the
    episode start) and entries (their own start), in random-length runs."""
    fv = np.zeros(T, dtype=np.int32)
    t, episode = 0, 0
    while t < T:
        n = int(rng.integers(1, max(2, T // 3) + 1))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            episode = t          # a new episode starts: its rows see from here
        if kind == 3:
            lo = 0               # plain causal text
        else:
            lo = t if kind == 1 else episode  # 1: an entry sees only itself
        fv[t:t + n] = lo
        t += n
    return fv


def check_gradients(skiff, tmp, name, cfg, B, T, skip, e_scale, curriculum, step, steps, seed,
                    activation="silu", l1=0.0, blocks=False, distill=0.0):
    """blocks: random block-attention layouts (--first-visible) and ignored targets (--loss-mask);
    distill: --exit-distill W (its term, per-exit KLs, and that it changes the gradients)."""
    model = os.path.join(tmp, f"{name}.gguf")
    weights = write_model(model, cfg, seed, activation)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab, size=(B, T + 1), dtype=np.int32)
    tokens.tofile(os.path.join(tmp, f"{name}.tokens"))
    cmd = [skiff, "train-check", "-m", model, "--tokens", os.path.join(tmp, f"{name}.tokens"),
           "-b", str(B), "--seq-len", str(T), "-o", os.path.join(tmp, name), "-t", "2"]
    first_visible = loss_mask = None
    if blocks:
        first_visible = np.stack([random_block_layout(rng, T) for _ in range(B)])
        loss_mask = (rng.random((B, T)) < 0.6).astype(np.uint8)
        loss_mask[0, 0] = 1
        first_visible.tofile(os.path.join(tmp, f"{name}.fv"))
        loss_mask.tofile(os.path.join(tmp, f"{name}.mask"))
        cmd += ["--first-visible", os.path.join(tmp, f"{name}.fv"), "--loss-mask", os.path.join(tmp, f"{name}.mask")]
    if skip is not None:
        np.asarray(skip, dtype=np.uint8).tofile(os.path.join(tmp, f"{name}.skip"))
        cmd += ["--skip", os.path.join(tmp, f"{name}.skip")]
    if e_scale is not None:
        cmd += ["--early-exit-loss", str(e_scale), "--early-exit-curriculum", curriculum,
                "--step", str(step), "--steps", str(steps)]
    if l1 > 0:
        cmd += ["--activation-l1", str(l1)]
    if distill > 0:
        cmd += ["--exit-distill", str(distill)]
    run(cmd)
    if e_scale is not None:
        exits = tr.active_exits(curriculum, cfg.n_layers, step, steps)
        scales = tr.exit_scales(exits, cfg.n_layers, e_scale)
    else:
        exits, scales = [cfg.n_layers - 1], [1.0]
    loss, per_exit, g_ref, logits_ref, stats = tr.grads(cfg, weights, tokens, skip, exits, scales, activation, l1,
                                                        first_visible, loss_mask, distill)

    got_loss, got_exits, got_stats = read_loss_file(os.path.join(tmp, name, "loss.txt"))
    problems = []
    sl, sl_ref = got_stats.get("sparsity_loss", float("nan")), stats["sparsity_loss"]
    if not abs(sl - sl_ref) <= 1e-5 * max(1.0, abs(sl_ref)):
        problems.append(f"sparsity loss {sl} vs {sl_ref}")
    if l1 > 0 and not sl_ref > 0:
        problems.append("the L1 penalty is 0: nothing tested")
    sp, sp_ref = got_stats.get("sparsity", float("nan")), stats["sparsity"]
    if not abs(sp - sp_ref) <= 1e-3:  # a gate within rounding of 0 may fall either side
        problems.append(f"sparsity {sp} vs {sp_ref}")
    if activation == "relu" and not 0.2 < sp_ref < 0.8:
        problems.append(f"reference sparsity {sp_ref}: expected about half the random gates <= 0")
    dl, dl_ref = got_stats.get("distill_loss", float("nan")), stats["distill_loss"]
    if not abs(dl - dl_ref) <= 1e-5 * max(1.0, abs(dl_ref)):
        problems.append(f"distill loss {dl} vs {dl_ref}")
    for e, kl, kl_ref in zip(exits, got_stats["exit_kl"], stats["exit_kl"]):
        if not abs(kl - kl_ref) <= 1e-5 * max(1.0, abs(kl_ref)):
            problems.append(f"exit {e}: KL {kl} vs {kl_ref}")
    if distill > 0:
        if not dl_ref > 1e-3:
            problems.append(f"the distill term is {dl_ref}: nothing tested")
        # the term must move the gradients well beyond the tolerance, or the check proves nothing
        g_plain = tr.grads(cfg, weights, tokens, skip, exits, scales, activation, l1, first_visible, loss_mask)[2]
        moved = max(rel_err(g_plain[n], g_ref[n]) for n in g_ref)
        if moved < 100 * GRAD_TOL:
            problems.append(f"the distill term changes the gradients by only {moved:.1e}")
    if [e for e, _, _ in got_exits] != exits:
        problems.append(f"exit layers {[e for e, _, _ in got_exits]} != {exits}")
    else:
        for (e, s, le), s_ref, le_ref in zip(got_exits, scales, per_exit):
            if abs(s - s_ref) > 1e-6 or abs(le - le_ref) > 1e-5 * max(1, abs(le_ref)):
                problems.append(f"exit {e}: scale {s} vs {s_ref}, loss {le} vs {le_ref}")
    if abs(got_loss - loss) > 1e-5 * max(1.0, abs(loss)):
        problems.append(f"loss {got_loss} vs {loss}")
    flat = np.fromfile(os.path.join(tmp, name, "grads.f32"), dtype=np.float32)
    off, worst, worst_name = 0, 0.0, ""
    for n in tr.param_names(cfg):
        want = g_ref[n]
        got = flat[off:off + want.size].reshape(want.shape)
        off += want.size
        e = rel_err(got.astype(np.float64), want)
        if e > worst:
            worst, worst_name = e, n
        if e > GRAD_TOL:
            problems.append(f"{n}: rel err {e:.2e}")
    if off != flat.size:
        problems.append(f"gradient file has {flat.size} floats, expected {off}")
    logits = np.fromfile(os.path.join(tmp, name, "logits.f32"), dtype=np.float32).reshape(logits_ref.reshape(B * T, -1).shape)
    le = float(np.max(np.abs(logits - logits_ref.reshape(B * T, -1))))
    if le > 1e-4:
        problems.append(f"logits max abs err {le:.2e}")
    detail = f"loss {got_loss:.6f}, exits {exits}, worst grad rel err {worst:.1e} ({worst_name}), logits {le:.1e}"
    if activation == "relu":
        detail += f", sparsity {sp:.3f}, L1 term {sl:.4g}"
    if distill > 0:
        detail += f", distill term {dl:.4g} (KL per exit {', '.join(f'{k:.3g}' for k in got_stats['exit_kl'])})"
    if blocks:
        detail += (f", {int((first_visible > 0).sum())}/{first_visible.size} rows masked, "
                   f"{int(loss_mask.sum())}/{loss_mask.size} targets counted")
    return not problems, detail + ("; " + "; ".join(problems[:6]) if problems else "")


# ---------------------------------------------------------------------------------------------
def make_text(path, n_docs, seed):
    rng = random.Random(seed)
    words = ["ab", "ba", "cab", "dad", "bead", "face", "gag", "hid", "jig", "kale", "mole", "nag", "on", "a", "i"]
    docs = []
    for _ in range(n_docs):
        docs.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))))
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")


TINY = ref.LlamaConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn=40, vocab=300, n_rot=6,
                       context_length=64)
RUN = dict(steps=10, batch=2, seq=12, accum=2, lr=0.01, min_lr=0.001, warmup=3, wd=0.1, clip=0.5,
           p_max=0.6, e_scale=0.8, curriculum="rotational:2")


def train_cmd(skiff, model, data, out, extra=(), threads=2, steps=None):
    r = RUN
    return [skiff, "train", "-m", model, "--data", data, "--seq-len", str(r["seq"]), "-b", str(r["batch"]),
            "--accum", str(r["accum"]), "--steps", str(steps or r["steps"]), "--lr", str(r["lr"]),
            "--min-lr", str(r["min_lr"]), "--warmup", str(r["warmup"]), "--weight-decay", str(r["wd"]),
            "--clip", str(r["clip"]), "--layer-dropout", str(r["p_max"]), "--early-exit-loss", str(r["e_scale"]),
            "--early-exit-curriculum", r["curriculum"], "--seed", "7", "--eval-batches", "1",
            "-o", out, "-t", str(threads), "--quiet", *extra]


def read_losses(stem):
    rows = open(stem + ".log.csv").read().strip().split("\n")[1:]
    return {int(r.split(",")[0]): float(r.split(",")[1]) for r in rows}


def replay_losses(trainer, dump: str, r: dict) -> list:
    """The reference trainer's losses replaying the batches and dropout masks skiff dumped
    (--debug-dump) for run settings r."""
    L, B, T = TINY.n_layers, r["batch"], r["seq"]
    want = []
    for t in range(r["steps"]):
        micro = []
        for m in range(r["accum"]):
            tokens = np.fromfile(f"{dump}/step{t}_{m}.tokens", dtype=np.int32).reshape(B, T + 1)
            skip = np.fromfile(f"{dump}/step{t}_{m}.skip", dtype=np.uint8).reshape(B, L).astype(bool)
            micro.append((tokens, skip))
        exits = tr.active_exits(r["curriculum"], L, t, r["steps"])
        scales = tr.exit_scales(exits, L, r["e_scale"])
        want.append(trainer.step(t, micro, exits, scales))
    return want


def check_first_losses(skiff, tmp, ctx):
    model = os.path.join(tmp, "tiny.gguf")
    weights = write_model(model, TINY, 11)
    data = os.path.join(tmp, "text.txt")
    make_text(data, 60, 3)
    dump = os.path.join(tmp, "dump")
    out = os.path.join(tmp, "run1.gguf")
    run(train_cmd(skiff, model, data, out, ["--debug-dump", dump]))
    got = read_losses(os.path.join(tmp, "run1"))
    r = RUN
    trainer = tr.Trainer(TINY, weights, r["lr"], r["min_lr"], r["warmup"], r["steps"], r["wd"], r["clip"])
    want = replay_losses(trainer, dump, r)
    ctx["weights_after"] = {n: p.detach().numpy() for n, p in trainer.W.items()}
    ctx["run1"] = got
    skipped = sum(int(np.fromfile(f, dtype=np.uint8).sum()) for f in glob.glob(f"{dump}/*.skip"))
    errs = [abs(got[t + 1] - want[t]) / max(1.0, abs(want[t])) for t in range(r["steps"])]
    detail = (f"max rel diff {max(errs):.1e} over 10 steps; losses {want[0]:.4f} -> {want[-1]:.4f}; "
              f"{skipped} layer skips")
    return max(errs) <= 1e-4 and skipped > 0, detail


def check_deterministic(skiff, tmp, ctx):
    model, data = os.path.join(tmp, "tiny.gguf"), os.path.join(tmp, "text.txt")
    out2, out3 = os.path.join(tmp, "run2.gguf"), os.path.join(tmp, "run3.gguf")
    run(train_cmd(skiff, model, data, out2))
    run(train_cmd(skiff, model, data, out3, threads=1))
    a, b, c = ctx["run1"], read_losses(os.path.join(tmp, "run2")), read_losses(os.path.join(tmp, "run3"))
    sa = open(os.path.join(tmp, "run1.state"), "rb").read()
    sb = open(os.path.join(tmp, "run2.state"), "rb").read()
    sc = open(os.path.join(tmp, "run3.state"), "rb").read()
    return a == b == c and sa == sb == sc, "same seed: identical losses and state; 1 vs 2 threads: identical"


def checkpoint_vs_reference(g, want):
    """A checkpoint's config, weights, and the worst relative error against the reference's."""
    cfg = ref.config_from_gguf(g)
    weights = ref.weights_from_gguf(g)
    werr = max(rel_err(weights[n].astype(np.float64), want[n]) for n in weights)
    return cfg, weights, werr


def check_engine_loads(skiff, tmp, ctx):
    ckpt = os.path.join(tmp, "run1.gguf")
    g = gw.read_gguf(ckpt)
    # the checkpoint holds what the reference's AdamW produced
    cfg, weights, werr = checkpoint_vs_reference(g, ctx["weights_after"])
    rng = np.random.default_rng(5)
    T = 12
    tokens = rng.integers(3, cfg.vocab, size=(1, T + 1), dtype=np.int32)
    tokens.tofile(os.path.join(tmp, "eng.tokens"))
    run([skiff, "train-check", "-m", ckpt, "--tokens", os.path.join(tmp, "eng.tokens"), "-b", "1",
         "--seq-len", str(T), "-o", os.path.join(tmp, "eng")])
    trainer_logits = np.fromfile(os.path.join(tmp, "eng", "logits.f32"), dtype=np.float32).reshape(T, -1)
    run([skiff, "dump-logits", "-m", ckpt, "--tokens", " ".join(map(str, tokens[0, :T])), "-o",
         os.path.join(tmp, "eng.logits")])
    engine_logits = np.fromfile(os.path.join(tmp, "eng.logits"), dtype=np.float32).reshape(T, -1)
    ref_logits = ref.forward(cfg, weights, tokens[0, :T])
    e1 = float(np.max(np.abs(engine_logits - trainer_logits)))
    e2 = float(np.max(np.abs(engine_logits - ref_logits)))
    gen = run([skiff, "generate", "-m", ckpt, "-p", "ab ba", "-n", "8", "--temp", "0"])
    ok = e1 <= 1e-4 and e2 <= 1e-4 and werr <= 1e-3
    return ok, (f"engine vs trainer logits {e1:.1e}, vs reference {e2:.1e}; weights vs reference AdamW "
                f"rel {werr:.1e}; generate printed {len(gen.stdout)} bytes")


def load_checkpoint_ok(skiff, ckpt):
    g = gw.read_gguf(ckpt)  # parses every tensor
    assert "token_embd.weight" in g.tensors
    p = run([skiff, "train-check", "--state", ckpt[:-5] + ".state"])
    run([skiff, "dump-logits", "-m", ckpt, "--tokens", "1 5 9", "-o", ckpt + ".probe"])
    return int(p.stdout.split()[1])


def kill_test_cmd(skiff, model, data, steps, seed):
    """The training run the kill checks interrupt (LayerSkip flags on, so the state has it all)."""
    return [skiff, "train", "-m", model, "--data", data, "--seq-len", "16", "-b", "2", "--steps", str(steps),
            "--lr", "0.003", "--layer-dropout", "0.3", "--early-exit-loss", "1", "--seed", str(seed),
            "--eval-batches", "1", "--quiet", "-t", "2"]


def check_sigkill(skiff, tmp, ctx):
    cfg = ref.LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=96, vocab=300, context_length=64)
    model = os.path.join(tmp, "kill.gguf")
    write_model(model, cfg, 4)
    data = os.path.join(tmp, "text.txt")
    steps = 150
    base = kill_test_cmd(skiff, model, data, steps, seed=3) + ["--eval-every", "10"]
    ref_out = os.path.join(tmp, "nokill.gguf")
    run(base + ["-o", ref_out])
    out = os.path.join(tmp, "killed.gguf")
    rng = random.Random(1234)
    kills, during_write, steps_seen = 0, 0, []
    for attempt in range(6):
        resume = ["--resume"] if os.path.exists(out[:-5] + ".state") else []
        proc = subprocess.Popen(base + ["-o", out, "--save-every", "1"] + resume,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hit_write = False
        if attempt % 2 == 0:  # kill while a temp file of the checkpoint exists
            deadline = time.time() + 10
            while time.time() < deadline and proc.poll() is None:
                if glob.glob(os.path.join(tmp, "killed.*.tmp*")):
                    hit_write = True
                    break
        else:
            time.sleep(rng.uniform(0.02, 0.15))  # short: the run (150 steps) must not finish
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            during_write += hit_write
        proc.wait()
        if os.path.exists(out[:-5] + ".state") and not os.path.exists(out):
            return False, f"kill {kills} left {out[:-5]}.state without its model"
        if os.path.exists(out[:-5] + ".state"):
            steps_seen.append(load_checkpoint_ok(skiff, out))
        elif os.path.exists(out):  # killed in the first save, after its model: that model loads
            gw.read_gguf(out)
            steps_seen.append("model only")
        for f in glob.glob(os.path.join(tmp, "killed.*.tmp*")):
            os.unlink(f)
    # finish the run and compare with the uninterrupted one
    if not os.path.exists(out[:-5] + ".state"):
        run(base + ["-o", out])  # every kill came before the first checkpoint (slow start): start over
    elif load_checkpoint_ok(skiff, out) < steps:
        run(base + ["-o", out, "--resume"])  # saving less often does not change the state
    same = open(out[:-5] + ".state", "rb").read() == open(ref_out[:-5] + ".state", "rb").read()
    return kills >= 3 and same, (f"{kills} kills ({during_write} during a checkpoint write), checkpoint "
                                 f"steps {steps_seen} all loaded; resumed run's final state equals the "
                                 f"uninterrupted one: {same}")


def check_kill_mid_save(skiff, tmp, ctx):
    """Deterministic kills between the two files of a checkpoint (the model written, the state
    not yet): on the first save, then on a later one; the resumed run must equal an uninterrupted one."""
    model, data = os.path.join(tmp, "kill.gguf"), os.path.join(tmp, "text.txt")  # from check_sigkill
    base = kill_test_cmd(skiff, model, data, steps=6, seed=5)
    ref_out, out = os.path.join(tmp, "mid_ref.gguf"), os.path.join(tmp, "mid.gguf")
    state = out[:-5] + ".state"
    run(base + ["-o", ref_out])
    first = run(base + ["-o", out, "--save-every", "1", "--debug-kill-mid-save", "1"], check=False)
    if first.returncode != -signal.SIGKILL:
        return False, f"the first run was to be killed at its first save; it exited {first.returncode}"
    gw.read_gguf(out)
    run([skiff, "dump-logits", "-m", out, "--tokens", "1 5 9", "-o", out + ".probe"])
    first_ok = not os.path.exists(state)  # the first save's model is in place, its state never came
    bad = run(base + ["-o", out, "--resume"], check=False)
    msg = bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else ""
    first_ok = first_ok and bad.returncode == 1 and "without --resume" in msg
    second = run(base + ["-o", out, "--save-every", "1", "--debug-kill-mid-save", "3"], check=False)
    state_step = load_checkpoint_ok(skiff, out)
    run(base + ["-o", out, "--resume"])
    same = open(state, "rb").read() == open(ref_out[:-5] + ".state", "rb").read()
    ok = first_ok and second.returncode == -signal.SIGKILL and state_step == 2 and same
    return ok, (f"killed in the first save: model loads, no state, --resume says '{msg}': {first_ok}; killed in the save after step 3: "
                f"exit {second.returncode}, state at step {state_step} and the model loads; resumed run's final "
                f"state equals the uninterrupted one: {same}")


def check_nan(skiff, tmp, ctx):
    model, data = os.path.join(tmp, "tiny.gguf"), os.path.join(tmp, "text.txt")
    out = os.path.join(tmp, "nan.gguf")
    p = run(train_cmd(skiff, model, data, out, ["--save-every", "2", "--debug-nan-step", "4"]), check=False)
    msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    step = load_checkpoint_ok(skiff, out)
    ok = p.returncode != 0 and "nan" in msg.lower() and "last good checkpoint" in msg and step == 4
    return ok, f"exit {p.returncode}, '{msg}', checkpoint at step {step}"


# ---------------------------------------------------------------------------------------------
# ReLU-fication: a SiLU model continued as a ReLU-gated one, with the activation L1 penalty
RELU_L1 = 0.05


def with_warmup(cmd, warmup):
    cmd = list(cmd)
    cmd[cmd.index("--warmup") + 1] = str(warmup)
    return cmd


def relu_cmd(skiff, model, out, steps, extra=()):
    cmd = train_cmd(skiff, model, os.path.join(os.path.dirname(out), "text.txt"), out,
                    ["--activation", "relu", "--activation-l1", str(RELU_L1), *extra], steps=steps)
    return cmd if steps > RUN["warmup"] else with_warmup(cmd, 1)


def read_log(stem):
    lines = open(stem + ".log.csv").read().strip().split("\n")
    head = lines[0].split(",")
    return [dict(zip(head, map(float, r.split(",")))) for r in lines[1:]]


def check_l1_needs_relu(skiff, tmp, ctx):
    model, data = os.path.join(tmp, "tiny.gguf"), os.path.join(tmp, "text.txt")
    out = os.path.join(tmp, "l1silu.gguf")
    p = run(with_warmup(train_cmd(skiff, model, data, out, ["--activation-l1", "0.1"], steps=2), 1), check=False)
    lines = p.stderr.strip().splitlines()
    msg = lines[-1] if lines else ""
    ok = (p.returncode != 0 and len(lines) == 1 and msg.startswith("error: ") and "--activation-l1" in msg
          and "relu" in msg and not os.path.exists(out))
    return ok, f"exit {p.returncode}, '{msg}'"


def check_relufication(skiff, tmp, ctx):
    """The first losses of `train -m SILU --activation relu --activation-l1` equal the reference."""
    model = os.path.join(tmp, "tiny.gguf")
    weights = write_model(model, TINY, 11)  # the same SiLU model as the first runs
    dump = os.path.join(tmp, "dump_relu")
    out = os.path.join(tmp, "relu.gguf")
    steps = 4
    r = RUN
    run(relu_cmd(skiff, model, out, steps, ["--debug-dump", dump]))
    log = read_log(os.path.join(tmp, "relu"))
    trainer = tr.Trainer(TINY, weights, r["lr"], r["min_lr"], r["warmup"], steps, r["wd"], r["clip"],
                         activation="relu", l1=RELU_L1)
    L, B, T = TINY.n_layers, r["batch"], r["seq"]
    want = []
    for t in range(steps):
        micro = []
        for m in range(r["accum"]):
            tokens = np.fromfile(f"{dump}/step{t}_{m}.tokens", dtype=np.int32).reshape(B, T + 1)
            skip = np.fromfile(f"{dump}/step{t}_{m}.skip", dtype=np.uint8).reshape(B, L).astype(bool)
            micro.append((tokens, skip))
        exits = tr.active_exits(r["curriculum"], L, t, steps)
        scales = tr.exit_scales(exits, L, r["e_scale"])
        want.append(trainer.step(t, micro, exits, scales))
    ctx["relu_weights"] = {n: p_.detach().numpy() for n, p_ in trainer.W.items()}
    errs = [abs(log[t]["loss"] - want[t]) / max(1.0, abs(want[t])) for t in range(steps)]
    sparsity = [row["sparsity"] for row in log]
    l1 = [row["sparsity_loss"] for row in log]
    ok = (max(errs) <= 1e-4 and all(0 < s < 1 for s in sparsity) and all(v > 0 for v in l1)
          and len(log) == steps)
    return ok, (f"max rel diff {max(errs):.1e} over {steps} steps (losses with the L1 term); logged "
                f"sparsity {sparsity[0]:.3f} -> {sparsity[-1]:.3f}, L1 term {l1[0]:.4f} -> {l1[-1]:.4f}")


def check_relu_checkpoint(skiff, tmp, ctx):
    """The ReLU-fied checkpoint is a ReLU model: the key, `info`, the engine's logits, generate."""
    ckpt = os.path.join(tmp, "relu.gguf")
    g = gw.read_gguf(ckpt)
    key = g.metadata.get("skiff.ffn_activation")
    info = run([skiff, "info", "-m", ckpt]).stdout
    info_line = next((l for l in info.splitlines() if "skiff.ffn_activation" in l), "")
    cfg, weights, werr = checkpoint_vs_reference(g, ctx["relu_weights"])
    rng = np.random.default_rng(6)
    T = 12
    tokens = rng.integers(3, cfg.vocab, size=(1, T + 1), dtype=np.int32)
    run([skiff, "dump-logits", "-m", ckpt, "--tokens", " ".join(map(str, tokens[0, :T])), "-o",
         os.path.join(tmp, "relu.logits")])
    engine = np.fromfile(os.path.join(tmp, "relu.logits"), dtype=np.float32).reshape(T, -1)
    W = tr.make_params(weights, cfg)
    _, _, want, _ = tr.loss_fn(cfg, W, tokens, None, [cfg.n_layers - 1], [1.0], "relu")
    _, _, silu, _ = tr.loss_fn(cfg, W, tokens, None, [cfg.n_layers - 1], [1.0], "silu")
    e = float(np.max(np.abs(engine - want.numpy()[0])))
    e_silu = float(np.max(np.abs(engine - silu.numpy()[0])))
    gen = run([skiff, "generate", "-m", ckpt, "-p", "ab ba", "-n", "4", "--temp", "0"])
    ok = key == "relu" and "relu" in info_line and e <= 1e-4 and e_silu > 1e-3 and werr <= 1e-3
    return ok, (f"key {key!r}, info '{info_line.strip()}'; engine vs reference ReLU logits {e:.1e} (vs SiLU "
                f"{e_silu:.1e}); weights vs reference AdamW rel {werr:.1e}; generate printed "
                f"{len(gen.stdout)} bytes")


def check_relu_resume(skiff, tmp, ctx):
    """--resume of a ReLU-fication run continues it as ReLU; flags that would resume it as SiLU are
    refused with a clear message (exact resume itself is the SIGKILL check's)."""
    model, data = os.path.join(tmp, "tiny.gguf"), os.path.join(tmp, "text.txt")
    out = os.path.join(tmp, "relu_resume.gguf")
    run(relu_cmd(skiff, model, out, 2))  # --steps 2 (warm-up 1)
    key2 = gw.read_gguf(out).metadata.get("skiff.ffn_activation")
    # bytes: 4 tokens of a barely trained model may end inside a UTF-8 sequence
    gen = subprocess.run([skiff, "generate", "-m", out, "-p", "ab", "-n", "4", "--temp", "0"],
                         capture_output=True, timeout=TIMEOUT_S, check=True)
    bad = run(with_warmup(train_cmd(skiff, model, data, out, ["--resume"], steps=4), 1), check=False)
    msg = bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else ""
    run(with_warmup(relu_cmd(skiff, model, out, 4, ["--resume"]), 1))
    step = load_checkpoint_ok(skiff, out)
    key = gw.read_gguf(out).metadata.get("skiff.ffn_activation")
    ok = (bad.returncode != 0 and "relu" in msg and "--activation" in msg and step == 4 and key == "relu"
          and key2 == "relu")
    return ok, (f"after --steps 2: key {key2!r}, generate printed {len(gen.stdout)} bytes; resume without --activation relu: exit {bad.returncode}, '{msg}'; with it: checkpoint at "
                f"step {step}, key {key!r}")


# ---------------------------------------------------------------------------------------------
# Block-attention episodes (`skiff train --episodes`)
def make_episodes(path, n, seed, max_entries=3):
    """Knowledge-QA episodes: entries "NAME has a THING.", a question about one of them."""
    rng = random.Random(seed)
    names = ["ab", "dad", "kale", "mole", "gag", "jig", "hid"]
    things = ["face", "bead", "cab", "nag", "on"]
    with open(path, "w") as f:
        for _ in range(n):
            facts = [(rng.choice(names), rng.choice(things)) for _ in range(rng.randint(1, max_entries))]
            name, thing = rng.choice(facts)
            f.write(json.dumps({"entries": [f"{a} has a {b}." for a, b in facts],
                                "question": f"what has {name}?", "answer": thing}) + "\n")


EPISODE_SEQ = 64  # TINY's context; its character-level vocabulary makes episodes long


def episode_cmd(skiff, model, data, episodes, out, steps, extra=()):
    return [skiff, "train", "-m", model, "--data", data, "--episodes", episodes, "--seq-len", str(EPISODE_SEQ),
            "-b", "3", "--accum", "2", "--steps", str(steps), "--lr", "0.01", "--min-lr", "0.001", "--warmup", "2",
            "--weight-decay", "0.1", "--clip", "0.5", "--layer-dropout", "0.5", "--early-exit-loss", "0.8",
            "--seed", "5", "--eval-batches", "1", "-o", out, "-t", "2", "--quiet", *extra]


def check_episode_losses(skiff, tmp, ctx):
    """A run mixing episodes (--episode-mix 0.5, B=3: 1 or 2 per micro-batch) and text: the first
    8 losses equal the reference replaying the dumped tokens, layer-dropout masks, first_visible
    and loss masks."""
    model = os.path.join(tmp, "ep_tiny.gguf")
    weights = write_model(model, TINY, 12)
    data, eps = os.path.join(tmp, "ep_text.txt"), os.path.join(tmp, "eps.jsonl")
    make_text(data, 60, 4)
    make_episodes(eps, 40, 6, max_entries=2)
    dump, out = os.path.join(tmp, "ep_dump"), os.path.join(tmp, "ep1.gguf")
    steps, B, T, L = 8, 3, EPISODE_SEQ, TINY.n_layers
    run(episode_cmd(skiff, model, data, eps, out, steps, ["--debug-dump", dump]))
    got = read_losses(os.path.join(tmp, "ep1"))
    trainer = tr.Trainer(TINY, weights, 0.01, 0.001, 2, steps, 0.1, 0.5)
    want, masked_rows, ignored = [], 0, 0
    for t in range(steps):
        micro = []
        for m in range(2):
            base = f"{dump}/step{t}_{m}"
            tokens = np.fromfile(base + ".tokens", dtype=np.int32).reshape(B, T + 1)
            skip = np.fromfile(base + ".skip", dtype=np.uint8).reshape(B, L).astype(bool)
            fv = np.fromfile(base + ".fv", dtype=np.int32).reshape(B, T)
            mask = np.fromfile(base + ".mask", dtype=np.uint8).reshape(B, T)
            masked_rows += int((fv > 0).sum())
            ignored += int((mask == 0).sum())
            micro.append((tokens, skip, fv, mask))
        exits = tr.active_exits("none", L, t, steps)
        scales = tr.exit_scales(exits, L, 0.8)
        want.append(trainer.step(t, micro, exits, scales))
    errs = [abs(got[t + 1] - want[t]) / max(1.0, abs(want[t])) for t in range(steps)]
    ok = max(errs) <= 1e-4 and masked_rows > 0 and ignored > 0
    return ok, (f"max rel diff {max(errs):.1e} over {steps} steps; losses {want[0]:.4f} -> {want[-1]:.4f}; "
                f"{masked_rows} block-masked rows, {ignored} ignored targets")


def check_episode_scratch(skiff, tmp, ctx):
    """From scratch (built-in vocabulary), all-episode batches: the loss falls; a run stopped at
    step 15 and resumed ends bit-identical to an uninterrupted one (constant learning rate, so
    the schedule does not depend on --steps)."""
    data, eps = os.path.join(tmp, "sc_text.txt"), os.path.join(tmp, "sc_eps.jsonl")
    make_text(data, 60, 8)
    make_episodes(eps, 200, 9, max_entries=2)

    def cmd(out, steps, extra=(), mix="0.75"):
        return [skiff, "train", "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                "--data", data, "--episodes", eps, "--episode-mix", mix, "--seq-len", "64", "-b", "4",
                "--steps", str(steps), "--lr", "0.005", "--min-lr", "0.005", "--warmup", "0", "--seed", "3",
                "--eval-batches", "1", "-o", out, "-t", "2", "--quiet", *extra]
    t0 = time.time()
    full = os.path.join(tmp, "sc_full.gguf")
    run(cmd(full, 30))
    losses = read_losses(os.path.join(tmp, "sc_full"))
    first, last = np.mean([losses[s] for s in range(1, 4)]), np.mean([losses[s] for s in range(28, 31)])
    part = os.path.join(tmp, "sc_part.gguf")
    run(cmd(part, 15))
    run(cmd(part, 30, ["--resume"]))
    same = open(full[:-5] + ".state", "rb").read() == open(part[:-5] + ".state", "rb").read()
    bad = run(cmd(part, 31, ["--resume"], mix="0.5"), check=False)
    refused = bad.returncode != 0 and "other settings" in bad.stderr
    ok = last < first - 0.5 and same and refused
    return ok, (f"loss {first:.3f} -> {last:.3f} in 30 steps; resumed state identical: {same}; "
                f"resume with another --episode-mix refused: {refused}; {time.time() - t0:.1f} s")


def check_episode_errors(skiff, tmp, ctx):
    data, eps = os.path.join(tmp, "er_text.txt"), os.path.join(tmp, "er_eps.jsonl")
    make_text(data, 100, 1)
    with open(eps, "w") as f:
        f.write(json.dumps({"entries": ["ab has a face."], "question": "what?", "answer": "face"}) + "\n")
        f.write(json.dumps({"entries": ["ab ba cab dad bead face gag hid jig kale mole"] * 8,
                            "question": "what?", "answer": "x"}) + "\n")
    base = [skiff, "train", "--dim", "16", "--layers", "1", "--heads", "2", "--data", data, "--seq-len", "32",
            "-b", "2", "--steps", "2", "-o", os.path.join(tmp, "er.gguf"), "--quiet"]
    long = run(base + ["--episodes", eps], check=False)
    mix = run(base + ["--episode-mix", "0.3"], check=False)
    ok = (long.returncode != 0 and "line 2" in long.stderr and "--seq-len 32" in long.stderr
          and mix.returncode != 0 and "--episodes" in mix.stderr)
    return ok, f"too long: '{long.stderr.strip()[-120:]}'; mix alone: '{mix.stderr.strip()[-80:]}'"


DISTILL = 0.5


def check_distill_run(skiff, tmp, ctx):
    """--exit-distill in a fixed-seed run (layer dropout, rotational:2, accumulation): the first
    losses equal the reference replaying the dumped batches and masks; the log has the term; a
    resume with another weight (or none) is refused, one with the same weight continues."""
    model, data = os.path.join(tmp, "dl_tiny.gguf"), os.path.join(tmp, "dl_text.txt")
    weights = write_model(model, TINY, 11)
    make_text(data, 60, 3)
    dump, out = os.path.join(tmp, "dl_dump"), os.path.join(tmp, "dl.gguf")
    distill = ["--exit-distill", str(DISTILL)]
    run(train_cmd(skiff, model, data, out, [*distill, "--debug-dump", dump]))
    stem = os.path.join(tmp, "dl")
    got = read_losses(stem)
    header, *rows = open(stem + ".log.csv").read().strip().split("\n")
    col = header.split(",").index("distill_loss")
    terms = [float(r.split(",")[col]) for r in rows]
    r = RUN
    trainer = tr.Trainer(TINY, weights, r["lr"], r["min_lr"], r["warmup"], r["steps"], r["wd"], r["clip"],
                         distill=DISTILL)
    want = replay_losses(trainer, dump, r)
    errs = [abs(got[t + 1] - want[t]) / max(1.0, abs(want[t])) for t in range(r["steps"])]
    longer = train_cmd(skiff, model, data, out, steps=r["steps"] + 2)
    other = run(longer + ["--resume", "--exit-distill", "0.25"], check=False)
    none = run(longer + ["--resume"], check=False)
    refused = all(p.returncode != 0 and "other settings" in p.stderr for p in (other, none))
    same = run(longer + ["--resume", *distill], check=False)
    ok = max(errs) <= 1e-4 and max(terms) > 0 and refused and same.returncode == 0
    return ok, (f"max rel diff {max(errs):.1e} over {r['steps']} steps; distill term {terms[0]:.4f} -> "
                f"{terms[-1]:.4f}; other/no weight on resume refused: {refused}; same weight resumes: "
                f"{same.returncode == 0}")


def check_distill_errors(skiff, tmp, ctx):
    data = os.path.join(tmp, "dl_err.txt")
    make_text(data, 30, 2)
    base = [skiff, "train", "--dim", "16", "--layers", "2", "--heads", "2", "--data", data, "--seq-len", "16",
            "-b", "2", "--steps", "2", "-o", os.path.join(tmp, "dl_err.gguf"), "--quiet"]
    alone = run(base + ["--exit-distill", "0.5"], check=False)
    negative = run(base + ["--early-exit-loss", "1", "--exit-distill=-1"], check=False)
    ok = (alone.returncode != 0 and "--exit-distill needs --early-exit-loss" in alone.stderr
          and negative.returncode != 0 and "must not be negative" in negative.stderr)
    return ok, f"alone: '{alone.stderr.strip()[-80:]}'; negative: '{negative.stderr.strip()[-80:]}'"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", help="run only the checks whose name contains this")
    args = ap.parse_args()
    res = Results(args.only)
    tmp_obj = tempfile.TemporaryDirectory(prefix="skiff-train-")
    tmp = tmp_obj.name
    sk = args.skiff

    gqa = ref.LlamaConfig(dim=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn=44, vocab=300, n_rot=6, context_length=32)
    mqa = ref.LlamaConfig(dim=24, n_layers=3, n_heads=4, n_kv_heads=1, ffn=36, vocab=300, tied=True,
                          rms_eps=1e-6, rope_base=500.0, context_length=32)
    mha = ref.LlamaConfig(dim=16, n_layers=2, n_heads=2, n_kv_heads=2, ffn=24, vocab=300, context_length=32)
    skip4 = [[0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]]   # layer 1 skipped by two samples, sample 2 mostly
    skip3 = [[0, 1, 1], [0, 0, 1]]                        # the last layer skipped by every sample
    res.run("grads gqa untied, masks, early-exit none", lambda: check_gradients(
        sk, tmp, "g1", gqa, 3, 9, skip4, 0.7, "none", 0, 10, 1))
    res.run("grads gqa untied, masks, early-exit rotational:2 step 1", lambda: check_gradients(
        sk, tmp, "g2", gqa, 3, 9, skip4, 1.0, "rotational:2", 1, 10, 2))
    res.run("grads mqa tied, masks, early-exit gradual step 70/100", lambda: check_gradients(
        sk, tmp, "g3", mqa, 2, 7, skip3, 0.5, "gradual", 70, 100, 3))
    res.run("grads mha, no masks, final-layer loss only", lambda: check_gradients(
        sk, tmp, "g4", mha, 2, 5, None, None, "none", 0, 1, 4))
    res.run("grads block attention gqa untied, masks, early-exit none, ignored targets", lambda: check_gradients(
        sk, tmp, "b1", gqa, 3, 12, skip4, 0.7, "none", 0, 10, 21, blocks=True))
    res.run("grads block attention mqa tied, final-layer loss, ignored targets", lambda: check_gradients(
        sk, tmp, "b2", mqa, 2, 16, None, None, "none", 0, 1, 22, blocks=True))
    res.run("grads block attention relu mha, rotational:2, L1 0.3, ignored targets", lambda: check_gradients(
        sk, tmp, "b3", mha, 2, 10, [[0, 1], [0, 0]], 1.0, "rotational:2", 1, 10, 23, activation="relu", l1=0.3,
        blocks=True))
    res.run("grads distill 2 gqa untied, masks, early-exit none", lambda: check_gradients(
        sk, tmp, "d1", gqa, 3, 9, skip4, 0.7, "none", 0, 10, 31, distill=2.0))
    res.run("grads distill 1 gqa untied, masks, early-exit rotational:2 step 1", lambda: check_gradients(
        sk, tmp, "d2", gqa, 3, 9, skip4, 1.0, "rotational:2", 1, 10, 32, distill=1.0))
    res.run("grads distill 1.5 block attention mqa tied, masks, gradual step 40/100, ignored targets",
            lambda: check_gradients(sk, tmp, "d3", mqa, 2, 12, [[0, 0, 1], [1, 0, 0]], 0.5, "gradual", 40, 100, 33,
                                    blocks=True, distill=1.5))
    ctx = {}
    res.run("first 10 losses of a fixed-seed run", lambda: check_first_losses(sk, tmp, ctx))
    res.run("determinism (same seed; 1 vs 2 threads)", lambda: check_deterministic(sk, tmp, ctx))
    res.run("checkpoint loads in the engine, logits equal", lambda: check_engine_loads(sk, tmp, ctx))
    res.run("SIGKILL during checkpoint writes, resume", lambda: check_sigkill(sk, tmp, ctx))
    res.run("SIGKILL between a checkpoint's model and state, resume", lambda: check_kill_mid_save(sk, tmp, ctx))
    res.run("NaN stops training, last checkpoint intact", lambda: check_nan(sk, tmp, ctx))
    res.run("grads relu gqa untied, masks, early-exit rotational:2 step 1", lambda: check_gradients(
        sk, tmp, "r1", gqa, 3, 9, skip4, 1.0, "rotational:2", 1, 10, 5, activation="relu"))
    res.run("grads relu gqa untied, masks, early-exit none, activation L1 0.5", lambda: check_gradients(
        sk, tmp, "r2", gqa, 3, 9, skip4, 0.7, "none", 0, 10, 6, activation="relu", l1=0.5))
    res.run("grads relu mqa tied, masks (last layer skipped by all), early-exit gradual, L1 2", lambda: check_gradients(
        sk, tmp, "r3", mqa, 2, 7, skip3, 0.5, "gradual", 70, 100, 7, activation="relu", l1=2.0))
    res.run("grads relu mha, no masks, final-layer loss, L1 0.1", lambda: check_gradients(
        sk, tmp, "r4", mha, 2, 5, None, None, "none", 0, 1, 8, activation="relu", l1=0.1))
    res.run("--exit-distill run: first losses equal the reference, resume keeps the weight",
            lambda: check_distill_run(sk, tmp, ctx))
    res.run("--exit-distill errors (without --early-exit-loss, negative)", lambda: check_distill_errors(sk, tmp, ctx))
    res.run("--activation-l1 with a SiLU model fails clearly", lambda: check_l1_needs_relu(sk, tmp, ctx))
    res.run("ReLU-fication run (--activation relu --activation-l1): losses equal the reference",
            lambda: check_relufication(sk, tmp, ctx))
    res.run("ReLU-fied checkpoint: key, info, engine logits, generate", lambda: check_relu_checkpoint(sk, tmp, ctx))
    res.run("ReLU-fication resume keeps the activation", lambda: check_relu_resume(sk, tmp, ctx))
    res.run("episodes run (--episodes, mix 0.5): first losses equal the reference", lambda: check_episode_losses(sk, tmp, ctx))
    res.run("episodes from scratch: loss falls, resume exact, other mix refused", lambda: check_episode_scratch(sk, tmp, ctx))
    res.run("episodes: too long names the line, --episode-mix needs --episodes", lambda: check_episode_errors(sk, tmp, ctx))
    if args.keep:
        print(f"kept {tmp}")
        tmp_obj.cleanup = lambda: None  # noqa
    print(f"{res.passed} passed, {res.failed} failed")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
