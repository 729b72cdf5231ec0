"""Sentence evidence, acronym aliases and expected answer types (pure parts, no model)."""

from __future__ import annotations

import random

import pytest

from qa.acronyms import aliases
from qa.answertype import expected_answer_type
from qa.evidence import QueryTerms, term_set
from qa.store.sentence_terms import ChunkSentences, gathered
from qa.terms import term_pairs, term_sequence

TABLE = [("OSCA", "Organization for Security and Cooperation in Asia"),
         ("CBM", "confidence building measures")]


def test_aliases_name_the_form_used_and_the_other_one() -> None:
    assert aliases("What does OSCA stand for?", TABLE) == [
        ("OSCA", "Organization for Security and Cooperation in Asia")]
    assert aliases("Which confidence-building measures exist?", TABLE) == [
        ("confidence building measures", "CBM")]
    assert aliases("Both OSCA and the Organization for Security and Cooperation in Asia", TABLE) == []


def test_coverage_counts_the_other_form_of_an_acronym() -> None:
    weights = {t: 1.0 for t in term_set("What is the OSCA goal")}
    group = frozenset({"osca"})
    other = frozenset(term_set("Organization for Security and Cooperation in Asia"))
    qterms = QueryTerms(weights, ((group, other),))
    with_long_form = term_set("The Organization for Security and Cooperation in Asia is the goal")
    assert qterms.coverage(with_long_form) == pytest.approx(2 / 2)
    assert qterms.coverage(term_set("Organization for Security in Asia is the goal")) == pytest.approx(1 / 2)
    assert QueryTerms(weights).coverage(with_long_form) == pytest.approx(1 / 2)


@pytest.mark.parametrize("sentence", [
    "The Organization for Security and Cooperation in Asia is the goal",
    "Organization for Security in Asia is the goal",
    "OSCA remains a goal",
    "goalkeeping and security",  # "goal" must not match inside "goalkeeping"
    "",
])
def test_coverage_of_stored_terms_equals_coverage_of_the_set(sentence: str) -> None:
    weights = {t: float(len(t)) for t in term_set("What is the OSCA goal")}
    other = frozenset(term_set("Organization for Security and Cooperation in Asia"))
    qterms = QueryTerms(weights, ((frozenset({"osca"}), other),))
    stored = term_sequence(sentence)
    assert qterms.stored_scores(stored)[0] == pytest.approx(qterms.coverage(term_set(sentence)))


def _pair_terms(question: str) -> QueryTerms:
    weights = {t: float(len(t)) for t in term_set(question)}
    return QueryTerms(weights, pairs=tuple(sorted(term_pairs(question))))


def test_proximity_is_the_weighted_share_of_the_questions_pairs_held() -> None:
    qterms = _pair_terms("Who proposed a security-and-development organization?")
    # a pair weighs its two terms (here: their lengths)
    assert qterms.pairs == (("develop", "organiz"), ("propos", "secur"), ("secur", "develop"))
    total = (7 + 7) + (6 + 5) + (5 + 7)
    phrase = "Kazakhstan proposed the Organization for Security and Development of Asia."
    coverage, proximity = qterms.stored_scores(term_sequence(phrase))
    assert coverage == pytest.approx(qterms.coverage(term_set(phrase)))
    assert proximity == pytest.approx((5 + 7) / total)  # only "security and development"
    apart = "Development needs security, said the organization that Kazakhstan proposed."
    assert qterms.stored_scores(term_sequence(apart)) == (pytest.approx(1.0), 0.0)


def test_proximity_needs_both_words_of_a_pair_in_order_and_close() -> None:
    qterms = _pair_terms("security development")
    assert qterms.stored_scores(term_sequence("security and development"))[1] == 1.0
    twice = "security and development and security and development"
    assert qterms.stored_scores(term_sequence(twice))[1] == 1.0  # a pair counts once
    assert qterms.stored_scores(term_sequence("development and security"))[1] == 0.0
    far = "security, as it was and is to be, development"  # five stopwords between
    assert qterms.stored_scores(term_sequence(far))[1] == 0.0
    assert qterms.stored_scores(term_sequence("security alone"))[1] == 0.0
    assert QueryTerms({"secur": 1.0}).stored_scores(term_sequence("security and development")) \
        == (1.0, 0.0)  # a one-word question has no pairs


def test_coverage_weighs_rare_terms_more() -> None:
    qterms = QueryTerms({"omul": 3.0, "lake": 1.0})
    assert qterms.coverage({"omul"}) == pytest.approx(0.75)
    assert qterms.coverage({"lake"}) == pytest.approx(0.25)
    assert QueryTerms({}).coverage({"lake"}) == 0.0


@pytest.mark.parametrize(("question", "sentence", "strength"), [
    ("How many members does the commission have?", "The commission has nine members.", 1.0),
    ("How many members does the commission have?", "It has 26 member states.", 1.0),
    ("How many members does the commission have?", "It meets 2 times a year.", 0.5),
    ("How many members does the commission have?", "It meets twice a year.", 0.0),
    ("How often does the commission meet?", "It meets twice a year.", 1.0),
    ("When was the accord signed?", "The accord was signed in 2031.", 1.0),
    ("In what year was it founded?", "It was founded in October.", 1.0),
    ("When was the accord signed?", "The accord was signed by nine states.", 0.0),
    ("How long does the train take?", "It takes about sixteen days.", 1.0),
    ("Who chaired the commission?", "The commission was chaired by Aigerim Nurlanova.", 1.0),
    ("Who chaired the commission?", "It was chaired by the eldest member.", 0.0),
    ("Which country hosts the Secretariat?", "The Secretariat is based in Kazakhstan.", 1.0),
    ("Which country hosts the Secretariat?", "The Secretariat moved last year.", 0.0),
    ("Who founded CICA?", "CICA was founded by its members.", 0.0),  # names in the question
    ("Who founded CICA?", "The proposal came from the UN assembly.", 1.0),
])
def test_answer_type_strength(question: str, sentence: str, strength: float) -> None:
    wanted = expected_answer_type(question)
    assert wanted is not None
    assert wanted.strength(sentence) == strength


def test_questions_without_a_clear_type() -> None:
    assert expected_answer_type("Why did the commission meet?") is None
    assert expected_answer_type("What does it mean for the region?") is None  # no abbreviation
    assert expected_answer_type("What does Asia mean to China?") is None


@pytest.mark.parametrize(("question", "abbreviation"), [
    ("What does OSCA stand for?", "OSCA"),
    ("what do CBMs stand for", "CBMs"),
    ("What is TTF short for?", "TTF"),
    ("What is SIIS an abbreviation for?", "SIIS"),
    ("What is the full name of the JWC?", "JWC"),
])
def test_questions_for_an_expansion(question: str, abbreviation: str) -> None:
    wanted = expected_answer_type(question)
    assert wanted is not None and (wanted.kind, wanted.focus) == ("expansion", abbreviation)


@pytest.mark.parametrize(("sentence", "strength"), [
    ("Its goal is an organization of security and cooperation in Asia (OSCA).", 1.0),
    ("It aims at an Asian organization (OSCA, in short) one day.", 1.0),
    ("CICA is always motivated to become an OSCA, an Asian version of OSCE.", 0.0),
    ("The OSCA-type of mechanism is the direction (OSCAR) of development.", 0.0),
])
def test_expansion_strength_is_the_definition(sentence: str, strength: float) -> None:
    wanted = expected_answer_type("What does OSCA stand for?")
    assert wanted is not None and wanted.strength(sentence) == strength
    plural = expected_answer_type("What do OSCAs stand for?")
    assert plural is not None and plural.strength(sentence) == strength


@pytest.mark.parametrize("question", [
    "Which Kazakh leader first proposed the conference?",
    "Which European security body did it copy?",
    "Which two countries signed first?",
    "What country hosts the Secretariat?",
])
def test_name_questions_with_modifiers_before_the_noun(question: str) -> None:
    wanted = expected_answer_type(question)
    assert wanted is not None and wanted.kind == "name"


@pytest.mark.parametrize("question", [
    "What is the state of the forum?",
    "Which of the states joined first?",
    "What did the leaders say about trade?",
    "What should member states do to build confidence?",
    "What can people expect from CICA?",
    "What unites Asian countries?",
    "Which should states choose first?",
])
def test_verbs_and_articles_are_no_modifiers(question: str) -> None:
    assert expected_answer_type(question) is None


def _scored_at_once(qterms: QueryTerms, sentences: list[str]) -> list[tuple[float, float]]:
    spans = [(0, n, 0, 0, term_sequence(s)) for n, s in enumerate(sentences)]
    _, stored = gathered([ChunkSentences.of(spans[:2]), ChunkSentences.of(spans[2:])])
    coverage, proximity = qterms.scores_of(stored, len(spans))
    return list(zip(coverage.tolist(), proximity.tolist(), strict=True))


def test_sentences_scored_at_once_score_as_each_one_alone() -> None:
    question = "Did the OSCA goal of security and development help security development?"
    weights = {t: float(len(t)) for t in term_set(question)}
    other = frozenset(term_set("Organization for Security and Cooperation in Asia"))
    qterms = QueryTerms(weights, ((frozenset({"osca"}), other),),
                        tuple(sorted(term_pairs(question))))
    words = ["security", "development", "goal", "OSCA", "Organization", "Cooperation", "Asia",
             "help", "and", "the", "of", "for", "in", "it", "was", "is", "to", "be", "goalkeeping",
             "developments"]
    rng = random.Random(15)
    sentences = ["", "security", "security security", "development and security",
                 "security and development and security and development",
                 "security, as it was and is to be, development",
                 "The Organization for Security and Cooperation in Asia set a goal"]
    sentences += [" ".join(rng.choices(words, k=rng.randint(1, 14))) for _ in range(300)]
    # Each figure by another route: coverage from the sentence's set of terms, proximity from
    # its word pairs (terms.term_pairs), counted only where two of the terms stand.
    needed = set(qterms.weights).union(other)
    pair_weight = {(a, b): qterms.weights[a] + qterms.weights[b] for a, b in qterms.pairs}

    def proximity(sentence: str) -> float:
        if len(needed & term_set(sentence)) < 2:
            return 0.0
        held = sum(w for pair, w in pair_weight.items() if pair in term_pairs(sentence))
        return held / sum(pair_weight.values())

    expected = [(qterms.coverage(term_set(s)), proximity(s)) for s in sentences]
    at_once = _scored_at_once(qterms, sentences)
    assert at_once == [(pytest.approx(c), pytest.approx(p)) for c, p in expected]
    assert [qterms.stored_scores(term_sequence(s)) for s in sentences] == at_once
    assert any(p > 0 for _, p in expected) and any(0 < c < 1 for c, _ in expected)


def test_sentences_scored_at_once_without_question_terms_or_sentences() -> None:
    assert _scored_at_once(QueryTerms({}), ["security and development"]) == [(0.0, 0.0)]
    one_term = QueryTerms({"secur": 1.0})
    assert _scored_at_once(one_term, ["security and development", "peace"]) == [
        (1.0, 0.0), (0.0, 0.0)]
    coverage, proximity = one_term.scores_of(gathered([])[1], 0)
    assert len(coverage) == len(proximity) == 0


def test_a_repeated_word_is_no_pair_in_a_sentence_holding_only_that_word() -> None:
    question = "security security development"
    qterms = QueryTerms({t: 1.0 for t in term_set(question)},
                        pairs=tuple(sorted(term_pairs(question))))
    assert ("secur", "secur") in qterms.pairs
    sentences = ["security security", "security security development"]
    scores = _scored_at_once(qterms, sentences)
    assert scores[0][1] == 0.0 and scores[1][1] > 0
