"""The describe stage as a stage of the build's streaming Ray dataset.

`describe_parts` maps a stream of committed parts to one summary row per part, while
other parts are still being ingested upstream. Per part it does exactly what
`curate.describe.stage.run_describe` does for a unit (it calls the same `prepare_part`
and `commit_part`). How the model is reached depends on the backend:

- openai (an HTTP endpoint): an actor pool of async clients. Each actor keeps one event
  loop, one HTTP client and many parts in flight; all actors take their slots and rate
  tokens from ONE limiter actor (`Limiter`, named per build), so the endpoint's
  concurrency and request rate hold for the whole cluster;
- grounded with knowledge retrieval: the same pool without a model; the knowledge base
  is opened once per actor;
- vllm: parts are flattened into request rows, ONE `ray.data.llm` processor (built once
  per build, so engines start once) runs over the whole stream, and a committer regroups
  the answers by part.

This is the only module besides the runner that imports Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import ray

from curate.describe.stage import (
    MIN_BATCH,
    all_unreachable,
    commit_part,
    ensure_kb,
    generation_key,
    generator_config,
    make_requests,
    make_retriever,
    prepare_part,
    unreachable,
)
from curate.model.recipe import Recipe, SourceSpec
from curate.unit.store import UnitStore

OUTPUT_COLUMNS = ("source", "part", "described", "failed", "reused")
DEFAULT_ACTORS = 2
DEFAULT_ACTOR_CPUS = 0.5  # a client mostly waits; whole CPUs would starve the stages upstream
DEFAULT_PARTS_IN_FLIGHT = 16  # per actor
PARTS_PER_CALL = 2  # small batches, many calls at once: no batch waits on a slow part long


@ray.remote(num_cpus=0)
class Limiter:
    """The build's one concurrency/rate limiter (curate.describe.backends.limits.LimiterState)."""

    def __init__(self, concurrency: int, rps: float | None, burst: float):
        from curate.describe.backends.limits import LimiterState

        self.state = LimiterState(concurrency, rps, burst)

    async def sync(self, client: str, in_use: int, demand: int) -> tuple[int, float]:
        return self.state.sync(client, in_use, demand)

    async def tokens(self, want: int) -> int:
        return await self.state.tokens(want)

    async def pause(self, until: float) -> None:
        self.state.pause(until)

    async def stats(self) -> dict[str, Any]:
        return self.state.stats()


class _RayLimiterHandle:
    """LimiterHandle over the Limiter actor (awaitable ObjectRefs)."""

    def __init__(self, actor):
        self.actor = actor

    async def sync(self, client: str, in_use: int, demand: int) -> tuple[int, float]:
        return await self.actor.sync.remote(client, in_use, demand)

    async def tokens(self, want: int) -> int:
        return await self.actor.tokens.remote(want)

    def pause(self, until: float) -> None:
        self.actor.pause.remote(until)  # fire and forget: the local pause already holds


def limiter_prefix(out: str | os.PathLike[str], key: str) -> str:
    """The start of the limiter's actor name: the output folder and generation settings."""
    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:10]
    return f"curate-describe-limiter-{digest}-{key}"


def make_limiter(recipe: Recipe, out: str | os.PathLike[str]):
    """A new Limiter actor for this build, named `<limiter_prefix>-<random>`.

    New on every call: an earlier build's limiter may be shutting down (it goes when the
    last handle does), so finding it by name would race. The returned dataset's plan
    holds the handle, which keeps the actor up while the dataset runs."""
    o = recipe.describe.options
    name = f"{limiter_prefix(out, generation_key(recipe))}-{uuid.uuid4().hex[:8]}"
    return Limiter.options(name=name).remote(
        int(o.get("concurrency", 16)), o.get("rps"), float(o.get("burst", 1.0)))


def _summary(source: str, part: str, described: int = 0, failed: int = 0,
             reused: bool = False) -> dict[str, Any]:
    return {"source": source, "part": part, "described": described, "failed": failed,
            "reused": reused}


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {"source": np.array([r["source"] for r in rows], dtype=object),
            "part": np.array([r["part"] for r in rows], dtype=object),
            "described": np.array([r["described"] for r in rows], dtype=np.int64),
            "failed": np.array([r["failed"] for r in rows], dtype=np.int64),
            "reused": np.array([r["reused"] for r in rows], dtype=bool)}


class PartDescriber:
    """One actor of the pool: describes whole parts, many at once, on one event loop.

    Ray Data calls `__call__` from several threads (one per batch in flight); each call
    hands its parts to the actor's loop, where loading and committing run in threads
    (Parquet and zlib release the GIL) and requests share one client and the limiter.
    """

    def __init__(self, specs: dict[str, SourceSpec], recipe: Recipe, out: str,
                 store_root: str, limiter=None):
        self.specs, self.recipe = specs, recipe
        self.store = UnitStore(Path(store_root))
        self.key = generation_key(recipe)
        self.backend = recipe.describe.backend
        self.retrieve = make_retriever(recipe, Path(out), lambda m: None)
        self.gen = None
        if self.backend == "openai":
            from curate.describe.backends import make_generator

            self.gen = make_generator(generator_config(recipe, Path(out)))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="describe-loop",
                         daemon=True).start()
        self.limit = None
        if self.gen is not None and limiter is not None:
            from curate.describe.backends.limits import SharedLimit

            self.limit = SharedLimit(_RayLimiterHandle(limiter), uuid.uuid4().hex,
                                     rate_limited=bool(recipe.describe.options.get("rps")))
        self.ever_answered = False
        self.streak = 0  # requests in a row that could not reach the endpoint

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = list(zip(batch["source"], batch["part"], strict=True))
        rows = asyncio.run_coroutine_threadsafe(self._describe(parts), self.loop).result()
        return _columns(rows)

    async def _describe(self, parts: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._part(str(s), str(p)) for s, p in parts)))

    async def _part(self, source: str, part: str) -> dict[str, Any]:
        if self.store.has_variant(source, part, self.key):
            return _summary(source, part, reused=True)
        rows, reqs = await asyncio.to_thread(prepare_part, self.store, source, part,
                                             self.specs[source], self.retrieve,
                                             self.gen is not None)
        results = None
        if self.gen is not None and reqs:
            results = await self.gen.agenerate_many(reqs, limit=self.limit)
            self._check_reach(results)
            await asyncio.to_thread(self.gen.cache.flush)  # answers on disk before the part
        described, failed = await asyncio.to_thread(commit_part, self.store, self.key, source,
                                                    part, rows, reqs, results, self.backend)
        return _summary(source, part, described, failed)

    def _check_reach(self, results: list) -> None:
        """Stop the build (before committing this part, so a re-run retries it) when the
        endpoint cannot be reached: from the start, or for MIN_BATCH requests in a row."""
        if not all_unreachable(results):
            self.ever_answered = True
            self.streak = 0
            return
        self.streak += len(results)
        if not self.ever_answered or self.streak >= MIN_BATCH:
            unreachable(results, self.recipe)


def _actor_pool(actors: int, calls: int):
    try:
        return ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=calls,
                                          max_concurrent_calls_per_actor=calls,
                                          enable_true_multi_threading=True), {}
    except TypeError:  # Ray before 2.50: threads through the actor's max_concurrency
        return ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=calls), \
            {"max_concurrency": calls}


def describe_parts(parts: ray.data.Dataset, specs: dict[str, SourceSpec], recipe: Recipe,
                   out: str | os.PathLike[str], log=print, *,
                   store_root: str | os.PathLike[str] | None = None) -> ray.data.Dataset:
    """Describe committed parts as they stream in; a lazy dataset of one row per part.

    Input rows: {"source": str, "part": str, "views": int}, one per committed part of
    `UnitStore(store_root)` (default `<out>/units`); the input is never materialized, so
    parts may still be arriving from upstream stages. Output rows, one per input part:
    {"source", "part", "described": samples kept with new text, "failed": samples
    quarantined (a malformed answer after retries), "reused": the variant for these
    settings already existed and nothing was done}. Each part's variant
    (`generation_key(recipe)`) is committed with `store.commit_variant` before its row is
    emitted, so a crash or a stop resumes per part; answers are cached under
    `<out>/llm-cache` first, so a re-run repeats no call. The variant key is
    `describe_stage.generation_key(recipe)`; call only when `describe_stage.needed(recipe)`.

    Errors: an endpoint that cannot be reached raises CurateError ("describe: no answer
    from ...") inside the stage; Ray re-raises it when the output is consumed (as a
    RayTaskError whose message carries it). Refused credentials raise EndpointError.

    Options (recipe.describe.options, none changes the text): `actors` (client actors,
    default 2), `actor_cpus` (CPUs each reserves, default 0.5), `parts_in_flight` (parts
    one actor works on at once, default 16),
    `concurrency`, `rps` and `burst` (for the whole build, held by one Limiter actor).
    The driver does no per-sample work: it only builds the knowledge base when the recipe
    asks for the default one and it is missing.
    """
    out = Path(out)
    root = str(Path(store_root) if store_root is not None else out / "units")
    ensure_kb(recipe, out, log)
    if recipe.describe.backend == "vllm":
        return _describe_vllm(parts, specs, recipe, out, root)
    opts = recipe.describe.options
    actors = int(opts.get("actors", DEFAULT_ACTORS))
    in_flight = int(opts.get("parts_in_flight", DEFAULT_PARTS_IN_FLIGHT))
    calls = max(1, -(-in_flight // PARTS_PER_CALL))
    limiter = make_limiter(recipe, out) if recipe.describe.backend == "openai" else None
    compute, remote_args = _actor_pool(actors, calls)
    return parts.map_batches(
        PartDescriber, batch_size=PARTS_PER_CALL, batch_format="numpy", compute=compute,
        fn_constructor_kwargs={"specs": specs, "recipe": recipe, "out": str(out),
                               "store_root": root, "limiter": limiter},
        num_cpus=float(opts.get("actor_cpus", DEFAULT_ACTOR_CPUS)), **remote_args)


# -- vLLM: one processor for the whole build ------------------------------------------------


class _VLLMRequests:
    """Parts -> request rows for the answers not cached yet (a part with none: one
    sentinel row, so every part reaches the committer)."""

    def __init__(self, specs, recipe: Recipe, out: str, store_root: str):
        from curate.describe.backends import make_generator

        self.specs, self.key = specs, generation_key(recipe)
        self.store = UnitStore(Path(store_root))
        self.retrieve = make_retriever(recipe, Path(out), lambda m: None)
        self.gen = make_generator(generator_config(recipe, Path(out)))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows: list[dict[str, Any]] = []
        for source, part in zip(batch["source"], batch["part"], strict=True):
            source, part = str(source), str(part)
            base = {"source": source, "part": part, "sentinel": False, "reused": False}
            if self.store.has_variant(source, part, self.key):
                rows.append(_sentinel({**base, "reused": True}))
                continue
            _, reqs = prepare_part(self.store, source, part, self.specs[source],
                                   self.retrieve, True)
            todo = [r for r in map(self.gen.request_row, reqs)
                    if self.gen.cache.get(r["cache_key"]) is None]
            rows.extend({**base, "n": len(todo), **r} for r in todo)
            if not todo:
                rows.append(_sentinel(base))
        return {k: [r[k] for r in rows] for k in REQUEST_COLUMNS}


REQUEST_COLUMNS = ("source", "part", "n", "sentinel", "reused", "sample_id", "cache_key",
                   "messages_json", "roi_facts_json")
PASSTHROUGH = ("source", "part", "n", "sentinel", "reused")


def _sentinel(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "sentinel": True, "n": 0, "sample_id": "", "cache_key": "",
            "messages_json": "[]", "roi_facts_json": "[]"}


class _VLLMCommitter:
    """Regroups answer rows by part (a single actor sees every row) and commits each part
    as soon as all its rows have arrived."""

    def __init__(self, specs, recipe: Recipe, out: str, store_root: str):
        from curate.describe.backends import make_generator

        self.specs, self.key = specs, generation_key(recipe)
        self.store = UnitStore(Path(store_root))
        self.retrieve = make_retriever(recipe, Path(out), lambda m: None)
        self.gen = make_generator(generator_config(recipe, Path(out)))
        self.waiting: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = []
        for i in range(len(batch["source"])):
            row = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
            key = (str(row["source"]), str(row["part"]))
            got = self.waiting.setdefault(key, [])
            got.append(row)
            if len(got) >= max(1, int(row["n"])):
                del self.waiting[key]
                done.append(self._commit(*key, got))
        return _columns(done)

    def _commit(self, source: str, part: str, answers: list[dict[str, Any]]) -> dict:
        from curate.describe.backends import DescribeResult, empty_levels
        from curate.unit.text.templates import caption_from

        if answers[0]["reused"]:
            return _summary(source, part, reused=True)
        rows = self.store.load(key=(source, part)).to_pylist()
        reqs = make_requests(rows, self.specs[source], self.retrieve, overlays=True)
        fresh = {a["sample_id"]: self.gen.result_from_row(a) for a in answers
                 if not a["sentinel"]}
        results = []
        for req in reqs:
            res = fresh.get(req.sample_id)
            if res is None:  # answered in an earlier run
                ckey = self.gen.request_row(req)["cache_key"]
                hit = self.gen.cache.get(ckey)
                res = (DescribeResult(req.sample_id, hit["levels"], caption_from(hit["levels"]),
                                      self.gen._generation(ckey)) if hit else
                       DescribeResult(req.sample_id, empty_levels(), "",
                                      self.gen._generation(ckey),
                                      error="engine: answer missing from the cache"))
            results.append(res)
        self.gen.cache.flush()
        described, failed = commit_part(self.store, self.key, source, part, rows, reqs,
                                        results, self.gen.backend)
        return _summary(source, part, described, failed)


def _describe_vllm(parts: ray.data.Dataset, specs, recipe: Recipe, out: Path,
                   root: str) -> ray.data.Dataset:
    from curate.describe.backends import make_generator

    opts = recipe.describe.options
    cpus = float(opts.get("actor_cpus", DEFAULT_ACTOR_CPUS))
    gen = make_generator(generator_config(recipe, out))
    processor = gen.processor(passthrough=PASSTHROUGH)  # built once: engines start once
    kwargs = {"specs": specs, "recipe": recipe, "out": str(out), "store_root": root}
    requests = parts.map_batches(
        _VLLMRequests, batch_size=1, batch_format="numpy", fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(size=int(opts.get("actors", DEFAULT_ACTORS))),
        num_cpus=cpus)
    answers = processor(requests)
    return answers.map_batches(_VLLMCommitter, batch_size=16, batch_format="numpy",
                               fn_constructor_kwargs=kwargs, num_cpus=cpus,
                               compute=ray.data.ActorPoolStrategy(size=1))
