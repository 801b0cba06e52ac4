"""Retrieval for one sample: from a sample context to a few grounding passages.

The context is the dict `curate.unit.pipeline.sample_context` builds (modality, anatomy,
plane, window, rois with label/finding/intensity, labels, image_labels). One query is
made per distinct finding (at most `MAX_FINDINGS`), because a single query that mixes,
say, pneumothorax and pleural effusion lands between two topics and finds neither well.
Each finding is first searched among documents tagged with that finding code in their
front matter (exact, so a tagged document always wins), and by similarity alone when no
document carries the tag, so sources declared later still get the nearest passages.
Findings take turns, so every finding gets its best passage before any gets a second.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from curate.unit.text.templates import INTENSITY_WORDS, modality_name

if TYPE_CHECKING:
    from curate.kb.index import KnowledgeBase, Passage

MAX_FINDINGS = 4
GENERIC_INTENSITY = {"hyper": "bright", "hypo": "dark", "iso": "isointense"}
_SLUG = re.compile(r"[^a-z0-9]+")


def slug(label: str) -> str:
    """A label as a finding code: "Lung Opacity" -> "lung_opacity"."""
    return _SLUG.sub("_", label.lower()).strip("_")


def words(code: str) -> str:
    return code.replace("_", " ").strip()


def _intensity_word(modality: str | None, code: str | None) -> str:
    if code not in ("hyper", "hypo", "iso"):
        return ""
    table = INTENSITY_WORDS.get((modality or "").upper(), GENERIC_INTENSITY)
    return table[code]


def _where(ctx: dict) -> str:
    mod = modality_name(ctx.get("modality"))
    anatomy = ctx.get("anatomy")
    return f"{mod} of the {anatomy}" if anatomy else mod


def sample_queries(ctx: dict) -> list[tuple[str, str | None]]:
    """(query text, finding code or None) pairs for a sample context, most relevant
    first: one per finding in the annotated ROIs, then the context's `findings` (if the
    caller adds the record's normalised findings) or else its raw `image_labels`; a view
    with none gets one query about the modality, region and the source's label set."""
    where = _where(ctx)
    findings: dict[str, dict[str, Any]] = {}
    for roi in ctx.get("rois") or []:
        code = slug(str(roi.get("finding") or roi.get("label") or ""))
        if code and code not in findings:
            findings[code] = {"label": str(roi.get("label") or ""),
                              "intensity": _intensity_word(ctx.get("modality"), roi.get("intensity"))}
    # normalised findings (as in the record's `findings`) when the caller adds them;
    # otherwise the raw image-level labels, which usually slug to the same codes
    extra = ctx["findings"] if "findings" in ctx else ctx.get("image_labels")
    for label in extra or []:
        if slug(str(label)):
            findings.setdefault(slug(str(label)), {"label": "" if "findings" in ctx else str(label),
                                                   "intensity": ""})
    queries: list[tuple[str, str | None]] = []
    for code, info in list(findings.items())[:MAX_FINDINGS]:
        name = words(code)
        label = info["label"]
        if label and not set(slug(label).split("_")) <= set(code.split("_")):  # "ET", "cancer"
            name = f"{name} ({label})"
        text = f"{name} on {where}"
        if info["intensity"]:
            text += f", {info['intensity']} relative to surrounding tissue"
        queries.append((text, code))
    if not queries:
        text = where
        window = ctx.get("window") or {}
        if window.get("method") == "ct_window" and window.get("name"):
            text += f" in the {words(str(window['name']))} window"
        labels = [words(str(x)) for x in ctx.get("labels") or []][:8]
        if labels:
            text += "; structures annotated in this source: " + ", ".join(labels)
        queries.append((text, None))
    return queries


def retrieve_for_sample(kb: KnowledgeBase, ctx: dict, k: int = 3) -> list[Passage]:
    """Up to k passages from distinct documents for one sample context."""
    queries = sample_queries(ctx)
    vectors = kb.embedder.embed_queries([q for q, _ in queries])
    ranked: list[list[Passage]] = []
    for (_, code), vec in zip(queries, vectors, strict=True):
        hits = kb.search_vector(vec, k, {"findings": code}, unique_docs=True) if code else []
        if len(hits) < k:  # fill with the nearest untagged documents
            have = {h.doc_id for h in hits}
            hits += [h for h in kb.search_vector(vec, k + len(hits), None, unique_docs=True)
                     if h.doc_id not in have][:k - len(hits)]
        ranked.append(hits)
    out: list[Passage] = []
    seen: set[str] = set()
    for rank in range(k):
        for hits in ranked:
            if rank < len(hits) and hits[rank].doc_id not in seen and len(out) < k:
                seen.add(hits[rank].doc_id)
                out.append(hits[rank])
    return out


@lru_cache(maxsize=1)
def default_kb() -> KnowledgeBase:
    """The packaged corpus embedded in memory with the default model, once per process."""
    from curate.kb.index import KnowledgeBase, default_corpus_dir

    return KnowledgeBase.from_corpus(default_corpus_dir())


def query_for_sample(ctx: dict, k: int = 3, kb: KnowledgeBase | None = None) -> list[Passage]:
    """Grounding passages for a sample context, from `kb` (an opened index) or, when not
    given, from the packaged corpus embedded in memory with the default model."""
    return retrieve_for_sample(kb if kb is not None else default_kb(), ctx, k)
