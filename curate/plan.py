"""Planning: one source's files -> work units -> parts, run on a worker per source.

Listing and header reads (DICOM series grouping reads every header) happen here, in
the plan stage's workers, never in the driver. A *part* is a deterministic run of one
source's units in case order; it is what a worker processes and commits together and
what a resumed build redoes. Its id hashes the ids of its units, so a changed file or
setting redoes only the part that holds it.

What each source's planning found (units, parts, why it was skipped, planning problems)
is written to plan/<source>.json and plan/<source>.q.parquet, so the driver reads one
small file per source, never a file list.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate import PIPELINE_VERSION
from curate.ingest import ADAPTERS, Unit, adapter
from curate.ingest.base import content_fingerprint
from curate.model.errors import CurateError
from curate.model.recipe import Recipe, SourceSpec
from curate.model.records import QUARANTINE, to_table
from curate.sources.phantoms import ensure_phantoms
from curate.unit.pipeline import quarantine_row

PART_SCHEMA = pa.schema([("source", pa.string()), ("part", pa.string()),
                         ("n_units", pa.int64()), ("units", pa.binary())])


@dataclass
class SourcePlan:
    name: str
    parts: list[tuple[str, list[Unit]]] = field(default_factory=list)
    units: int = 0
    missing: str | None = None  # why the source is skipped
    problems: list[dict] = field(default_factory=list)  # quarantine rows from planning

    def record(self) -> dict:
        return {"source": self.name, "units": self.units, "parts": len(self.parts),
                "missing": self.missing, "problems": len(self.problems)}


def weights_identity(recipe: Recipe) -> list:
    """Size and content fingerprint of files that expert params point at (model weights,
    bundles), so replacing a model under the same path redoes the units it touched."""
    out = []
    for cfg in recipe.experts:
        for key, value in sorted(cfg.params.items()):
            if not isinstance(value, str) or not value or not Path(value).exists():
                continue
            root = Path(value)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                         if p.is_file())[:500]
            out.append([cfg.name, key, [(str(f.relative_to(root.parent)),
                                         content_fingerprint(f)) for f in files]])
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


def partition(name: str, units: list[Unit], size: int) -> list[tuple[str, list[Unit]]]:
    """Consecutive runs of `size` units in case order, each named by its units' ids."""
    units = sorted(units, key=lambda u: (u.key, u.unit_id))
    out = []
    for i in range(0, len(units), size):
        chunk = units[i:i + size]
        h = hashlib.sha256(name.encode())
        for u in chunk:
            h.update(b"\0" + u.unit_id.encode())
        out.append((h.hexdigest()[:24], chunk))
    return out


def plan_source(spec: SourceSpec, recipe: Recipe, generate: bool = True) -> SourcePlan:
    """Units and parts of one source; an absent or unplannable source is noted, not fatal."""
    plan = SourcePlan(spec.name)
    if spec.format not in ADAPTERS:
        plan.missing = f"format family {spec.format.value!r} has no adapter yet"
        return plan
    if spec.generate is not None:
        if not generate:  # dry run: a phantom will have exactly its declared cases
            plan.units = spec.generate.cases
            return plan
        ensure_phantoms(spec.generate, Path(spec.path))
    root = Path(spec.path)
    if not root.is_dir():
        plan.missing = f"no folder at {root}"
        return plan
    planner, _ = adapter(spec.format)
    try:
        units, problems = planner(spec, root)
    except CurateError as exc:  # e.g. a declared box table missing: skip this source only
        plan.missing = f"cannot plan: {exc}"
        return plan
    plan.problems = [quarantine_row(spec.name, "", p.file, p.stage, p.exc, root)
                     for p in problems]
    if not units:
        plan.missing = f"no files match {spec.layout.images} under {root}"
        return plan
    fp = unit_fingerprint(recipe, spec)
    stamped = [u.stamp(root, fp) for u in units]
    plan.units = len(stamped)
    plan.parts = partition(spec.name, stamped, recipe.run.units_per_part)
    return plan


def write_plan_record(plan: SourcePlan, dest: Path) -> None:
    """plan/<source>.json (+ .q.parquet for planning problems), each written atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    q = dest / f"{plan.name}.q.parquet"
    if plan.problems:
        tmp = q.with_name(q.name + f".tmp{os.getpid()}")
        pq.write_table(to_table(plan.problems, QUARANTINE), tmp)
        os.replace(tmp, q)
    else:
        q.unlink(missing_ok=True)
    target = dest / f"{plan.name}.json"
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(plan.record(), sort_keys=True))
    os.replace(tmp, target)


def part_rows(plan: SourcePlan) -> pa.Table:
    """The parts of a source as rows of the plan dataset (units pickled: same code reads)."""
    return pa.Table.from_pylist(
        [{"source": plan.name, "part": pid, "n_units": len(units),
          "units": pickle.dumps(units, protocol=pickle.HIGHEST_PROTOCOL)}
         for pid, units in plan.parts], schema=PART_SCHEMA)


def plan_sources(batch: pa.Table, recipe: Recipe, specs: dict[str, SourceSpec],
                 out: str) -> pa.Table:
    """Plan stage: rows {source} -> rows of parts; writes each source's plan record."""
    tables = [PART_SCHEMA.empty_table()]
    for name in batch.column("source").to_pylist():
        plan = plan_source(specs[name], recipe)
        write_plan_record(plan, Path(out) / "plan")
        tables.append(part_rows(plan))
    return pa.concat_tables(tables)


def read_plan_records(out: Path, names: list[str]) -> list[dict]:
    return [json.loads((out / "plan" / f"{n}.json").read_text()) for n in names]


def describe_plan(records: list[dict]) -> str:
    found = [r for r in records if not r["missing"]]
    lines = [f"sources found: {len(found)}, missing: {len(records) - len(found)}, "
             f"work units: {sum(r['units'] for r in found)} in "
             f"{sum(r['parts'] for r in found)} parts"]
    for r in found:
        lines.append(f"  + {r['source']}: {r['units']} units")
    for r in records:
        if r["missing"]:
            lines.append(f"  - {r['source']}: skipped ({r['missing']})")
    return "\n".join(lines)
