"""Executes work units locally in-process or on Ray. The only module that imports Ray.

Each task processes one unit and commits it itself, so a crash loses at most the units
in flight; a re-run skips units already committed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from curate.config import Recipe, SourceSpec
from curate.errors import TooManyErrors
from curate.ingest import Unit
from curate.pipeline import process_unit
from curate.store import UnitStore


@dataclass
class Task:
    spec: SourceSpec
    root: Path
    unit: Unit


def run_task(task: Task, recipe: Recipe, store_root: str) -> dict:
    result = process_unit(task.spec, task.root, task.unit, recipe)
    return UnitStore(Path(store_root)).commit(task.spec.name, result)


class ErrorBudget:
    def __init__(self, recipe: Recipe, total: int):
        self.cfg, self.total, self.done, self.failed = recipe.run, total, 0, 0

    def add(self, summary: dict) -> None:
        self.done += 1
        self.failed += bool(summary["counts"].get("quarantined"))
        if self.done >= self.cfg.min_units_for_error_check and \
                self.failed / self.done > self.cfg.max_error_frac:
            raise TooManyErrors(
                f"{self.failed} of {self.done} finished work units failed "
                f"(limit {self.cfg.max_error_frac:.0%}); see the quarantine rows under units/ "
                "and fix the source layout, or raise run.max_error_frac"
            )


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="unit", dynamic_ncols=True, mininterval=0.5)


def run_local(tasks: list[Task], recipe: Recipe, store_root: Path) -> list[dict]:
    budget, out = ErrorBudget(recipe, len(tasks)), []
    with _progress(len(tasks), "units (local)") as bar:
        for task in tasks:
            summary = run_task(task, recipe, str(store_root))
            out.append(summary)
            budget.add(summary)
            bar.update(1)
    return out


def run_ray(tasks: list[Task], recipe: Recipe, store_root: Path, address: str | None) -> list[dict]:
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False,
                 configure_logging=True, log_to_driver=True)
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(run_task)
        recipe_ref = ray.put(recipe)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = recipe.run.max_in_flight or max(2, 2 * cpus)
        budget, out, pending = ErrorBudget(recipe, len(tasks)), [], []
        queue: Iterable[Task] = iter(tasks)
        with _progress(len(tasks), f"units (ray, {cpus} CPUs)") as bar:
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < window:
                    task = next(queue, None)
                    if task is None:
                        exhausted = True
                        break
                    pending.append(remote.remote(task, recipe_ref, str(store_root)))
                if not pending:
                    break
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    summary = ray.get(ref)
                    out.append(summary)
                    budget.add(summary)
                    bar.update(1)
        return out
    finally:
        if started_here:
            ray.shutdown()


def execute(tasks: list[Task], recipe: Recipe, store_root: Path, executor: str,
            address: str | None = None) -> tuple[list[dict], float]:
    t = time.perf_counter()
    if not tasks:
        return [], 0.0
    if executor == "local":
        out = run_local(tasks, recipe, store_root)
    elif executor == "ray":
        out = run_ray(tasks, recipe, store_root, address)
    else:
        raise ValueError(f"unknown executor {executor!r} (local | ray)")
    return out, time.perf_counter() - t
