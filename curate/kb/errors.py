"""Named errors of the knowledge base (curate.model.errors is shared and not extended here)."""

from __future__ import annotations

from curate.model.errors import CurateError


class KnowledgeBaseError(CurateError):
    """A knowledge base could not be built, opened or queried as asked."""


class CorpusError(KnowledgeBaseError):
    """A corpus file could not be read as its format (bad front matter, bad JSON line)."""


class ModelMismatch(KnowledgeBaseError):
    """The query embedder is not the model the index was built with: its vectors live in
    another space, so scores would be meaningless rather than merely worse."""
