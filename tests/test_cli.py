"""The command line: help texts, JSON output, exit statuses and one-line error messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from qa import store
from qa.cli import cli, main
from qa.config import Settings
from qa.embedding import Embedder

COMMANDS = ["index", "verify", "search", "ask", "eval", "serve", "settings"]
FACTS = [
    ("How many members does the Joint Water Commission have?", "lake-baikal-accord",
     "nine members"),
    ("How wide is the mirror of the observatory's main telescope?", "desert-observatory",
     "3.6 metres"),
    ("How much did the Eurasian Infrastructure Bank lend for the terminals?", "silk-road-rail",
     "4.2 billion dollars"),
]


@pytest.fixture(autouse=True)
def _no_qa_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's QA_* variables must not leak into the commands under test."""
    for name in list(os.environ):
        if name.startswith("QA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def shared_model(monkeypatch: pytest.MonkeyPatch, embedder: Embedder) -> Embedder:
    """Commands construct their own Embedder: hand them the session's loaded model instead."""
    monkeypatch.setattr("qa.embedding.Embedder", lambda *args, **kwargs: embedder)
    return embedder


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run_qa(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `qa` command in a fresh interpreter, without the developer's QA_* variables."""
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True,
                          text=True, env=_subprocess_env(), cwd=cwd, timeout=300, check=False)


def test_group_help_lists_every_command() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    assert "Cited question answering" in result.output
    for command in COMMANDS:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = _invoke(command, "-h")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: cli {command}")
    body = result.output.split("\n\n", 2)[1].strip()
    assert len(body) > 20  # a sentence describing the command
    assert "Example" in result.output or command == "settings"
    assert "--help" in result.output


def test_index_json_then_no_op(tiny_settings: Settings, shared_model: Embedder) -> None:
    args = ["index", "--json", "--corpus-dir", str(tiny_settings.corpus_dir),
            "--index-dir", str(tiny_settings.index_dir), "--encoder", "torch"]
    first = _invoke(*args)
    assert first.exit_code == 0
    assert len(first.stdout.strip().splitlines()) == 1
    data = json.loads(first.stdout)
    assert set(data) == {"documents", "chunks", "embedded", "removed", "version", "seconds"}
    assert (data["documents"], data["chunks"], data["embedded"], data["removed"]) == (3, 8, 8, 0)
    assert data["version"] == store.Layout(tiny_settings.index_dir).current_version()
    assert isinstance(data["seconds"], float)

    second = json.loads(_invoke(*args).stdout)
    assert (second["embedded"], second["removed"], second["version"]) == (0, 0, data["version"])

    text = _invoke(*args[:1], *args[2:])
    assert text.stdout.strip() == f"index {data['version']} is up to date (3 documents, 8 chunks)"


def test_index_prints_warnings_for_skipped_files(tiny_settings: Settings, built_tiny: Settings,
                                                 shared_model: Embedder) -> None:
    shutil.copytree(built_tiny.index_dir, tiny_settings.index_dir)
    (tiny_settings.corpus_dir / "notes.docx").write_bytes(b"PK\x03\x04")
    (tiny_settings.corpus_dir / "blank.txt").write_text("")
    result = _invoke("index", "--corpus-dir", str(tiny_settings.corpus_dir),
                     "--index-dir", str(tiny_settings.index_dir), "--encoder", "torch")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: skipped notes.docx: unsupported file type '.docx'",
        "warning: skipped blank.txt: no text in file (empty or image-only)",
    ]
    assert result.stdout.startswith("published ")
    assert "3 documents" in result.stdout


def test_missing_corpus_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _run_qa(tmp_path, "index", "--corpus-dir", str(tmp_path / "missing"),
                   "--index-dir", str(tmp_path / "index"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    _assert_one_error_line(proc.stderr, "corpus directory", str(tmp_path / "missing"))


def test_empty_corpus_exits_2_with_one_line_and_publishes_nothing(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    proc = _run_qa(tmp_path, "index", "--corpus-dir", str(tmp_path / "corpus"),
                   "--index-dir", str(tmp_path / "index"))
    assert proc.returncode == 2
    _assert_one_error_line(proc.stderr, "holds no documents", str(tmp_path / "corpus"))
    assert store.Layout(tmp_path / "index").current_version() is None


def test_serve_without_index_or_corpus_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _run_qa(tmp_path, "serve", "--corpus-dir", str(tmp_path / "corpus"),
                   "--index-dir", str(tmp_path / "index"), "--port", "0")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "no index yet: building it first"
    _assert_one_error_line("\n".join(proc.stderr.splitlines()[1:]), "corpus directory",
                           str(tmp_path / "corpus"))


def test_malformed_gold_file_exits_2(capsys: pytest.CaptureFixture[str], built_tiny: Settings,
                                     shared_model: Embedder, tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "g1", "question": "What?"}\n')
    status, _out, err = _main(capsys, "eval", "--gold", str(gold), "--index-dir",
                             str(built_tiny.index_dir))
    assert status == 2
    _assert_one_error_line(err, f"{gold}:1", "not a gold question")


def test_a_setting_flag_overrides_its_variable(monkeypatch: pytest.MonkeyPatch,
                                              built_tiny: Settings,
                                              shared_model: Embedder) -> None:
    monkeypatch.setenv("QA_TOP_K", "4")
    monkeypatch.setenv("QA_INDEX_DIR", str(built_tiny.index_dir))
    question = FACTS[0][0]
    from_variable = _json(_invoke("search", question, "--json"))
    from_flag = _json(_invoke("search", question, "--json", "--top-k", "2", "--rrf-k", "10"))
    assert len(from_variable["passages"]) == 4
    assert len(from_flag["passages"]) == 2


def test_unwritable_index_exits_2(tmp_path: Path, tiny_corpus: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file")
    proc = _run_qa(tmp_path, "index", "--corpus-dir", str(tiny_corpus),
                   "--index-dir", str(blocker / "index"))
    assert proc.returncode == 2
    _assert_one_error_line(proc.stderr, "not writable", str(blocker / "index"))


def test_locked_index_exits_3(capsys: pytest.CaptureFixture[str], built_tiny: Settings,
                              tiny_settings: Settings) -> None:
    shutil.copytree(built_tiny.index_dir, tiny_settings.index_dir)
    (tiny_settings.corpus_dir / "extra.txt").write_text("An extra document to index.")
    with store.build_lock(store.Layout(tiny_settings.index_dir)):
        status, out, err = _main(capsys, "index", "--corpus-dir", str(tiny_settings.corpus_dir),
                                 "--index-dir", str(tiny_settings.index_dir))
    assert status == 3
    assert out == ""
    _assert_one_error_line(err, "another `qa index` is running")


def test_bad_setting_in_environment_exits_2(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("QA_TOP_K", "abc")
    status, _, err = _main(capsys, "search", "anything", "--index-dir", str(tmp_path))
    assert status == 2
    _assert_one_error_line(err, "top_k", "QA_TOP_K")


def test_bad_flag_value_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = _main(capsys, "search", "anything", "-k", "99", "--index-dir", str(tmp_path))
    assert status == 2
    _assert_one_error_line(err, "top_k")


def test_search_without_index_exits_2(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    status, _, err = _main(capsys, "search", "water", "--index-dir", str(tmp_path / "none"),
                           "--mode", "lexical")
    assert status == 2
    _assert_one_error_line(err, "no index", "qa index")


@pytest.mark.parametrize("question", ["", "   ", "\t\n"])
def test_ask_empty_question_exits_2(capsys: pytest.CaptureFixture[str], built_tiny: Settings,
                                    question: str) -> None:
    status, out, err = _main(capsys, "ask", question, "--index-dir", str(built_tiny.index_dir))
    assert status == 2
    assert out == ""
    _assert_one_error_line(err, "question is empty")


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _main(capsys, "ask")
    assert status == 2
    assert "Missing argument 'QUESTION'" in err
    assert "Traceback" not in err


def test_successful_main_returns_normally(capsys: pytest.CaptureFixture[str]) -> None:
    main(["settings", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"top_k", "corpus_dir", "admin_token"}


def test_settings_shows_environment_and_masks_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_TOP_K", "9")
    monkeypatch.setenv("QA_ADMIN_TOKEN", "topsecret")
    result = _invoke("settings", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["top_k"]["value"] == 9
    assert rows["top_k"]["env"] == "QA_TOP_K"
    assert rows["admin_token"]["value"] == "***"
    assert "topsecret" not in result.output
    plain = _invoke("settings")
    assert "topsecret" not in plain.output
    assert any(line.split()[:2] == ["QA_TOP_K", "9"] for line in plain.output.splitlines())


def _json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(("question", "doc_id", "fact"), FACTS)
def test_search_json_puts_the_right_document_first(built_tiny: Settings, shared_model: Embedder,
                                                   question: str, doc_id: str,
                                                   fact: str) -> None:
    data = _json(_invoke("search", question, "--json", "--index-dir",
                         str(built_tiny.index_dir), "--encoder", "torch", "-k", "3"))
    assert data["question"] == question
    assert len(data["passages"]) == 3
    assert data["passages"][0]["doc_id"] == doc_id
    assert fact in " ".join(data["passages"][0]["text"].split())


def test_search_lexical_mode_and_document_filter(built_tiny: Settings,
                                                 shared_model: Embedder) -> None:
    data = _json(_invoke("search", "omul fishing quotas", "--json", "--mode", "lexical",
                         "--index-dir", str(built_tiny.index_dir)))
    assert data["passages"][0]["doc_id"] == "lake-baikal-accord"
    only = _json(_invoke("search", "water", "--json", "--doc", "silk-road-rail",
                         "--index-dir", str(built_tiny.index_dir), "--encoder", "torch"))
    assert only["passages"]
    assert {p["doc_id"] for p in only["passages"]} == {"silk-road-rail"}


@pytest.mark.parametrize(("question", "doc_id", "fact"), FACTS)
def test_ask_json_answers_from_the_right_document(built_tiny: Settings, shared_model: Embedder,
                                                  question: str, doc_id: str,
                                                  fact: str) -> None:
    data = _json(_invoke("ask", question, "--json", "--index-dir", str(built_tiny.index_dir),
                         "--encoder", "torch"))
    assert set(data) >= {"question", "answer", "citations", "passages", "index_version"}
    assert data["passages"][0]["doc_id"] == doc_id
    assert fact in " ".join(data["passages"][0]["text"].split())
    answer = data["answer"]
    assert answer["abstained"] is False
    assert answer["sentences"][0]["doc_id"] == doc_id
    assert data["citations"][0]["doc_id"] == doc_id


def test_ask_plain_text_output(built_tiny: Settings, shared_model: Embedder) -> None:
    result = _invoke("ask", FACTS[0][0], "--index-dir", str(built_tiny.index_dir),
                     "--encoder", "torch")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "Joint Water Commission" in lines[0]
    assert lines[0].endswith("[1]")
    assert any(line.startswith("[1] The Lake Baikal Accord on Water Security (lake-baikal-accord")
               for line in lines)
    assert "Passages:" in lines


def test_ask_unknown_document_exits_2(capsys: pytest.CaptureFixture[str], built_tiny: Settings,
                                      shared_model: Embedder) -> None:
    status, _, err = _main(capsys, "ask", "water", "--doc", "no-such-doc", "--index-dir",
                           str(built_tiny.index_dir), "--encoder", "torch")
    assert status == 2
    _assert_one_error_line(err, "no-such-doc")


def test_verify_reports_intact_then_names_the_damaged_file(
        capsys: pytest.CaptureFixture[str], built_tiny: Settings, tmp_path: Path) -> None:
    shutil.copytree(built_tiny.index_dir, tmp_path / "index")
    result = _invoke("verify", "--index-dir", str(tmp_path / "index"))
    assert result.exit_code == 0 and "is intact (3 documents" in result.output
    version = store.Layout(tmp_path / "index").current_version()
    damaged = tmp_path / "index" / "builds" / str(version) / "sentences.npy"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 3] ^= 0x01
    damaged.write_bytes(bytes(data))
    status, _, err = _main(capsys, "verify", "--index-dir", str(tmp_path / "index"))
    assert status == 2
    _assert_one_error_line(err, str(damaged), "checksum")
