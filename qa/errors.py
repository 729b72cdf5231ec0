"""The error hierarchy of the core. Each edge (CLI, web) translates these in exactly one place."""

from __future__ import annotations


class QAError(Exception):
    """Base class: a failure with a message a user can act on."""

    code = "qa_error"
    http_status = 500
    exit_status = 1


class ConfigError(QAError):
    """A setting has an unknown name, a wrong type or an out-of-range value."""

    code = "bad_setting"
    http_status = 500
    exit_status = 2


class CorpusError(QAError):
    """The corpus directory is missing or unreadable."""

    code = "corpus_error"
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
