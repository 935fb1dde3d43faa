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
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import setup  # noqa: E402
from test_mpi_pipeline import MPI_ARGS, MPIRUN, env  # noqa: E402


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


class MpiServer:
    """mpirun -np S skiff serve --port 0 ...; the port from rank 0's stderr."""

    def __init__(self, skiff: str, np: int, *flags: str):
        self.tag = f"{os.getpid()}-{time.time_ns()}"
        e = env()
        e["SKIFF_TEST_TAG"] = self.tag
        self.proc = subprocess.Popen([MPIRUN, *MPI_ARGS, "-x", "SKIFF_TEST_TAG", "-np", str(np), skiff, "serve",
                                      "--port", "0", *map(str, flags)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=e)
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                if line.startswith("skiff serve: ready:"):
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        ready.wait(60)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stop(self) -> int:
        pid = rank0_pid(self.tag)
        if pid:
            os.kill(pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(5)
        return rc


def main() -> int:
    args, c = setup()
    skiff = args.skiff
    if MPIRUN is None:
        print("SKIP: mpirun not found (scripts/bootstrap.sh installs openmpi-bin)")
        return 0

    def mpi(np: int, *argv, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([MPIRUN, *MPI_ARGS, "-np", str(np), skiff, *map(str, argv)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env())

    probe = mpi(1, "generate", "--stages", "auto", "-n", "1", "-p", "x", "-t", "1")
    if "built without MPI" in probe.stderr:
        print("SKIP: skiff was built without MPI (SKIFF_MPI=OFF)")
        return 0

    prompts = ["Once upon a time", "The cat sat on the mat and", "Lily wanted a"]
    want = {}
    for p in prompts:
        r = c.skiff("generate", "-p", p, "-n", "24", "--temp", "0", "-t", "1")
        c.check(f"generate '{p}' one process", r.returncode == 0, r.stderr)
        want[p] = r.stdout.rstrip("\n")

    # serve in 2 stages: 3 slots, 2 micro-batch groups.
    s = MpiServer(skiff, 2, "-t", "1", "--parallel", "3", "--stages", "auto")
    if c.check("mpirun serve, 2 stages: ready", s.port > 0 and "2 micro-batch groups" in s.log, s.log[-2000:]):
        def complete(p: str) -> str:
            return s.post("/v1/completions", {"prompt": p, "max_tokens": 24, "temperature": 0})["choices"][0]["text"]

        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(complete, prompts))
        for p, text in zip(prompts, got):
            c.check(f"serve 2 stages, concurrent: '{p}' == one process", text == want[p], f"{text!r}\nvs {want[p]!r}")
        two = s.post("/v1/completions", {"prompt": prompts[0], "max_tokens": 24, "temperature": 0, "n": 2})
        texts = [ch["text"] for ch in two["choices"]]
        c.check("serve 2 stages, n = 2: both choices == one process", texts == [want[prompts[0]]] * 2, repr(texts))
        spec = s.post("/v1/completions", {"prompt": prompts[1], "max_tokens": 24, "temperature": 0,
                                          "skiff": {"self_spec": {"exit_layer": 3}}})
        c.check("serve 2 stages, self-speculation == one process", spec["choices"][0]["text"] == want[prompts[1]],
                repr(spec["choices"][0]["text"]))
    rc = s.stop()
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
