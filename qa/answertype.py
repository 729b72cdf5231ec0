"""Expected answer types: what a sentence must contain to answer a question of a given form.

Only the unambiguous forms are recognised: "how many/much X" wants a quantity next to X, "how often"
a frequency, "how long" a duration, "when / what year" a date, "who" or "which country" a name
the question does not already contain, "what does X stand for" the sentence that defines X
("... in Asia (OSCA)"). Pure functions, no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from qa import terms

_NUMBER = (r"(?:\d[\d,.]*%?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
           r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|"
           r"fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion|dozen|several)")
# The patterns below are matched against the lower-cased sentence, without re.IGNORECASE: they
# run on every candidate sentence of a typed question, and case-insensitive alternations of
# thirty words are about twenty times slower.
_ANY_NUMBER = re.compile(rf"\b{_NUMBER}\b")
_FREQUENCY = re.compile(r"\b(once|twice|every|each|annual|annually|yearly|monthly|weekly|daily|"
                        r"biennial|times a)\b")
_DURATION = re.compile(rf"\b{_NUMBER}\s+(?:\w+\s+)?(years?|months?|weeks?|days?|hours?|decades?|"
                       r"centur(?:y|ies))\b")
_DATE = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b(January|February|March|April|May|June|July|"
                   r"August|September|October|November|December)\b")
_HOW_MANY = re.compile(r"\bhow (many|much)\b(?:\s+([a-z][a-z'-]*))?")
_WHEN = re.compile(r"\bwhen\b|\b(what|which) (year|date|month|day|decade)\b|\bin what year\b")
# "who", "which/what country"; after "which", up to two modifiers may precede the noun ("which
# Kazakh leader", "which European security body"), but not a verb ("which should states ...").
# After "what" the noun must follow at once: "what can states do" is no question for a name.
_WHO_NOUN = (r"(countr(y|ies)|nations?|states?|organi[sz]ations?|institut(e|es|ions?)|leaders?|"
             r"persons?|people|city|cities|president|minister|scholar|expert|official|bod(y|ies))")
_NOT_A_MODIFIER = (r"(?:is|are|was|were|be|do|does|did|has|have|had|can|could|should|would|will|"
                   r"shall|may|might|must|the|of|a|an|in|on)")
_WHO = re.compile(rf"\bwho(m|se)?\b|\bwhat {_WHO_NOUN}\b"
                  rf"|\bwhich (?:(?!{_NOT_A_MODIFIER}\b)[a-z'-]+ ){{0,2}}?{_WHO_NOUN}\b")
# A capitalised word that does not open the sentence: a name, roughly ("Kazakhstan", "Chen").
_NAME = re.compile(r"(?<=[^\s.!?]\s)[A-Z][\w'’-]*[a-z][\w'’-]*|\b[A-Z]{2,}\b")
# "What does OSCA stand for", "what is TTF short for", "the full name of SIIS": the focus is the
# abbreviation, written in capitals (or a capitalised plural: "CBMs").
_ABBREVIATION = r"([A-Z][A-Za-z]*[A-Z]s?)"  # case-sensitive, unlike the words around it
_EXPANSION = re.compile(
    rf"(?i:\bwhat (?:does|do|did) (?:the )?){_ABBREVIATION}(?i: (?:stand for|mean|abbreviate)\b)"
    rf"|(?i:\bwhat (?:is|are) (?:the )?){_ABBREVIATION}"
    rf"(?i: (?:short for|an? (?:acronym|abbreviation) for)\b)"
    rf"|(?i:\b(?:full|long) (?:name|form) (?:of|for) (?:the )?){_ABBREVIATION}\b")
FOCUS_WINDOW = 3  # words allowed between the number and the counted noun ("26 member states")


@dataclass(frozen=True)
class AnswerType:
    kind: str
    focus: str | None = None  # stem of the counted noun in "how many X"; the abbreviation
    known: frozenset[str] = field(default=frozenset())  # the question's own words, lower-cased

    def strength(self, sentence: str) -> float:
        """1.0 when ``sentence`` holds this type of answer (a quantity of the focus noun, a
        frequency, a duration, a date, a name the question lacks, the definition of the focus
        abbreviation), 0.5 for a quantity of something else, 0.0 otherwise. Remembered: the
        reranker and answer selection ask about the same sentences."""
        return _strength(self, sentence)

    def _measure(self, sentence: str) -> float:
        if self.kind == "quantity":
            lowered = sentence.lower()
            if self.focus is not None and _counts_focus(lowered, self.focus):
                return 1.0
            return 0.5 if _ANY_NUMBER.search(lowered) else 0.0
        if self.kind in ("frequency", "duration"):
            pattern = _FREQUENCY if self.kind == "frequency" else _DURATION
            return 1.0 if pattern.search(sentence.lower()) else 0.0
        if self.kind == "expansion":
            defines = self.focus is not None and _definition(self.focus).search(sentence)
            return 1.0 if defines else 0.0
        if self.kind == "name":
            return 1.0 if any(m.group(0).lower() not in self.known
                              and m.group(0).lower() not in terms.STOPWORDS
                              for m in _NAME.finditer(sentence)) else 0.0
        return 1.0 if _DATE.search(sentence) else 0.0


@lru_cache(maxsize=8192)
def _strength(answer_type: AnswerType, sentence: str) -> float:
    return answer_type._measure(sentence)


@lru_cache(maxsize=256)
def _definition(abbreviation: str) -> re.Pattern[str]:
    """The abbreviation in parentheses, as a definition puts it after its long form: "... in
    Asia (OSCA)", "(CBMs)", "(OSCA, in short)"."""
    singular = abbreviation[:-1] if abbreviation.endswith("s") else abbreviation
    return re.compile(rf"\(\s*{re.escape(singular)}s?\s*[,;)]")


def expected_answer_type(question: str) -> AnswerType | None:
    expansion = _EXPANSION.search(question)
    if expansion:
        return AnswerType("expansion", next(g for g in expansion.groups() if g))
    lowered = question.lower()
    m = _HOW_MANY.search(lowered)
    if m:
        noun = m.group(2)
        focus = terms.stem(noun) if noun and noun not in terms.STOPWORDS else None
        return AnswerType("quantity", focus)
    if re.search(r"\bhow often\b", lowered):
        return AnswerType("frequency")
    if re.search(r"\bhow long\b", lowered):
        return AnswerType("duration")
    if _WHEN.search(lowered):
        return AnswerType("date")
    if _WHO.search(lowered):
        return AnswerType("name", known=frozenset(terms.tokens(question)))
    return None


def _counts_focus(lowered: str, focus: str) -> bool:
    """Whether a number in the (lower-cased) sentence is followed, within FOCUS_WINDOW words, by
    the counted noun. Only the few words after each number are tokenized and stemmed."""
    if focus[:3] not in lowered:  # cheap test first: the counted noun must be there at all
        return False
    for number in _ANY_NUMBER.finditer(lowered):
        following = terms.tokens(lowered[number.end():number.end() + 120])[:1 + FOCUS_WINDOW]
        if any(terms.stem(w) == focus for w in following):
            return True
    return False
