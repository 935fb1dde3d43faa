#!/usr/bin/python3
"""The user-facing behaviour of `skiff generate`, `tokenize` and `--help`.

stdout carries only the continuation; a timing line goes to stderr; the same seed gives the
same text and other seeds other text; --stop ends the text before the stop string; the
context limit ends generation cleanly; --no-mmap changes nothing but where the weights live;
bad sampling values are errors; every command has --help.

Run: /usr/bin/python3 tests/cli/test_generate.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import one_line_error, setup  # noqa: E402


def main() -> int:
    args, c = setup()

    def skiff(*a: str):  # every run here is short: a minute at most
        return c.skiff(*a, timeout=60)

    for cmd in ["generate", "tokenize", "info", "perplexity", "convert", "quantize", "dump-logits"]:
        r = skiff(cmd, "--help")
        c.check(f"{cmd} --help", r.returncode == 0 and "Usage" in r.stdout + r.stderr and "--" in r.stdout,
                r.stdout[:200] + r.stderr[:200])
    r = skiff("--help")
    c.check("skiff --help lists the commands", r.returncode == 0 and "generate" in r.stdout and "perplexity" in r.stdout)

    vocab = os.path.join(args.shared, "models", "ggml-vocab-llama-spm.gguf")
    r = skiff("tokenize", "-m", vocab, "-p", "I believe the meaning of life is")
    c.check("tokenize with the LLaMA-2 vocabulary", r.stdout.strip() == "1 306 4658 278 6593 310 2834 338", r.stdout + r.stderr)

    r = skiff("generate", "-p", "Once upon a time", "-n", "20", "--temp", "0")
    c.check("stdout is the continuation only", r.returncode == 0 and r.stdout.startswith(", there was a little girl"),
            repr(r.stdout))
    m = re.search(r"prompt: (\d+) tokens, [0-9.]+ tok/s \| generated: (\d+) tokens, [0-9.]+ tok/s", r.stderr)
    c.check("timing line on stderr", m is not None and m.group(1) == "5" and m.group(2) == "20", r.stderr)

    runs = [skiff("generate", "-p", "Once upon a time", "-n", "40", "--temp", "1", "--seed", s).stdout
            for s in ("7", "7", "8")]
    c.check("same seed, same text", runs[0] == runs[1] and len(runs[0]) > 20, repr(runs[:2]))
    c.check("another seed, other text", runs[0] != runs[2], repr(runs))
    r = skiff("generate", "-p", "Once upon a time", "-n", "40", "--temp", "0.7", "--top-k", "10", "--top-p", "0.9",
              "--min-p", "0.1", "--repeat-penalty", "1.3", "--presence-penalty", "0.2", "--frequency-penalty", "0.1",
              "--seed", "3")
    c.check("all sampling flags together", r.returncode == 0 and len(r.stdout.strip()) > 0, r.stderr)

    r = skiff("generate", "-p", "Once upon a time", "-n", "40", "--temp", "0", "--stop", "Lily")
    c.check("--stop ends before the stop string", r.stdout == ", there was a little girl named \n", repr(r.stdout))
    r = skiff("generate", "-p", "Once upon a time", "-n", "0")
    c.check("-n 0 generates nothing", r.returncode == 0 and r.stdout == "\n", repr(r.stdout))
    r = skiff("generate", "-p", "Once upon a time", "-n", "100", "--temp", "0", "-c", "16")
    c.check("a full context ends generation cleanly", r.returncode == 0 and "context full" in r.stderr
            and len(r.stdout) > 10, r.stderr)
    r = skiff("generate", "-p", "", "-n", "12", "--temp", "0")
    c.check("empty prompt starts from BOS", r.returncode == 0 and r.stdout.startswith("Once upon a time"), repr(r.stdout))

    # --no-mmap copies the weights into huge pages: the same model, the same text.
    model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "stories3M-layerskip.gguf")
    mapped = skiff("generate", "-m", model, "-p", "Once upon a time", "-n", "24", "--temp", "0")
    copied = skiff("generate", "-m", model, "--no-mmap", "-p", "Once upon a time", "-n", "24", "--temp", "0")
    c.check("--no-mmap gives the same text", mapped.returncode == 0 and copied.returncode == 0
            and mapped.stdout == copied.stdout and len(mapped.stdout) > 20, repr(mapped.stdout) + repr(copied.stdout))
    r = skiff("info", "-m", model, "--no-mmap")
    c.check("info reports the huge-page copy", r.returncode == 0 and "copied into huge pages" in r.stdout, r.stdout[-300:])

    for bad in (["--temp", "-1"], ["--top-p", "0"], ["--min-p", "2"], ["--repeat-penalty", "0"], ["-n", "-3"],
                ["-m", "/nonexistent.gguf"], ["-p", "x", "-f", "/etc/hostname"]):
        r = skiff("generate", "-p", "hi", *bad) if "-p" not in bad else skiff("generate", *bad)
        # Any non-zero exit: a malformed number (-n -3) is a usage error, exit code 2.
        c.check(f"generate {' '.join(bad)} is an error", one_line_error(r, code=None),
                f"rc={r.returncode} {r.stderr!r}")

    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
