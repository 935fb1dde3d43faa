"""`skiff serve` and `skiff bench` in pipeline stages under a real mpirun (issue 17), over
loopback TCP as tests/cli/test_mpi_pipeline.py runs them.

- serve, 2 stages, 3 slots in 2 micro-batch groups: concurrent greedy completions equal one
  process's `skiff generate`; n = 2 choices (the prompt's cache copied along the stages); a
  self-speculative request (drafting on stage 0); SIGTERM to rank 0 drains, stops the other
  stage and exits 0 with the pipeline's stats line; --memory with --stages is refused.
- bench, 2 stages: the pp/tg table and the stats line, JSON with the plan.
- --stages auto by free memory: rank 1 given three times rank 0's memory
  (SKIFF_STAGE_MEMORY_MIB) takes three quarters of the layers; the text is unchanged.

Skips (exit 0) when mpirun is missing or skiff was built without MPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import setup  # noqa: E402
from server_harness import Server  # noqa: E402
from test_mpi_pipeline import MPI_ARGS, MPIRUN, env, mpi_probe, run_mpi  # noqa: E402


def rank0_pid(tag: str, timeout: float = 10) -> int | None:
    """The skiff process of MPI rank 0 whose environment carries SKIFF_TEST_TAG=tag."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    e = f.read().split(b"\0")
            except OSError:
                continue
            if f"SKIFF_TEST_TAG={tag}".encode() in e and b"OMPI_COMM_WORLD_RANK=0" in e:
                return int(pid)
        time.sleep(0.1)
    return None


class MpiServer(Server):
    """mpirun -np S skiff serve --port 0 ...: Server's handling, SIGTERM to rank 0."""

    def __init__(self, skiff: str, np: int, *flags: str):
        self.tag = f"{os.getpid()}-{time.time_ns()}"
        e = env()
        e["SKIFF_TEST_TAG"] = self.tag
        super().__init__(skiff, *flags, ready_timeout=60, env=e,
                         launcher=(MPIRUN, *MPI_ARGS, "-x", "SKIFF_TEST_TAG", "-np", str(np)))

    def signal_pid(self) -> int | None:
        return rank0_pid(self.tag)

    def completion(self, body: dict) -> dict:
        status, out = self.post("/v1/completions", body)
        if status != 200:
            raise RuntimeError(f"{status}: {out}")
        return out


def main() -> int:
    args, c = setup()
    skiff = args.skiff
    skip, _ = mpi_probe(skiff)
    if skip:
        print(f"SKIP: {skip}")
        return 0

    def mpi(np: int, *argv, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_mpi(skiff, np, *argv, timeout=timeout)

    prompts = ["Once upon a time", "The cat sat on the mat and", "Lily wanted a"]
    want = {}
    for p in prompts:
        r = c.skiff("generate", "-p", p, "-n", "24", "--temp", "0", "-t", "1")
        c.check(f"generate '{p}' one process", r.returncode == 0, r.stderr)
        want[p] = r.stdout.rstrip("\n")

    # serve in 2 stages: 3 slots, 2 micro-batch groups.
    try:
        s = MpiServer(skiff, 2, "-t", "1", "--parallel", "3", "--stages", "auto")
    except RuntimeError as e:
        c.check("mpirun serve, 2 stages: ready", False, str(e)[-2000:])
        return c.finish()
    c.check("mpirun serve, 2 stages: ready", "2 micro-batch groups" in s.log, s.log[-2000:])

    def complete(p: str) -> str:
        return s.completion({"prompt": p, "max_tokens": 24, "temperature": 0})["choices"][0]["text"]

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(complete, prompts))
    for p, text in zip(prompts, got):
        c.check(f"serve 2 stages, concurrent: '{p}' == one process", text == want[p], f"{text!r}\nvs {want[p]!r}")
    two = s.completion({"prompt": prompts[0], "max_tokens": 24, "temperature": 0, "n": 2})
    texts = [ch["text"] for ch in two["choices"]]
    c.check("serve 2 stages, n = 2: both choices == one process", texts == [want[prompts[0]]] * 2, repr(texts))
    spec = s.completion({"prompt": prompts[1], "max_tokens": 24, "temperature": 0,
                         "skiff": {"self_spec": {"exit_layer": 3}}})
    c.check("serve 2 stages, self-speculation == one process", spec["choices"][0]["text"] == want[prompts[1]],
            repr(spec["choices"][0]["text"]))
    rc = s.stop(30)
    c.check("serve 2 stages: SIGTERM to rank 0 stops every rank, exit 0",
            rc == 0 and "skiff serve: stopped" in s.log and "pipeline: 2 stages" in s.log, f"rc {rc}\n{s.log[-2000:]}")

    r = mpi(2, "serve", "--port", "0", "--memory", "kb=/nonexistent", "--stages", "auto")
    c.check("serve --memory with --stages: error", r.returncode != 0 and "does not run with --stages" in r.stderr,
            r.stderr[-1500:])

    # bench in 2 stages.
    r = mpi(2, "bench", "-p", "16", "-n", "8", "-r", "1", "-t", "1", "--stages", "auto")
    c.check("bench 2 stages: table and stats line",
            r.returncode == 0 and "| pp16 |" in r.stdout and "| tg8 |" in r.stdout and "pipeline: 2 stages 0:4,4:8" in r.stdout,
            f"rc {r.returncode}\n{r.stdout}\n{r.stderr[-1500:]}")
    r = mpi(2, "bench", "-p", "16", "-n", "8", "-r", "1", "-t", "1", "--stages", "auto", "-o", "json")
    try:
        rows = json.loads(r.stdout)
        ok = r.returncode == 0 and len(rows) == 2 and all(x["stages"] == "0:4,4:8" and x["avg_ts"] > 0 for x in rows)
    except (ValueError, KeyError, TypeError):
        ok = False
    c.check("bench 2 stages: JSON rows name the plan", ok, f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")

    # --stages auto by free memory: rank 1 has three times rank 0's room.
    gen = ["generate", "-p", prompts[0], "-n", "24", "--temp", "0", "-t", "1", "--stages", "auto"]
    r = subprocess.run([MPIRUN, *MPI_ARGS, "-np", "1", "-x", "SKIFF_STAGE_MEMORY_MIB=100", skiff, *gen, ":",
                        "-np", "1", "-x", "SKIFF_STAGE_MEMORY_MIB=300", skiff, *gen],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env())
    c.check("--stages auto by free memory: 0:2,2:8, text unchanged",
            r.returncode == 0 and "pipeline: 2 stages 0:2,2:8" in r.stderr and r.stdout.rstrip("\n") == want[prompts[0]],
            f"rc {r.returncode}\n{r.stdout!r}\n{r.stderr[-1500:]}")
    r = subprocess.run([MPIRUN, *MPI_ARGS, "-np", "1", "-x", "SKIFF_STAGE_MEMORY_MIB=1", skiff, *gen, ":",
                        "-np", "1", "-x", "SKIFF_STAGE_MEMORY_MIB=300", skiff, *gen],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env())
    c.check("--stages auto: a stage without room for its share is warned about",
            r.returncode == 0 and "warning: pipeline stage 0" in r.stderr, r.stderr[-1500:])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
