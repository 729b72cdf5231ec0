"""Cost per question of matching acronyms and author names, as the index grows.

Each index snapshot compiles its acronym table and author matcher once (qa/snapshot.py); a
question then costs two substring tests per acronym and one pattern search over all authors.
The baseline is what a question cost before: one regular expression per acronym (compiled from
a format string, so past the `re` module's cache of 512 patterns every question compiled them
again) and one pattern search per document with authors.

    .venv/bin/python bench/matching.py
"""

from __future__ import annotations

import random
import re
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from qa.acronyms import AcronymTable, _flat, aliases
from qa.attribution import author_table, named_documents

QUESTIONS = ["What does OSCA stand for?", "When did the Think Tank Forum meet in 2014?",
             "According to Chen Dongxiao, what is the CICA's future?",
             "Which countries signed the convention against extremism?"]


def old_aliases(question: str, table: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The matching of a question before snapshots (qa/acronyms.py before issue #16)."""
    found: list[tuple[str, str]] = []
    lowered = _flat(question)
    for short, long_form in table:
        long_lower = _flat(long_form)
        if re.search(rf"\b{re.escape(short)}s?\b", question) and long_lower not in lowered:
            found.append((short, long_form))
        elif long_lower in lowered and not re.search(rf"\b{re.escape(short)}\b", question):
            found.append((long_form, short))
    return list(dict.fromkeys(found))


def synthetic(n_acronyms: int, n_documents: int, seed: int = 7
              ) -> tuple[list[tuple[str, str]], list[dict[str, object]]]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))).capitalize()
             for _ in range(5000)]
    pairs = [("OSCA", "Organization for Security and Cooperation in Asia"),
             ("TTF", "Think Tank Forum")]
    while len(pairs) < n_acronyms:
        long_words = rng.sample(words, rng.randint(2, 5))
        pairs.append(("".join(w[0] for w in long_words).upper() + rng.choice(string.ascii_uppercase),
                      " ".join(long_words)))
    documents: list[dict[str, object]] = [{"doc_id": "chen", "authors": ["Chen Dongxiao"]}]
    documents += [{"doc_id": f"doc-{n}", "authors": [f"{rng.choice(words)} {rng.choice(words)}"]}
                  for n in range(n_documents - 1)]
    return pairs, documents


def per_question_ms(run: Callable[[str], object], rounds: int = 5) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        for question in QUESTIONS:
            run(question)
    return (time.perf_counter() - started) * 1000 / (rounds * len(QUESTIONS))


def main() -> None:
    print(machine())
    print("acronyms documents | before: acronyms authors | now: acronyms authors  (ms/question)")
    for n_acronyms, n_documents in ((200, 50), (2000, 500), (20000, 5000)):
        before, now = measure(*synthetic(n_acronyms, n_documents))
        print(f"{n_acronyms:8d} {n_documents:9d} | {before[0]:8.2f} {before[1]:7.2f}        "
              f"| {now[0]:8.3f} {now[1]:7.3f}")


def measure(pairs: list[tuple[str, str]], documents: list[dict[str, object]]
            ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(before: acronyms, authors), (now: acronyms, authors) in ms a question."""
    table, authors = AcronymTable(pairs), author_table(documents)
    per_document = tuple(authors)  # (doc_id, pattern) pairs: one search per document
    assert all(aliases(q, table) == old_aliases(q, pairs) for q in QUESTIONS)
    assert all(named_documents(q, authors) == named_documents(q, per_document)
               for q in QUESTIONS)
    before = (per_question_ms(lambda q: old_aliases(q, pairs)),
              per_question_ms(lambda q: named_documents(q, per_document)))
    now = (per_question_ms(lambda q: aliases(q, table)),
           per_question_ms(lambda q: named_documents(q, authors)))
    return before, now


if __name__ == "__main__":
    main()
