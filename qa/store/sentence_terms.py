"""A chunk's sentences as a reader keeps them in memory: their spans, and their stored term
sequences (``terms.term_sequence``) as numbers, so that a question's terms are looked up in all
the candidate sentences at once (``evidence.QueryTerms.scores_of``) instead of one Python call a
sentence. A term is its Python ``hash``: salted per process, so a hash is never stored or sent
anywhere, and the question's terms are hashed by the same process that hashed the sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

Span = tuple[int, int, int, int, str]  # chunk FAISS id, sentence id, start, end, its terms


class SentenceTerms(NamedTuple):
    """The terms of some sentences in order: ``hashes[i]`` belongs to sentence ``owners[i]``
    (an index into the list of those sentences). A sequence's "|" breaks are terms too: no
    question term matches one, so no word pair spans it."""

    hashes: np.ndarray  # int64
    owners: np.ndarray  # int64


@dataclass(frozen=True)
class ChunkSentences:
    spans: list[Span]
    term_hashes: np.ndarray  # every term of every sentence, in order
    term_counts: np.ndarray  # terms in each sentence

    @classmethod
    def of(cls, spans: list[Span]) -> ChunkSentences:
        words = [span[4].split() for span in spans]
        return cls(spans, np.fromiter((hash(w) for ws in words for w in ws), dtype=np.int64),
                   np.fromiter((len(ws) for ws in words), dtype=np.int64, count=len(words)))


def gathered(chunks: list[ChunkSentences]) -> tuple[list[Span], SentenceTerms]:
    """The spans of several chunks in order, and all their terms (``SentenceTerms``)."""
    spans = [span for chunk in chunks for span in chunk.spans]
    if not spans:
        return spans, SentenceTerms(np.zeros(0, np.int64), np.zeros(0, np.int64))
    counts = np.concatenate([chunk.term_counts for chunk in chunks])
    return spans, SentenceTerms(np.concatenate([chunk.term_hashes for chunk in chunks]),
                                np.repeat(np.arange(len(spans), dtype=np.int64), counts))
