#!/usr/bin/python3
"""Synthetic knowledge base + questions for memory-augmented generation (issue 15).

    scripts/knowledge_qa.py --seed S --entities N [--split train|test] -o DIR

Generates, deterministically from (seed, entities, split), a small world of N synthetic
people. Every person has six facts, each a ONE-word value:

    attribute  sentence in a passage           QA pair / question
    town       "Bomira lives in Karat."        "Q: Where does Bomira live? A: Karat."
    pet        "Bomira has a pet cat."         "Q: What pet does Bomira have? A: cat."
    color      "Bomira likes the color red."   "Q: What color does Bomira like? A: red."
    food       "Bomira likes to eat cake."     "Q: What does Bomira like to eat? A: cake."
    job        "Bomira works as a baker."      "Q: What job does Bomira have? A: baker."
    friend     "Bomira has a friend named Tavek."  "Q: Who is Bomira's friend? A: Tavek."

Values come from small fixed lists of simple lower-case words (the reader's tokenizer is a
small TinyStories SentencePiece model); a home town is a synthetic place name and a friend
is another person of the KB (friendship is one cycle over all people: everybody has
exactly one friend and is the friend of exactly one person).

Names. A name is 2-3 syllables from SYLLABLES, the last one optionally followed by one of
ENDINGS, capitalized ("Bomira", "Tavek"). Reduplicated names ("Mama") and a few English
look-alikes are never used. The split of a name is a fixed function of the name alone:

    split(name) = "test" if zlib.crc32(name.encode()) % 5 == 0 else "train"

and a KB of split X uses only names (people and towns) of split X, so no test-split name
can appear in train-split output of ANY seed and vice versa. Within one KB names are
unique and no name is a prefix of another.

Output files in DIR (JSON Lines, one object per line, keys sorted, ASCII):

  kb.jsonl         the knowledge base: {"id", "kind", "text", "entity"}
                     kind "passage" (id "p000123"): 3-4 facts of one person plus one
                       distractor sentence, a TRUE fact of a different person about an
                       attribute the passage does not state for its own person;
                     kind "qa" (id "q000456"): one fact as "Q: <question> A: <value>.";
                     entity: the person the entry is about.
                   Each person's facts are split deterministically: some only in the
                   passage, some only as QA pairs, at least one in both. Every fact is held
                   by at least one entry.
  questions.jsonl  {"id", "question", "answer", "hops", "entity", "attribute",
                    "hop_ids", "ids"}; question is the bare question text ("What pet does
                   Bomira have?"; the reader prompts "Q: <question> A:"), answer one word.
                   hops 1: a fact of `entity`. hops 2: through the friend, e.g.
                   "What pet does Bomira's friend have?" = the friend's pet.
                   hop_ids: one list per hop of ALL entry ids that state that hop's fact
                   (any one of them suffices for that hop; hop 1 of a two-hop question is
                   "Bomira has a friend named X", hop 2 is X's fact). ids: the union, in
                   order. A question is answerable from a set of entries when every hop
                   list meets the set.
  episodes.jsonl   reader training/eval episodes, one per question, same order:
                   {"question", "answer", "hops", "entries": [text, ...], "ids": [...]}:
                   one gold entry per hop plus distractor entries up to --episode-k
                   entries (fewer only when the KB is too small), in a seeded shuffled
                   order. --distractors similar (default): entries a lexical retriever
                   ranks near the gold ones (the person's other entries, the same attribute
                   of people with similar names); random: entries of other people, half
                   about the same attribute. With --episode-questions N > 1, "more": up to
                   N-1 {"question", "answer"} about other facts the entries state.
  meta.json        seed, split, entities, towns, questions, episode_k, counts, version.

Randomness: only random.Random instances seeded with strings derived from (seed, split,
entities, purpose) (str seeds are hashed with SHA-512 by `random`, independent of
PYTHONHASHSEED). The KB does not depend on --questions or --episode-k.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import zlib

VERSION = "knowledge_qa/1"

SYLLABLES = ["ba", "bo", "da", "di", "fa", "fe", "ka", "ko", "la", "li", "ma", "mo", "na",
             "ni", "pa", "po", "ra", "ri", "sa", "so", "ta", "ti", "va", "vo", "za", "zu"]
ENDINGS = ["", "k", "n", "r", "t", "l"]
# English words (or near enough) the syllables can spell.
BLOCKED = {"banana", "bali", "bora", "dali", "fata", "kona", "koala", "lava", "mali", "mona",
           "pasta", "potato", "radar", "radio", "salami", "salsa", "sofa", "soda", "tuna",
           "data", "pita", "nina", "lima", "vita", "zola", "rival", "tonal",
           "banal", "bikini", "panama", "samba", "kali", "papal", "pika", "diva"}

PETS = ["cat", "dog", "bird", "fish", "frog", "duck", "rabbit", "horse", "mouse", "turtle"]
COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "black", "white", "brown"]
FOODS = ["cake", "soup", "bread", "apples", "candy", "cookies", "pizza", "rice", "cheese", "pie"]
JOBS = ["baker", "farmer", "teacher", "doctor", "cook", "painter", "singer", "nurse", "pilot",
        "builder"]

ATTRIBUTES = ["town", "pet", "color", "food", "job", "friend"]
TWO_HOP_ATTRIBUTES = [a for a in ATTRIBUTES if a != "friend"]

# Sentence (passages) and question (QA pairs, questions.jsonl) per attribute; {x} is the
# subject ("Bomira", or "Bomira's friend" in a two-hop question), {v} the value.
SENTENCE = {
    "town": "{x} lives in {v}.",
    "pet": "{x} has a pet {v}.",
    "color": "{x} likes the color {v}.",
    "food": "{x} likes to eat {v}.",
    "job": "{x} works as a {v}.",
    "friend": "{x} has a friend named {v}.",
}
QUESTION = {
    "town": "Where does {x} live?",
    "pet": "What pet does {x} have?",
    "color": "What color does {x} like?",
    "food": "What does {x} like to eat?",
    "job": "What job does {x} have?",
    "friend": "Who is {x}'s friend?",
}

MAX_ENTITIES = 5000
DEFAULT_EPISODE_K = 8


class UsageError(Exception):
    pass


@dataclasses.dataclass
class Person:
    name: str
    town: str
    pet: str
    color: str
    food: str
    job: str
    friend: str = ""

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


@dataclasses.dataclass
class Entry:
    id: str
    kind: str          # "passage" | "qa"
    entity: str        # the person the entry is about
    text: str
    facts: list        # (entity, attribute) pairs the text states

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "entity": self.entity, "text": self.text}


@dataclasses.dataclass
class Question:
    id: str
    question: str
    answer: str
    hops: int
    entity: str
    attribute: str
    hop_ids: list      # one list of entry ids per hop

    def to_json(self) -> dict:
        ids = []
        for hop in self.hop_ids:
            ids.extend(i for i in hop if i not in ids)
        return {"id": self.id, "question": self.question, "answer": self.answer,
                "hops": self.hops, "entity": self.entity, "attribute": self.attribute,
                "hop_ids": self.hop_ids, "ids": ids}


# --- names -----------------------------------------------------------------------------------

def name_split(name: str) -> str:
    """The split a name belongs to: a fixed function of the name alone."""
    return "test" if zlib.crc32(name.encode("ascii")) % 5 == 0 else "train"


def all_names() -> list:
    """Every usable name, sorted."""
    stems = []
    for a in SYLLABLES:
        for b in SYLLABLES:
            if b == a:
                continue
            stems.append(a + b)
            stems.extend(a + b + c for c in SYLLABLES if c != b)
    names = {(s + e).capitalize() for s in stems for e in ENDINGS}
    return sorted(n for n in names if n.lower() not in BLOCKED)


def pick_names(rng, split: str, count: int) -> list:
    """`count` distinct names of `split`, none a prefix of another, in random order."""
    pool = [n for n in all_names() if name_split(n) == split]
    rng.shuffle(pool)
    chosen, chosen_set, prefixes = [], set(), set()
    for name in pool:
        if name in prefixes or any(name[:i] in chosen_set for i in range(1, len(name))):
            continue
        chosen.append(name)
        chosen_set.add(name)
        prefixes.update(name[:i] for i in range(1, len(name)))
        if len(chosen) == count:
            return chosen
    raise UsageError(f"only {len(chosen)} names available in the {split} split, {count} needed")


# --- the world -------------------------------------------------------------------------------

def town_count(entities: int) -> int:
    return max(2, (entities + 3) // 4)


def make_people(seed: int, split: str, entities: int) -> tuple:
    rng = random_for(seed, split, entities, "names")
    names = pick_names(rng, split, entities + town_count(entities))
    people_names, towns = names[:entities], names[entities:]
    rng = random_for(seed, split, entities, "facts")
    people = [Person(name=n, town=rng.choice(towns), pet=rng.choice(PETS),
                     color=rng.choice(COLORS), food=rng.choice(FOODS), job=rng.choice(JOBS))
              for n in people_names]
    cycle = list(range(entities))
    rng.shuffle(cycle)
    for i, p in enumerate(cycle):
        people[p].friend = people[cycle[(i + 1) % entities]].name
    return people, sorted(towns)


def sentence(person: Person, attribute: str) -> str:
    return SENTENCE[attribute].format(x=person.name, v=person.value(attribute))


def qa_text(person: Person, attribute: str) -> str:
    return f"Q: {QUESTION[attribute].format(x=person.name)} A: {person.value(attribute)}."


def plan_placement(rng) -> tuple:
    """Which attributes of one person go into the passage and which into QA pairs: 3-4 in
    the passage, the others only as QA pairs, 1 to all-but-one passage facts also as QA."""
    order = ATTRIBUTES[:]
    rng.shuffle(order)
    k = rng.randint(3, 4)
    in_passage = order[:k]
    both = in_passage[:rng.randint(1, k - 1)]
    in_qa = [a for a in ATTRIBUTES if a not in in_passage or a in both]
    return [a for a in ATTRIBUTES if a in in_passage], in_qa


def make_kb(seed: int, split: str, people: list) -> list:
    rng = random_for(seed, split, len(people), "kb")
    plans = [plan_placement(rng) for _ in people]
    entries, n_passages, n_qa = [], 0, 0
    for i, person in enumerate(people):
        in_passage, in_qa = plans[i][0][:], plans[i][1]
        rng.shuffle(in_passage)  # sentence order; plans[i] stays in ATTRIBUTES order
        other, attr = pick_distractor(rng, people, plans, i)
        sentences = [(person, a) for a in in_passage]
        sentences.insert(rng.randint(1, len(sentences)), (other, attr))
        entries.append(Entry(id=f"p{n_passages:06d}", kind="passage", entity=person.name,
                             text=" ".join(sentence(p, a) for p, a in sentences),
                             facts=[(p.name, a) for p, a in sentences]))
        n_passages += 1
        for a in in_qa:
            entries.append(Entry(id=f"q{n_qa:06d}", kind="qa", entity=person.name,
                                 text=qa_text(person, a), facts=[(person.name, a)]))
            n_qa += 1
    return entries


def pick_distractor(rng, people: list, plans: list, i: int) -> tuple:
    """A true fact of another person, about an attribute passage i does not state for its
    own person; preferably one already in that person's passage, so facts placed only in
    QA pairs stay there."""
    own = set(plans[i][0])
    others = [j for j in range(len(people)) if j != i]
    for _ in range(20):
        j = rng.choice(others)
        choices = [a for a in plans[j][0] if a not in own]
        if choices:
            return people[j], rng.choice(choices)
    j = rng.choice(others)
    return people[j], rng.choice([a for a in ATTRIBUTES if a not in own])


# --- questions and episodes ------------------------------------------------------------------

def holders(entries: list) -> dict:
    """(entity, attribute) -> ids of the entries stating that fact."""
    held = {}
    for e in entries:
        for fact in e.facts:
            held.setdefault(fact, []).append(e.id)
    return held


def question_counts(entities: int, total) -> tuple:
    """(single-hop, two-hop) question counts; total=None means the default."""
    if total is None:
        total = 2 * entities + entities // 2
    two_hop = total // 5
    single = total - two_hop
    if single > len(ATTRIBUTES) * entities or two_hop > len(TWO_HOP_ATTRIBUTES) * entities:
        raise UsageError(f"--questions {total} is more than {entities} entities allow "
                         f"(at most {max_questions(entities)})")
    return single, two_hop


def max_questions(entities: int) -> int:
    """The largest total whose single-hop part (total - total//5) fits 6N facts."""
    total = len(ATTRIBUTES) * entities * 5 // 4 + 1
    while total - total // 5 > len(ATTRIBUTES) * entities:
        total -= 1
    return total


def make_questions(seed: int, split: str, people: list, entries: list, total) -> list:
    n_single, n_two = question_counts(len(people), total)
    rng = random_for(seed, split, len(people), "questions")
    by_name = {p.name: p for p in people}
    held = holders(entries)
    single = [(p, a) for p in people for a in ATTRIBUTES]
    two = [(p, a) for p in people for a in TWO_HOP_ATTRIBUTES]
    picked = [(p, a, 1) for p, a in rng.sample(single, n_single)]
    picked += [(p, a, 2) for p, a in rng.sample(two, n_two)]
    rng.shuffle(picked)
    questions = []
    for n, (p, a, hops) in enumerate(picked):
        if hops == 1:
            text, answer = QUESTION[a].format(x=p.name), p.value(a)
            hop_ids = [held[(p.name, a)]]
        else:
            friend = by_name[p.friend]
            text, answer = QUESTION[a].format(x=f"{p.name}'s friend"), friend.value(a)
            hop_ids = [held[(p.name, "friend")], held[(friend.name, a)]]
        questions.append(Question(id=f"x{n:06d}", question=text, answer=answer, hops=hops,
                                  entity=p.name, attribute=a, hop_ids=hop_ids))
    return questions


def name_bigrams(name: str) -> set:
    n = name.lower()
    return {n[i:i + 2] for i in range(len(n) - 1)}


def make_episodes(seed: int, split: str, people: list, entries: list, questions: list,
                  k: int, distractors: str = "similar", n_questions: int = 1,
                  retrieved: dict | None = None) -> list:
    """One episode per question: its gold entries plus distractors, shuffled.

    distractors "random": half about the question's attribute, half any entry (the first
    reader's episodes). "similar": what a lexical retriever puts next to the gold entries
    (`skiff memory ask -v` shows it): up to half the other entries that name the question's
    person (its QA pairs about other attributes, passages naming it as a friend), then
    entries about the same attribute whose person's name shares letter pairs with it, one
    random entry at most. n_questions > 1 adds "more": further single-hop questions about
    facts the episode's entries state, so a pass trains on several answers per episode.
    retrieved (question -> entry ids, best first: `skiff memory retrieve`): the episode holds
    the first k retrieved entries instead, a hop's gold entry replacing the lowest-ranked
    non-gold one when retrieval missed it; half the episodes keep the retriever's order (what
    `skiff memory` reads), half are shuffled."""
    rng = random_for(seed, split, len(people), f"episodes:{k}" if distractors == "random"
                     else f"episodes:{k}:{distractors}:{n_questions}")
    by_id = {e.id: e for e in entries}
    by_name = {p.name: p for p in people}
    by_attribute = {a: [e for e in entries if any(f[1] == a for f in e.facts)]
                    for a in ATTRIBUTES}
    naming = {}  # person -> entries whose text names them (as a subject or as a friend)
    for e in entries:
        for name, a in e.facts:
            naming.setdefault(name, []).append(e)
            if a == "friend":
                naming.setdefault(by_name[name].friend, []).append(e)
    stating = {}  # (person, attribute) -> entries stating it
    for e in entries:
        for f in e.facts:
            stating.setdefault(f, []).append(e)
    by_bigram = {}
    for p in people:
        for b in name_bigrams(p.name):
            by_bigram.setdefault(b, []).append(p.name)
    episodes = []
    for q in questions:
        # One entry per hop; a passage can state both hops' facts (its distractor sentence
        # may be about the friend), then it is there once.
        gold_ids = [rng.choice(hop) for hop in q.hop_ids]
        gold = [by_id[i] for i in dict.fromkeys(gold_ids)]
        involved = {q.entity}
        if q.hops == 2:
            involved.add(by_name[q.entity].friend)
        needed = {i for hop in q.hop_ids for i in hop}
        n_more = max(0, k - len(gold))
        taken = set()
        if retrieved is not None:
            if q.question not in retrieved:
                raise UsageError(f"--retrieved has no entry list for question {q.question!r}")
            ids = [i for i in retrieved[q.question] if i in by_id][:k]
            for hop in q.hop_ids:
                if not set(hop) & set(ids):
                    spare = [j for j, i in enumerate(ids) if i not in needed]
                    pick = rng.choice(hop)
                    if spare:
                        ids[spare[-1]] = pick
                    else:
                        ids.append(pick)
            chosen = [by_id[i] for i in ids]
            if rng.random() < 0.5:
                rng.shuffle(chosen)
        elif distractors == "random":
            def ok(e, taken):
                return e.entity not in involved and e.id not in needed and e.id not in taken

            hard = sample_where(rng, by_attribute[q.attribute], n_more // 2, ok, taken)
            chosen = gold + hard + sample_where(rng, entries, n_more - len(hard), ok, taken)
        else:
            def ok(e, taken):
                return e.id not in needed and e.id not in taken

            same = [by_id[i] for i in dict.fromkeys(e.id for e in naming.get(q.entity, []))]
            same = [e for e in same if ok(e, taken)]
            picked = rng.sample(same, min(len(same), (n_more + 1) // 2))
            taken.update(e.id for e in picked)
            # Same attribute, similar names: people sharing the most letter pairs first.
            shared = {}
            for b in sorted(name_bigrams(q.entity)):
                for name in by_bigram.get(b, []):
                    if name not in involved:
                        shared[name] = shared.get(name, 0) + 1
            similar = sorted(shared, key=lambda n: (-shared[n], rng.random()))[:4 * k]
            pool = [e for name in similar for e in stating.get((name, q.attribute), [])
                    if ok(e, taken)]
            pool = [by_id[i] for i in dict.fromkeys(e.id for e in pool)]
            rng.shuffle(pool)
            pool.sort(key=lambda e: -shared[next(n for n, a in e.facts if a == q.attribute)])
            n_similar = max(0, n_more - len(picked) - 1)
            picked += pool[:n_similar]
            taken.update(e.id for e in picked)
            picked += sample_where(rng, by_attribute[q.attribute], n_more - len(picked),
                                   lambda e, t: ok(e, t) and e.entity not in involved, taken)
            picked += sample_where(rng, entries, n_more - len(picked),
                                   lambda e, t: ok(e, t) and e.entity not in involved, taken)
            chosen = gold + picked
        if retrieved is None:
            rng.shuffle(chosen)
        episode = {"question": q.question, "answer": q.answer, "hops": q.hops,
                   "entries": [e.text for e in chosen], "ids": [e.id for e in chosen]}
        if n_questions > 1:
            asked = {(q.entity, q.attribute)} if q.hops == 1 else set()
            facts = [f for e in chosen for f in e.facts if f not in asked]
            facts = list(dict.fromkeys(facts))
            rng.shuffle(facts)
            episode["more"] = [
                {"question": QUESTION[a].format(x=name), "answer": by_name[name].value(a)}
                for name, a in facts[:n_questions - 1]]
        episodes.append(episode)
    return episodes


def sample_where(rng, pool: list, n: int, ok, taken: set) -> list:
    """Up to n distinct entries e of pool with ok(e, taken), in random order; adds their ids
    to taken. Draws at random first (cheap for big KBs), then falls back to a full scan."""
    out = []
    for _ in range(4 * n + 8):
        if len(out) == n or not pool:
            break
        e = rng.choice(pool)
        if ok(e, taken):
            out.append(e)
            taken.add(e.id)
    if len(out) < n:
        rest = [e for e in pool if ok(e, taken)]
        out += rng.sample(rest, min(len(rest), n - len(out)))
        taken.update(e.id for e in out)
    return out


# --- driver ----------------------------------------------------------------------------------

def random_for(seed: int, split: str, entities: int, purpose: str) -> random.Random:
    return random.Random(f"{VERSION}:{seed}:{split}:{entities}:{purpose}")


def placement_counts(entries: list) -> dict:
    kinds = {}
    for e in entries:
        for fact in e.facts:
            kinds.setdefault(fact, set()).add(e.kind)
    out = {"passage_only": 0, "qa_only": 0, "both": 0}
    for ks in kinds.values():
        out["both" if len(ks) == 2 else ("passage_only" if "passage" in ks else "qa_only")] += 1
    return out


def write_jsonl(path: str, rows: list) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def generate(args) -> dict:
    people, towns = make_people(args.seed, args.split, args.entities)
    entries = make_kb(args.seed, args.split, people)
    questions = make_questions(args.seed, args.split, people, entries, args.questions)
    retrieved = None
    if args.retrieved:
        try:
            with open(args.retrieved, encoding="utf-8") as f:
                retrieved = {}
                for n, line in enumerate(f, 1):
                    if line.strip():
                        d = json.loads(line)
                        retrieved[d["question"]] = list(d["ids"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--retrieved {args.retrieved}: {e}")
    episodes = make_episodes(args.seed, args.split, people, entries, questions, args.episode_k,
                             args.distractors, args.episode_questions, retrieved)
    try:
        os.makedirs(args.output, exist_ok=True)
        write_jsonl(os.path.join(args.output, "kb.jsonl"), [e.to_json() for e in entries])
        write_jsonl(os.path.join(args.output, "questions.jsonl"), [q.to_json() for q in questions])
        write_jsonl(os.path.join(args.output, "episodes.jsonl"), episodes)
        meta = {
            "version": VERSION, "seed": args.seed, "split": args.split,
            "entities": args.entities, "towns": len(towns), "episode_k": args.episode_k,
            "distractors": "retrieved" if args.retrieved else args.distractors,
            "episode_questions": args.episode_questions,
            "split_rule": "test if zlib.crc32(name.encode()) % 5 == 0 else train",
            "counts": {
                "passages": sum(e.kind == "passage" for e in entries),
                "qa": sum(e.kind == "qa" for e in entries),
                "entries": len(entries),
                "facts": len(ATTRIBUTES) * len(people),
                "questions": len(questions),
                "single_hop": sum(q.hops == 1 for q in questions),
                "two_hop": sum(q.hops == 2 for q in questions),
                "episodes": len(episodes),
                "fact_placement": placement_counts(entries),
            },
        }
        with open(os.path.join(args.output, "meta.json"), "w", encoding="ascii", newline="\n") as f:
            f.write(json.dumps(meta, sort_keys=True, indent=2) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write to {args.output}: {e.strerror or e}")
    return meta


class Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def int_at_least(lo: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {s!r}")
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return parse


EPILOG = """\
output (JSON Lines, keys sorted; full format in the module docstring):
  DIR/kb.jsonl         {"id", "kind": "passage"|"qa", "text", "entity"}; ids p000000/q000000
  DIR/questions.jsonl  {"id", "question", "answer", "hops": 1|2, "entity", "attribute",
                        "hop_ids": [[ids stating hop 1], ...], "ids": union of hop_ids}
  DIR/episodes.jsonl   {"question", "answer", "hops", "entries": [text, ...], "ids",
                        "more" (with --episode-questions > 1)}: a gold entry per hop +
                        distractors, K entries, one per question
  DIR/meta.json        seed, split, entities, towns, counts, version

example:
  scripts/knowledge_qa.py --seed 1 --entities 500 --split train -o kqa-train
  scripts/knowledge_qa.py --seed 1 --entities 100 --split test -o kqa-test
"""


def parse_args(argv):
    ap = Parser(
        prog="knowledge_qa.py",
        description="Deterministic synthetic knowledge base (passages + QA pairs about\n"
                    "synthetic people), single- and two-hop questions and reader episodes\n"
                    "for memory-augmented generation (issue 15).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int_at_least(0), default=0, metavar="S",
                    help="random seed, >= 0 (default 0)")
    ap.add_argument("--entities", type=int_at_least(2), default=100, metavar="N",
                    help=f"number of people, 2..{MAX_ENTITIES} (default 100); the KB also "
                         "has max(2, ceil(N/4)) towns")
    ap.add_argument("--split", choices=["train", "test"], default="test",
                    help="name split (default test): test uses only names with "
                         "zlib.crc32(name) %% 5 == 0, train only the others, so the two "
                         "never share an entity, whatever the seeds")
    ap.add_argument("--questions", type=int_at_least(1), default=None, metavar="Q",
                    help="total questions, Q//5 of them two-hop (default 2N + N//2: about "
                         "2N single-hop and N/2 two-hop); at most one per (person, "
                         "attribute, hops), so Q <= about 7.5N")
    ap.add_argument("--episode-k", type=int_at_least(2), default=DEFAULT_EPISODE_K,
                    metavar="K", help="entries per episode: gold + distractors (default "
                                      f"{DEFAULT_EPISODE_K})")
    ap.add_argument("--distractors", choices=["similar", "random"], default="similar",
                    help="episode distractors: \"similar\" (default) the entries a lexical "
                         "retriever ranks near the gold ones (same person, same attribute "
                         "with similar names); \"random\" half same attribute, half any")
    ap.add_argument("--episode-questions", type=int_at_least(1), default=1, metavar="N",
                    help="questions per episode (default 1); N > 1 adds \"more\": up to N-1 "
                         "single-hop questions about facts the episode's entries state")
    ap.add_argument("--retrieved", metavar="FILE",
                    help="episodes read what a retriever returned: JSON Lines {\"question\", "
                         "\"ids\"} (skiff memory retrieve on a store of this KB), gold "
                         "entries put in where it missed them")
    ap.add_argument("-o", "--output", required=True, metavar="DIR",
                    help="output directory, created if missing")
    args = ap.parse_args(argv)
    if args.entities > MAX_ENTITIES:
        ap.error(f"argument --entities: must be <= {MAX_ENTITIES}, got {args.entities}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        meta = generate(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = meta["counts"]
    print(f"{args.output}: {c['entries']} entries ({c['passages']} passages, {c['qa']} QA), "
          f"{c['questions']} questions ({c['single_hop']} single-hop, {c['two_hop']} two-hop), "
          f"{c['episodes']} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
