"""One published index version as a serving process holds it: the reader and everything derived
from the build (the compiled acronym table, the author matcher, whether an older pipeline built
it), made once when the version is loaded and never changed afterwards.

The service swaps a whole snapshot in one assignment and each request keeps the snapshot it
started with, so no request reads one version's passages with another version's acronyms. Never
reads files itself (``store`` does) and never ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from qa import store
from qa.acronyms import AcronymTable
from qa.attribution import AuthorMatcher, author_table


@dataclass(frozen=True)
class Snapshot:
    reader: store.IndexReader
    acronyms: AcronymTable
    authors: AuthorMatcher
    built_by: object  # the pipeline version in the manifest (None for the oldest indexes)

    @classmethod
    def of(cls, reader: store.IndexReader) -> Snapshot:
        """Derive everything a question needs from ``reader`` (once per version)."""
        return cls(reader=reader, acronyms=AcronymTable(reader.acronyms()),
                   authors=author_table(reader.documents()),
                   built_by=reader.manifest.get("params", {}).get("pipeline"))

    @property
    def version(self) -> str:
        return self.reader.version
