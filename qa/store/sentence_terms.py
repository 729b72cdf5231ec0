"""A chunk's sentences as a reader keeps them in memory: their spans, and their stored term
sequences (``terms.term_sequence``) as numbers, so that a question's terms are looked up in all
the candidate sentences at once (``evidence.QueryTerms.scores_of``) instead of one Python call a
sentence. A term is its Python ``hash``: salted per process, so a hash is never stored or sent
anywhere, and the question's terms are hashed by the same process that hashed the sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    @classmethod
    def of(cls, stored: Sequence[str]) -> SentenceTerms:
        """The terms of the stored term sequences ``stored``, one a sentence."""
        words = [sequence.split() for sequence in stored]
        return cls(np.fromiter((hash(w) for ws in words for w in ws), dtype=np.int64),
                   np.repeat(np.arange(len(words), dtype=np.int64), [len(ws) for ws in words]))


@dataclass(frozen=True)
class ChunkSentences:
    spans: list[Span]
    terms: SentenceTerms  # their terms; owners index ``spans``

    @classmethod
    def of(cls, spans: list[Span]) -> ChunkSentences:
        return cls(spans, SentenceTerms.of([span[4] for span in spans]))


def gathered(chunks: list[ChunkSentences]) -> tuple[list[Span], SentenceTerms]:
    """The spans of several chunks in order, and all their terms (``SentenceTerms``)."""
    spans = [span for chunk in chunks for span in chunk.spans]
    if not spans:
        return spans, SentenceTerms.of([])
    firsts = np.cumsum([0] + [len(chunk.spans) for chunk in chunks[:-1]])
    return spans, SentenceTerms(
        np.concatenate([chunk.terms.hashes for chunk in chunks]),
        np.concatenate([chunk.terms.owners + first for chunk, first in zip(chunks, firsts,
                                                                            strict=True)]))
