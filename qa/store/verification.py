"""Checks of a build's files against the checksums its manifest records: whole-file sha256, or,
for large files at load time, exact size plus a digest of sampled blocks. The digests are
computed here for the writer too, so that writing and checking cannot disagree.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qa.errors import IndexCorruptError

# Loading a build checks every file against the manifest. Files up to this size are hashed
# whole; larger ones (the vectors of a big index) are checked by size and a sampled digest so
# that loading stays fast, and are hashed whole at publish time and by `qa verify`.
FULL_CHECK_BYTES = 64 << 20
SAMPLE_BLOCKS = 256
SAMPLE_BLOCK_BYTES = 4096
SAMPLE_EDGE_BYTES = 1 << 20


def verify_build(build_dir: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Check a build's files against its manifest; raise IndexCorruptError naming the first bad one.

    With ``full`` every file is hashed whole. Otherwise files up to FULL_CHECK_BYTES are hashed
    whole and larger ones are checked by exact size and a digest of sampled blocks (first and last
    MiB plus evenly spaced 4 KiB blocks): that catches truncation, a damaged header and most
    overwrites in milliseconds; `qa verify` does the full check.
    """
    samples = manifest.get("samples", {})
    for name, digest in manifest.get("files", {}).items():
        path = build_dir / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing: run `qa index --full`")
        sample = samples.get(name)
        size = path.stat().st_size
        if sample and size != sample.get("size"):
            raise IndexCorruptError(
                f"{path} is damaged ({size} bytes, manifest says {sample.get('size')}): "
                "run `qa index --full`")
        if full or not sample or size <= FULL_CHECK_BYTES:
            ok = file_sha256(path) == digest
        else:
            ok = sampled_sha256(path) == sample.get("sha256")
        if not ok:
            raise IndexCorruptError(f"{path} is damaged (checksum mismatch): run `qa index --full`")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_sha256(path: Path) -> str:
    """sha256 of the size, the first and last MiB and SAMPLE_BLOCKS evenly spaced blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    blocks = [(0, SAMPLE_EDGE_BYTES), (max(0, size - SAMPLE_EDGE_BYTES), SAMPLE_EDGE_BYTES)]
    blocks += [(offset, SAMPLE_BLOCK_BYTES)
               for offset in range(0, size, max(1, size // SAMPLE_BLOCKS))]
    with open(path, "rb") as fh:
        for offset, length in blocks:
            fh.seek(offset)
            digest.update(fh.read(length))
    return digest.hexdigest()
