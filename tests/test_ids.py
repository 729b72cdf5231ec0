"""Document ids stay what they were when another file is added, removed or renamed; indexes built
with the old id scheme keep their ids; each document file can have its own metadata sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa import store
from qa.config import Settings
from qa.corpus import discover
from qa.embedding import Embedder
from qa.service import QAService

REPORT_TXT = "The Pamir Report\n\nThe Pamir glacier lost nine metres of ice in 2030.\n"
REPORT_MD = "# The Caspian Report\n\nThe Caspian ferry carries 300 passengers a day.\n"


@pytest.fixture
def report_service(tiny_settings: Settings, embedder: Embedder) -> QAService:
    """A service over the tiny corpus plus report.txt, indexed."""
    service = QAService(tiny_settings.replace(reload_interval=0.05), embedder=embedder)
    (tiny_settings.corpus_dir / "report.txt").write_text(REPORT_TXT)
    service.index()
    return service


def _ids(service: QAService) -> dict[str, str]:
    return {d["path"]: d["doc_id"] for d in service.documents()}


def test_adding_a_file_with_the_same_stem_keeps_existing_ids(report_service: QAService) -> None:
    service = report_service
    corpus = service.settings.corpus_dir
    before = _ids(service)
    assert before["report.txt"] == "report"
    (corpus / "report.md").write_text(REPORT_MD)
    service.index()
    after = _ids(service)
    assert {path: after[path] for path in before} == before
    assert after["report.md"] not in before.values()
    # filters and links handed out before still work
    answer = service.ask("How much ice did the Pamir glacier lose?", doc_ids=["report"],
                         use_cache=False)
    assert {p["doc_id"] for p in answer["passages"]} == {"report"}
    # removing the other file again changes nothing either
    (corpus / "report.md").unlink()
    service.index()
    assert _ids(service) == before


def test_ids_of_an_index_built_with_the_old_scheme_keep_resolving(report_service: QAService) -> None:
    service = report_service
    corpus = service.settings.corpus_dir
    # An index written by the previous code: the same tables, no id map in the manifest.
    layout = store.Layout(service.settings.index_dir)
    manifest_path = layout.build_dir(layout.current_version() or "") / store.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("ids", None)
    manifest_path.write_text(json.dumps(manifest))
    (corpus / "report.md").write_text(REPORT_MD)
    service.index(full=True)
    ids = _ids(service)
    assert ids["report.txt"] == "report" and ids["report.md"] != "report"
    assert service.document("report")["path"] == "report.txt"


def test_every_file_can_have_its_own_sidecar(tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text(REPORT_TXT)
    (tmp_path / "report.md").write_text(REPORT_MD)
    (tmp_path / "report.txt.meta.json").write_text(json.dumps({"title": "Text"}))
    (tmp_path / "report.md.meta.json").write_text(json.dumps({"title": "Markdown"}))
    found, warnings = discover(tmp_path)
    sidecars = {f.path.name: f.meta_path.name if f.meta_path else None for f in found}
    assert sidecars == {"report.md": "report.md.meta.json",
                        "report.txt": "report.txt.meta.json"}
    assert not warnings


def test_a_stem_sidecar_shared_by_two_files_is_reported(tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text(REPORT_TXT)
    (tmp_path / "report.md").write_text(REPORT_MD)
    (tmp_path / "report.meta.json").write_text(json.dumps({"title": "Both"}))
    _, warnings = discover(tmp_path)
    assert any("report.meta.json" in w and "report.txt.meta.json" in w for w in warnings)


def test_non_ascii_names_get_readable_ids(tmp_path: Path) -> None:
    (tmp_path / "报告.txt").write_text("报告正文。\n")
    (tmp_path / "Отчёт.md").write_text("# Отчёт\n")
    found, _ = discover(tmp_path)
    assert sorted(f.doc_id for f in found) == ["отчёт", "报告"]
