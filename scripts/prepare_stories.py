#!/usr/bin/python3
"""Builds the training and held-out text for the default model from ../shared/data.

../shared/data has two TinyStories extracts:
  - tinystories_train_lowercase.txt: 4.2 MB, ALL LOWERCASE; paragraphs are separated by a
    blank line and stories by a single newline (a line followed directly by another line
    ends a story);
  - tinystories_valid_prefix.txt: 0.8 MB in original case; paragraphs and stories are both
    separated by blank lines.

A model trained on lowercase text writes lowercase stories and scores badly on real text,
so the train extract is re-cased with simple rules: sentence starts, the first word inside
a quotation, "i" and its contractions, and words that the original-case text capitalizes
mid-sentence most of the time (names such as Lily or Spot), and within a story the
name given after "named". The valid prefix is split by
paragraph: the first --train-share goes into the training text as is, the rest is the
held-out evaluation text that never enters training.

Output (one document per blank-line-separated block, paragraphs joined by single newlines):
  OUT/train.txt    re-cased train stories + the first part of the valid prefix
  OUT/heldout.txt  the last part of the valid prefix (original case)
"""
import argparse
import collections
import os
import re

WORD = re.compile(r"[A-Za-z]+")


def proper_nouns(text):
    """Words that are capitalized in most of their mid-sentence occurrences."""
    upper, total = collections.Counter(), collections.Counter()
    for m in WORD.finditer(text):
        before = text[max(0, m.start() - 3):m.start()].rstrip(' "\'')
        if not before or before[-1] in '.!?\n':
            continue  # sentence start: says nothing about the word
        w = m.group(0)
        total[w.lower()] += 1
        if w[0].isupper():
            upper[w.lower()] += 1
    return {w for w, n in total.items() if n >= 3 and upper[w] > 0.8 * n}


def recase(paragraph, names):
    out = []
    sentence_start = True
    for token in re.split(r"(\s+)", paragraph):
        if not token or token.isspace():
            out.append(token)
            continue
        m = WORD.search(token)
        if m:
            w = m.group(0)
            cap = sentence_start or w in names or w == "i"
            if cap:
                token = token[:m.start()] + w[0].upper() + token[m.start() + 1:]
        # Starts a sentence: after . ! ? (also inside closing quotes) and at an opening quote.
        stripped = token.rstrip('"\'')
        sentence_start = bool(stripped) and stripped[-1] in ".!?"
        if token.endswith(',"') or token.endswith(":"):
            sentence_start = False
        out.append(token)
    text = "".join(out)
    # The first word of a quotation is capitalized in the original stories.
    return re.sub(r'(^|\s)"([a-z])', lambda m: m.group(1) + '"' + m.group(2).upper(), text)


def train_stories(path):
    """Stories of the lowercase extract, each a list of paragraphs."""
    stories, current = [], []
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        current.append(line.strip())
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip():  # no blank line before the next line: the story ends here
            stories.append(current)
            current = []
    if current:
        stories.append(current)
    return stories


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--train-share", type=float, default=0.75)
    args = ap.parse_args()
    data = os.path.join(args.shared, "data")
    valid = open(os.path.join(data, "tinystories_valid_prefix.txt"), encoding="utf-8").read()
    paragraphs = [p.strip() for p in valid.split("\n\n") if p.strip()]
    cut = int(len(paragraphs) * args.train_share)
    names = proper_nouns("\n\n".join(paragraphs[:cut]))
    stories = train_stories(os.path.join(data, "tinystories_train_lowercase.txt"))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train.txt"), "w", encoding="utf-8") as f:
        for story in stories:
            # A character introduced as "named X" keeps a capital X throughout its story.
            local = names | set(re.findall(r"\bnamed ([a-z]+)", " ".join(story)))
            f.write("\n".join(recase(p, local) for p in story) + "\n\n")
        for p in paragraphs[:cut]:
            f.write(p + "\n\n")
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(paragraphs[cut:]) + "\n")
    print(f"{len(stories)} re-cased stories + {cut} original paragraphs -> train.txt; "
          f"{len(paragraphs) - cut} paragraphs -> heldout.txt; {len(names)} proper nouns")


if __name__ == "__main__":
    main()
