"""An LLM judge: reads one sample's text against its computed facts, scores it 1-5.

The judge shares the describe stage's client (`OpenAIChatGenerator`: one event loop,
the concurrency and rate limit, retries counted by kind, the SQLite answer cache keyed by
the whole request) and asks another question: prompt `judge-vN` in curate/prompts/, with
a JSON answer checked against its schema here. An answer that is not valid JSON or not
the schema is retried like a server fault and, when retries run out, the sample is
quarantined with the reason (`judge: malformed: ...`); it never stops the build.

Scores: `judge_accuracy`, `judge_completeness`, `judge_clarity` and `judge`, their min
(default: a text is as good as its weakest axis) or mean. The judge sees the same
whitelisted facts the describe prompt sends (`prompt_facts`), never an identifier.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from curate.describe.backends.answer import validated
from curate.describe.backends.cache import cache_key
from curate.describe.backends.openai_chat import API_KEY_ENV, OpenAIChatGenerator, _Run
from curate.describe.backends.prompt import prompt_facts, read_prompt
from curate.model.errors import CurateError
from curate.model.recipe import JudgeConfig

AXES = ("accuracy", "completeness", "clarity")
BACKEND = "openai-chat-judge"
MAX_TEXT_CHARS = 6000
# settings that change no answer: left out of the score key
NEUTRAL = {"concurrency", "rps", "max_retries", "timeout_s", "api_key_env",
           "price_per_1k_prompt", "price_per_1k_completion", "actors", "actor_cpus"}


class JudgeAnswer(BaseModel):
    """What the judge must return (judge-vN.schema.json)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    accuracy: StrictInt = Field(ge=1, le=5)
    completeness: StrictInt = Field(ge=1, le=5)
    clarity: StrictInt = Field(ge=1, le=5)
    rationale: StrictStr = Field(max_length=2000)


@dataclass(frozen=True)
class JudgePrompt:
    version: str
    system: str
    user: Template
    schema: dict[str, Any]

    def digest(self) -> str:
        blob = json.dumps([self.system, self.user.template, self.schema], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_judge_prompt(version: str = "judge-v1") -> JudgePrompt:
    """Read `curate/prompts/<version>.md` and its schema; fail loudly when they disagree."""
    sections, schema = read_prompt(version, "judge prompt")
    if set(sections) != {"system", "user"}:
        raise CurateError(f"judge prompt {version!r} needs exactly the sections "
                          "'# system' and '# user'")
    if set(schema.get("required", ())) != set(JudgeAnswer.model_fields):
        raise CurateError(f"schema of judge prompt {version!r} must require exactly "
                          f"{sorted(JudgeAnswer.model_fields)}")
    return JudgePrompt(version, sections["system"], Template(sections["user"]), schema)


def parse_judge(text: str | None) -> dict[str, Any]:
    """The judge's answer as a dict, or AnswerError('malformed', why)."""
    return validated(text, JudgeAnswer).model_dump()


@dataclass(frozen=True)
class JudgeRequest:
    """One sample's text and the context it is judged against (`row_context`)."""

    sample_id: str
    ctx: dict[str, Any]
    text: str


@dataclass
class JudgeResult:
    sample_id: str
    answer: dict[str, Any] | None
    cache_key: str
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0,
                                                           "completion_tokens": 0})
    error: str | None = None


def judge_messages(prompt: JudgePrompt, req: JudgeRequest) -> list[dict[str, Any]]:
    """Chat messages for one request: text only, facts from the describe whitelist."""
    image, rois = prompt_facts(req.ctx)
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    labels = ", ".join(image.pop("labels") or []) or "(none)"
    user = prompt.user.substitute(image_facts=json.dumps(image, **compact),
                                  roi_facts=json.dumps(rois, **compact), labels=labels,
                                  text=(req.text or "(empty)")[:MAX_TEXT_CHARS])
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def aggregate(answer: dict[str, Any], how: str) -> float:
    values = [float(answer[a]) for a in AXES]
    return min(values) if how == "min" else round(sum(values) / len(values), 4)


def score_entries(answer: dict[str, Any], how: str) -> list[dict[str, Any]]:
    """quality.scores entries for one answer."""
    return [*({"name": f"judge_{a}", "value": float(answer[a])} for a in AXES),
            {"name": "judge", "value": aggregate(answer, how)}]


class JudgeGenerator(OpenAIChatGenerator):
    """The describe client asking the judge question: same limits, retries and cache."""

    backend = BACKEND

    def __init__(self, base_url: str, model: str, *, prompt_version: str = "judge-v1",
                 **kwargs: Any):
        super().__init__(base_url, model, **kwargs)
        self.judge_prompt = load_judge_prompt(prompt_version)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "backend": BACKEND,
                "prompt_version": self.judge_prompt.version}

    def payload(self, req: JudgeRequest) -> dict[str, Any]:  # type: ignore[override]
        schema = {k: v for k, v in self.judge_prompt.schema.items()
                  if k not in ("$schema", "title", "description")}
        return {"model": self.model, "messages": judge_messages(self.judge_prompt, req),
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "judge_scores", "strict": True, "schema": schema}}}

    def check_content(self, content: str | None, roi_facts: list[dict[str, Any]]) -> Any:
        return parse_judge(content)

    async def _one(self, run: _Run, req: JudgeRequest) -> JudgeResult:  # type: ignore[override]
        body = self.payload(req)
        key = cache_key(self.judge_prompt.version, self.model, body)
        hit = self.cache.get(key)
        if hit is not None and isinstance(hit.get("judge"), dict):
            self._acct.cache_hits += 1
            self._acct.succeeded += 1
            return JudgeResult(req.sample_id, hit["judge"], key)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        answer, mode, fault = await self._answer(run, body, [], usage)
        if fault is not None:
            return JudgeResult(req.sample_id, None, key, usage,
                               f"{fault.kind}: {fault.detail}"[:500])
        self.cache.put(key, {"judge": answer, "mode": mode, "model": self.model,
                             "prompt_version": self.judge_prompt.version, "usage": usage})
        return JudgeResult(req.sample_id, answer, key, usage)


def make_judge(cfg: JudgeConfig, cache_dir: str | None, actors: int = 1) -> JudgeGenerator:
    """The judge client of one actor: the build's concurrency and rate split evenly."""
    share = max(1, actors)
    return JudgeGenerator(
        cfg.base_url, cfg.model, prompt_version=cfg.prompt_version,
        api_key_env=cfg.api_key_env or API_KEY_ENV,
        concurrency=max(1, cfg.concurrency // share),
        requests_per_second=cfg.rps / share if cfg.rps else None,
        max_retries=cfg.max_retries, timeout_s=cfg.timeout_s, temperature=cfg.temperature,
        max_tokens=cfg.max_tokens, cache_dir=cache_dir,
        price_per_1k_prompt=cfg.price_per_1k_prompt,
        price_per_1k_completion=cfg.price_per_1k_completion)


def judge_identity(cfg: JudgeConfig) -> dict[str, Any]:
    """What the judge's scores depend on: its settings (less the neutral ones) and the
    prompt's text; part of the score stage's key."""
    return {"settings": cfg.model_dump(mode="json", exclude=NEUTRAL),
            "prompt": load_judge_prompt(cfg.prompt_version).digest()}
