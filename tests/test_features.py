"""The features module: every scoring signal by name, computed from the evidence alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qa.answertype import expected_answer_type
from qa.evidence import QueryTerms, SentenceEvidence, term_set
from qa.features import (
    PASSAGE_FEATURES,
    QUESTION_FEATURES,
    SENTENCE_FEATURES,
    Candidate,
    missing_from,
    passage_matrix,
    question_vector,
    sentence_matrix,
)


def _ev(rowid: int, sid: int, text: str, sim: float = 0.5, cov: float = 0.5, late: float = 0.0,
        proximity: float = 0.0, start: int = 0) -> SentenceEvidence:
    return SentenceEvidence(rowid, sid, start, start + len(text), text, sim, cov, late, proximity)


def _col(matrix: np.ndarray, names: tuple[str, ...], name: str) -> list[float]:
    return [round(v, 6) for v in matrix[:, names.index(name)].tolist()]


def test_passage_matrix_names_every_signal_of_the_reranker() -> None:
    found = {1: [_ev(1, 10, "The accord was signed by the member states.", 0.6, 0.5, 0.0, 0.2),
                 _ev(1, 11, "It took effect later.", 0.3, 0.1, 0.0, 0.4)],
             2: [_ev(2, 20, "The accord was signed in March 2014.", 0.4, 0.7)]}
    matrix = passage_matrix([1, 2, 3], dense={1: 0.5, 2: 0.25}, lexical={1: 4.0, 2: 2.0},
                            fused={1: 0.03, 2: 0.015, 3: 0.01}, found=found,
                            wanted=expected_answer_type("When was the accord signed?"),
                            named={2}, late={1: 0.4, 2: 0.7},
                            sentence_late={10: 0.3, 11: 0.6, 20: 0.2})
    assert matrix.shape == (3, len(PASSAGE_FEATURES))
    names = PASSAGE_FEATURES
    assert _col(matrix, names, "chunk_similarity") == [0.5, 0.25, 0.0]
    assert _col(matrix, names, "sentence_similarity") == [0.6, 0.4, 0.0]  # the best sentence's
    assert _col(matrix, names, "bm25") == [1.0, 0.5, 0.0]  # over the pool's best
    assert _col(matrix, names, "sentence_coverage") == [0.5, 0.7, 0.0]
    assert _col(matrix, names, "proximity") == [0.4, 0.0, 0.0]
    assert _col(matrix, names, "named_author") == [0.0, 1.0, 0.0]
    assert _col(matrix, names, "late_interaction") == [0.4, 0.7, 0.0]
    assert _col(matrix, names, "sentence_late") == [0.6, 0.2, 0.0]
    assert _col(matrix, names, "fused_rank") == [1.0, 0.5, round(1 / 3, 6)]
    # Only passage 2 holds a date, the answer type of a "when" question: strength x relevance.
    assert _col(matrix, names, "answer_type") == [0.0, round((0.4 + 0.7) / 2, 6), 0.0]


def test_sentence_matrix_gives_position_and_neighbours() -> None:
    """The sentence after "Thus, the SCO turned out to be powerless" can be chosen on its
    predecessor's evidence: each candidate sees the sentences around it."""
    first = [_ev(1, 1, "Thus, the SCO turned out to be powerless in the crisis.", 0.7, 0.8),
             _ev(1, 2, "The reason was its lack of a mandate.", 0.3, 0.1, start=60),
             _ev(1, 3, "Members disagreed on the rest.", 0.2, 0.0, start=100)]
    second = [_ev(2, 4, "The SCO was founded in 2001 in Shanghai.", 0.5, 0.6)]
    candidates = [Candidate(0, s) for s in first] + [Candidate(1, second[0])]
    matrix = sentence_matrix(candidates, [first, second], [2.0, 1.5],
                             expected_answer_type("When was the SCO founded?"))
    names = SENTENCE_FEATURES
    assert matrix.shape == (4, len(names))
    assert _col(matrix, names, "position_first") == [1.0, 0.0, 0.0, 1.0]
    assert _col(matrix, names, "position_relative") == [0.0, 0.5, 1.0, 0.0]
    assert _col(matrix, names, "previous_coverage") == [0.0, 0.8, 0.1, 0.0]
    assert _col(matrix, names, "next_similarity") == [0.3, 0.2, 0.0, 0.0]
    assert _col(matrix, names, "passage_score_gap") == [0.0, 0.0, 0.0, -0.5]
    assert _col(matrix, names, "passage_first") == [1.0, 1.0, 1.0, 0.0]
    assert _col(matrix, names, "similarity_gap") == [0.0, -0.4, -0.5, -0.2]
    assert _col(matrix, names, "answer_type") == [0.0, 0.0, 0.0, 1.0]  # only "2001" is a date
    assert _col(matrix, names, "log_words") == [round(math.log1p(len(c.evidence.text.split())), 6)
                                                for c in candidates]


def test_missing_names_what_the_passage_lacks() -> None:
    question = "Where was the fifth CICA summit held in 2014 according to Nazarbayev?"
    passage = "The fourth CICA summit was held in Shanghai in May 2014."
    weights = {t: 1.0 for t in term_set(question)}
    weights["fifth"] = math.log(101 / 0.5)  # a term no chunk of a 100-chunk index holds
    missing = missing_from(question, passage, QueryTerms(weights), n_chunks=100)
    assert missing.ordinals == ("fifth",)
    assert missing.numbers == ()  # 2014 is there
    assert missing.names == ("Nazarbayev",)
    assert missing.unknown == ("fifth",)
    assert missing.terms[0] == "fifth"  # rarest first
    assert set(missing.terms) == {"fifth", "nazarbayev"}  # "where", "held" ... are there or stopwords
    assert missing.words()[0] == "fifth"
    assert [w.lower() for w in missing.words()].count("nazarbayev") == 1  # a name and a term
    assert 0 < missing.coverage < 1


def test_missing_counts_an_acronyms_other_form_as_present() -> None:
    question = "What does the CICA secretariat do?"
    passage = "The secretariat of the Conference on Interaction does the work."
    qterms = QueryTerms({"cica": 2.0, "secretariat": 1.0},
                        ((frozenset({"cica"}), frozenset({"confer", "interact"})),))
    missing = missing_from(question, passage, qterms, n_chunks=10)
    assert missing.terms == () and missing.names == ()
    assert missing.coverage == pytest.approx(1.0)


def test_question_vector_has_margins_and_answer_type() -> None:
    best = _ev(1, 1, "The forum met in Shanghai.", 0.6, 0.7, 0.5, 0.2)
    question = "When did the forum not meet in Astana for the 2nd time?"
    qterms = QueryTerms({"forum": 1.0, "meet": 1.0, "astana": 2.0, "2nd": 1.5, "time": 0.5})
    missing = missing_from(question, best.text, qterms, n_chunks=10)
    vector = question_vector(question, np.array([2.0, 0.5, 0.1]), [3.0, 1.0], best, missing,
                             qterms, 10, expected_answer_type(question))
    values = dict(zip(QUESTION_FEATURES, vector.tolist(), strict=True))
    assert values["best_sentence"] == 2.0 and values["sentence_margin"] == 1.5
    assert values["best_passage"] == 3.0 and values["passage_margin"] == 2.0
    assert values["type_expected"] == 1.0 and values["type_missing"] == 1.0  # no date in it
    assert values["best_similarity"] == pytest.approx(0.6)
    assert values["missing_rare"] == pytest.approx(2.0 / math.log(12))  # "Astana" is not there
    assert values["sentence_missing_rare"] == pytest.approx(2.0 / math.log(12))
    assert values["sentence_missing_name"] == 1.0 and values["missing_name"] == 1.0
    assert values["sentence_missing_number"] == 1.0 and values["missing_ordinal"] == 1.0
    assert values["negation_mismatch"] == 1.0  # "not" in the question only
    assert values["question_terms"] == pytest.approx(math.log(6))
