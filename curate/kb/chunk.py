"""Split documents into passages of about 120-200 words, by heading and paragraph.

Why this size: a passage has to be long enough to carry one self-contained fact with its
context (what a finding is and how it looks) and short enough that its embedding is not
a blur of several topics. MiniLM also truncates its input at 256 word pieces, which is
about 180 words of medical prose, so longer passages would be embedded only in part; on
the retrieval benchmark a 150-word target scored slightly better than 180. Chunks never span two
documents, follow paragraph boundaries where they can, and each chunk after the first
repeats the last sentence(s) of the previous one (a small overlap) so that a fact split
across a boundary still appears whole in one chunk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from curate.kb.ingest import Document

MIN_WORDS = 120
TARGET_WORDS = 150
MAX_WORDS = 200
OVERLAP_WORDS = 25

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


@dataclass
class Chunk:
    """One passage of a document, the unit that is embedded and retrieved."""

    chunk_id: str
    doc_id: str
    index: int
    heading: str
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def sentences(text: str) -> list[str]:
    """Sentences by end punctuation followed by a capital or digit; good enough for
    prose written for the corpus (abbreviations like "e.g." are followed by lower case)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _split_long(paragraph: str, max_words: int) -> list[str]:
    """A paragraph longer than max_words as pieces of whole sentences (or, for one
    overlong sentence, of words) of at most max_words each."""
    pieces: list[str] = []
    cur: list[str] = []
    n = 0
    for sent in sentences(paragraph):
        words = sent.split()
        if len(words) > max_words:  # a run-on sentence: cut by words
            if cur:
                pieces.append(" ".join(cur))
                cur, n = [], 0
            pieces.extend(" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words))
            continue
        if n + len(words) > max_words and cur:
            pieces.append(" ".join(cur))
            cur, n = [], 0
        cur.append(sent)
        n += len(words)
    if cur:
        pieces.append(" ".join(cur))
    return pieces


def _tail(text: str, overlap_words: int) -> str:
    """The last sentence(s) of a chunk, at most overlap_words words, for the overlap."""
    if overlap_words <= 0:
        return ""
    out: list[str] = []
    n = 0
    for sent in reversed(sentences(text)):
        k = len(sent.split())
        if n + k > overlap_words:
            if not out:  # one long last sentence: keep its last words only
                out.append("… " + " ".join(sent.split()[-overlap_words:]))
            break
        out.insert(0, sent)
        n += k
    return " ".join(out)


def chunk_document(doc: Document, min_words: int = MIN_WORDS, target_words: int = TARGET_WORDS,
                   max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS) -> list[Chunk]:
    """The chunks of one document, ids `<doc_id>#<n>` in reading order.

    Paragraphs are packed greedily; the goal size is the document's length divided
    evenly into as few chunks as the target allows, so a 300-word document becomes two
    chunks of ~150 words rather than 250 + 50. A short tail is merged back.
    """
    blocks: list[tuple[str, str]] = []
    for sec in doc.sections:
        for para in sec.paragraphs:
            for piece in _split_long(para, max_words):
                blocks.append((sec.heading, piece))
    if not blocks:
        return []
    total = sum(len(b.split()) for _, b in blocks)
    n_goal = max(1, math.ceil(total / max(target_words, 1)))
    goal = min(max(total / n_goal, min_words), max_words)
    groups: list[tuple[str, list[str]]] = []
    queue = list(reversed(blocks))  # popped from the end, so in reading order
    heading, cur, n = blocks[0][0], [], 0
    while queue:
        head, text = queue.pop()
        k = len(text.split())
        if cur and n + k > max_words:
            if n < min_words:  # too small to close: fill up with whole sentences of the next block
                sents = sentences(text)
                take: list[str] = []
                while sents and n + len(" ".join(take + sents[:1]).split()) <= goal:
                    take.append(sents.pop(0))
                if take and sents:
                    cur.append(" ".join(take))
                    queue.append((head, " ".join(sents)))
                    groups.append((heading, cur))
                    cur, n = [], 0
                    continue
            groups.append((heading, cur))
            cur, n = [], 0
        if not cur:
            heading = head
        cur.append(text)
        n += k
        if n >= goal:
            groups.append((heading, cur))
            cur, n = [], 0
    if cur:
        tail_words = sum(len(t.split()) for t in cur)
        if groups and tail_words < min_words // 2 and \
                sum(len(t.split()) for t in groups[-1][1]) + tail_words <= max_words + overlap_words:
            groups[-1][1].extend(cur)
        else:
            groups.append((heading, cur))
    chunks: list[Chunk] = []
    prev = ""
    for i, (head, paras) in enumerate(groups):
        body = "\n\n".join(paras)
        lead = _tail(prev, overlap_words) if i else ""
        text = f"{lead}\n\n{body}" if lead else body
        chunks.append(Chunk(f"{doc.doc_id}#{i}", doc.doc_id, i, head, text))
        prev = body
    return chunks


def chunk_documents(docs: list[Document], **kwargs: int) -> list[Chunk]:
    return [c for d in docs for c in chunk_document(d, **kwargs)]
