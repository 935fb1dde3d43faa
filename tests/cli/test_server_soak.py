#!/usr/bin/python3
"""A short run of the server soak test (tests/server/soak.py: 15 s, 8 client threads sending
random valid and invalid requests): no crash, every valid request answered in full, every
invalid one a 4xx in the OpenAI shape, resident memory flat after the warm-up.

Run: /usr/bin/python3 tests/cli/test_server_soak.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import setup  # noqa: E402

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server", "soak.py")


def main() -> int:
    args, c = setup()
    r = subprocess.run([sys.executable, SOAK, "--skiff", args.skiff, "--seconds", "15", "--clients", "8",
                        "--rss-slack-mib", "16"], capture_output=True, text=True, timeout=240)
    print(r.stdout, end="")
    c.check("soak 15 s x 8 clients", r.returncode == 0, r.stderr[-2000:])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
