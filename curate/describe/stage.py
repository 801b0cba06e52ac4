"""The describe stage over committed units: retrieval + a language model, resumably.

Units already carry grounded template text. When a recipe asks for knowledge retrieval
or a model backend, this stage rewrites each unit's samples into a variant keyed by the
generation settings (units/<source>/<unit>.<key>.parquet): levels, caption, generation
provenance, knowledge_refs and the text-fact flags are replaced; a sample whose answer
stayed malformed after retries becomes a quarantine row with the reason. Variants are
committed per unit, and model answers are cached on disk by content hash, so a re-run
or a resumed crash repeats no call. `run_describe` runs in the driver (the local
executor); on Ray, `curate.describe.ray_stage.describe_parts` runs the same per-part steps
(`prepare_part`, `commit_part`) as a stage of the streaming dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from curate import PIPELINE_VERSION
from curate.model.errors import CurateError
from curate.model.recipe import Recipe, SourceSpec, resolve_path
from curate.model.records import QUARANTINE, SAMPLE, to_table
from curate.unit.pipeline import context
from curate.unit.store import UnitStore
from curate.unit.text.consistency import check_text

# settings that change what a model writes; concurrency, rates and prices do not
NEUTRAL_OPTIONS = {"concurrency", "rps", "burst", "max_retries", "timeout_s", "cache_dir",
                   "price_per_1k_prompt", "price_per_1k_completion", "api_key_env",
                   "backoff_base_s", "max_backoff_s", "batch_size", "accelerator_type",
                   "actors", "parts_in_flight", "actor_cpus"}
MIN_BATCH = 128  # requests per generate_many call: several x concurrency keeps it full


def needed(recipe: Recipe) -> bool:
    return recipe.describe.backend != "grounded" or recipe.describe.knowledge is not None


def generation_key(recipe: Recipe) -> str:
    d = recipe.describe
    parts = {"pipeline": PIPELINE_VERSION, "backend": d.backend,
             "options": {k: v for k, v in d.options.items() if k not in NEUTRAL_OPTIONS},
             "knowledge": d.knowledge.model_dump(mode="json") if d.knowledge else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def row_context(row: dict, spec: SourceSpec) -> dict:
    return context(spec, modality=row["modality"], anatomy=row["anatomy"],
                   plane=row["view"]["plane"], window=row["window"], rois=row["rois"],
                   annotated=row["annotated"], image_labels=row["image_labels"] or [],
                   patient_labels=row.get("patient_labels") or [],
                   spacing=tuple(row["pixel_spacing_mm"]) if row["pixel_spacing_mm"] else None)


def make_requests(rows: list[dict], spec: SourceSpec, retrieve: Callable | None,
                  overlays: bool = False) -> list:
    from curate.describe.backends import DescribeRequest, roi_overlay_png

    out = []
    for row in rows:
        ctx = row_context(row, spec)
        passages = retrieve(ctx) if retrieve else []
        # drawn here, in the preparing thread, so the event loop only talks to the model
        overlay = roi_overlay_png(row["image"], row["rois"]) if overlays and row["rois"] else None
        out.append(DescribeRequest(
            sample_id=row["sample_id"], ctx=ctx, image_png=row["image"], overlay_png=overlay,
            coarse_caption=" ".join(t for t in (row["levels"]["modality"],
                                                row["levels"]["organ"]) if t),
            passages=passages))
    return out


def apply_results(rows: list[dict], requests: list, results: list | None, backend: str,
                  unit_id: str, source: str) -> tuple[list[dict], list[dict]]:
    """Rows with their new text (or kept template text), and quarantine rows for failures."""
    kept, failed = [], []
    for i, (row, req) in enumerate(zip(rows, requests, strict=True)):
        row = dict(row)
        row["knowledge_refs"] = [p["id"] for p in req.passages]
        res = results[i] if results is not None else None
        if res is not None and res.error:
            failed.append({"source": source, "unit_id": unit_id, "file": row["sample_id"],
                           "stage": "describe", "error": res.error.split(":")[0],
                           "message": f"{backend}: {res.error}"[:1000]})
            continue
        if res is not None:
            row.update(res.record_fields())
        elif req.passages:  # grounded text: add the knowledge level, cited per statement
            from curate.unit.text.knowledge import knowledge_text

            extra = knowledge_text(req.ctx, req.passages)
            row["caption"] = f"{row['caption']} {extra}" if extra else row["caption"]
        row["quality"] = dict(row["quality"], text_flags=check_text(row["caption"], req.ctx))
        kept.append(row)
    return kept, failed


def ensure_kb(recipe: Recipe, out: Path, log) -> Path | None:
    """The knowledge base's folder, built from the packaged corpus when the recipe asks
    for the default one and it is not there yet (once, before any worker opens it)."""
    cfg = recipe.describe.knowledge
    if cfg is None:
        return None
    if cfg.kb != "default":
        return resolve_path(cfg.kb, Path.cwd())
    from curate.kb import build_kb, default_corpus_dir

    path = Path(out) / "kb"
    if not (path / "kb.json").is_file():
        log(f"building the knowledge base from the packaged corpus into {path}")
        partial = path.with_name("kb.partial")  # renamed when complete: a kill leaves no
        shutil.rmtree(partial, ignore_errors=True)  # half-written kb/ behind
        build_kb(default_corpus_dir(), partial, model=cfg.model)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    return path


def make_retriever(recipe: Recipe, out: Path, log) -> Callable | None:
    """ctx -> passages ({id, title, text}) from the recipe's knowledge base, or None."""
    cfg = recipe.describe.knowledge
    if cfg is None:
        return None
    from curate.kb import KnowledgeBase
    from curate.kb.sample import sample_queries

    path = ensure_kb(recipe, out, log)

    kb = KnowledgeBase.open(path)
    # retrieval depends only on the sample's queries (modality, region, findings,
    # intensity), which repeat across millions of samples: embed each distinct set once
    cache: dict[tuple, list[dict]] = {}

    def retrieve(ctx: dict) -> list[dict]:
        key = tuple(sample_queries(ctx))
        if key not in cache:
            if len(cache) > 100_000:
                cache.clear()
            cache[key] = [{"id": p.id, "title": p.title, "text": p.text,
                           "findings": list(p.tags.get("findings") or [])}
                          for p in kb.query_for_sample(ctx, cfg.k)]
        return cache[key]

    return retrieve


def generator_config(recipe: Recipe, out: Path) -> dict:
    """make_generator's config for the recipe: answers cached under out/llm-cache."""
    return {"backend": recipe.describe.backend, "cache_dir": str(Path(out) / "llm-cache"),
            **recipe.describe.options}


def prepare_part(store: UnitStore, source: str, part: str, spec: SourceSpec,
                 retrieve: Callable | None, overlays: bool) -> tuple[list[dict], list]:
    """One committed part's rows and their describe requests."""
    rows = store.load(key=(source, part)).to_pylist()
    return rows, make_requests(rows, spec, retrieve, overlays=overlays)


def commit_part(store: UnitStore, key: str, source: str, part: str, rows: list[dict],
                requests: list, results: list | None, backend: str) -> tuple[int, int]:
    """Commit one part's variant; (samples described, samples quarantined)."""
    kept, failed = apply_results(rows, requests, results, backend, part, source)
    store.commit_variant(source, part, key, to_table(kept, SAMPLE), to_table(failed, QUARANTINE))
    return len(kept), len(failed)


def chunks(store: UnitStore, todo: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Consecutive units holding at least MIN_BATCH samples each (from the unit markers)."""
    out: list[list[tuple[str, str]]] = [[]]
    count = 0
    for key in todo:
        out[-1].append(key)
        count += store.summary(*key)["counts"].get("views", 0)
        if count >= MIN_BATCH:
            out.append([])
            count = 0
    return [c for c in out if c]


def all_unreachable(results: list | None) -> bool:
    """Every result failed to connect or timed out (and there was at least one)."""
    return bool(results) and all(
        r.error is not None and r.error.startswith(("connection", "timeout")) for r in results)


def unreachable(results: list | None, recipe: Recipe) -> None:
    """Stop when a whole chunk failed to connect: the endpoint is down or mistyped, and
    quarantining every sample for it would only hide that."""
    if not all_unreachable(results):
        return
    where = recipe.describe.options.get("base_url") or recipe.describe.backend
    raise CurateError(f"describe: no answer from {where} for {len(results)} requests in a "
                      f"row ({results[0].error}); check the endpoint and run again (finished "
                      "units are kept)")


def run_describe(keys: list[tuple[str, str]], specs: dict[str, SourceSpec], recipe: Recipe,
                 store: UnitStore, out: Path, log) -> dict:
    """Describe every unit that has no variant for the current settings yet.

    Three things overlap: a thread loads the next chunk of units and builds its requests
    (retrieval, ROI-marked copies), the event loop talks to the model, and another thread
    commits the chunk before; Parquet, zlib and sockets release the GIL.
    """
    from tqdm import tqdm

    key = generation_key(recipe)
    todo = [k for k in keys if not store.has_variant(*k, key)]
    stats: dict = {"key": key, "units": len(todo), "units_reused": len(keys) - len(todo)}
    if not todo:
        return stats
    retrieve = make_retriever(recipe, out, log)
    gen = None
    if recipe.describe.backend != "grounded":
        from curate.describe.backends import make_generator

        gen = make_generator(generator_config(recipe, out))
    backend = recipe.describe.backend

    def prepare(chunk: list[tuple[str, str]]) -> list[tuple]:
        return [((src, uid), *prepare_part(store, src, uid, specs[src], retrieve,
                                           overlays=gen is not None))
                for src, uid in chunk]

    def commit(items: list[tuple], results: list | None, bar) -> None:
        offset = 0
        for (src, uid), rows, reqs in items:
            part = results[offset:offset + len(reqs)] if results is not None else None
            offset += len(reqs)
            commit_part(store, key, src, uid, rows, reqs, part, backend)
            bar.update(1)

    t = time.perf_counter()
    parts = chunks(store, todo)
    with tqdm(total=len(todo), desc=f"describe ({backend})", unit="unit", dynamic_ncols=True,
              mininterval=0.5) as bar, ThreadPoolExecutor(max_workers=2) as pool:
        ahead = pool.submit(prepare, parts[0])
        committed = []
        for i in range(len(parts)):
            items = ahead.result()
            if i + 1 < len(parts):
                ahead = pool.submit(prepare, parts[i + 1])
            requests = [r for _, _, reqs in items for r in reqs]
            results = gen.generate_many(requests) if gen else None
            unreachable(results, recipe)  # before committing: a re-run retries this chunk
            committed.append(pool.submit(commit, items, results, bar))
        for fut in committed:
            fut.result()  # re-raise any commit error
    stats["seconds"] = round(time.perf_counter() - t, 3)
    if gen is not None:
        stats["generator"] = gen.stats()
    return stats
