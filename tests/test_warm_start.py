"""A process answers its first requests warm: `QAService.load` asks a few questions first, and
`qa serve`'s workers then freeze what they loaded out of the garbage collector's view."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from qa.config import Settings
from qa.embedding import Embedder
from qa.server import freeze_loaded_objects
from qa.service import WARM_UP_QUESTIONS, QAService


def test_load_answers_questions_from_the_titles_and_caches_no_answer(
        built_tiny: Settings, embedder: Embedder) -> None:
    service = QAService(built_tiny, embedder=embedder)
    asked: list[str] = []
    answer = service.ask

    def recording(question: str, *args: object, **kwargs: object) -> dict[str, object]:
        asked.append(question)
        return answer(question, *args, **kwargs)  # type: ignore[arg-type]

    service.ask = recording  # type: ignore[method-assign]
    service.load()
    titles = [d["title"] for d in service.documents()]
    assert len(asked) == min(WARM_UP_QUESTIONS, len(titles)) > 0
    assert len(set(asked)) == len(asked) and set(asked) <= set(titles)
    reader = service.reader()
    assert reader._chunk_rows._data and reader._chunk_sentences._data  # the chunk cache is warm
    assert not service._cache  # but no answer is kept: a user's question is answered anew
    first = service.ask(asked[0])
    assert "cached" not in first["timings_ms"]
    assert service.ask(asked[0])["timings_ms"].get("cached") is True  # users' answers are kept


def test_asking_without_the_cache_keeps_nothing_in_it(built_tiny: Settings,
                                                      embedder: Embedder) -> None:
    service = QAService(built_tiny, embedder=embedder)
    service.ask("What is the Joint Water Commission?", use_cache=False)
    assert not service._cache
    service.ask("What is the Joint Water Commission?")
    assert len(service._cache) == 1


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_loaded_objects_leave_the_collectors_view() -> None:
    loaded = [[n] for n in range(50_000)]  # containers the collector would otherwise track
    freeze_loaded_objects()
    assert gc.get_freeze_count() >= len(loaded)
    assert not any(o is loaded for o in gc.get_objects(generation=2))
    assert sum(len(gc.get_objects(generation=g)) for g in range(3)) < len(loaded) // 10
