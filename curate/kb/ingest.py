"""Read a knowledge corpus folder: Markdown with YAML front matter, JSONL and plain text.

Every format becomes the same `Document`, so chunking, embedding and the index never
care where a text came from. Reading is deterministic (files in sorted order, no clock),
so the same folder always gives the same documents and the same index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.kb.errors import CorpusError

MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}
TEXT_SUFFIXES = {".txt"}
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | JSONL_SUFFIXES | TEXT_SUFFIXES

# front-matter keys that become filterable tag lists in the index
TAG_KEYS = ("modality", "anatomy", "findings", "topics")
REFERENCE_HEADINGS = {"references", "reference", "sources", "bibliography", "further reading"}

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


@dataclass
class Section:
    """A run of paragraphs under one heading path (e.g. "Imaging appearance")."""

    heading: str
    paragraphs: list[str]


@dataclass
class Document:
    """One source text with its metadata; the unit the index reports as `doc_id`."""

    doc_id: str
    title: str
    sections: list[Section]
    references: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # path relative to the corpus folder, with ":line" for JSONL
    format: str = "markdown"

    def tags(self, key: str) -> list[str]:
        """A front-matter tag as a lower-case list (a scalar becomes one item)."""
        value = self.metadata.get(key)
        if value is None:
            return []
        items = value if isinstance(value, list | tuple) else [value]
        return [str(v).strip().lower() for v in items if str(v).strip()]

    @property
    def words(self) -> int:
        return sum(len(p.split()) for s in self.sections for p in s.paragraphs)


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs; list items stay one paragraph each so that a
    bulleted list can be split between chunks at item boundaries."""
    paras: list[str] = []
    cur: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _LIST_ITEM.match(line):
            if cur:
                paras.append(" ".join(cur))
            cur = []
            if not stripped:
                continue
        cur.append(stripped)  # a new item, or the continuation of a paragraph or item
    if cur:
        paras.append(" ".join(cur))
    return paras


def _reference_items(lines: list[str]) -> list[str]:
    items = [_LIST_ITEM.sub("", p, count=1).strip() for p in _paragraphs(lines)]
    return [i for i in items if i]


def parse_markdown(text: str, default_id: str, source: str = "") -> Document:
    """A Markdown document: optional YAML front matter, `#` headings, a References
    section (its items become `references`, not chunk text, so citations never crowd
    out the content that answers a query)."""
    meta: dict[str, Any] = {}
    m = _FRONT_MATTER.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as exc:
            raise CorpusError(f"{source or default_id}: front matter is not valid YAML: {exc}") from exc
        if not isinstance(meta, dict):
            raise CorpusError(f"{source or default_id}: front matter must be a YAML mapping")
        text = text[m.end():]
    title = str(meta.get("title") or "")
    sections: list[Section] = []
    references: list[str] = []
    heading, buf, in_refs = "", [], False

    def flush() -> None:
        if in_refs:
            references.extend(_reference_items(buf))
        else:
            paras = _paragraphs(buf)
            if paras:
                sections.append(Section(heading, paras))

    for line in text.splitlines():
        h = _HEADING.match(line)
        if h:
            flush()
            buf = []
            level, name = len(h.group(1)), h.group(2).strip()
            if level == 1 and not title:
                title, heading, in_refs = name, "", False
                continue
            in_refs = name.lower().rstrip(":") in REFERENCE_HEADINGS
            heading = name
            continue
        buf.append(line)
    flush()
    extra_refs = meta.get("references")
    if isinstance(extra_refs, list):
        references = [str(r) for r in extra_refs] + references
    doc_id = str(meta.get("id") or default_id)
    return Document(doc_id=doc_id, title=title or doc_id, sections=sections,
                    references=references, metadata=meta, source=source, format="markdown")


def parse_text(text: str, default_id: str, source: str = "") -> Document:
    """Plain text: paragraphs separated by blank lines; a short first line is the title."""
    lines = text.splitlines()
    title = default_id.replace("_", " ").replace("-", " ")
    if lines and lines[0].strip() and len(lines[0].split()) <= 12 and (
            len(lines) == 1 or not lines[1].strip()):
        title, lines = lines[0].strip(), lines[1:]
    paras = _paragraphs(lines)
    return Document(doc_id=default_id, title=title,
                    sections=[Section("", paras)] if paras else [], source=source, format="text")


def _jsonl_document(line: str, n: int, stem: str, source: str) -> Document | None:
    if not line.strip():
        return None
    where = f"{source or stem}:{n}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise CorpusError(f"{where}: each line must be an object with a string 'text' field")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise CorpusError(f"{where}: 'metadata' must be an object")
    refs = obj.get("references") or meta.get("references") or []
    doc_id = str(obj.get("id") or f"{stem}-{n}")
    paras = _paragraphs(obj["text"].splitlines())
    return Document(doc_id=doc_id, title=str(obj.get("title") or doc_id),
                    sections=[Section("", paras)] if paras else [],
                    references=[str(r) for r in refs], metadata=dict(meta),
                    source=where, format="jsonl")


def parse_jsonl(text: str, stem: str, source: str = "") -> list[Document]:
    """One document per line: `text` (required), optional `id`, `title`, `metadata`
    (tags such as modality/anatomy/findings go here) and `references`."""
    docs = (_jsonl_document(line, n, stem, source) for n, line in enumerate(text.splitlines(), 1))
    return [d for d in docs if d is not None]


def iter_jsonl(path: Path, source: str = "") -> Iterator[Document]:
    """The documents of a JSONL file, one line at a time (the file is never read whole)."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            doc = _jsonl_document(line, n, path.stem, source or path.name)
            if doc is not None:
                yield doc


def corpus_files(corpus: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(path, relative name) of every file a corpus folder (or a single .jsonl/.md/.txt
    file) contributes, sorted, and the files skipped (unsupported suffix, README-like)."""
    corpus = Path(corpus)
    if corpus.is_file():
        if corpus.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise CorpusError(f"{corpus}: a corpus file must be .jsonl, .md or .txt")
        return [(corpus, corpus.name)], []
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder not found: {corpus}")
    files, skipped = [], []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        rel = path.relative_to(corpus).as_posix()
        if path.suffix.lower() not in SUPPORTED_SUFFIXES or path.name.startswith((".", "_")) or \
                path.stem.upper() == "README":
            skipped.append(rel)
        else:
            files.append((path, rel))
    return files, skipped


def iter_corpus(files: list[tuple[Path, str]]) -> Iterator[Document]:
    """Every document of `files` (from `corpus_files`) in order, streamed: a JSONL file
    of millions of lines is read line by line; Markdown and text files are small."""
    for path, rel in files:
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            yield from iter_jsonl(path, rel)
        elif suffix in MARKDOWN_SUFFIXES:
            yield parse_markdown(path.read_text(encoding="utf-8"), path.stem, rel)
        else:
            yield parse_text(path.read_text(encoding="utf-8"), path.stem, rel)


def read_corpus(corpus_dir: Path) -> tuple[list[Document], list[str]]:
    """All documents under `corpus_dir` (recursively, sorted) and the files skipped
    (unsupported suffix, README-like files), in memory: for small corpora and tests;
    `curate kb build` streams with `iter_corpus`. Duplicate doc ids are errors: the
    index reports hits by doc id, so two documents must never share one."""
    files, skipped = corpus_files(Path(corpus_dir))
    docs = list(iter_corpus(files))
    seen: dict[str, str] = {}
    for d in docs:
        if d.doc_id in seen:
            raise CorpusError(f"duplicate document id {d.doc_id!r} in {seen[d.doc_id]} and {d.source}")
        seen[d.doc_id] = d.source
    return docs, skipped
