"""The deterministic grounded generator behind the shared interface.

It wraps `curate.unit.text.templates.describe` unchanged, so a build can switch between template
text and a language model by configuration alone, and every backend reports the same
result type and statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from curate.describe.backends.types import Accounting, DescribeRequest, DescribeResult
from curate.unit.text.templates import BACKEND, describe


class GroundedGenerator:
    """No model, no network: text assembled from computed facts (see curate.unit.text.templates).

    It reads the full context (it never leaves the process), ignores images, the coarse
    caption and passages, and never fails for a well-formed context.
    """

    backend = BACKEND

    def __init__(self) -> None:
        self._acct = Accounting()

    def generate_many(self, requests: Sequence[DescribeRequest]) -> list[DescribeResult]:
        out = []
        for req in requests:
            levels, caption, generation = describe(req.ctx)
            out.append(DescribeResult(req.sample_id, levels, caption, generation))
        self._acct.samples += len(requests)
        self._acct.succeeded += len(requests)
        return out

    def stats(self) -> dict[str, Any]:
        return {"backend": BACKEND, "model": "none", **self._acct.as_dict()}
