"""Settings: defaults, QA_* environment, explicit overrides, validation and masking."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from qa.config import (
    BUNDLED_MODEL,
    CHECKOUT_ROOT,
    DATA_ROOT_KIND,
    TEMPLATES_DIR,
    Settings,
    _checkout_root,
    describe_settings,
)
from qa.errors import ConfigError


def test_defaults_without_environment() -> None:
    s = Settings.load(environ={})
    # The tests run from the checkout, so the defaults are the checkout's folders.
    assert Path(__file__).resolve().parent.parent == CHECKOUT_ROOT
    assert DATA_ROOT_KIND == "checkout"
    assert s.corpus_dir == CHECKOUT_ROOT / "corpus"
    assert s.index_dir == CHECKOUT_ROOT / "index"
    assert s.model == BUNDLED_MODEL
    assert s.encoder == "auto"
    assert (s.chunk_tokens, s.chunk_overlap, s.top_k, s.candidates) == (200, 40, 5, 50)
    assert (s.rrf_k, s.max_answer_sentences, s.cache_size, s.rate_limit) == (60, 2, 256, 0)
    assert s.abstain_threshold == pytest.approx(-1.0)  # the calibrator's operating point
    assert s.admin_token == ""
    assert s == Settings()


def test_environment_overrides_defaults() -> None:
    env = {"QA_TOP_K": "7", "QA_CORPUS_DIR": "/data/docs", "QA_ENCODER": "torch",
           "QA_ABSTAIN_THRESHOLD": "0.5", "QA_ADMIN_TOKEN": "s3cret", "UNRELATED": "x"}
    s = Settings.load(environ=env)
    assert s.top_k == 7
    assert s.corpus_dir == Path("/data/docs")
    assert s.encoder == "torch"
    assert s.abstain_threshold == pytest.approx(0.5)
    assert s.admin_token == "s3cret"
    assert s.chunk_tokens == 200  # untouched


def test_empty_environment_value_means_default() -> None:
    assert Settings.load(environ={"QA_TOP_K": ""}).top_k == 5


def test_overrides_beat_environment() -> None:
    s = Settings.load({"top_k": 3, "index_dir": "/tmp/x", "model": None},
                      environ={"QA_TOP_K": "9", "QA_MODEL": "some/model"})
    assert s.top_k == 3
    assert s.index_dir == Path("/tmp/x")
    assert s.model == "some/model"  # a None override leaves the environment value


@pytest.mark.parametrize(("env", "key"), [
    ({"QA_TOP_K": "abc"}, "top_k"),
    ({"QA_TOP_K": "0"}, "top_k"),
    ({"QA_TOP_K": "21"}, "top_k"),
    ({"QA_TOP_K": "2.5"}, "top_k"),
    ({"QA_CHUNK_TOKENS": "16"}, "chunk_tokens"),
    ({"QA_ABSTAIN_THRESHOLD": "1.5"}, "abstain_threshold"),
    ({"QA_DENSE_WEIGHT": "heavy"}, "dense_weight"),
    ({"QA_ENCODER": "cuda"}, "encoder"),
])
def test_bad_environment_value_names_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=env)
    message = str(info.value)
    assert key in message
    assert f"QA_{key.upper()}" in message


@pytest.mark.parametrize(("overrides", "key"), [
    ({"top_k": "abc"}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"candidates": 4}, "candidates"),
    ({"max_answer_sentences": 4}, "max_answer_sentences"),
])
def test_bad_override_names_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.load(overrides, environ={})


def test_integral_float_is_accepted_for_int() -> None:
    assert Settings.load({"top_k": 4.0}, environ={}).top_k == 4


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'top_kk'"):
        Settings.load({"top_kk": 3}, environ={})


def test_replace_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings().replace(colour="red")


@pytest.mark.parametrize(("tokens", "overlap"), [(100, 100), (64, 200)])
def test_overlap_must_be_smaller_than_chunk(tokens: int, overlap: int) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load({"chunk_tokens": tokens, "chunk_overlap": overlap}, environ={})
    assert "chunk_overlap" in str(info.value)
    assert "chunk_tokens" in str(info.value)


def test_overlap_check_applies_to_environment_too() -> None:
    with pytest.raises(ConfigError, match="chunk_overlap"):
        Settings.load(environ={"QA_CHUNK_TOKENS": "50", "QA_CHUNK_OVERLAP": "50"})


def test_replace_validates_and_returns_copy() -> None:
    s = Settings()
    t = s.replace(top_k="8")
    assert t.top_k == 8
    assert s.top_k == 5
    with pytest.raises(ConfigError, match="top_k"):
        s.replace(top_k=100)


def test_public_masks_admin_token() -> None:
    shown = Settings.load({"admin_token": "hunter2"}, environ={}).public()
    assert shown["admin_token"] == "***"
    assert "hunter2" not in repr(shown)
    assert Settings.load(environ={}).public()["admin_token"] == ""


def test_public_is_plain_json_values() -> None:
    shown = Settings.load({"corpus_dir": "/c"}, environ={}).public()
    assert shown["corpus_dir"] == "/c"
    assert set(shown) == {f.name for f in fields(Settings)}
    assert all(isinstance(v, str | int | float) for v in shown.values())


def test_describe_settings_covers_every_field() -> None:
    rows = describe_settings()
    assert [r["name"] for r in rows] == [f.name for f in fields(Settings)]
    for row in rows:
        assert row["env"] == f"QA_{row['name'].upper()}"
        assert row["help"]


def test_a_checkout_is_recognised_and_site_packages_is_not(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "qa"
    package.mkdir(parents=True)
    assert _checkout_root(package) is None
    (tmp_path / "site-packages" / "pyproject.toml").write_text("")
    assert _checkout_root(package) is None  # a pyproject.toml alone is not this project's layout
    (tmp_path / "site-packages" / "templates").mkdir()
    assert _checkout_root(package) == tmp_path / "site-packages"


def test_templates_are_found_in_the_checkout() -> None:
    assert (TEMPLATES_DIR / "index.html").is_file()


def test_relative_directories_resolve_against_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.load(environ={"QA_CORPUS_DIR": "docs", "QA_INDEX_DIR": "built/index"})
    assert s.corpus_dir == tmp_path / "docs"
    assert s.index_dir == tmp_path / "built" / "index"
    assert Settings.load({"corpus_dir": Path("other")}, environ={}).corpus_dir == tmp_path / "other"
