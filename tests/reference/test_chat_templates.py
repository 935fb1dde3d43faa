#!/usr/bin/python3
"""skiff's hand-written chat templates against the real ones, byte for byte.

1. Every Jinja file in <shared>/models/chat-templates/ is rendered with Debian's python3-jinja2
   the way Hugging Face renders it (sandboxed, trim_blocks and lstrip_blocks on, the
   raise_exception and strftime_now helpers, the model's bos_token/eos_token) for a few
   conversations, with and without add_generation_prompt; `skiff chat-template
   --template-file F` (which recognizes the file as it would a model's template) must print
   exactly the same prompt. Tool-use templates are listed in UNSUPPORTED with the reason.
2. The test cases of llama.cpp's tests/test-chat-template.cpp (data/chat_templates.json, with
   provenance), on llama.cpp's conversation: each template is rendered with jinja2 too. Where
   the Jinja and llama.cpp's expected rendering agree, skiff must print exactly that; where they
   differ (llama.cpp's formatter simplifies: a system prompt the template refuses is merged into
   the first user turn, spaces around replies, ...) skiff follows llama.cpp's formatter and must
   print llama.cpp's expected rendering, except for FOLLOWS_JINJA where it prints the Jinja's.
   BOS is left to the tokenizer there (--bos ""), as in llama.cpp.

Run: /usr/bin/python3 tests/reference/test_chat_templates.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import jinja2
import jinja2.sandbox

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import setup  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "chat_templates.json")
TODAY = "03 Dec 2026"  # what strftime_now gives in both renderings

# Template file stem -> (bos_token, eos_token) from the model's tokenizer_config.json.
MODELS = {
    "Qwen-Qwen2.5-7B-Instruct": ("", "<|im_end|>"),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama-cpp-deepseek-r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "google-gemma-2-2b-it": ("<bos>", "<eos>"),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.3-70B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Meta-Llama-3-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),
}

# Recognized (see the gtest ChatTemplate.DetectsEveryTemplateFile) but rendered differently:
# these templates always describe tools / functions in their system prompt, which a
# hand-written chat formatter without tool support does not reproduce.
UNSUPPORTED = {
    "CohereForAI-c4ai-command-r-plus-tool_use": "tool-use template: always writes the tool preamble",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "tool-use template: always writes the tool preamble",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": "tool-use template: always writes the function-calling system prompt",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "tool-use template: always writes the function-calling system prompt",
    "fireworks-ai-llama-3-firefunction-v2": "function-calling template: always writes the functions system prompt",
    "meetkai-functionary-medium-v3.1": "function-calling template: own system block and roles",
    "meetkai-functionary-medium-v3.2": "function-calling template: own system block and roles",
}

# llama.cpp cases where skiff renders what the template's Jinja renders (llama.cpp's own
# expected_output_jinja) rather than llama.cpp's formatter: the official Mistral templates put
# the system prompt in the LAST user turn, and skiff follows them.
FOLLOWS_JINJA = {
    "Mistral-Large-Instruct-2407 (mistralai 'v3' template; modified to have system prompt at start)",
    "Mistral-Nemo-Instruct-2407 (mistralai 'v3-tekken' template; modified to have system prompt at start)",
}

CONVERSATIONS = {
    "system+user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "  I am an assistant.  "},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "system+multi-turn": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, please.\nThanks"},
    ],
    "reasoning-reply": [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nDone."},
        {"role": "user", "content": "Again"},
    ],
}


def jinja_env() -> jinja2.Environment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: TODAY
    return env


def render_skiff(c, tmpl_file: str, messages, gen: bool, bos: str, eos: str, tmp: str) -> subprocess.CompletedProcess:
    path = os.path.join(tmp, "messages.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(messages, f, ensure_ascii=False)
    argv = [c.skiff_path, "chat-template", "--template-file", tmpl_file, "--messages", path, "--bos", bos,
            "--eos", eos, "--today", TODAY]
    if not gen:
        argv.append("--no-generation-prompt")
    return subprocess.run(argv, capture_output=True, timeout=30)


def main() -> int:
    args, c = setup()
    env = jinja_env()
    tmpl_dir = os.path.join(args.shared, "models", "chat-templates")
    files = sorted(f for f in os.listdir(tmpl_dir) if f.endswith(".jinja"))
    c.check("chat-templates/ holds the expected files", len(files) >= 18 and
            set(MODELS) | set(UNSUPPORTED) == {f[:-6] for f in files}, str(files))
    with tempfile.TemporaryDirectory() as tmp:
        for name in files:
            stem = name[:-6]
            if stem in UNSUPPORTED:
                print(f"SKIP {stem}: {UNSUPPORTED[stem]}")
                continue
            bos, eos = MODELS.get(stem, ("", ""))
            path = os.path.join(tmpl_dir, name)
            with open(path, encoding="utf-8") as f:
                template = env.from_string(f.read())
            for conv_name, messages in CONVERSATIONS.items():
                for gen in (True, False):
                    try:
                        want = template.render(messages=messages, add_generation_prompt=gen, bos_token=bos,
                                               eos_token=eos)
                    except jinja2.exceptions.TemplateError as e:
                        print(f"SKIP {stem} {conv_name}: the template refuses it ({e})")
                        continue
                    r = render_skiff(c, path, messages, gen, bos, eos, tmp)
                    got = r.stdout.decode("utf-8", "replace")
                    c.check(f"{stem} {conv_name} gen={gen}", r.returncode == 0 and got == want,
                            f"rc {r.returncode} {r.stderr.decode()[:200]}\n  want {want!r}\n  got  {got!r}")

        with open(DATA, encoding="utf-8") as f:
            data = json.load(f)
        for case in data["cases"]:
            tpath = os.path.join(tmp, "case.jinja")
            with open(tpath, "w", encoding="utf-8") as f:
                f.write(case["template_str"])
            try:
                jinja_out = env.from_string(case["template_str"]).render(
                    messages=data["conversation"], add_generation_prompt=True,
                    bos_token=case.get("bos_token", ""), eos_token=case.get("eos_token", ""))
            except jinja2.exceptions.TemplateError as e:
                jinja_out = f"(the template refuses the conversation: {e})"
            r = render_skiff(c, tpath, data["conversation"], True, "", case.get("eos_token", ""), tmp)
            got = r.stdout.decode("utf-8", "replace")
            if case["name"] in FOLLOWS_JINJA:
                what, want = "the Jinja (skiff follows the official template)", jinja_out
            elif jinja_out == case["expected_output"]:
                what, want = "the Jinja and llama.cpp", jinja_out
            else:
                what, want = "llama.cpp's formatter (the Jinja differs)", case["expected_output"]
            c.check(f"llama.cpp case {case['name']}: as {what}", r.returncode == 0 and got == want,
                    f"rc {r.returncode} {r.stderr.decode()[:200]}\n  want {want!r}\n  got  {got!r}")
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
