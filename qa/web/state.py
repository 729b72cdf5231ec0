"""What the views of one app share, kept in ``app.extensions["qa"]`` (no module globals): the
settings, the service, the rebuild jobs, the metrics and the feedback store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from qa.config import Settings
from qa.jobs import JobRegistry
from qa.service import QAService

if TYPE_CHECKING:
    from qa.feedback import FeedbackBook
    from qa.web.metrics import Metrics

EXAMPLES = (  # questions about the bundled CICA corpus, shown as links under the form
    "What does OSCA stand for?",
    "When did the eighth round table of the think tank forum take place?",
    "Which countries do the United States and its allies regard as their main security threats?",
    "When did the SCO sign its convention against extremism?",
)


@dataclass
class WebState:
    settings: Settings
    service: QAService
    jobs: JobRegistry
    metrics: Metrics
    feedback: FeedbackBook
    examples: tuple[str, ...] = EXAMPLES


def current() -> WebState:
    """The state of the app handling the current request."""
    state: WebState = current_app.extensions["qa"]
    return state
