"""Acronym definitions found in text, and query expansions in both directions."""

from __future__ import annotations

import pytest

from qa.acronyms import alias_spans, aliases, expansions, find_acronyms, gloss, uses_form

CICA = "Conference on Interaction and Confidence Building Measures in Asia"


@pytest.mark.parametrize(("text", "expected"), [
    ("Abstract: The Conference on Interaction and Confidence Building Measures in Asia (CICA) "
     "is at a critical juncture of development and transformation.",
     [("CICA", CICA)]),
    ("CICA has been taking the Organization on Security and Cooperation in Asia (OSCA) as its "
     "long-term goal.",
     [("OSCA", "Organization on Security and Cooperation in Asia")]),
    ("ministers of foreign affairs as well as confidence building measures (CBMs) in five "
     "dimensions",
     [("CBM", "confidence building measures")]),
    ("Chen Dongxiao is President of Shanghai Institutes for International Studies (SIIS).",
     [("SIIS", "Shanghai Institutes for International Studies")]),
])
def test_definitions_from_the_corpus(text: str, expected: list[tuple[str, str]]) -> None:
    assert find_acronyms(text) == expected


def test_short_form_qualified_by_an_acronym_of_the_long_form() -> None:
    text = "hosted the Ninth Meeting of the CICA Think Tank Forum (CICA TTF) themed"
    assert find_acronyms(text) == [("TTF", "Think Tank Forum")]


def test_possessive_qualifier() -> None:
    assert find_acronyms("the CICA's Think Tank Forum (CICA TTF) met") == [
        ("TTF", "Think Tank Forum")]


def test_qualifier_must_precede_the_long_form() -> None:
    assert find_acronyms("the Ninth Meeting of the Think Tank Forum (CICA TTF) themed") == []
    assert find_acronyms("the SCO Think Tank Forum (CICA TTF) themed") == []


def test_several_definitions_in_order_each_once() -> None:
    text = (f"The {CICA} (CICA) met. Shanghai Institutes for International Studies (SIIS) "
            f"hosted it. Again the {CICA} (CICA) was named.")
    assert find_acronyms(text) == [
        ("CICA", CICA), ("SIIS", "Shanghai Institutes for International Studies")]


@pytest.mark.parametrize("text", [
    "As explained earlier (see above), the forum grew.",
    "The annual report (2019) lists the members.",
    "The Agreement between the parties (hereinafter referred to as the Agreement) is binding.",
    "It was a success (Table 3) for the region.",
    "The parties (A) and (B) agreed.",
    "The forum (CICA) met again.",  # initials do not match the words before it
    "",
])
def test_non_definitions(text: str) -> None:
    assert find_acronyms(text) == []


TABLE = [("CICA", CICA), ("CBM", "confidence building measures")]


def test_short_form_expands_to_long_form() -> None:
    assert expansions("When was CICA proposed?", TABLE) == [CICA]


def test_plural_short_form_expands() -> None:
    assert expansions("Which CBMs were adopted?", TABLE) == ["confidence building measures"]


def test_long_form_expands_to_short_form() -> None:
    assert expansions(f"When was the {CICA.lower()} proposed?", TABLE) == ["CICA", "CBM"]


def test_no_expansion_when_both_forms_present() -> None:
    assert expansions(f"Is CICA the {CICA}?", TABLE) == ["CBM"]


def test_no_expansion_for_unrelated_question() -> None:
    assert expansions("Where is Lake Baikal?", TABLE) == []
    assert expansions("Is cicada a word?", TABLE) == []  # word boundaries, case-sensitive short


GLOSSARY = [("TTF", "Think Tank Forum"), ("CICA", CICA), ("CICA", "another long form")]


def test_gloss_appends_long_forms_of_the_acronyms_used() -> None:
    assert gloss("The CICA TTF mechanism was established in 2014.", GLOSSARY) == (
        f"The CICA TTF mechanism was established in 2014. (CICA: {CICA}; TTF: Think Tank Forum)")


def test_gloss_skips_spelled_out_and_absent_acronyms() -> None:
    text = "The Think-Tank Forum (TTF) met in Shanghai."
    assert gloss(text, GLOSSARY) == text
    assert gloss("Nothing to expand here.", GLOSSARY) == "Nothing to expand here."
    assert gloss("Plural TTFs count too.", GLOSSARY) == "Plural TTFs count too. (TTF: Think Tank Forum)"


def test_no_gloss_when_any_long_form_of_the_acronym_is_spelled_out() -> None:
    text = "Second, CICA (the Conference on Interaction and Confidence-Building Measures) met."
    table = [("CICA", "Conference on Interaction"), ("CICA", "Conference on Interaction and "
                                                             "Confidence-Building Measures")]
    assert gloss(text, table) == text


def test_alias_spans_locate_each_form_the_question_uses() -> None:
    question = "Which countries coordinate the CBMs on new challenges, and did CICA agree?"
    spans = alias_spans(question, aliases(question, TABLE))
    assert sorted((question[a:b], other) for a, b, other in spans) == [
        ("CBMs", "confidence building measures"), ("CICA", CICA)]
    long_question = "What did the Conference on Interaction and Confidence-Building Measures in " \
                    "Asia decide?"
    assert sorted((long_question[a:b], other) for a, b, other in
                  alias_spans(long_question, aliases(long_question, TABLE))) == [
        ("Conference on Interaction and Confidence-Building Measures in Asia", "CICA"),
        ("Confidence-Building Measures", "CBM")]  # a long form inside another counts too
    assert alias_spans("Where is Lake Baikal?", aliases("Where is Lake Baikal?", TABLE)) == []


@pytest.mark.parametrize(("text", "form", "used"), [
    ("for confidence-building\nmeasures in five dimensions", "confidence building measures", True),
    ("Confidence Building Measure", "confidence building measures", False),  # plural only
    ("two confidence building measure", "confidence building measure", True),
    ("the CBMs of 2002", "CBM", True),
    ("the cbm of 2002", "CBM", False),  # an acronym keeps its case
    ("the CBMA met", "CBM", False),
    ("an OSCA-type mechanism", "OSCA", False),  # part of a compound, not the name itself
    ("", "CBM", False),
])
def test_uses_form(text: str, form: str, used: bool) -> None:
    assert uses_form(text, form) is used
