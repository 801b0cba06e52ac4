"""A sample's text as conversation turns, the shape every VLM instruction format shares.

The caption becomes the first turn (a describe-the-image request, the prompt picked from
a few phrasings by the sample id so a model does not learn one fixed sentence), then one
turn per VQA item in the record's order. A multiple-choice item shows its options in the
question unless the question already names them all; the answer is the record's answer
text as written, so an export maps back to the manifest one to one.
"""

from __future__ import annotations

import zlib

IMAGE_TOKEN = "<image>"

CAPTION_PROMPTS = (
    "Describe this image.",
    "Describe the findings in this medical image.",
    "What does this image show?",
    "Write a short report of this image.",
    "Give a detailed description of this image.",
)


def caption_prompt(sample_id: str, prompt: str | None = None) -> str:
    """The fixed prompt if given, else one of CAPTION_PROMPTS chosen by the sample id."""
    if prompt:
        return prompt
    return CAPTION_PROMPTS[zlib.crc32(sample_id.encode()) % len(CAPTION_PROMPTS)]


def question_text(qa: dict) -> str:
    """The question as asked, with its options when it has them and does not name them."""
    question = (qa.get("question") or "").strip()
    options = [o for o in (qa.get("options") or []) if o]
    lowered = question.lower()
    if options and not all(o.lower() in lowered for o in options):
        question += "\nOptions: " + "; ".join(options)
    return question


def turns(record: dict, prompt: str | None = None, caption: bool = True,
          vqa: bool = True) -> list[tuple[str, str]]:
    """[(user text, assistant text), ...] for one record; empty when it has no text."""
    out = []
    text = (record.get("caption") or "").strip()
    if caption and text:
        out.append((caption_prompt(record["sample_id"], prompt), text))
    if vqa:
        for qa in record.get("vqa") or []:
            question, answer = question_text(qa), (qa.get("answer") or "").strip()
            if question and answer:
                out.append((question, answer))
    return out


def with_image(text: str) -> str:
    """The first user turn: the image placeholder on its own line, then the text."""
    return f"{IMAGE_TOKEN}\n{text}"
