#!/usr/bin/python3
"""Pipeline stages over MPI (docs/DISTRIBUTED.md) through skiff's CLI, under
`mpirun --allow-run-as-root --oversubscribe -np S`, TCP forced over loopback.

- Greedy text of 2, 3 and 4 stages equals one process: on the built-in model, stories260K and
  random grouped-query models (skiff synth: a 2-layer F32 one, an 8-layer Q8_0 one whose ranks
  each pack only their layers), plain and with --self-spec / --lookup / --draft-model /
  --exit-layer; sampled text with a seed too; `dump-logits` of 2, 3 and 4 stages writes the
  same bytes (logits bit for bit); perplexity prints the same numbers.
- The stats line reports the plan and bytes per token; --sim-link slows nothing but the clock.
- Errors end every rank, never hang: a different model file on one rank is a one-line error
  from rank 0; a rank that stops answering is an error from rank 0 within --stage-timeout; a
  rank that dies ends the job; bad --stage-layers; mpirun without --stages.

Skips (exit 0, with a message) when skiff was built without MPI or mpirun is missing.
Run: /usr/bin/python3 tests/cli/test_mpi_pipeline.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from harness import setup  # noqa: E402

STORIES = os.path.join(REPO, "models", "stories260K.gguf")  # 5 layers, GQA 8/4
MPIRUN = shutil.which("mpirun")
# Quiet, container-friendly OpenMPI: TCP over loopback only (no shared-memory or InfiniBand
# probing), no hwloc binding complaints on oversubscribed cores.
MPI_ARGS = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
            "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
            "--mca", "oob_tcp_if_include", "lo", "--mca", "btl_base_warn_component_unused", "0"]


def env() -> dict:
    e = dict(os.environ)
    # Under ASan (make test-asan) OpenMPI's own allocations at exit are not skiff's leaks.
    e["ASAN_OPTIONS"] = e.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    e["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    return e


def run_mpi(skiff: str, np: int, *argv, timeout: float = 60, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """mpirun -np NP skiff ARGV (loopback TCP), its output captured."""
    e = env()
    e.update(extra_env or {})
    return subprocess.run([MPIRUN, *MPI_ARGS, "-np", str(np), skiff, *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=e)


def mpi_probe(skiff: str) -> tuple[str | None, subprocess.CompletedProcess | None]:
    """(why to skip, None) without mpirun or MPI in the build; else (None, a one-rank run)."""
    if MPIRUN is None:
        return "mpirun not found (scripts/bootstrap.sh installs openmpi-bin)", None
    probe = run_mpi(skiff, 1, "generate", "--stages", "auto", "-n", "1", "-p", "x", "-t", "1")
    if "built without MPI" in probe.stderr:
        return "skiff was built without MPI (SKIFF_MPI=OFF)", None
    return None, probe


def main() -> int:
    args, c = setup()
    skiff = args.skiff
    skip, probe = mpi_probe(skiff)
    if skip:
        print(f"SKIP: {skip}")
        return 0

    def mpi(np: int, *argv, timeout: float = 60, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return run_mpi(skiff, np, *argv, timeout=timeout, extra_env=extra_env)

    c.check("one rank, --stages auto", probe.returncode == 0, probe.stderr[-2000:])

    tmp = tempfile.mkdtemp(prefix="skiff_mpi_")
    gqa = os.path.join(tmp, "tiny-gqa.gguf")
    r = c.skiff("synth", "-o", gqa, "--shape", "tiny", "--type", "f32", "--seed", "3", "-t", "1")
    c.check("synth a random GQA model", r.returncode == 0, r.stderr)
    # 8 layers, GQA 8/4, Q8_0 (packed on AVX-512: each rank packs only its layers).
    small = os.path.join(tmp, "small-gqa.gguf")
    r = c.skiff("synth", "-o", small, "--shape", "small", "--type", "q8_0", "--seed", "3", "-t", "1")
    c.check("synth a random 8-layer GQA model", r.returncode == 0, r.stderr)

    # (name, model args, layers, prompt, stage counts, strategies)
    models = [
        ("built-in", [], 8, "Once upon a time", (2, 3, 4),
         [[], ["--self-spec", "3"], ["--lookup", "2"]]),
        ("stories260K", ["-m", STORIES], 5, "Tom and his dog", (2, 4), [[], ["--self-spec", "2"]]),
        ("tiny GQA", ["-m", gqa], 2, "Hello", (2,), [[]]),
        ("small GQA Q8_0", ["-m", small], 8, "Hello world", (2, 3, 4),
         [[], ["--self-spec", "3"], ["--lookup", "2"]]),
    ]
    for name, margs, layers, prompt, counts, strategies in models:
        base = ["generate", *margs, "-p", prompt, "-n", "24", "--temp", "0", "-t", "1"]
        for strategy in strategies:
            alone = c.skiff(*base, *strategy)
            if not c.check(f"{name} {' '.join(strategy)} one process", alone.returncode == 0, alone.stderr):
                continue
            for s in counts:
                r = mpi(s, *base, *strategy, "--stages", "auto")
                c.check(f"{name} {' '.join(strategy)} {s} stages == one process",
                        r.returncode == 0 and r.stdout == alone.stdout,
                        f"rc {r.returncode}\n{r.stdout!r}\nvs {alone.stdout!r}\n{r.stderr[-1500:]}")
                if s == 2 and not strategy:
                    c.check(f"{name} stats line", f"pipeline: 2 stages 0:" in r.stderr and "bytes/token" in r.stderr,
                            r.stderr[-1000:])

    # By hand, an uneven split; sampled text with a seed.
    base = ["generate", "-p", "The cat", "-n", "24", "-t", "1"]
    alone = c.skiff(*base, "--temp", "0.9", "--seed", "5")
    r = mpi(3, *base, "--temp", "0.9", "--seed", "5", "--stage-layers", "0:1,1:6,6:8")
    c.check("sampled, --stage-layers 0:1,1:6,6:8 == one process", r.returncode == 0 and r.stdout == alone.stdout,
            f"{r.stdout!r} vs {alone.stdout!r}\n{r.stderr[-1500:]}")
    # Self-speculation keeps its draft layers on stage 0 by hand too.
    alone = c.skiff(*base, "--temp", "0", "--self-spec", "4")
    r = mpi(2, *base, "--temp", "0", "--self-spec", "4", "--stage-layers", "0:4,4:8")
    c.check("--self-spec 4 --stage-layers 0:4,4:8 == one process", r.returncode == 0 and r.stdout == alone.stdout,
            f"{r.stdout!r} vs {alone.stdout!r}\n{r.stderr[-1500:]}")

    # A draft model (whole on rank 0) with the context filling up; an early exit that leaves
    # the last stage idle.
    for extra, s in ((["--draft-model", STORIES, "-c", "30"], 3), (["--exit-layer", "6"], 4)):
        args_ = ["generate", "-p", "Once upon a time", "-n", "40", "--temp", "0", "-t", "1", *extra]
        alone = c.skiff(*args_)
        r = mpi(s, *args_, "--stages", "auto")
        c.check(f"{' '.join(extra)}, {s} stages == one process", alone.returncode == 0 and r.returncode == 0
                and r.stdout == alone.stdout, f"{r.stdout!r} vs {alone.stdout!r}\n{r.stderr[-1500:]}")

    # Logits, bit for bit: the same bytes as one process.
    tokens = "1 403 407 261 378 271 300 42 99 7"
    for name, margs in (("stories260K", ["-m", STORIES]), ("small GQA Q8_0", ["-m", small])):
        ref = os.path.join(tmp, "ref.bin")
        r = c.skiff("dump-logits", *margs, "--tokens", tokens, "--prefill", "6", "-o", ref, "-t", "1")
        if not c.check(f"{name} dump-logits one process", r.returncode == 0, r.stderr):
            continue
        want = open(ref, "rb").read()
        for s in (2, 3, 4):
            out = os.path.join(tmp, f"logits{s}.bin")
            r = mpi(s, "dump-logits", *margs, "--tokens", tokens, "--prefill", "6", "-o", out, "-t", "1",
                    "--stages", "auto")
            got = open(out, "rb").read() if os.path.exists(out) else b""
            c.check(f"{name} dump-logits {s} stages: identical bytes", r.returncode == 0 and got == want,
                    r.stderr[-1500:])

    # Perplexity: the same numbers.
    text = os.path.join(args.shared, "data", "tinystories_valid_prefix.txt")
    ppl = ["perplexity", "-m", STORIES, "-f", text, "-c", "64", "--chunks", "3", "-o", "json", "-t", "1"]
    alone = c.skiff(*ppl)
    r = mpi(3, *ppl, "--stages", "auto")
    c.check("perplexity 3 stages == one process", alone.returncode == 0 and r.returncode == 0
            and r.stdout == alone.stdout, f"{r.stdout!r} vs {alone.stdout!r}\n{r.stderr[-1500:]}")

    # The simulated link: the same text, the link in the stats line.
    base = ["generate", "-p", "Once upon a time", "-n", "8", "--temp", "0", "-t", "1"]
    alone = c.skiff(*base)
    r = mpi(2, *base, "--stages", "auto", "--sim-link", "1Gbit,200us")
    c.check("--sim-link 1Gbit,200us: same text, reported", r.returncode == 0 and r.stdout == alone.stdout
            and "sim link 1000 Mbit/s, 200 us" in r.stderr, r.stderr[-1500:])

    # Errors: every rank exits, non-zero, with a clear message, never a hang.
    def clear_error(r: subprocess.CompletedProcess, text: str) -> bool:
        return r.returncode != 0 and any(line.startswith("error: ") and text in line for line in r.stderr.splitlines())

    other = os.path.join(tmp, "other-gqa.gguf")
    c.skiff("synth", "-o", other, "--shape", "tiny", "--type", "f32", "--seed", "4", "-t", "1")
    t0 = time.time()
    e = env()
    r = subprocess.run([MPIRUN, *MPI_ARGS, "-np", "1", skiff, "generate", "-m", gqa, "-n", "4", "--stages", "auto",
                        "-t", "1", ":", "-np", "1", skiff, "generate", "-m", other, "-n", "4", "--stages", "auto",
                        "-t", "1"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=e)
    c.check("a different model on rank 1: error from rank 0", clear_error(r, "rank 1 loaded a different model"),
            f"rc {r.returncode}\n{r.stderr[-2000:]}")
    c.check("... and no wait", time.time() - t0 < 20, f"{time.time() - t0:.1f} s")

    t0 = time.time()
    r = mpi(3, *base, "--stages", "auto", "--stage-timeout", "2", extra_env={"SKIFF_PIPELINE_FAULT": "hang:2:3"})
    c.check("a rank that stops answering: error from rank 0", clear_error(r, "rank 0: pipeline: waited 2 s for the hidden states of layers 3..7 from rank 2"),
            f"rc {r.returncode}\n{r.stderr[-2000:]}")
    c.check("... within the timeout", time.time() - t0 < 20, f"{time.time() - t0:.1f} s")

    t0 = time.time()
    r = mpi(2, *base, "--stages", "auto", "--stage-timeout", "5", extra_env={"SKIFF_PIPELINE_FAULT": "exit:1:2"})
    c.check("a rank that dies ends the job", r.returncode != 0 and time.time() - t0 < 20,
            f"rc {r.returncode} after {time.time() - t0:.1f} s\n{r.stderr[-2000:]}")

    r = mpi(2, *base, "--stage-layers", "0:3,4:8")
    c.check("bad --stage-layers: error", clear_error(r, "stage 1 starts at layer 4, expected 3"), r.stderr[-2000:])
    r = mpi(2, *base, "--self-spec", "5", "--stage-layers", "0:4,4:8")
    c.check("--self-spec draft layers off stage 0: error", clear_error(r, "--self-spec 5"), r.stderr[-2000:])
    r = mpi(2, *base)
    c.check("mpirun without --stages: error", clear_error(r, "give --stages auto or --stage-layers"), r.stderr[-2000:])

    shutil.rmtree(tmp, ignore_errors=True)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
