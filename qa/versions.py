"""The index versions kept on disk, for the admin page: each published build's time and counts
(from its manifest) and which one ``CURRENT`` names. Reads manifests only, through ``store``."""

from __future__ import annotations

from typing import Any

from qa import store
from qa.errors import IndexCorruptError
from qa.store.layout import read_manifest


def kept_versions(layout: store.Layout) -> list[dict[str, Any]]:
    """Newest first: ``{"version", "created", "documents", "chunks", "current"}``; a build whose
    manifest cannot be read is listed with ``"damaged": True``."""
    if not layout.builds.is_dir():
        return []
    current = layout.current_version()
    out = []
    for path in sorted(layout.builds.iterdir(), key=lambda p: p.name, reverse=True):
        if path.name.startswith(".") or not path.is_dir():
            continue
        row: dict[str, Any] = {"version": path.name, "current": path.name == current,
                               "created": None, "documents": None, "chunks": None,
                               "damaged": False}
        try:
            manifest = read_manifest(path)
        except IndexCorruptError:
            row["damaged"] = True
        else:
            counts = manifest.get("counts", {})
            row.update(created=manifest.get("created"), documents=counts.get("documents"),
                       chunks=counts.get("chunks"))
        out.append(row)
    return out
