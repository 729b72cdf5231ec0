"""Sentence-level evidence: how well each sentence of a candidate passage matches a question.

Two signals per sentence: embedding similarity to the question (sentence vectors are computed at
index time, so this costs no model call) and the IDF-weighted share of the question's terms that the
sentence contains. The reranker in ``retrieval`` and answer selection in ``answering`` share them.
Also the question side of late interaction: which of its word pieces count, and how much.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from qa import acronyms, terms
from qa.store import IndexReader, SentenceTerms, TokenMatch


def term_set(text: str) -> set[str]:
    """Stemmed content terms of ``text`` (the unit of document frequency and coverage)."""
    return {terms.stem(t) for t in terms.tokens(text) if t not in terms.STOPWORDS}


@dataclass(frozen=True)
class QueryTerms:
    """The question's stemmed terms with IDF weights over the index's chunks, the other form of
    each acronym or long form in it (a sentence that uses the other form covers those terms), and
    its ordered word pairs (``terms.term_pairs``), for proximity."""

    weights: dict[str, float]
    aliases: tuple[tuple[frozenset[str], frozenset[str]], ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()

    @cached_property
    def total(self) -> float:
        return sum(self.weights.values())

    def coverage(self, present: Iterable[str]) -> float:
        """IDF-weighted share of the question's terms found in ``present`` (0..1); a term
        counts as found where ``present`` holds the other form of its acronym."""
        total = self.total
        if total <= 0:
            return 0.0
        have = set(present)
        for group, other in self.aliases:
            if other <= have:
                have |= group
        weights = self.weights
        return sum(weights[t] for t in have & weights.keys()) / total

    def stored_scores(self, stored_terms: str) -> tuple[float, float]:
        """(coverage, proximity) of one sentence's stored term sequence
        (``terms.term_sequence``): ``scores_of`` for one sentence.
        Proximity: the IDF-weighted share (a pair weighs its two terms) of the question's word
        pairs that the sentence holds as pairs too: "a security-and-development organization"
        is closer to "the Organization for Security and Development" than to a text using both
        words apart."""
        coverage, proximity = self.scores_of(SentenceTerms.of([stored_terms]), 1)
        return float(coverage[0]), float(proximity[0])

    def scores_of(self, sentences: SentenceTerms, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(coverage, proximity) of ``n`` sentences at once (see ``stored_scores``), from their
        terms as numbers (``store.SentenceTerms``): the question's few terms are looked up among
        all the sentences' terms in one sorted search, and a pair is two consecutive terms of
        one sentence. Coverage counts a term present when the sentence uses the other form of
        its acronym; proximity needs two of the terms present, and counts each pair once."""
        coverage, proximity = np.zeros(n), np.zeros(n)
        needed = sorted(self._needed)
        if not n or not needed or self.total <= 0:
            return coverage, proximity
        keys = np.array([hash(t) for t in needed], dtype=np.int64)
        order = np.argsort(keys)
        at = np.minimum(np.searchsorted(keys[order], sentences.hashes), len(keys) - 1)
        hit = keys[order][at] == sentences.hashes
        column = np.where(hit, order[at], -1)  # the needed term at each position, or -1
        present = np.zeros((n, len(needed)), dtype=bool)
        present[sentences.owners[hit], column[hit]] = True
        index = {t: i for i, t in enumerate(needed)}
        few = present.sum(axis=1) < 2
        for group, other in self.aliases:
            uses_other = present[:, np.array([index[t] for t in other])].all(axis=1)
            present[np.ix_(uses_other, np.array([index[t] for t in group]))] = True
        weights = np.array([self.weights.get(t, 0.0) for t in needed])
        coverage = (present @ weights) / self.total
        if self._pair_weights:
            pair_weight = np.zeros((len(needed), len(needed)))
            for a, b, weight in self._pair_weights:
                pair_weight[index[a], index[b]] = weight
            first, second = column[:-1], column[1:]
            held = ((first >= 0) & (second >= 0)
                    & (sentences.owners[:-1] == sentences.owners[1:]))
            held[held] = pair_weight[first[held], second[held]] > 0
            # each pair counts once in a sentence, however often it stands there
            pairs = np.unique(np.stack([sentences.owners[:-1][held], first[held],
                                        second[held]]), axis=1)
            np.add.at(proximity, pairs[0], pair_weight[pairs[1], pairs[2]])
            proximity[few] = 0.0
            proximity /= self._pair_total
        return coverage, proximity

    @cached_property
    def _pair_weights(self) -> tuple[tuple[str, str, float], ...]:
        """(a, b, weight of a + weight of b) for each of the question's pairs."""
        w = self.weights
        return tuple((a, b, w[a] + w[b]) for a, b in self.pairs)

    @cached_property
    def _pair_total(self) -> float:
        return sum(weight for *_, weight in self._pair_weights)

    @cached_property
    def _needed(self) -> frozenset[str]:
        """Every term coverage can depend on: the question's, and the other forms' of its
        acronyms."""
        return frozenset(self.weights).union(*(other for _, other in self.aliases))


def query_terms(reader: IndexReader, question: str,
                aliases: Sequence[tuple[str, str]] = ()) -> QueryTerms:
    """IDF-weighted terms of ``question``; ``aliases`` are (form in the question, other form)."""
    # In the question's order, not a set's (salted per process): terms of equal weight are
    # then named in the same order by every process (the reason of an abstention).
    ordered = list(dict.fromkeys(terms.stem(t) for t in terms.tokens(question)
                                 if t not in terms.STOPWORDS))
    wanted = set(ordered)
    n_chunks = int(reader.manifest.get("counts", {}).get("chunks", 0))
    df = reader.term_frequencies(sorted(wanted))
    # A term the corpus never uses keeps its full weight: it lowers every sentence's coverage,
    # which is what makes an off-topic question look weakly supported.
    weights = {t: math.log((n_chunks + 1) / (df.get(t, 0) + 0.5)) for t in ordered}
    groups = tuple((frozenset(term_set(present) & wanted), frozenset(term_set(other)))
                   for present, other in aliases)
    return QueryTerms(weights, tuple(dict.fromkeys((g, o) for g, o in groups if g and o)),
                      tuple(sorted(terms.term_pairs(question))))


@dataclass(frozen=True)
class LateQuery:
    """The question's content word pieces for late interaction: unit vectors (one row each) and
    IDF weights over the index's chunks. ``aliased``: the rows that spell an acronym or long
    form, with its other form: a text that uses the other form matches those rows fully."""

    vectors: np.ndarray
    weights: np.ndarray
    aliased: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = ()


def is_content_piece(piece: str) -> bool:
    """Whether a word piece can carry a question's content: not a stopword, not punctuation.
    Late interaction matches only these, on both sides."""
    return piece.lower() not in terms.STOPWORDS and any(c.isalnum() for c in piece)


def late_query(reader: IndexReader, ids: Sequence[int], pieces: Sequence[str],
               vectors: np.ndarray, starts: Sequence[int] = (), *,
               ignore: Sequence[tuple[int, int]] = (),
               aliases: Sequence[tuple[int, int, str]] = ()) -> LateQuery | None:
    """Keep the pieces that carry content (not stopwords, not punctuation) and weight each by
    its IDF, so that "Kazakh" counts for more than "security" in a corpus about security.
    ``starts``: where each piece starts in the question; pieces inside an ``ignore`` span (an
    author the question names) are dropped, pieces inside an ``aliases`` span (start, end,
    other form) are marked as that acronym or long form. None when the question has no content
    piece or the index stores no token vectors."""
    if not reader.has_token_vectors:
        return None

    def inside(n: int, spans: Sequence[tuple[int, ...]]) -> bool:
        return n < len(starts) and any(span[0] <= starts[n] < span[1] for span in spans)

    keep = [n for n, piece in enumerate(pieces)
            if is_content_piece(piece) and not inside(n, ignore)]
    if not keep:
        return None
    n_chunks = int(reader.manifest.get("counts", {}).get("chunks", 0))
    df = reader.piece_frequencies([int(ids[n]) for n in keep])
    weights = np.array([max(math.log((n_chunks + 1) / (df.get(int(ids[n]), 0) + 0.5)), 0.01)
                        for n in keep], dtype=np.float32)
    others: dict[tuple[int, ...], dict[str, None]] = {}
    for start, end, other in aliases:
        rows = tuple(row for row, n in enumerate(keep) if inside(n, [(start, end)]))
        if rows:
            others.setdefault(rows, {})[other] = None
    return LateQuery(np.ascontiguousarray(vectors[keep], dtype=np.float32), weights,
                     tuple((rows, tuple(forms)) for rows, forms in others.items()))


def other_form_users(query: LateQuery, texts: Mapping[int, str]) -> dict[int, tuple[int, ...]]:
    """The texts (by key) that use the other form of an acronym or long form of the question,
    with the question's pieces that spell it: late interaction counts those pieces as matched
    there, as term coverage and BM25 count either form (the pieces of "CBMs" cannot match
    "confidence-building measures" by their vectors)."""
    users: dict[int, tuple[int, ...]] = {}
    for rows, forms in query.aliased:
        for key, text in texts.items():
            if any(acronyms.uses_form(text, form) for form in forms):
                users[key] = users.get(key, ()) + rows
    return users


def late_scores(match: TokenMatch | None, query: LateQuery,
                credited: Mapping[int, tuple[int, ...]] | None = None) -> dict[int, float]:
    """Late interaction of each matched chunk: the IDF-weighted mean, over the question's
    pieces, of the best cosine with any of the chunk's pieces (MaxSim). ``credited``: chunks
    (by FAISS id) that use the other form of the question's acronyms (``other_form_users``)."""
    if match is None:
        return {}
    best = np.maximum.reduceat(match.sims, match.bounds[:-1], axis=1)  # (pieces, chunks)
    return _weighted_means(best, match.rowids.tolist(), query, credited)


def _weighted_means(best: np.ndarray, keys: Sequence[int], query: LateQuery,
                    credited: Mapping[int, tuple[int, ...]] | None) -> dict[int, float]:
    """Each column's (key's) IDF-weighted mean of its best cosines (question pieces x keys),
    the credited question pieces of a key (``other_form_users``) counting as a full match."""
    _credit(best, keys, credited)
    scores = (query.weights @ best) / float(query.weights.sum())
    return dict(zip(keys, scores.tolist(), strict=True))


def _credit(best: np.ndarray, keys: Sequence[int],
            credited: Mapping[int, tuple[int, ...]] | None) -> None:
    for col, key in enumerate(keys):
        rows = credited.get(key) if credited else None
        if rows:
            best[list(rows), col] = 1.0


class Alignment(NamedTuple):
    """How a sentence's word pieces meet the question's, piece by piece (late interaction's
    MaxSim before it is averaged): the weakest match of any question piece, and the match of
    the question's rarest piece. A sentence that matches the question everywhere but on one
    word (a name or a number swapped) has a high mean and a low weakest match."""

    late: float
    weakest: float
    rarest: float


ChunkSentences = tuple[int, int, Sequence[tuple[int, int, int]]]  # rowid, chunk start, spans
_CHUNK_STRIDE = 1 << 40  # keeps each chunk's offsets apart in one sorted key space


def sentence_late_scores(match: TokenMatch | None, query: LateQuery,
                         chunks: Sequence[ChunkSentences],
                         credited: Mapping[int, tuple[int, ...]] | None = None
                         ) -> dict[int, Alignment]:
    """``late_scores`` of each sentence over the pieces that start inside it (with the weakest
    and the rarest piece's match: ``Alignment``), for the sentences
    (id, start, end in document offsets) of several matched chunks (FAISS id, the chunk's start
    offset), all in one pass. Every stored piece and every sentence gets a key in one sorted
    space (the chunk's place in ``match`` apart, then the document offset); pieces are in text
    order and sentences do not overlap, so each piece belongs to the last sentence starting at
    or before it, if it starts before that sentence ends. ``credited``: as for
    ``late_scores``, by sentence id."""
    if match is None:
        return {}
    where = {rowid: n for n, rowid in enumerate(match.rowids.tolist())}
    # Each matched chunk's band, plus its start offset where its sentences are asked for.
    bases = np.arange(len(where), dtype=np.int64) * _CHUNK_STRIDE
    sentences: list[tuple[int, int, int]] = []  # (key of start, key of end, sentence id)
    for rowid, chunk_start, spans in chunks:
        n = where.get(rowid)
        if n is None:
            continue
        band = n * _CHUNK_STRIDE
        bases[n] += chunk_start
        sentences.extend((band + start, band + end, sid) for sid, start, end in spans)
    if not sentences:
        return {}
    sentences.sort()
    starts = np.fromiter((s[0] for s in sentences), dtype=np.int64, count=len(sentences))
    ends = np.fromiter((s[1] for s in sentences), dtype=np.int64, count=len(sentences))
    keys = match.starts.astype(np.int64) + np.repeat(bases, np.diff(match.bounds))
    owner = np.searchsorted(starts, keys, side="right") - 1
    inside = owner >= 0
    inside[inside] &= keys[inside] < ends[owner[inside]]
    if not inside.any():
        return {}
    owner = owner[inside]
    groups = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = np.maximum.reduceat(match.sims[:, inside], groups, axis=1)
    owners = [sentences[int(owner[g])][2] for g in groups]
    _credit(best, owners, credited)
    means = (query.weights @ best) / float(query.weights.sum())
    weakest = best.min(axis=0)
    rarest = best[int(np.argmax(query.weights))]
    return {key: Alignment(float(m), float(w), float(r)) for key, m, w, r in zip(
        owners, means.tolist(), weakest.tolist(), rarest.tolist(), strict=True)}


class SentenceEvidence(NamedTuple):
    """One sentence of a candidate passage and how well it matches the question. A named tuple,
    not a dataclass: a query builds one for every sentence of every candidate (~200), and tuple
    construction is several times cheaper."""

    chunk_rowid: int
    sentence_id: int
    start: int
    end: int
    text: str
    similarity: float
    coverage: float
    late: float = 0.0  # late interaction with the question, for the sentences of returned hits
    proximity: float = 0.0  # share of the question's word pairs it holds as pairs too
    terms: str = ""  # its stored term sequence (terms.term_sequence), for what it lacks
    late_weakest: float = 0.0  # the weakest match of a question piece in it (``Alignment``)
    late_rarest: float = 0.0  # the match of the question's rarest piece in it


def gather(reader: IndexReader, rows: dict[int, dict[str, Any]], query_vector: np.ndarray,
           qterms: QueryTerms) -> dict[int, list[SentenceEvidence]]:
    """Evidence for every sentence inside the given chunks, keyed by chunk FAISS id."""
    spans, sentence_terms = reader.sentences_with_terms(sorted(rows))
    if not spans:
        return {}
    ids = np.fromiter((s[1] for s in spans), dtype=np.int64, count=len(spans))
    order = np.argsort(ids)  # memmap reads are cheapest in ascending order
    vectors = np.empty((len(ids), reader.sentence_vectors.shape[1]), dtype=np.float32)
    vectors[order] = reader.sentence_vectors[ids[order]]
    sims = vectors @ np.asarray(query_vector, dtype=np.float32).reshape(-1)
    coverage, proximity = qterms.scores_of(sentence_terms, len(spans))
    out: dict[int, list[SentenceEvidence]] = {}
    for (chunk, sid, start, end, stored), sim, cov, prox in zip(
            spans, sims.tolist(), coverage.tolist(), proximity.tolist(), strict=True):
        row = rows[chunk]
        offset = row["start"]
        out.setdefault(chunk, []).append(SentenceEvidence(
            chunk, sid, start, end, row["text"][start - offset:end - offset], sim, cov, 0.0,
            prox, stored))
    return out
