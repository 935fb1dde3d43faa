#!/usr/bin/python3
"""Writes chat_templates.json (next to this script) from llama.cpp's tests/test-chat-template.cpp:
the test cases' names, template texts, BOS/EOS texts and llama.cpp's expected renderings of its
fixed conversation (its non-Jinja formatter, `expected_output`, and its Jinja engine's,
`expected_output_jinja` where that differs). The JSON is committed; this script documents where
it came from. Run once: extract_llama_cpp_chat_templates.py llama.cpp-c392e50.tar.gz
"""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile

LITERAL = r'(?:u8)?"(?:[^"\\]|\\.)*"'
FIELD = re.compile(r'/\* \.(\w+)= \*/\s*((?:' + LITERAL + r'\s*)+|true|false)')


def unescape(lit: str) -> str:
    out = []
    for part in re.findall(LITERAL, lit):
        body = part[part.index('"') + 1:-1]
        out.append(bytes(body, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8"))
    return "".join(out)


def main() -> int:
    tar = tarfile.open(sys.argv[1])
    member = next(m for m in tar.getmembers() if m.name.endswith("tests/test-chat-template.cpp"))
    src = tar.extractfile(member).read().decode("utf-8")
    conv = re.search(r"std::vector<llama_chat_message> conversation \{(.*?)\};", src, re.S).group(1)
    conversation = [{"role": unescape(r), "content": unescape(c)}
                    for r, c in re.findall(r'\{(' + LITERAL + r'),\s*(' + LITERAL + r')\}', conv)]
    body = src[src.index("std::vector<TestCase> test_cases {"):]
    body = body[:body.index("\n    };")]
    cases = []
    for block in re.split(r"\n        \{\n", body)[1:]:
        case = {}
        for key, val in FIELD.findall(block):
            case[key] = val == "true" if val in ("true", "false") else unescape(val)
        if "template_str" in case:
            cases.append(case)
    out = {
        "source": "ggerganov/llama.cpp commit c392e50, tests/test-chat-template.cpp (MIT); "
                  "extracted by extract_llama_cpp_chat_templates.py",
        "conversation": conversation,
        "add_generation_prompt": True,
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_templates.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
