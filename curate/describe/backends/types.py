"""The request and result types every generator shares, and the run accounting.

A request carries one sample's context (as built by `curate.unit.pipeline.sample_context`),
its clean PNG, optionally an ROI-marked copy, a coarse caption and retrieved passages.
Backends read only whitelisted fields from it (see `curate.describe.backends.prompt`), so a
context that carries more (say a DICOM header) never leaves the process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

LEVEL_KEYS: tuple[str, ...] = ("modality", "organ", "roi", "texture", "relations")


def empty_levels() -> dict[str, str]:
    """The five levels, all empty: what a failed result carries (its `error` says why)."""
    return {k: "" for k in LEVEL_KEYS}


@dataclass(frozen=True)
class DescribeRequest:
    """One sample to describe.

    `ctx` is the dict from `sample_context` (modality, anatomy, plane, window, rois with
    facts, annotated, labels). `overlay_png` is the ROI-marked copy shown to the model;
    when None and there are ROIs, backends draw it with `roi_overlay_png`. `passages`
    are dicts with `id`, `title` and `text`.
    """

    sample_id: str
    ctx: dict[str, Any]
    image_png: bytes
    overlay_png: bytes | None = None
    coarse_caption: str = ""
    passages: Sequence[dict[str, str]] = ()


@dataclass
class DescribeResult:
    """The text for one sample, its provenance, the tokens this call spent, and an error.

    On failure `levels` holds five empty strings, `caption` is empty and `error` is
    "<kind>: <detail>" (kinds: malformed, refusal, truncated, ungrounded, rate_limit,
    server, timeout, connection, bad_request, bad_response, engine); the caller quarantines
    the sample with that reason. `usage` counts tokens spent by this call, retries
    included; a cache hit spent none.
    """

    sample_id: str
    levels: dict[str, str]
    caption: str
    generation: dict[str, str]
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0,
                                                           "completion_tokens": 0})
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def record_fields(self) -> dict[str, Any]:
        """The manifest fields this result fills: levels, caption and generation."""
        return {"levels": dict(self.levels), "caption": self.caption,
                "generation": dict(self.generation)}


@runtime_checkable
class Generator(Protocol):
    """What the build calls. Results come back in the order of the requests."""

    backend: str

    def generate_many(self, requests: Sequence[DescribeRequest]) -> list[DescribeResult]:
        ...

    def stats(self) -> dict[str, Any]:
        ...


@dataclass
class Accounting:
    """Counters for run.json: what was asked, sent, retried, failed, spent and reused.

    `requests` counts calls actually sent to the model (retries included); `samples`
    counts requests handed to `generate_many`; `cache_hits` those answered from disk.
    """

    price_per_1k_prompt: float = 0.0
    price_per_1k_completion: float = 0.0
    samples: int = 0
    succeeded: int = 0
    cache_hits: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    retries: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def cost(self) -> float:
        return (self.prompt_tokens / 1000 * self.price_per_1k_prompt
                + self.completion_tokens / 1000 * self.price_per_1k_completion)

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "succeeded": self.succeeded,
            "failed": sum(self.failures.values()), "cache_hits": self.cache_hits,
            "requests": self.requests, "retries": sum(self.retries.values()),
            "retries_by_kind": dict(sorted(self.retries.items())),
            "failures_by_kind": dict(sorted(self.failures.items())),
            "schema_fallbacks": self.fallbacks,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost_estimate": round(self.cost(), 6),
            "price_per_1k": {"prompt": self.price_per_1k_prompt,
                             "completion": self.price_per_1k_completion},
            "seconds": round(self.seconds, 3),
        }


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum `stats()` dicts from several workers (e.g. one per Ray task) into one."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and key.endswith("_by_kind"):
                acc = out.setdefault(key, {})
                for k, v in value.items():
                    acc[k] = acc.get(k, 0) + v
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    if "cost_estimate" in out:
        out["cost_estimate"] = round(out["cost_estimate"], 6)
    return out
