"""The error hierarchy of the core. Each edge (CLI, web) translates these in exactly one place."""

from __future__ import annotations

import re
import uuid

# An absolute POSIX path (not the second half of "and/or", "multipart/form-data" or a URL).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`()<>;,]+")
# What a client is told of a server-side failure; the details go to the log, under an error id.
_PUBLIC_MESSAGES = {
    "no_index": "no index has been published yet: an administrator must run `qa index`",
    "index_corrupt": "the index cannot be read: an administrator must run `qa index --full`",
}


class QAError(Exception):
    """Base class: a failure with a message a user can act on."""

    code = "qa_error"
    http_status = 500
    exit_status = 2


class ConfigError(QAError):
    """A setting has an unknown name, a wrong type or an out-of-range value."""

    code = "bad_setting"
    http_status = 500
    exit_status = 2


class CorpusError(QAError):
    """The corpus directory is missing or unreadable."""

    code = "corpus_error"
    exit_status = 2


class ClusterError(QAError):
    """A build on a Ray cluster could not connect, or a task failed after Ray's retries."""

    code = "cluster_error"
    exit_status = 2


class IndexWriteError(QAError):
    """The index directory cannot be written."""

    code = "index_unwritable"
    exit_status = 2


class IndexLockedError(QAError):
    """Another build holds the index lock."""

    code = "index_locked"
    http_status = 409
    exit_status = 3


class NoIndexError(QAError):
    """No index version has been published yet."""

    code = "no_index"
    http_status = 503
    exit_status = 2


class IndexCorruptError(QAError):
    """A published index file fails its checksum or invariants."""

    code = "index_corrupt"
    http_status = 503
    exit_status = 2


class InvalidQuestionError(QAError):
    """The question is empty, too long or not text."""

    code = "invalid_question"
    http_status = 422
    exit_status = 2


class UnknownDocumentError(QAError):
    """A document id that the index does not hold."""

    code = "not_found"
    http_status = 404
    exit_status = 2


class CitationMismatchError(QAError):
    """A cited sentence is not exactly the stored slice it claims to be (a bug, never expected)."""

    code = "citation_mismatch"
    http_status = 500
    exit_status = 1  # an internal fault, not something the user can fix


# Errors of the HTTP edge: the same hierarchy, so one handler translates every error.
class ModelError(QAError):
    """A packaged scoring model is missing, malformed or reads a feature the code lacks."""

    code = "model_error"
    http_status = 500
    exit_status = 2


class BadRequestError(QAError):
    code = "bad_request"
    http_status = 400


class NotFoundError(QAError):
    code = "not_found"
    http_status = 404


class UnauthorizedError(QAError):
    code = "unauthorized"
    http_status = 401


class ConflictError(QAError):
    code = "conflict"
    http_status = 409


class TooLargeError(QAError):
    code = "too_large"
    http_status = 413


class UnsupportedMediaError(QAError):
    code = "unsupported_media_type"
    http_status = 415


def new_error_id() -> str:
    """A short random id that ties a client's error message to its log record."""
    return uuid.uuid4().hex[:12]


def redact_paths(text: str) -> str:
    """``text`` with every absolute filesystem path replaced by ``<path>``."""
    return _ABSOLUTE_PATH.sub("<path>", text)


def public_message(error: Exception, error_id: str) -> str:
    """What a client sees of ``error``: its own message for a request error (paths removed), a
    generic one naming ``error_id`` for a server-side failure."""
    status = error.http_status if isinstance(error, QAError) else 500
    if status < 500:
        return redact_paths(str(error))
    code = error.code if isinstance(error, QAError) else ""
    generic = _PUBLIC_MESSAGES.get(code, "internal server error")
    return f"{generic} (error id {error_id})"
