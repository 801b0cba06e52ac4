"""A knowledge base of short, referenced medical passages for grounding sample text.

Corpus folder or JSONL file (Markdown with YAML front matter, JSONL, plain text; streamed,
so millions of passages build in flat memory) -> chunks of about
120-250 words -> embeddings (all-MiniLM-L6-v2 by default, offline; any local
sentence-transformers or MedCPT-style folder instead) -> a LanceDB table (or Parquet
with exact numpy search). See docs/knowledge.md.

    from curate.kb import build_kb, KnowledgeBase, default_corpus_dir
    build_kb(default_corpus_dir(), Path("out/kb"))
    kb = KnowledgeBase.open("out/kb")
    kb.query("crescent-shaped extra-axial blood", k=3)
    kb.query_for_sample(ctx, k=3)   # ctx: curate.unit.pipeline.sample_context(...)
"""

from curate.kb.chunk import Chunk, chunk_document, chunk_documents
from curate.kb.commands import kb_build_command, kb_query_command
from curate.kb.embed import (
    DEFAULT_MODEL,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    get_embedder,
)
from curate.kb.errors import CorpusError, KnowledgeBaseError, ModelMismatch
from curate.kb.index import KnowledgeBase, Passage, build_kb, corpus_info, default_corpus_dir
from curate.kb.ingest import Document, Section, corpus_files, iter_corpus, read_corpus
from curate.kb.sample import query_for_sample, sample_queries

__all__ = [
    "DEFAULT_MODEL", "Chunk", "CorpusError", "Document", "Embedder", "HashingEmbedder",
    "KnowledgeBase", "KnowledgeBaseError", "ModelMismatch", "Passage", "Section",
    "SentenceTransformerEmbedder", "build_kb", "chunk_document", "chunk_documents", "corpus_files",
    "corpus_info", "iter_corpus",
    "default_corpus_dir", "get_embedder", "kb_build_command", "kb_query_command",
    "query_for_sample", "read_corpus", "sample_queries",
]
