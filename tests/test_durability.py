"""A build is durable before it is published: its files and the directory entries that name them
are fsynced before the pointer switch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.service import QAService


def test_build_directory_entries_are_fsynced_before_the_pointer_switch(
        tiny_settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    version = QAService(tiny_settings, embedder=embedder).index().version
    layout = store.Layout(tiny_settings.index_dir)
    tmp = str(layout.builds / f".tmp-{version}")
    final = str(layout.build_dir(version))

    def at(kind: str, text: str) -> int:
        return next(i for i, (k, what) in enumerate(events) if k == kind and what == text)

    rename = at("replace", f"{tmp} -> {final}")
    switch = next(i for i, (k, what) in enumerate(events)
                  if k == "replace" and what.endswith(f"-> {layout.current}"))
    # every file of the build, then the directory holding their names, before the rename
    for name in os.listdir(final):
        assert at("fsync", f"{tmp}/{name}") < rename, name
    assert at("fsync", tmp) < rename
    # the rename itself (an entry of builds/) before the pointer names the build
    assert rename < at("fsync", str(layout.builds)) < switch
    assert switch < at("fsync", str(layout.root))


def test_a_directory_that_cannot_be_fsynced_fails_the_build(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).is_dir():
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        store.fsync_dir(tmp_path)
