#!/usr/bin/python3
"""scripts/knowledge_qa.py: the synthetic knowledge base for memory-augmented generation.

The generated text is parsed back here with this file's own copy of the sentence and
question forms (independent of the generator's tables) and checked: determinism (byte-
identical reruns) and seeds that differ; valid JSON Lines, unique ids, short entries;
passages are 3-4 facts of their person plus one distractor about another person's other
attribute; the facts stated anywhere never contradict each other and every person has all
six; facts appear only in passages, only in QA pairs and in both; every question's answer
follows from its gold entries (each hop's entries state that hop's fact) and from the
parsed facts; train and test splits never share a name over several seeds; episodes hold
a gold entry per hop and --episode-k entries; bad flags are a one-line error with exit
code 2.

Needs no skiff binary: --skiff/--shared (passed by CTest to every tests/cli script) are
accepted and ignored.

Run: /usr/bin/python3 tests/cli/test_knowledge_qa.py [--skiff build/skiff --shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import Checks, one_line_error  # noqa: E402

SCRIPT = os.path.join(HERE, "..", "..", "scripts", "knowledge_qa.py")
FILES = ["kb.jsonl", "questions.jsonl", "episodes.jsonl", "meta.json"]
ATTRIBUTES = ["town", "pet", "color", "food", "job", "friend"]
NAME = r"([A-Z][a-z]+)"
WORD = r"([A-Za-z]+)"
SENTENCES = {
    "town": rf"{NAME} lives in {NAME}\.",
    "pet": rf"{NAME} has a pet {WORD}\.",
    "color": rf"{NAME} likes the color {WORD}\.",
    "food": rf"{NAME} likes to eat {WORD}\.",
    "job": rf"{NAME} works as a {WORD}\.",
    "friend": rf"{NAME} has a friend named {NAME}\.",
}
QUESTIONS = {
    "town": "Where does {x} live\\?",
    "pet": "What pet does {x} have\\?",
    "color": "What color does {x} like\\?",
    "food": "What does {x} like to eat\\?",
    "job": "What job does {x} have\\?",
    "friend": "Who is {x}'s friend\\?",
}


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, argv)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def generate(tmp: str, tag: str, *argv) -> str:
    out = os.path.join(tmp, tag)
    r = run(*argv, "-o", out)
    if r.returncode != 0:
        raise RuntimeError(f"knowledge_qa.py {' '.join(map(str, argv))} failed: {r.stderr}")
    return out


def read_bytes(out: str) -> dict:
    result = {}
    for name in FILES:
        with open(os.path.join(out, name), "rb") as f:
            result[name] = f.read()
    return result


def read_jsonl(path: str) -> list:
    with open(path, encoding="ascii") as f:
        return [json.loads(line) for line in f]


def parse_question(text: str):
    """(subject, attribute, hops) of a question text, or None."""
    for a, pattern in QUESTIONS.items():
        m = re.fullmatch(pattern.format(x=NAME + "(?P<friend>'s friend)?"), text)
        if m:
            return m.group(1), a, 2 if m.group("friend") else 1
    return None


def parse_entry(e: dict) -> list:
    """The (entity, attribute, value) facts an entry states; raises on text it cannot read."""
    if e["kind"] == "qa":
        m = re.fullmatch(r"Q: (.*) A: " + WORD + r"\.", e["text"])
        q = parse_question(m.group(1)) if m else None
        if not q or q[2] != 1:
            raise ValueError(f"unreadable QA entry: {e['text']!r}")
        return [(q[0], q[1], m.group(2))]
    facts = []
    for s in re.split(r"(?<=\.) ", e["text"]):
        for a, pattern in SENTENCES.items():
            m = re.fullmatch(pattern, s)
            if m:
                facts.append((m.group(1), a, m.group(2)))
                break
        else:
            raise ValueError(f"unreadable sentence {s!r} in {e['text']!r}")
    return facts


def check_kb(c: Checks, out: str, entities: int, k: int, exact_k: bool = True) -> None:
    """Everything that holds for one generated directory. exact_k=False: the KB may be too
    small to fill an episode with k entries (2 people: a two-hop question has no one else)."""
    tag = os.path.basename(out)
    try:
        kb = read_jsonl(os.path.join(out, "kb.jsonl"))
        questions = read_jsonl(os.path.join(out, "questions.jsonl"))
        episodes = read_jsonl(os.path.join(out, "episodes.jsonl"))
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        c.check(f"{tag}: files parse", False, str(e))
        return
    c.check(f"{tag}: files parse", True)

    ids = [e["id"] for e in kb]
    c.check(f"{tag}: kb ids unique", len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} dups")
    bad = [e for e in kb if not ((e["kind"] == "passage" and re.fullmatch(r"p\d{6}", e["id"]))
                                 or (e["kind"] == "qa" and re.fullmatch(r"q\d{6}", e["id"])))]
    c.check(f"{tag}: kinds and id forms", not bad, str(bad[:2]))
    long = [e for e in kb if len(e["text"].split()) > (40 if e["kind"] == "passage" else 15)]
    c.check(f"{tag}: entries short", not long, str(long[:2]))

    # Facts: parse every entry; no contradictions; each person has all six.
    facts, holders, kinds, errors = {}, {}, {}, []
    for e in kb:
        try:
            parsed = parse_entry(e)
        except ValueError as err:
            errors.append(str(err))
            continue
        if e["kind"] == "passage":
            own = [a for ent, a, _ in parsed if ent == e["entity"]]
            other = [a for ent, a, _ in parsed if ent != e["entity"]]
            if not (3 <= len(own) <= 4 and len(other) == 1 and other[0] not in own):
                errors.append(f"passage is not 3-4 own facts + 1 distractor: {e['text']!r}")
        if parsed and parsed[0][0] != e["entity"]:
            errors.append(f"entry not about its entity: {e}")
        for ent, a, v in parsed:
            if facts.setdefault((ent, a), v) != v:
                errors.append(f"contradiction: {ent} {a} {facts[(ent, a)]} vs {v}")
            holders.setdefault((ent, a), set()).add(e["id"])
            kinds.setdefault((ent, a), set()).add(e["kind"])
    c.check(f"{tag}: every entry readable, consistent", not errors, "; ".join(errors[:3]))
    people = sorted({e["entity"] for e in kb})
    c.check(f"{tag}: {entities} people", len(people) == entities == meta["entities"],
            f"{len(people)} people, meta {meta['entities']}")
    missing = [(p, a) for p in people for a in ATTRIBUTES if (p, a) not in facts]
    c.check(f"{tag}: every fact of every person held by an entry", not missing, str(missing[:5]))
    friends = [facts.get((p, "friend")) for p in people]
    c.check(f"{tag}: friends are other people of the KB",
            all(f in people and f != p for p, f in zip(people, friends)), str(friends[:5]))
    placement = {"passage": 0, "qa": 0, "both": 0}
    for p in people:
        for a in ATTRIBUTES:
            ks = kinds.get((p, a), set())
            placement["both" if len(ks) == 2 else next(iter(ks), "qa")] += 1
    c.check(f"{tag}: facts only in passages, only in QA pairs, and in both",
            all(placement.values()), str(placement))

    # Questions: answers follow from the facts and from each hop's gold entries.
    by_id = {e["id"]: e for e in kb}
    q_errors = []
    for q in questions:
        parsed = parse_question(q["question"])
        if not parsed or parsed[0] != q["entity"] or parsed[1] != q["attribute"] \
                or parsed[2] != q["hops"] or len(q["hop_ids"]) != q["hops"]:
            q_errors.append(f"question fields disagree: {q}")
            continue
        subject, a, hops = parsed
        chain = [(subject, a)] if hops == 1 else \
            [(subject, "friend"), (facts.get((subject, "friend")), a)]
        expected = facts.get(chain[-1])
        if q["answer"] != expected or len(q["answer"].split()) != 1:
            q_errors.append(f"answer {q['answer']!r}, facts say {expected!r}: {q['question']}")
        flat = [i for hop in q["hop_ids"] for i in hop]
        if q["ids"] != list(dict.fromkeys(flat)):
            q_errors.append(f"ids is not the union of hop_ids: {q}")
        for fact, hop in zip(chain, q["hop_ids"]):
            value = facts.get(fact)
            if not hop or set(hop) != holders.get(fact, set()):
                q_errors.append(f"hop ids {hop} != holders {holders.get(fact)} of {fact}")
            for i in hop:
                text = by_id[i]["text"] if i in by_id else ""
                if not (re.search(rf"\b{fact[0]}\b", text) and re.search(rf"\b{value}\b", text)):
                    q_errors.append(f"{i} does not state {fact}={value}: {text!r}")
    c.check(f"{tag}: {len(questions)} questions answered by their gold entries",
            bool(questions) and not q_errors, "; ".join(q_errors[:3]))
    n1 = sum(q["hops"] == 1 for q in questions)
    n2 = sum(q["hops"] == 2 for q in questions)
    c.check(f"{tag}: single- and two-hop questions", n1 > 0 and n2 > 0 and
            meta["counts"]["single_hop"] == n1 and meta["counts"]["two_hop"] == n2, f"{n1}, {n2}")
    keys = [(q["entity"], q["attribute"], q["hops"]) for q in questions]
    c.check(f"{tag}: no question twice", len(keys) == len(set(keys)))

    # Episodes: one per question, k entries, a gold entry for every hop.
    e_errors = []
    if len(episodes) != len(questions):
        e_errors.append(f"{len(episodes)} episodes for {len(questions)} questions")
    for ep, q in zip(episodes, questions):
        if (ep["question"], ep["answer"]) != (q["question"], q["answer"]):
            e_errors.append(f"episode {ep['question']!r} vs question {q['question']!r}")
        n = len(ep["entries"])
        if len(set(ep["ids"])) != n or (n != k if exact_k else not q["hops"] <= n <= k):
            e_errors.append(f"{n} entries ({len(set(ep['ids']))} distinct), want {k}")
        if [by_id[i]["text"] for i in ep["ids"] if i in by_id] != ep["entries"]:
            e_errors.append(f"ids and entries disagree: {ep}")
        for hop in q["hop_ids"]:
            if not set(hop) & set(ep["ids"]):
                e_errors.append(f"no gold entry of hop {hop} in {ep['ids']}")
    c.check(f"{tag}: episodes hold their gold entries, {k}{'' if exact_k else ' or fewer'} "
            "entries each", not e_errors,
            "; ".join(e_errors[:3]))

    # "more" questions (--episode-questions N): single-hop, answered by a fact one of the
    # episode's own entries states, never the episode's first question again.
    n_more = meta.get("episode_questions", 1) - 1
    m_errors = []
    for ep in episodes:
        more = ep.get("more", [])
        if n_more == 0 and "more" in ep or len(more) > n_more:
            m_errors.append(f"{len(more)} more questions, want at most {n_more}")
        stated = {(ent, a): v for i in ep["ids"] for ent, a, v in parse_entry(by_id[i])}
        asked = {(ep["question"], ep["answer"])}
        for m in more:
            parsed = parse_question(m["question"])
            if not parsed or parsed[2] != 1 or stated.get((parsed[0], parsed[1])) != m["answer"]:
                m_errors.append(f"{m} is not answered by the episode's entries")
            if (m["question"], m["answer"]) in asked:
                m_errors.append(f"{m} asked twice")
            asked.add((m["question"], m["answer"]))
    if n_more > 0 and not any(len(ep.get("more", [])) == n_more for ep in episodes):
        m_errors.append("no episode has all its more questions")
    c.check(f"{tag}: more questions ({n_more}) are answered by the episode's entries", not m_errors,
            "; ".join(m_errors[:3]))
    # Similar distractors (the default): most single-hop episodes hold another entry that
    # names the asked person, as a lexical retriever would return (random ones rarely do).
    if meta.get("distractors") == "similar" and k >= 4:
        single = [(ep, q) for ep, q in zip(episodes, questions) if q["hops"] == 1]
        near = sum(any(i not in q["ids"] and re.search(rf"\b{q['entity']}\b", by_id[i]["text"])
                       for i in ep["ids"]) for ep, q in single)
        c.check(f"{tag}: similar distractors name the asked person in most episodes",
                single != [] and near >= 0.8 * len(single), f"{near} of {len(single)}")


def names_in(out: str) -> set:
    """Every capitalized word of every output file other than the Q:/A: markers and the
    question words."""
    words = set()
    for name in FILES[:3]:
        with open(os.path.join(out, name)) as f:
            words |= set(re.findall(r"\b[A-Z][a-z]+\b", f.read()))
    return words - {"Q", "A", "What", "Where", "Who"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", default="")   # passed by CTest to every CLI test; unused
    ap.add_argument("--shared", default="")  # likewise
    ap.parse_args()
    c = Checks("")

    with tempfile.TemporaryDirectory() as tmp:
        a = generate(tmp, "a", "--seed", 7, "--entities", 40)
        b = generate(tmp, "b", "--seed", 7, "--entities", 40)
        c.check("same flags: byte-identical output", read_bytes(a) == read_bytes(b))
        env = dict(os.environ, PYTHONHASHSEED="123")
        r = subprocess.run([sys.executable, SCRIPT, "--seed", "7", "--entities", "40", "-o",
                            os.path.join(tmp, "h")], capture_output=True, text=True, env=env)
        c.check("byte-identical under another PYTHONHASHSEED",
                r.returncode == 0 and read_bytes(os.path.join(tmp, "h")) == read_bytes(a), r.stderr)
        d = generate(tmp, "d", "--seed", 8, "--entities", 40)
        c.check("another seed: another KB", read_bytes(d)["kb.jsonl"] != read_bytes(a)["kb.jsonl"])
        q = generate(tmp, "q", "--seed", 7, "--entities", 40, "--questions", 30)
        c.check("--questions leaves the KB alone",
                read_bytes(q)["kb.jsonl"] == read_bytes(a)["kb.jsonl"])
        with open(os.path.join(a, "questions.jsonl")) as f:
            n_default = sum(1 for _ in f)
        c.check("default question count 2N + N/2", n_default == 2 * 40 + 40 // 2, str(n_default))
        with open(os.path.join(q, "questions.jsonl")) as f:
            c.check("--questions 30", sum(1 for _ in f) == 30)

        check_kb(c, a, 40, 8)
        check_kb(c, generate(tmp, "train2", "--seed", 2, "--entities", 2, "--split", "train",
                             "--episode-k", 3), 2, 3, exact_k=False)
        check_kb(c, generate(tmp, "train300", "--seed", 3, "--entities", 300, "--split", "train",
                             "--episode-k", 12, "--questions", 800), 300, 12)
        check_kb(c, generate(tmp, "more", "--seed", 4, "--entities", 60, "--split", "train",
                             "--episode-questions", 5), 60, 8)
        check_kb(c, generate(tmp, "random", "--seed", 4, "--entities", 60, "--split", "train",
                             "--distractors", "random"), 60, 8)
        # --retrieved: episodes read the retriever's lists (here a fake retriever that never
        # finds the gold entries: each hop's gold goes in; the rest keep their rank order in
        # the episodes that are not shuffled).
        base = read_jsonl(os.path.join(a, "questions.jsonl"))
        kb_ids = [e["id"] for e in read_jsonl(os.path.join(a, "kb.jsonl"))]
        fake = os.path.join(tmp, "retrieved.jsonl")
        with open(fake, "w") as f:
            for q in base:
                ids = [i for i in kb_ids if i not in q["ids"]][:8]
                f.write(json.dumps({"question": q["question"], "ids": ids}) + "\n")
        ret = generate(tmp, "ret", "--seed", 7, "--entities", 40, "--retrieved", fake)
        check_kb(c, ret, 40, 8)
        eps = read_jsonl(os.path.join(ret, "episodes.jsonl"))
        fake_lists = [json.loads(l)["ids"] for l in open(fake)]
        ranked = sum(ep["ids"][:6] == lst[:6] for ep, lst in zip(eps, fake_lists))
        c.check("--retrieved: the retriever's entries, about half in its order",
                all(len(set(ep["ids"]) - set(lst)) <= 2 for ep, lst in zip(eps, fake_lists))
                and 0.3 * len(eps) <= ranked <= 0.8 * len(eps), f"{ranked} of {len(eps)} in order")
        r = subprocess.run([sys.executable, SCRIPT, "--seed", "7", "--entities", "40", "--retrieved",
                            os.path.join(tmp, "missing.jsonl"), "-o", os.path.join(tmp, "x")],
                           capture_output=True, text=True)
        c.check("--retrieved of a missing file: one-line error, exit 2",
                r.returncode == 2 and r.stderr.startswith("error: --retrieved"), r.stderr)

        # Splits: names follow the crc32 rule and never cross over, for several seeds.
        split_names = {"train": set(), "test": set()}
        for seed in range(4):
            for split in ("train", "test"):
                out = generate(tmp, f"{split}{seed}", "--seed", seed, "--entities", 150,
                               "--split", split)
                split_names[split] |= names_in(out)
        rule = {n for n in split_names["test"] if zlib.crc32(n.encode()) % 5 != 0} | \
               {n for n in split_names["train"] if zlib.crc32(n.encode()) % 5 == 0}
        c.check("names follow the split rule", not rule, str(sorted(rule)[:5]))
        shared = split_names["train"] & split_names["test"]
        c.check(f"train and test share no name ({len(split_names['train'])} train, "
                f"{len(split_names['test'])} test names)", not shared, str(sorted(shared)[:5]))

        # Bad flags: exit code 2 and one 'error:' line.
        blocker = os.path.join(tmp, "file")
        with open(blocker, "w") as f:
            f.write("x")
        ok_out = os.path.join(tmp, "bad")
        for argv in (["--entities", "1", "-o", ok_out], ["--entities", "0", "-o", ok_out],
                     ["--entities", "x", "-o", ok_out], ["--entities", "999999", "-o", ok_out],
                     ["--seed", "-1", "-o", ok_out], ["--split", "dev", "-o", ok_out],
                     ["--episode-k", "1", "-o", ok_out], ["--questions", "0", "-o", ok_out],
                     ["--entities", "2", "--questions", "1000", "-o", ok_out],
                     ["--bogus", "-o", ok_out], [],
                     ["-o", os.path.join(blocker, "sub")]):
            r = run(*argv)
            c.check(f"bad flags {' '.join(argv) or '(none)'}: one-line error, exit 2",
                    one_line_error(r, 2), f"rc {r.returncode}, stderr {r.stderr!r}")
        r = run("--help")
        c.check("--help", r.returncode == 0 and "--episode-k" in r.stdout, r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
