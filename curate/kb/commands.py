"""What `curate kb build` and `curate kb query` do, as functions returning the text to
print, so the CLI stays a thin wrapper and the output can be tested without it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from curate.kb.index import KnowledgeBase, build_kb, default_corpus_dir


def kb_build_command(corpus_dir: str | Path | None, out: str | Path,
                     model: str | None = None, license: str | None = None,
                     backend: str = "auto", batch_size: int = 2048, device: str = "cpu") -> str:
    """Build an index (the packaged corpus when `corpus_dir` is None); a summary."""
    corpus = Path(corpus_dir) if corpus_dir else default_corpus_dir()
    stats = build_kb(corpus, Path(out), model, backend=backend, license=license,
                     batch_size=batch_size, device=device)
    rate = stats["chunks"] / stats["seconds"] if stats["seconds"] else 0.0
    lines = [f"knowledge base written to {stats['path']}",
             f"  corpus:   {corpus}",
             f"  licence:  {license or 'not stated (pass --license; the data card will say unknown)'}",
             f"  indexed:  {stats['documents']} documents, {stats['chunks']} chunks, "
             f"{stats['words']} words",
             f"  model:    {stats['model']} (dim {stats['dim']}), backend {stats['backend']}"
             + (", IVF-PQ index" if stats["ann_index"] else ""),
             f"  time:     {stats['seconds']:.1f} s ({rate:.0f} chunks/s)"]
    if stats["skipped_files"]:
        lines.append(f"  skipped:  {', '.join(stats['skipped_files'])} "
                     f"(README, hidden or not .md/.jsonl/.txt)")
    return "\n".join(lines)


def kb_query_command(kb_path: str | Path, text: str, k: int = 5, width: int = 100) -> str:
    """The k best passages for `text`, with scores, source and first reference."""
    kb = KnowledgeBase.open(kb_path)
    hits = kb.query(text, k=k)
    if not hits:
        return f"no passages found for {text!r}"
    out = [f"query: {text!r}  ({kb.model_name}, {len(kb)} chunks)"]
    for i, p in enumerate(hits, 1):
        where = f"{p.title} › {p.heading}" if p.heading else p.title
        out.append(f"{i}. [{p.score:.3f}] {p.id}  {where}")
        excerpt = " ".join(p.text.split())
        excerpt = excerpt if len(excerpt) <= 3 * width else excerpt[:3 * width].rsplit(" ", 1)[0] + " …"
        out.extend(textwrap.wrap(excerpt, width, initial_indent="   ", subsequent_indent="   "))
        if p.references:
            out.append(f"   ref: {p.references[0]}" + (f" (+{len(p.references) - 1} more)"
                                                        if len(p.references) > 1 else ""))
    return "\n".join(out)
