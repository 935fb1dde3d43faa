#!/usr/bin/python3
"""Runs one of the server's Node test files (tests/server/test_*.mjs, the official openai SDK
against `skiff serve`) for CTest.

The file starts its own servers (lib/server.mjs). Node runs in a session of its own, and that
whole process group is killed when it ends, so no server outlives the test even if node dies;
a test file taking longer than --timeout fails.

Run: /usr/bin/python3 tests/server/run_node.py --skiff build/skiff --shared ../shared tests/server/test_sdk_basic.mjs
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("file")
    args = ap.parse_args()

    node = shutil.which("node")
    if not node:
        print("FAIL node is not installed (scripts/bootstrap.sh installs it)")
        return 1
    if not os.path.isfile(os.path.join(HERE, "node_modules", "openai", "package.json")):
        print("FAIL tests/server/node_modules has no openai SDK: run scripts/bootstrap.sh")
        return 1

    env = dict(os.environ, SKIFF_BIN=os.path.abspath(args.skiff), SKIFF_SHARED=os.path.abspath(args.shared))
    cmd = [node, "--test-reporter=spec", os.path.abspath(args.file)]
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"FAIL {os.path.basename(args.file)} took more than {args.timeout:.0f} s", flush=True)
        rc = 1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # node and any server it left behind
        except ProcessLookupError:
            pass
        proc.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main())
