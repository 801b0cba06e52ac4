"""Parse and check a model's answer: the schema, then that its measurements are grounded.

Structured output makes the JSON shape likely but not certain (json_object fallback,
servers that ignore the schema), so every answer is validated with pydantic here. Sizes
are the claims a reader trusts most and a model invents most easily, so a size in mm, mm²
or cm that matches no computed fact rejects the answer as `ungrounded`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from curate.describe.backends.types import LEVEL_KEYS

MAX_LEVEL_CHARS = 4000


class Levels(BaseModel):
    """The five MedTrinity levels as the model must return them (describe-vN.schema.json)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    modality: StrictStr = Field(min_length=1, max_length=MAX_LEVEL_CHARS)
    organ: StrictStr = Field(min_length=1, max_length=MAX_LEVEL_CHARS)
    roi: StrictStr = Field(min_length=1, max_length=MAX_LEVEL_CHARS)
    texture: StrictStr = Field(max_length=MAX_LEVEL_CHARS)
    relations: StrictStr = Field(max_length=MAX_LEVEL_CHARS)


class AnswerError(Exception):
    """An answer that cannot be used; `kind` is the failure class counted in run.json."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_SIZE = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(mm²|mm2|mm\^2|square millimet(?:er|re)s?|mm|millimet(?:er|re)s?|"
    r"cm²|cm2|cm\^2|square centimet(?:er|re)s?|cm|centimet(?:er|re)s?)(?![A-Za-z0-9])",
    re.I)


def validated(text: str | None, model: type[BaseModel]) -> BaseModel:
    """An answer's JSON (a code fence around it tolerated) checked against `model`, or
    AnswerError(malformed) saying what is wrong."""
    if text is None or not text.strip():
        raise AnswerError("malformed", "empty answer")
    body = text.strip()
    fenced = _FENCE.match(body)  # some servers wrap JSON in a code fence despite the format
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AnswerError("malformed", f"not JSON ({exc.msg} at {exc.pos})") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "answer"
        raise AnswerError("malformed", f"schema: {where}: {first['msg']}") from None


def parse_levels(text: str | None) -> dict[str, str]:
    """The five levels from an answer's text, or AnswerError(malformed)."""
    levels = validated(text, Levels)
    return {k: getattr(levels, k) for k in LEVEL_KEYS}


def _fact_sizes(roi_facts: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    lengths = [float(r["longest_diameter_mm"]) for r in roi_facts
               if r.get("longest_diameter_mm") is not None]
    areas = [float(r["area_mm2"]) for r in roi_facts if r.get("area_mm2") is not None]
    return lengths, areas


def _close(value: float, facts: list[float]) -> bool:
    # facts are sent rounded to 0.1; accept the value rounded to an integer as well
    return any(abs(value - f) <= max(0.55, 0.01 * abs(f)) for f in facts)


def ungrounded_sizes(levels: dict[str, str], roi_facts: list[dict[str, Any]]) -> list[str]:
    """Size statements in the text that match no computed fact (cm converted to mm)."""
    lengths, areas = _fact_sizes(roi_facts)
    bad = []
    for text in levels.values():
        for m in _SIZE.finditer(text):
            value = float(m.group(1).replace(",", "."))
            unit = m.group(2).lower()
            is_area = any(s in unit for s in ("²", "2", "^2", "square"))
            scale = 1.0 if unit.startswith(("mm", "milli", "square milli")) else 10.0
            if is_area:
                ok = _close(value * scale * scale, areas)
            else:
                ok = _close(value * scale, lengths) or _close(value * scale, areas)
            if not ok:
                bad.append(m.group(0))
    return bad


def check_answer(text: str | None, roi_facts: list[dict[str, Any]],
                 check_sizes: bool = True) -> dict[str, str]:
    """Parse, validate and (optionally) ground-check one answer; AnswerError when unusable."""
    levels = parse_levels(text)
    if check_sizes:
        bad = ungrounded_sizes(levels, roi_facts)
        if bad:
            raise AnswerError("ungrounded", "sizes not in the facts: " + ", ".join(bad[:5]))
    return levels
