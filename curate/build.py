"""`curate build`: plan work units, run them, and write the dataset and its record."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate import PIPELINE_VERSION, __version__, describe_stage
from curate.config import Recipe, SourceSpec, load_recipe, resolve_sources
from curate.croissant import write_croissant
from curate.datacard import write_datacard
from curate.errors import CurateError
from curate.figures import contact_sheet
from curate.finalize import ship
from curate.ingest import ADAPTERS, adapter
from curate.phantoms import ensure_phantoms
from curate.pipeline import quarantine_row
from curate.records import QUARANTINE, to_table
from curate.runner import Task, execute
from curate.shard import checksums
from curate.store import UnitStore
from curate.validate import validate_manifest

PACKAGES = ["curate", "numpy", "pyarrow", "polars", "ray", "monai", "torch", "SimpleITK",
            "pydicom", "nibabel", "webdataset", "great-expectations", "openai", "pillow"]


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # source -> why
    problems: list[dict] = field(default_factory=list)  # quarantine rows from planning
    units_per_source: Counter = field(default_factory=Counter)


def weights_identity(recipe: Recipe) -> list:
    """Size and mtime of files that expert params point at (model weights, bundles), so
    replacing a model under the same path redoes the units it touched."""
    out = []
    for cfg in recipe.experts:
        for key, value in sorted(cfg.params.items()):
            if not isinstance(value, str) or not value or not Path(value).exists():
                continue
            root = Path(value)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                         if p.is_file())[:500]
            out.append([cfg.name, key, [(str(f.relative_to(root.parent)), f.stat().st_size,
                                         f.stat().st_mtime_ns) for f in files]])
    return out


def unit_fingerprint(recipe: Recipe, spec: SourceSpec) -> str:
    """What a unit's output depends on besides its files; changing any of it redoes it."""
    parts = {
        "pipeline": PIPELINE_VERSION, "seed": recipe.seed, "salt": recipe.salt,
        "weights": weights_identity(recipe),
        "sections": {s: recipe.fingerprint(s)
                     for s in ("normalize", "ground", "ask", "experts")},
        "source": spec.model_dump(mode="json", exclude={"path", "generate", "notes", "citation",
                                                       "homepage", "title", "access"}),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(recipe: Recipe, specs: list[SourceSpec], generate: bool = True) -> Plan:
    """Work units of every present source; absent or unreadable sources are noted, not fatal."""
    plan = Plan()
    for spec in specs:
        if spec.format not in ADAPTERS:
            plan.missing[spec.name] = f"format family {spec.format.value!r} has no adapter yet"
            continue
        if spec.generate is not None:
            if not generate:  # dry run: a phantom will have exactly its declared cases
                plan.found.append(spec.name)
                plan.units_per_source[spec.name] = spec.generate.cases
                continue
            ensure_phantoms(spec.generate, Path(spec.path))
        root = Path(spec.path)
        if not root.is_dir():
            plan.missing[spec.name] = f"no folder at {root}"
            continue
        planner, _ = adapter(spec.format)
        try:
            units, problems = planner(spec, root)
        except CurateError as exc:  # e.g. a declared box table missing: skip this source only
            plan.missing[spec.name] = f"cannot plan: {exc}"
            continue
        plan.problems += [quarantine_row(spec.name, "", p.file, p.stage, p.exc, root)
                          for p in problems]
        if not units:
            plan.missing[spec.name] = f"no files match {spec.layout.images} under {root}"
            continue
        fp = unit_fingerprint(recipe, spec)
        plan.found.append(spec.name)
        for unit in units:
            plan.tasks.append(Task(spec, root, unit.stamp(root, fp)))
        plan.units_per_source[spec.name] = len(units)
    return plan


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe_plan(plan: Plan) -> str:
    lines = [f"sources found: {len(plan.found)}, missing: {len(plan.missing)}, "
             f"work units: {sum(plan.units_per_source.values())}"]
    for name in plan.found:
        lines.append(f"  + {name}: {plan.units_per_source[name]} units")
    for name, why in plan.missing.items():
        lines.append(f"  - {name}: skipped ({why})")
    return "\n".join(lines)


def describe_resources(recipe: Recipe, executor: str, address: str | None) -> str:
    from curate.pipeline import WorkerModels

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
    ])


def build(recipe_path: Path, out: Path, *, executor: str = "ray", address: str | None = None,
          fresh: bool = False, dry_run: bool = False, data_root: str | None = None,
          llm: dict | None = None, log=print) -> dict:
    """Run a recipe into `out`; returns the run record that is also written to run.json.

    dry_run plans only: nothing is written, no phantom is generated, Ray is not started.
    """
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_path)
    if llm:  # --llm-endpoint/--llm-model: describe with that endpoint, keep other options
        options = {**recipe.describe.options, **llm} if recipe.describe.backend == "openai" \
            else dict(llm)
        recipe.describe = recipe.describe.model_validate(
            {**recipe.describe.model_dump(), "backend": "openai", "options": options})
    out = Path(out).resolve()
    specs = resolve_sources(recipe, Path(recipe_path).resolve().parent, out, data_root=data_root)
    if dry_run:
        plan = make_plan(recipe, specs, generate=False)
        text = describe_plan(plan) + "\n" + describe_resources(recipe, executor, address)
        log(text)
        return {"plan": text, "units": sum(plan.units_per_source.values()), "found": plan.found,
                "missing": plan.missing}
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(recipe, specs)
    log(describe_plan(plan))
    if not plan.tasks:
        raise CurateError("nothing to build: no source in the recipe has files; see the list above")
    t_plan = time.perf_counter() - t0

    store = UnitStore(out / "units")
    todo = [t for t in plan.tasks if not store.is_done(t.spec.name, t.unit.unit_id)]
    log(f"{len(plan.tasks) - len(todo)} work units already committed, {len(todo)} to run")
    summaries, t_run = execute(todo, recipe, out / "units", executor, address)
    keys = [(t.spec.name, t.unit.unit_id) for t in plan.tasks]

    t_desc = time.perf_counter()
    describe_stats, variant = {}, None
    if describe_stage.needed(recipe):
        describe_stats = describe_stage.run_describe(
            keys, {s.name: s for s in specs}, recipe, store, out, log)
        variant = describe_stats["key"]
    t_desc = time.perf_counter() - t_desc

    t1 = time.perf_counter()
    counts, seconds = Counter(), Counter()
    for s, u in keys:
        summary = store.summary(s, u)
        counts.update(summary["counts"])
        seconds.update(summary["seconds"])
    quarantine = pa.concat_tables([to_table(plan.problems, QUARANTINE),
                                   store.load(keys, quarantine=True)]
                                  + ([store.load(keys, quarantine=True, variant=variant)]
                                     if variant else []))
    shipped = ship(store, keys, variant, recipe, out, Path(recipe_path).resolve().parent)
    pq.write_table(quarantine, out / "quarantine.parquet")
    kept, dropped = pq.read_table(out / "manifest.parquet"), pq.read_table(out / "filtered.parquet")
    validation = validate_manifest(kept)
    (out / "validation.json").write_text(json.dumps(validation, indent=1))
    sums = checksums(out / "shards")
    (out / "shards" / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in sums.items()))
    t_final = time.perf_counter() - t1

    record = {
        "curate_version": __version__, "pipeline_version": PIPELINE_VERSION,
        "recipe_file": str(recipe_path), "recipe": recipe.model_dump(mode="json"),
        "sources": [s.model_dump(mode="json", exclude_none=True) for s in specs],
        "sources_found": plan.found, "sources_missing": plan.missing,
        "versions": versions(), "executor": executor, "command": " ".join(sys.argv),
        "counts": {
            "units_planned": len(plan.tasks), "units_reused": len(plan.tasks) - len(todo),
            "units_run": len(summaries),
            "ingest": {"cases": counts["cases"], "units_run": len(summaries)},
            "normalize": {"views": counts["views"]},
            "ground": {"rois": counts["rois"]},
            "describe": {"captions": shipped.kept + shipped.dropped,
                         "backend": recipe.describe.backend,
                         "generated_this_run": sum(s["counts"].get("views", 0)
                                                   for s in summaries)
                         if variant is None else describe_stats.get("units", 0),
                         **({"stage": describe_stats} if describe_stats else {})},
            "ask": {"vqa": counts["vqa"]},
            "filter": {"kept": shipped.kept, "dropped": shipped.dropped,
                       "reasons": dict(sorted(shipped.reasons.items()))},
            "quarantine": quarantine.num_rows,
            "shard": {"shards": len(sums), "samples": shipped.kept},
            "splits": dict(sorted(shipped.splits.items())),
            "validation": {"success": validation["success"],
                           "expectations": len(validation["expectations"])},
        },
        "timings_s": {"plan": round(t_plan, 3), "run": round(t_run, 3),
                      "describe": round(t_desc, 3),
                      "finalize": round(t_final, 3),
                      "total": round(time.perf_counter() - t0, 3),
                      "stages_cpu": {k: round(v, 3) for k, v in sorted(seconds.items())}},
        "shards": sums,
    }
    (out / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    sheet = contact_sheet(out / "shards", kept.select(
        ["sample_id", "source", "shard", "rois", "caption"]).to_pylist(),
        out / "figures" / "samples.png")
    write_datacard(out / "DATACARD.md", record, kept, dropped, quarantine, specs,
                   figure="figures/samples.png" if sheet else None)
    write_croissant(out, record, sorted({(s.license.spdx or s.license.name) if s.license
                                         else "unknown" for s in specs}))
    if not kept.num_rows:
        log("WARNING: no sample was kept; quarantine.parquet and filtered.parquet say why")
    log(f"kept {kept.num_rows} samples in {len(sums)} shards; filtered {dropped.num_rows}; "
        f"quarantined {quarantine.num_rows} file(s) -> {out}")
    return record
