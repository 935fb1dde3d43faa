"""The few helpers every CLI test script shares: run skiff, record PASS/FAIL lines, and
recognize skiff's one-line errors. Each script prints one line per check and ends with
"N passed, M failed" (exit code 0 only when nothing failed)."""

from __future__ import annotations

import argparse
import subprocess


class Checks:
    def __init__(self, skiff: str):
        self.skiff_path = skiff
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def skiff(self, *argv, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.skiff_path, *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def finish(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def setup() -> tuple[argparse.Namespace, Checks]:
    """Parses the --skiff/--shared arguments every CLI test script takes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True)
    args = ap.parse_args()
    return args, Checks(args.skiff)


def one_line_error(r: subprocess.CompletedProcess, code: int | None = 1) -> bool:
    """skiff's contract for bad input: exit `code` and exactly one 'error: ...' line.
    code=None accepts any non-zero exit code (e.g. 2 for a malformed command line)."""
    lines = r.stderr.strip().splitlines()
    code_ok = r.returncode != 0 if code is None else r.returncode == code
    return code_ok and len(lines) == 1 and lines[0].startswith("error: ")
