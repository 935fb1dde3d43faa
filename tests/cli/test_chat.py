#!/usr/bin/python3
"""`skiff chat` on the built-in model (no chat template: ChatML, its markers tokenized as text).

- two turns through stdin (a pipe: no "> " prompts); --verbose gives a JSON line per turn;
- the second turn prefills only the new tokens: everything the cache held after turn 1 (the
  first prompt and the reply but its last token, which was never run) is reused, and reused +
  prefilled is the token count of the whole rendered conversation (`skiff tokenize`);
- KV reuse is exact: turn 2's greedy reply equals `skiff generate` on the whole rendered
  conversation (`skiff chat-template`), which starts from an empty cache;
- /reset forgets the conversation (turn 1 again gives the same reply from nothing reused);
- --self-spec gives the same greedy text as plain decoding;
- /exit ends (later lines ignored), a full context is a message and not a crash, and an unknown
  --chat-template is a one-line error.

Run: /usr/bin/python3 tests/cli/test_chat.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import one_line_error, setup  # noqa: E402

N = "24"
MSG1 = "Tell me a story about a cat."
MSG2 = "What did the cat eat?"


def chat(c, lines: list[str], *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([c.skiff_path, "chat", "--temp", "0", "-n", N, "--verbose", *flags],
                          input="".join(line + "\n" for line in lines), capture_output=True, text=True,
                          timeout=120)


def turns(r: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line[len("turn-json: "):]) for line in r.stderr.splitlines()
            if line.startswith("turn-json: ")]


def main() -> int:
    args, c = setup()
    r = chat(c, [MSG1, MSG2])
    t = turns(r)
    c.check("two turns through stdin", r.returncode == 0 and len(t) == 2, r.stderr[-500:])
    if len(t) != 2:
        return c.finish()
    c.check("no prompts on a pipe", "> " not in r.stdout[:2] and r.stdout == t[0]["reply"] + "\n" + t[1]["reply"] + "\n",
            repr(r.stdout[:200]))
    c.check("a speed line per turn on stderr", r.stderr.count("tok/s") >= 4 and "[turn 2:" in r.stderr, r.stderr)
    c.check("turn 1 prefills its whole prompt", t[0]["reused"] == 0 and t[0]["prefilled"] == t[0]["tokens"], str(t[0]))
    cached_after_1 = t[0]["tokens"] + t[0]["generated"] - (0 if t[0]["eos"] else 1)
    c.check("turn 2 reuses everything turn 1 left in the cache", t[1]["reused"] == cached_after_1,
            f"{t[1]['reused']} reused, {cached_after_1} cached")
    c.check("turn 2 prefills only the new tokens", t[1]["prefilled"] == t[1]["tokens"] - t[1]["reused"]
            and t[1]["prefilled"] < t[1]["tokens"] // 2, str(t[1]))

    with tempfile.TemporaryDirectory() as tmp:
        msgs = os.path.join(tmp, "messages.json")
        with open(msgs, "w", encoding="utf-8") as f:
            json.dump([{"role": "user", "content": MSG1}, {"role": "assistant", "content": t[0]["reply"]},
                       {"role": "user", "content": MSG2}], f)
        rendered = c.skiff("chat-template", "--chat-template", "chatml", "--messages", msgs)
        prompt = os.path.join(tmp, "prompt.txt")
        with open(prompt, "w", encoding="utf-8") as f:
            f.write(rendered.stdout)
        tok = c.skiff("tokenize", "-f", prompt)
        n_tokens = len(tok.stdout.split())
        c.check("the turn-2 conversation is the rendered conversation", rendered.returncode == 0
                and tok.returncode == 0 and n_tokens == t[1]["tokens"], f"{n_tokens} vs {t[1]['tokens']} {tok.stderr}")
        gen = c.skiff("generate", "-f", prompt, "--temp", "0", "-n", N)
        c.check("turn 2 equals generate on the whole conversation (KV reuse is exact)",
                gen.returncode == 0 and gen.stdout == t[1]["reply"] + "\n",
                f"\n  generate {gen.stdout!r}\n  chat     {t[1]['reply']!r}")

    r = chat(c, [MSG1, MSG2, "/reset", MSG1, "/exit", MSG2])
    t2 = turns(r)
    c.check("/reset starts over; /exit ends", r.returncode == 0 and len(t2) == 3 and t2[2]["reused"] == 0
            and t2[2]["reply"] == t[0]["reply"] and t2[2]["turn"] == 1, str(t2))

    r = chat(c, [MSG1, MSG2], "--self-spec", "2", "--draft-max", "3")
    t3 = turns(r)
    c.check("--self-spec gives the plain greedy text", r.returncode == 0 and [x["reply"] for x in t3] ==
            [x["reply"] for x in t] and "acceptance" in r.stderr, r.stderr[-400:])
    c.check("--self-spec also prefills only the new tokens", len(t3) == 2 and t3[1]["reused"] == t[1]["reused"],
            str(t3))

    r = chat(c, [MSG1, MSG2, MSG1], "-c", "100")
    c.check("a full context is a message, not a crash", r.returncode == 0 and "context full" in r.stderr
            and r.stderr.count("error") == 0, r.stderr[-400:])

    with tempfile.TemporaryDirectory() as tmp:
        weird = os.path.join(tmp, "weird.jinja")
        with open(weird, "w") as f:
            f.write("{% for m in messages %}{{ m.content }}|{% endfor %}")
        msgs = os.path.join(tmp, "m.json")
        with open(msgs, "w") as f:
            json.dump([{"role": "user", "content": "hi"}], f)
        r = c.skiff("chat-template", "--template-file", weird, "--messages", msgs)
        c.check("an unknown template text: a warning and ChatML", r.returncode == 0 and "warning" in r.stderr
                and "ChatML" in r.stderr and r.stdout == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                repr(r.stdout) + r.stderr)
    r = c.skiff("--help")
    c.check("chat is listed, the chat-template diagnostic is not", "chat " in r.stdout and "chat-template" not in r.stdout,
            r.stdout)

    r = c.skiff("chat", "--chat-template", "nonsense")
    c.check("an unknown --chat-template is a one-line error naming the known ones",
            one_line_error(r) and "chatml" in r.stderr, r.stderr)
    r = c.skiff("chat", "--draft-max", "3")
    c.check("--draft-max without --self-spec is an error", one_line_error(r), r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
