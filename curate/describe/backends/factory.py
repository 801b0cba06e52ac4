"""Build a generator from a plain config dict (a recipe section or CLI flags).

Unknown keys are errors, as everywhere in curate's configuration, so a misspelt setting
never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any

from curate.describe.backends.grounded import GroundedGenerator
from curate.describe.backends.openai_chat import API_KEY_ENV, OpenAIChatGenerator
from curate.describe.backends.prompt import DEFAULT_PROMPT
from curate.describe.backends.types import Generator
from curate.describe.backends.vllm_ray import VLLMRayGenerator
from curate.model.errors import ConfigError
from curate.model.recipe import DescribeConfig

# settings of the describe stage itself (curate.describe.ray_stage), not of a generator
STAGE_KEYS = {"actors": "actors", "parts_in_flight": "parts_in_flight",
              "actor_cpus": "actor_cpus"}
OPENAI_KEYS = {
    "base_url": "base_url", "model": "model", "api_key_env": "api_key_env",
    "concurrency": "concurrency", "rps": "requests_per_second", "burst": "burst",
    "max_retries": "max_retries", "timeout_s": "timeout_s", "temperature": "temperature",
    "max_tokens": "max_tokens", "cache_dir": "cache_dir",
    "price_per_1k_prompt": "price_per_1k_prompt",
    "price_per_1k_completion": "price_per_1k_completion", "prompt_version": "prompt_version",
    "check_sizes": "check_sizes", "backoff_base_s": "backoff_base_s",
    "max_backoff_s": "max_backoff_s", **STAGE_KEYS,
}
VLLM_KEYS = {
    "model": "model_source", "batch_size": "batch_size", "concurrency": "concurrency",
    "engine_kwargs": "engine_kwargs", "accelerator_type": "accelerator_type",
    "temperature": "temperature", "max_tokens": "max_tokens", "cache_dir": "cache_dir",
    "prompt_version": "prompt_version", "check_sizes": "check_sizes", **STAGE_KEYS,
}


BACKEND_KEYS: dict[str, dict[str, str]] = {"grounded": {}, "openai": OPENAI_KEYS,
                                           "vllm": VLLM_KEYS}


def describe_errors(describe: DescribeConfig) -> list[str]:
    """A recipe's `describe` options checked against its backend's keys (run at load by
    curate.load; the recipe model does not know the generators)."""
    allowed = BACKEND_KEYS[describe.backend]
    unknown = sorted(set(describe.options) - set(allowed))
    if unknown:
        return [f"describe: unknown options for backend {describe.backend!r}: {unknown}; "
                f"allowed: {sorted(allowed)}"]
    return []


def _kwargs(cfg: dict[str, Any], allowed: dict[str, str], backend: str) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(allowed) - {"backend"})
    if unknown:
        raise ConfigError(f"unknown keys for generation backend {backend!r}: {unknown}; "
                          f"allowed: {sorted(allowed)}")
    return {allowed[k]: v for k, v in cfg.items() if k != "backend" and v is not None}


def make_generator(cfg: dict[str, Any]) -> Generator:
    """`{backend: grounded|openai|vllm, ...}` -> a Generator.

    openai needs `base_url` and `model` (there is no default endpoint: sending images
    off the machine must be an explicit choice); the key is read from the variables named
    by `api_key_env` (default CURATE_LLM_API_KEY, then OPENAI_API_KEY). vllm needs
    `model` (a Hugging Face id or a local path).
    """
    backend = cfg.get("backend", "grounded")
    cfg = {k: v for k, v in cfg.items() if k not in STAGE_KEYS}
    if backend == "grounded":
        _kwargs(cfg, {}, backend)
        return GroundedGenerator()
    if backend == "openai":
        kwargs = _kwargs(cfg, OPENAI_KEYS, backend)
        missing = [k for k in ("base_url", "model") if not cfg.get(k)]
        if missing:
            raise ConfigError(f"generation backend 'openai' needs {missing} "
                              "(e.g. --llm-endpoint http://127.0.0.1:8000/v1 --llm-model NAME)")
        kwargs.setdefault("api_key_env", API_KEY_ENV)
        kwargs.setdefault("prompt_version", DEFAULT_PROMPT)
        return OpenAIChatGenerator(**kwargs)
    if backend == "vllm":
        kwargs = _kwargs(cfg, VLLM_KEYS, backend)
        if not cfg.get("model"):
            raise ConfigError("generation backend 'vllm' needs `model` (HF id or local path)")
        return VLLMRayGenerator(**kwargs)
    raise ConfigError(f"unknown generation backend {backend!r}; use grounded, openai or vllm")
