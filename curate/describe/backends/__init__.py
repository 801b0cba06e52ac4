"""Text generators behind one interface: grounded templates, an OpenAI-compatible chat
endpoint (vllm serve, hosted APIs), and vLLM inside Ray Data.

    from curate.describe.backends import DescribeRequest, make_generator
    gen = make_generator({"backend": "openai", "base_url": URL, "model": NAME,
                          "cache_dir": "out/llm-cache"})
    results = gen.generate_many([DescribeRequest(sample_id, ctx, image_png)])
    run_json["generation"] = gen.stats()

Every result fills the manifest's `levels`, `caption` and `generation` fields
(`DescribeResult.record_fields()`); a result with `error` set should be quarantined with
that reason. See docs/generation.md.
"""

from curate.describe.backends.answer import AnswerError, Levels, check_answer, parse_levels
from curate.describe.backends.cache import AnswerCache, DiskCache, cache_key
from curate.describe.backends.factory import make_generator
from curate.describe.backends.grounded import GroundedGenerator
from curate.describe.backends.limits import LimiterState, LocalLimit, SharedLimit, TokenBucket
from curate.describe.backends.openai_chat import EndpointError, OpenAIChatGenerator
from curate.describe.backends.prompt import (
    DEFAULT_PROMPT,
    PromptSpec,
    build_messages,
    load_prompt,
    prompt_facts,
    roi_overlay_png,
)
from curate.describe.backends.types import (
    LEVEL_KEYS,
    Accounting,
    DescribeRequest,
    DescribeResult,
    Generator,
    empty_levels,
    merge_stats,
)
from curate.describe.backends.vllm_ray import VLLMRayGenerator, require_vllm

__all__ = [
    "DEFAULT_PROMPT", "LEVEL_KEYS", "Accounting", "AnswerCache", "AnswerError", "DescribeRequest",
    "DescribeResult", "DiskCache", "EndpointError", "Generator", "GroundedGenerator",
    "LimiterState", "LocalLimit", "SharedLimit", "Levels", "OpenAIChatGenerator", "PromptSpec", "TokenBucket", "VLLMRayGenerator",
    "build_messages", "cache_key", "check_answer", "empty_levels", "load_prompt",
    "make_generator", "merge_stats", "parse_levels", "prompt_facts", "require_vllm",
    "roi_overlay_png",
]
