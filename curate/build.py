"""`curate build`: one dataflow from the file listing to the shards, on Ray or locally.

plan (a worker per source: listing, header reads) -> parts -> unit stage (actor pools:
ingest, normalize, ground, describe with templates, ask, score, commit; GPU experts in a
pool of their own) -> describe stage (model or retrieval; streams behind the unit stage)
-> whole-dataset steps (curate.dataset.finalize) -> reports from per-shard aggregates. The driver
holds plans, counters and one small row per shard, never samples.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
import uuid
from collections import Counter
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from curate import PIPELINE_VERSION, __version__
from curate.dataset.finalize import global_counts, publish, ship
from curate.dataset.publish import default_work, is_uri, publish_to_uri
from curate.describe import stage as describe_stage
from curate.load import check_required, load_recipe
from curate.model.errors import CurateError
from curate.model.recipe import Recipe, SourceSpec, resolve_sources
from curate.plan import (  # noqa: F401 - unit_fingerprint is re-exported for callers
    describe_plan,
    plan_source,
    plan_sources,
    read_plan_records,
    unit_fingerprint,
)
from curate.report.card import write_reports
from curate.report.datacard import (
    card_stats,
    dropped_stats,
    frame_stats,
    merge_all,
    quarantine_stats,
)
from curate.report.validate import combine_validation, validate_part
from curate.runner import Executor, RayFrame, UnitStage
from curate.score import stage as score_stage
from curate.unit.store import UnitStore
from curate.workdir import BuildLock, atomic_text, check_folder, clean_leftovers, fault_point, mark

PACKAGES = ["curate", "numpy", "pyarrow", "polars", "ray", "monai", "torch", "SimpleITK",
            "pydicom", "nibabel", "webdataset", "great-expectations", "openai", "pillow"]


def knowledge_base_info(recipe: Recipe, out: Path, log) -> dict | None:
    """The knowledge corpus's name, licence and size for the card (None without one)."""
    if recipe.describe.knowledge is None:
        return None
    from curate.describe.stage import ensure_kb
    from curate.kb import corpus_info

    try:
        return corpus_info(ensure_kb(recipe, out, log))
    except Exception as exc:  # noqa: BLE001 - the card says less, the build goes on
        log(f"note: no knowledge-base facts for the card ({exc})")
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe_resources(recipe: Recipe, executor: str, address: str | None) -> str:
    from curate.unit.pipeline import WorkerModels

    where = "in this process" if executor == "local" else (
        f"Ray cluster at {address}" if address else "Ray (RAY_ADDRESS if set, else a local instance)")
    need = WorkerModels.resources(recipe)
    experts = ", ".join(e.name for e in recipe.experts) or "none"
    d = recipe.describe
    text = {"grounded": "deterministic grounded generator (no model, CPU)",
            "openai": f"OpenAI-compatible endpoint {d.options.get('base_url')} "
                      f"model {d.options.get('model')}, {d.options.get('concurrency', 16)} "
                      "requests in flight",
            "vllm": f"vLLM in Ray, model {d.options.get('model')}, "
                    f"{d.options.get('concurrency', 1)} engine replica(s) with 1 GPU each"}
    knowledge = f"{d.knowledge.k} passages per sample from {d.knowledge.kb}" if d.knowledge \
        else "none"
    return "\n".join([
        f"executor: {where}",
        f"unit workers: one Ray actor per {need['num_cpus']:g} CPU"
        + (f" and {need['num_gpus']:g} GPU" if need["num_gpus"] else "")
        + f", models loaded once per actor; experts: {experts}",
        f"describe: {text[d.backend]}; knowledge: {knowledge}",
        score_stage.describe(recipe),
    ])


def part_counts(batch: pa.Table, store_root: str, run_id: str) -> pa.Table:
    """Each part's marker as one JSON row: counts, stage seconds, run this time or not."""
    store = UnitStore(Path(store_root))
    rows = []
    for source, part in zip(batch.column("source").to_pylist(),
                            batch.column("part").to_pylist(), strict=True):
        s = store.summary(source, part)
        rows.append(json.dumps({"counts": s["counts"], "seconds": s["seconds"],
                                "ran": s.get("run") == run_id}))
    return pa.table({"summary": pa.array(rows, pa.string())})


def part_reports(manifest: pa.Table) -> dict:
    """Per-shard aggregates, computed on the shard writer: validation and card stats."""
    return {"validation": validate_part(manifest), "card": card_stats(manifest)}


def unit_stage(ex: Executor, plan, recipe: Recipe, specs: dict[str, SourceSpec], out: Path,
               run_id: str):
    """The per-part work as actor pools: CPU parts, and (when an expert needs a GPU)
    the parts of sources such an expert may see, in a pool that reserves GPUs."""
    from curate.unit.pipeline import WorkerModels

    gpu_sources = WorkerModels.gpu_sources(recipe, list(specs.values())) if recipe.experts \
        else set()
    budget = ex.budget(recipe)
    args = (recipe, specs, str(out / "units"), run_id, budget)

    def pick(gpu: bool):
        return lambda t: t.filter(pa.array([(s in gpu_sources) == gpu
                                            for s in t.column("source").to_pylist()]))

    cpu = WorkerModels.resources(recipe, gpu=False)
    cpu_parts = plan.map_batches(pick(False), num_cpus=0) if gpu_sources else plan
    frames = [cpu_parts.map_batches(UnitStage, args=args, batch_size=1,
                                    num_cpus=cpu["num_cpus"])]
    if gpu_sources:
        need = WorkerModels.resources(recipe, gpu=True)
        n = int(ex.gpus() // max(need["num_gpus"], 1e-9)) if ex.kind == "ray" else 1
        if n == 0:
            raise CurateError(f"experts for {sorted(gpu_sources)} need {need['num_gpus']:g} "
                              "GPU per worker and the cluster has none")
        frames.append(plan.map_batches(pick(True), num_cpus=0).map_batches(
            UnitStage, args=args, batch_size=1, num_cpus=need["num_cpus"],
            num_gpus=need["num_gpus"], concurrency=n))
    return frames[0].union(*frames[1:])


def sum_part_counts(plan, store_root: str, run_id: str) -> tuple[Counter, Counter, dict]:
    counts, seconds, runs = Counter(), Counter(), Counter()
    for t in plan.map_batches(part_counts, args=(store_root, run_id)).tables_iter():
        for raw in t.column("summary").to_pylist():
            s = json.loads(raw)
            counts.update(s["counts"])
            seconds.update(s["seconds"])
            runs["parts"] += 1
            if s["ran"]:
                runs["parts_run"] += 1
                runs["units_run"] += s["counts"].get("units", 0)
                runs["views_run"] += s["counts"].get("views", 0)
    return counts, seconds, runs


def run_describe_stage(ex: Executor, units, plan, recipe: Recipe, specs: dict, out: Path,
                       log) -> tuple[float, dict]:
    """Describe as a stage of the same stream on Ray; after the units when local."""
    key = describe_stage.generation_key(recipe)
    stats = {"key": key, "units": 0, "units_reused": 0, "failed": 0}
    if ex.kind == "ray":
        from curate.describe.ray_stage import describe_parts

        def tally(t: pa.Table) -> None:
            reused = t.column("reused").to_pylist()
            stats["units"] += reused.count(False)
            stats["units_reused"] += reused.count(True)
            stats["failed"] += sum(t.column("failed").to_pylist())

        stream = RayFrame(describe_parts(units.ds, specs, recipe, str(out), log), ex.cpus)
        return ex.consume(stream, tally), stats
    seconds = ex.consume(units)
    keys = [(s, p) for t in plan.tables_iter()
            for s, p in zip(t.column("source").to_pylist(), t.column("part").to_pylist(),
                            strict=True)]
    t = time.perf_counter()
    stats = describe_stage.run_describe(keys, specs, recipe, UnitStore(out / "units"), out, log)
    return seconds + time.perf_counter() - t, stats


def build(recipe_path: Path, out: Path, *, executor: str = "ray", address: str | None = None,
          fresh: bool = False, dry_run: bool = False, data_root: str | None = None,
          llm: dict | None = None, work: Path | None = None, force: bool = False,
          log=print) -> dict:
    """Run a recipe into `out`; returns the run record that is also written to run.json.

    `out` is a folder (every node must see it on a cluster) or a pyarrow.fs URI such as
    s3://bucket/prefix: then the build runs in `work` (default: a folder under
    ~/.cache/curate) and its outputs are copied to the URI by the executor's workers.
    dry_run plans only, in this process: nothing is written, no phantom is generated,
    Ray is not started.
    """
    if is_uri(out):
        uri = str(out)
        local = Path(work) if work else default_work(uri)
        record = build(recipe_path, local, executor=executor, address=address, fresh=fresh,
                       dry_run=dry_run, data_root=data_root, llm=llm, force=force, log=log)
        if not dry_run:
            with Executor(executor, address, None) as ex:
                publish_to_uri(ex, local, uri, log)
        return record
    recipe = load_recipe(recipe_path)
    if llm:  # --llm-endpoint/--llm-model: describe with that endpoint, keep other options
        options = {**recipe.describe.options, **llm} if recipe.describe.backend == "openai" \
            else dict(llm)
        recipe.describe = recipe.describe.model_validate(
            {**recipe.describe.model_dump(), "backend": "openai", "options": options})
    out = Path(out).resolve()
    recipe_dir = Path(recipe_path).resolve().parent
    specs = resolve_sources(recipe, recipe_dir, out, data_root=data_root)
    if dry_run:
        records = [plan_source(s, recipe, generate=False).record() for s in specs]
        text = describe_plan(records) + "\n" + describe_resources(recipe, executor, address)
        log(text)
        found = [r["source"] for r in records if not r["missing"]]
        return {"plan": text, "units": sum(r["units"] for r in records if not r["missing"]),
                "found": found, "missing": {r["source"]: r["missing"] for r in records
                                            if r["missing"]}}
    check_folder(out, fresh, force)
    if fresh and out.exists():
        with BuildLock(out):  # never delete a folder another build is writing
            pass
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    with BuildLock(out):
        mark(out, recipe.name)
        gone = clean_leftovers(out)
        if gone:
            log(f"removed what an interrupted build left: {', '.join(sorted(gone)[:5])}"
                + (f" and {len(gone) - 5} more" if len(gone) > 5 else ""))
        return _build(recipe, recipe_path, recipe_dir, specs, out, executor, address, log)


def _build(recipe: Recipe, recipe_path: Path, recipe_dir: Path, specs: list[SourceSpec],
           out: Path, executor: str, address: str | None, log) -> dict:
    """The build proper, with the folder locked and cleaned."""
    t0 = time.perf_counter()
    run_id = uuid.uuid4().hex
    by_name = {s.name: s for s in specs}
    names = [s.name for s in specs]
    describe_stats, variant = {}, None
    with Executor(executor, address, recipe.run.workers) as ex:
        plan = ex.frame(pa.table({"source": names}), blocks=len(names)).map_batches(
            plan_sources, args=(recipe, by_name, str(out)), batch_size=1).materialize()
        records = read_plan_records(out, names)
        fault_point("plan")
        log(describe_plan(records))
        # a source whose folder does not exist fails the build unless marked optional
        check_required(recipe, [r for r in records
                                if (r["missing"] or "").startswith("no folder")],
                       str(recipe_path))
        if not sum(r["parts"] for r in records):
            raise CurateError("nothing to build: no source in the recipe has files; "
                              "see the list above")
        log(describe_resources(recipe, executor, address))
        plan = plan.spread(min(sum(r["parts"] for r in records), 4 * ex.cpus))
        t_plan = time.perf_counter() - t0
        units = unit_stage(ex, plan, recipe, by_name, out, run_id)
        if describe_stage.needed(recipe):
            t_run, describe_stats = run_describe_stage(ex, units, plan, recipe, by_name, out,
                                                       log)
            variant = describe_stats["key"]
        else:
            t_run = ex.consume(units)
        score_stats = {}
        if score_stage.needed(recipe):  # quality.scores: an LLM judge, a trained run
            t_score, score_stats = score_stage.run_scores(ex, plan, recipe, by_name, out,
                                                          variant, recipe_dir)
            variant, t_run = score_stats["key"], t_run + t_score
        counts, seconds, runs = sum_part_counts(plan, str(out / "units"), run_id)

        t1 = time.perf_counter()
        shipped = ship(ex, plan, recipe, out, variant, recipe_dir, reports=part_reports,
                       log=log)
        staging = out / ".staging"
        reports = [json.loads(s.pop("reports")) for s in shipped.shards]
        with shipped.step("global checks"):
            checks = global_counts(ex, staging / "manifest.parquet")
        with shipped.step("report stats"):
            dropped = merge_all(frame_stats(ex, staging / "filtered.parquet", dropped_stats))
            shipped.dropped = dropped.get("rows", 0)
            shipped.reasons.update(dropped.get("reasons", {}))
            quarantine = merge_all(frame_stats(ex, staging / "quarantine.parquet",
                                               quarantine_stats))
    validation = combine_validation([r["validation"] for r in reports], checks)
    kept_stats = merge_all([r["card"] for r in reports])
    t_final = time.perf_counter() - t1
    sums = {s["shard"]: s["sha256"] for s in shipped.shards}
    record = {
        "curate_version": __version__, "pipeline_version": PIPELINE_VERSION,
        "recipe_file": str(recipe_path), "recipe": recipe.model_dump(mode="json"),
        "sources": [s.model_dump(mode="json", exclude_none=True) for s in specs],
        "sources_found": [r["source"] for r in records if not r["missing"]],
        "sources_missing": {r["source"]: r["missing"] for r in records if r["missing"]},
        "versions": versions(), "executor": executor, "command": " ".join(sys.argv),
        "counts": {
            "units_planned": counts["units"], "units_reused": counts["units"] - runs["units_run"],
            "units_run": runs["units_run"], "parts": runs["parts"],
            "parts_run": runs["parts_run"],
            "ingest": {"cases": counts["cases"], "units_run": runs["units_run"]},
            "normalize": {"views": counts["views"]},
            "ground": {"rois": counts["rois"]},
            "describe": {"captions": shipped.kept + shipped.dropped,
                         "backend": recipe.describe.backend,
                         "generated_this_run": runs["views_run"] if not describe_stats
                         else describe_stats.get("units", 0),
                         **({"stage": describe_stats} if describe_stats else {})},
            "ask": {"vqa": counts["vqa"]},
            **({"score": score_stats} if score_stats else {}),
            "filter": {"kept": shipped.kept, "dropped": shipped.dropped,
                       "reasons": dict(sorted(shipped.reasons.items()))},
            "quarantine": shipped.quarantined,
            "shard": {"shards": len(sums), "samples": shipped.kept},
            "splits": dict(sorted(shipped.splits.items())),
            "linked_cases": shipped.linked_cases,
            "validation": {"success": validation["success"],
                           "expectations": len(validation["expectations"])},
        },
        "timings_s": {"plan": round(t_plan, 3), "run": round(t_run, 3),
                      "finalize": round(t_final, 3), "finalize_steps": shipped.seconds,
                      "total": round(time.perf_counter() - t0, 3),
                      "stages_cpu": {k: round(v, 3) for k, v in sorted(seconds.items())}},
        "shards": sums,
        **({"knowledge_base": kb_info} if (kb_info := knowledge_base_info(recipe, out, log))
           else {}),
    }
    # every output goes to the staging folder, run.json last, then all switch in at once
    atomic_text(staging / "validation.json", json.dumps(validation, indent=1))
    write_reports(staging, record, kept_stats, dropped, quarantine, specs)
    fault_point("reports")
    atomic_text(staging / "run.json", json.dumps(record, indent=2, sort_keys=True, default=str))
    publish(out)
    if not shipped.kept:
        log("WARNING: no sample was kept; quarantine.parquet and filtered.parquet say why")
    log(f"kept {shipped.kept} samples in {len(sums)} shards; filtered {shipped.dropped}; "
        f"quarantined {shipped.quarantined} file(s) -> {out}")
    return record
