"""Answer feedback: what users said of an answer ("helpful" / "not helpful", an optional
comment), stored with the question, the answer's citations and the index version that answered,
and turned into gold-set candidates.

Owns the feedback record and the export; the rows live in ``store.FeedbackStore`` (a SQLite
file outside the index builds, so a rebuild never loses them). The web layer validates request
shapes against the OpenAPI schema before calling ``record``. Knows nothing of HTTP.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qa import store
from qa.config import Settings
from qa.errors import BadRequestError, QAError

RATINGS = ("helpful", "not_helpful")
FEEDBACK_FILE = "feedback.sqlite"
MAX_COMMENT_CHARS = 1000
MAX_ANSWER_CHARS = 4000
CANDIDATE_KIND = "feedback"


def feedback_path(settings: Settings) -> Path:
    """Where feedback is kept: ``feedback_db``, or ``feedback.sqlite`` in the index directory
    (beside ``builds/``, never inside a build)."""
    if settings.feedback_db:
        return Path(settings.feedback_db).expanduser().absolute()
    return settings.index_dir / FEEDBACK_FILE


def _text(value: object) -> str:
    """``value`` as storable text: lone surrogates (valid in JSON escapes, not in UTF-8) and
    NUL become U+FFFD."""
    text = str(value or "").replace("\x00", "\ufffd")
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _fold(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


class FeedbackBook:
    """The feedback of one service: ``record`` from the web, ``candidates`` for the CLI."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = store.FeedbackStore(feedback_path(settings))

    def record(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store one validated feedback body; returns what was stored (with its id)."""
        rating = body["rating"]
        if rating not in RATINGS:
            raise BadRequestError(f"rating must be one of {', '.join(RATINGS)}; got {rating!r}")
        question = " ".join(_text(body["question"]).split())
        if not question:
            raise BadRequestError("question is empty")
        comment = " ".join(_text(body.get("comment")).split())[:MAX_COMMENT_CHARS] or None
        answer = _text(body.get("answer"))[:MAX_ANSWER_CHARS] or None
        citations = list(body.get("citations") or [])
        feedback_id = self.store.add(rating, question, answer, comment, body["index_version"],
                                     citations)
        return {"id": feedback_id, "rating": rating, "question": question,
                "index_version": body["index_version"], "comment": comment}

    def candidates(self, known_questions: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The "not helpful" questions as gold-set rows without an answer, one per distinct
        question (compared without case and punctuation), leaving out questions the gold set
        already holds. A person fills in ``answer``, ``quote`` and ``doc`` (or sets
        ``answerable`` to false) before a row joins the gold set."""
        known = {_fold(q) for q in known_questions}
        rows: dict[str, dict[str, Any]] = {}
        for row in self.store.rows("not_helpful"):
            key = _fold(row["question"])
            if key in known:
                continue
            candidate = rows.get(key)
            if candidate is None:
                cited = [c.get("doc_id") for c in row["citations"] if isinstance(c, dict)]
                candidate = rows[key] = {
                    "id": f"fb{row['id']:05d}", "question": row["question"], "answerable": True,
                    "answer": None, "answer_aliases": [], "quote": None,
                    "doc": next((d for d in cited if d), None), "kind": CANDIDATE_KIND,
                    "split": None,
                    "feedback": {"times": 0, "comments": [], "answers": [],
                                 "index_versions": [], "cited_passages": []},
                }
            note = candidate["feedback"]
            note["times"] += 1
            for name, value in (("comments", row["comment"]), ("answers", row["answer"]),
                                ("index_versions", row["index_version"])):
                if value and value not in note[name]:
                    note[name].append(value)
            for c in row["citations"]:
                passage = c.get("passage_id") if isinstance(c, dict) else None
                if passage and passage not in note["cited_passages"]:
                    note["cited_passages"].append(passage)
        return list(rows.values())


def write_candidates(rows: list[dict[str, Any]], out: Path) -> None:
    """Write ``rows`` as JSON lines (the gold file's format), atomically."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise QAError(f"cannot write {out}: {e.strerror or e}") from e
