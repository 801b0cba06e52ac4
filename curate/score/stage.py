"""The score stage: named scores in quality.scores for every committed part, resumably.

After the unit and describe stages, each part's samples (its describe variant when there
is one) pass through up to two scorers, each an actor pool with its own resources:

  parts ──JudgeStage (client actors, few CPUs; an LLM judge over HTTP)──►
        ──AlignmentStage (model actors, GPUs when asked; a trained bundled-model run)
        ──► the last of them merges: variant <part>.<score key>.parquet

Each scorer commits a small table per part (sample_id, scores; the judge's quarantine
rows beside it) as its own variant, `<part>.judge-<key>` or `<part>.align-<key>`, so a
changed alignment run redoes no judging and the reverse. The last scorer then writes the
samples with their scores as the variant finalize ships (`keys()['final']`), carrying
the input variant's quarantine rows and the judge's (`merge_part`). The stage is actor
pools only: a plain task between them could wait forever for a CPU the pools hold. Keys hash what the scores depend on
(the input variant, the judge's settings and prompt, the run's files), never
concurrency or rates. Per sample, answers are cached too (the judge in
`<out>/llm-cache`, alignment in `<out>/score-cache`), so a part redone for another
reason repeats no call for an unchanged text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import PIPELINE_VERSION
from curate.model.errors import CurateError
from curate.model.recipe import Recipe, SourceSpec, resolve_path
from curate.model.records import QUARANTINE, SAMPLE, to_table
from curate.unit.store import UnitStore

SCORES = pa.schema([("sample_id", pa.string()),
                    ("scores", SAMPLE.field("quality").type.field("scores").type)])
OUT = pa.schema([("source", pa.string()), ("part", pa.string()), ("stats", pa.string())])
RESULT = pa.schema([("source", pa.string()), ("part", pa.string()), ("samples", pa.int64()),
                    ("quarantined", pa.int64()), ("reused", pa.bool_()),
                    ("stats", pa.string())])
CONTEXT_COLUMNS = ["sample_id", "modality", "anatomy", "view", "window", "rois", "annotated",
                   "image_labels", "patient_labels", "pixel_spacing_mm", "caption"]
PARTS_PER_CALL = 2


def needed(recipe: Recipe) -> bool:
    return recipe.score.judge is not None or recipe.score.alignment is not None


def describe(recipe: Recipe) -> str:
    """One line for the build's plan printout: which scorers run, with what resources."""
    j, a = recipe.score.judge, recipe.score.alignment
    parts = []
    if j is not None:
        parts.append(f"LLM judge {j.model} at {j.base_url} ({j.prompt_version}, {j.aggregate} "
                     f"of 3 scores), {j.concurrency} requests in flight over {j.actors} "
                     f"actor(s) of {j.actor_cpus:g} CPU")
    if a is not None:
        parts.append(f"alignment from the run {a.run}, {a.actors} actor(s) of "
                     f"{a.num_cpus:g} CPU" + (f" and {a.num_gpus:g} GPU" if a.num_gpus else ""))
    return "score: " + ("; ".join(parts) if parts else "none")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def run_dir(recipe: Recipe, recipe_dir: Path) -> str | None:
    a = recipe.score.alignment
    return str(resolve_path(a.run, Path(recipe_dir))) if a else None


def keys(recipe: Recipe, input_variant: str | None, recipe_dir: Path) -> dict[str, str]:
    """{'judge': ..., 'align': ..., 'final': ...}: the variant names of each scorer's
    tables and of the merged samples; only the scorers the recipe asks for."""
    base = {"pipeline": PIPELINE_VERSION, "input": input_variant}
    out: dict[str, str] = {}
    if recipe.score.judge is not None:
        from curate.score.judge import judge_identity

        out["judge"] = "judge-" + _digest({**base, "judge": judge_identity(recipe.score.judge)})
    if recipe.score.alignment is not None:
        from curate.score.alignment import run_identity

        out["align"] = "align-" + _digest({**base, "run": run_identity(
            run_dir(recipe, recipe_dir))})
    out["final"] = "scored-" + _digest({**base, **out})
    return out


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counters added between two stats() snapshots (merge_stats sums them back)."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, bool) or k == "price_per_1k":
            continue
        if isinstance(v, int | float):
            out[k] = v - before.get(k, 0)
        elif isinstance(v, dict) and k.endswith("_by_kind"):
            old = before.get(k) or {}
            out[k] = {n: c - old.get(n, 0) for n, c in v.items() if c - old.get(n, 0)}
        else:
            out[k] = v
    return out


def _pairs(batch: pa.Table) -> list[tuple[str, str]]:
    return list(zip(batch.column("source").to_pylist(), batch.column("part").to_pylist(),
                    strict=True))


def _carry(batch: pa.Table, name: str, stats: list[dict], merge=None) -> pa.Table:
    """Pass (source, part) on with this stage's stats added to the row's JSON; the last
    stage (`merge`: (store, input variant, keys)) also commits the scored samples."""
    old = batch.column("stats").to_pylist() if "stats" in batch.column_names else \
        ["{}"] * batch.num_rows
    rows = [json.dumps({**json.loads(o), name: s}) for o, s in zip(old, stats, strict=True)]
    if merge is None:
        return pa.table({"source": batch.column("source"), "part": batch.column("part"),
                         "stats": pa.array(rows, pa.string())}, schema=OUT)
    store, input_variant, keys = merge
    out = []
    for (source, part), s in zip(_pairs(batch), rows, strict=True):
        reused = store.has_variant(source, part, keys["final"])
        n, q = (0, 0) if reused else merge_part(store, source, part, input_variant, keys)
        out.append({"source": source, "part": part, "samples": n, "quarantined": q,
                    "reused": reused, "stats": s})
    return pa.Table.from_pylist(out, schema=RESULT)


class JudgeStage:
    """Judge actor: one client (HTTP client, retries, answer cache) for many parts.

    On Ray every judge actor takes its slots and rate tokens from one limiter actor
    (`limiter`, the describe stage's `Limiter`), so `concurrency` and `rps` hold for the
    whole build; without one (local) the actor's own limit applies.
    """

    def __init__(self, recipe: Recipe, specs: dict[str, SourceSpec], out: str,
                 input_variant: str | None, keys: dict[str, str], last: bool,
                 limiter=None):
        from curate.score.judge import make_judge

        self.cfg, self.specs, self.keys = recipe.score.judge, specs, keys
        self.input = input_variant
        self.store = UnitStore(Path(out) / "units")
        self.merge = (self.store, input_variant, keys) if last else None
        self.gen = make_judge(self.cfg, str(Path(out) / "llm-cache"),
                              1 if limiter is not None else self.cfg.actors)
        self.handle, self.client = None, uuid.uuid4().hex
        if limiter is not None:
            from curate.describe.ray_stage import _RayLimiterHandle

            self.handle = _RayLimiterHandle(limiter)

    def _generate(self, requests: list) -> list:
        if self.handle is None:
            return self.gen.generate_many(requests)
        from curate.describe.backends.limits import SharedLimit

        async def run() -> list:
            limit = SharedLimit(self.handle, self.client, rate_limited=bool(self.cfg.rps))
            try:
                return await self.gen.agenerate_many(requests, limit=limit)
            finally:
                await self.gen.aclose()

        return asyncio.run(run())

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curate.describe.stage import all_unreachable, row_context
        from curate.score.judge import JudgeRequest, score_entries

        todo, stats = [], [{"parts": 0, "parts_reused": 0} for _ in range(batch.num_rows)]
        for i, (source, part) in enumerate(_pairs(batch)):
            if self.store.has_variant(source, part, self.keys["final"]) or \
                    self.store.has_variant(source, part, self.keys["judge"]):
                stats[i]["parts_reused"] = 1
                continue
            rows = self.store.load(key=(source, part), variant=self.input,
                                   columns=CONTEXT_COLUMNS).to_pylist()
            reqs = [JudgeRequest(r["sample_id"], row_context(r, self.specs[source]),
                                 r["caption"] or "") for r in rows]
            todo.append((i, source, part, reqs))
        requests = [r for *_, reqs in todo for r in reqs]
        before = self.gen.stats()
        results = self._generate(requests) if requests else []
        if all_unreachable(results):
            raise CurateError(f"judge: no answer from {self.cfg.base_url} for {len(results)} "
                              f"requests in a row ({results[0].error}); check the endpoint "
                              "and run again (finished parts are kept)")
        offset = 0
        for i, source, part, reqs in todo:
            got = results[offset:offset + len(reqs)]
            offset += len(reqs)
            ok = [{"sample_id": r.sample_id, "scores": score_entries(r.answer,
                                                                     self.cfg.aggregate)}
                  for r in got if r.error is None]
            bad = [{"source": source, "unit_id": part, "file": r.sample_id, "stage": "judge",
                    "error": r.error.split(":")[0], "message": f"judge: {r.error}"[:1000]}
                   for r in got if r.error is not None]
            self.store.commit_variant(source, part, self.keys["judge"],
                                      to_table(ok, SCORES), to_table(bad, QUARANTINE))
            stats[i]["parts"] = 1
        if todo:
            stats[todo[0][0]]["generator"] = _delta(before, self.gen.stats())
        return _carry(batch, "judge", stats, self.merge)


class AlignmentStage:
    """Alignment actor: the trained run loaded once per actor, on its GPU when given."""

    def __init__(self, recipe: Recipe, out: str, input_variant: str | None,
                 keys: dict[str, str], run: str, last: bool = True):
        from curate.score.alignment import AlignmentScorer

        self.keys, self.input = keys, input_variant
        self.store = UnitStore(Path(out) / "units")
        self.merge = (self.store, input_variant, keys) if last else None
        self.scorer = AlignmentScorer(recipe.score.alignment, run,
                                      str(Path(out) / "score-cache"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        stats = []
        for source, part in _pairs(batch):
            if self.store.has_variant(source, part, self.keys["final"]) or \
                    self.store.has_variant(source, part, self.keys["align"]):
                stats.append({"parts": 0, "parts_reused": 1})
                continue
            before = dict(self.scorer.stats)
            rows = self.store.load(key=(source, part), variant=self.input,
                                   columns=["sample_id", "image_sha256", "caption",
                                            "image"]).to_pylist()
            values = self.scorer.score_rows(rows)
            table = to_table([{"sample_id": r["sample_id"],
                               "scores": [{"name": "alignment", "value": v}]}
                              for r, v in zip(rows, values, strict=True)], SCORES)
            self.store.commit_variant(source, part, self.keys["align"], table,
                                      QUARANTINE.empty_table())
            stats.append({"parts": 1, "parts_reused": 0,
                          **{k: v - before[k] for k, v in self.scorer.stats.items()}})
        return _carry(batch, "alignment", stats, self.merge)


def merge_part(store: UnitStore, source: str, part: str, input_variant: str | None,
               keys: dict[str, str]) -> tuple[int, int]:
    """Commit one part's scored samples (variant keys['final']); (samples, quarantined)."""
    rows = store.load(key=(source, part), variant=input_variant).to_pylist()
    scores: dict[str, list[dict]] = {}
    dropped: set[str] = set()
    quarantine = []
    if input_variant:  # finalize copies the base part's rows and this variant's only
        path = store.path(source, part, input_variant, quarantine=True)
        if path.exists():
            quarantine += pq.read_table(path, schema=QUARANTINE).to_pylist()
    for name in ("judge", "align"):
        if name not in keys:
            continue
        path = store.path(source, part, keys[name])
        if not path.exists():
            raise CurateError(f"score: part {source}/{part} has no {name} scores "
                              f"({path.name}); run the build again")
        for r in pq.read_table(path, schema=SCORES).to_pylist():
            scores.setdefault(r["sample_id"], []).extend(r["scores"])
        qpath = store.path(source, part, keys[name], quarantine=True)
        if qpath.exists():
            q = pq.read_table(qpath, schema=QUARANTINE).to_pylist()
            quarantine += q
            dropped |= {r["file"] for r in q}
    kept = []
    for row in rows:
        if row["sample_id"] in dropped:
            continue
        new = scores.get(row["sample_id"], [])
        names = {s["name"] for s in new}
        old = [s for s in (row["quality"].get("scores") or []) if s["name"] not in names]
        row["quality"] = {**row["quality"], "scores": old + new}
        kept.append(row)
    store.commit_variant(source, part, keys["final"], to_table(kept, SAMPLE),
                         to_table(quarantine, QUARANTINE))
    return len(kept), len(quarantine)


def score_frame(ex, parts, recipe: Recipe, specs: dict[str, SourceSpec], out: Path,
                input_variant: str | None, recipe_dir: Path):
    """The stage as actor pools over plan rows (source, part, ...); (frame, keys)."""
    k = keys(recipe, input_variant, recipe_dir)
    j, a = recipe.score.judge, recipe.score.alignment
    frame = parts
    if j is not None:
        limiter = None
        if ex.kind == "ray":  # one limiter actor for the build; the pool's args keep it up
            from curate.describe.ray_stage import Limiter

            name = f"curate-judge-limiter-{_digest(str(Path(out).resolve()))}-{uuid.uuid4().hex[:8]}"
            limiter = Limiter.options(name=name).remote(j.concurrency, j.rps, 1.0)
        frame = frame.map_batches(JudgeStage, args=(recipe, specs, str(out), input_variant, k,
                                                    a is None, limiter),
                                  batch_size=PARTS_PER_CALL, num_cpus=j.actor_cpus,
                                  concurrency=j.actors)
    if a is not None:
        actors = a.actors
        if a.num_gpus and ex.kind == "ray":
            actors = min(actors, int(ex.gpus() // a.num_gpus))
            if actors == 0:
                raise CurateError(f"score.alignment asks for {a.num_gpus:g} GPU per actor "
                                  "and the cluster has none; set num_gpus: 0 to score on CPU")
        frame = frame.map_batches(AlignmentStage, args=(recipe, str(out), input_variant, k,
                                                        run_dir(recipe, recipe_dir)),
                                  batch_size=PARTS_PER_CALL, num_cpus=a.num_cpus,
                                  num_gpus=a.num_gpus if ex.kind == "ray" else 0,
                                  concurrency=actors)
    return frame, k


def run_scores(ex, parts, recipe: Recipe, specs: dict[str, SourceSpec], out: Path,
               input_variant: str | None, recipe_dir: Path) -> tuple[float, dict]:
    """Score every part of `parts` (plan rows); (seconds, stats for run.json)."""
    from curate.describe.backends import merge_stats

    t = time.perf_counter()
    frame, k = score_frame(ex, parts, recipe, specs, out, input_variant, recipe_dir)
    stats: dict[str, Any] = {"key": k["final"], "parts": 0, "parts_reused": 0,
                             "samples": 0, "quarantined": 0}
    per: dict[str, list[dict]] = {"judge": [], "alignment": []}

    def tally(table: pa.Table) -> None:
        for row in table.to_pylist():
            stats["parts"] += 1
            stats["parts_reused"] += row["reused"]
            stats["samples"] += row["samples"]
            stats["quarantined"] += row["quarantined"]
            for name, s in json.loads(row["stats"]).items():
                per[name].append(s)

    ex.consume(frame, tally)
    for name, items in per.items():
        if items:
            gen = [s.pop("generator") for s in items if "generator" in s]
            stats[name] = merge_stats(items)
            if gen:
                stats[name]["generator"] = merge_stats(gen)
    stats["seconds"] = round(time.perf_counter() - t, 3)
    return time.perf_counter() - t, stats
