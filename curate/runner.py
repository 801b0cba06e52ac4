"""Executes work units locally in-process or on Ray. The only module that imports Ray.

Workers are Ray actors (one per CPU, or per GPU when experts need one) that load their
models once and then process and commit units one by one, so a crash loses at most the
units in flight; a re-run skips units already committed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from curate.config import Recipe, SourceSpec
from curate.errors import CurateError, TooManyErrors
from curate.ingest import Unit
from curate.pipeline import UnitResult, WorkerModels, process_unit, quarantine_row
from curate.store import UnitStore


@dataclass
class Task:
    spec: SourceSpec
    root: Path
    unit: Unit


class UnitWorker:
    """Processes and commits units; on Ray one per actor, so models load once per actor."""

    def __init__(self, recipe: Recipe, store_root: str):
        self.recipe = recipe
        self.store = UnitStore(Path(store_root))
        self.models = WorkerModels(recipe)

    def run(self, task: Task) -> dict:
        result = process_unit(task.spec, task.root, task.unit, self.recipe, self.models)
        return self.store.commit(task.spec.name, result)


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


def failed_unit(task: Task, exc: BaseException, store_root: Path) -> dict:
    """Commit a unit whose worker failed outside the pipeline's own error handling (a
    crash in a C library, an out-of-memory kill, a failed write) as one quarantine row,
    so the build goes on. Delete its files under units/ to try it again."""
    result = UnitResult(task.unit.unit_id)
    result.quarantine.append(quarantine_row(task.spec.name, task.unit.unit_id,
                                            task.unit.files[0], "worker", exc, task.root))
    result.counts["quarantined"] = 1
    return UnitStore(store_root).commit(task.spec.name, result)


def run_local(tasks: list[Task], recipe: Recipe, store_root: Path) -> list[dict]:
    budget, out = ErrorBudget(recipe, len(tasks)), []
    worker = UnitWorker(recipe, str(store_root))
    with _progress(len(tasks), "units (local)") as bar:
        for task in tasks:
            try:
                summary = worker.run(task)
            except Exception as exc:  # noqa: BLE001 - one failing unit never stops a build
                summary = failed_unit(task, exc, store_root)
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
        need = WorkerModels.resources(recipe)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = max(1, min(len(tasks), cpus // max(1, int(need["num_cpus"]))))
        if need["num_gpus"]:
            n = min(n, int(gpus / need["num_gpus"]))
            if n == 0:
                raise CurateError(f"the configured experts need {need['num_gpus']} GPU per "
                                  "worker and the cluster has none")
        actor = ray.remote(num_cpus=need["num_cpus"], num_gpus=need["num_gpus"],
                           max_restarts=1, max_task_retries=1)(UnitWorker)

        def spawn():
            return actor.remote(recipe, str(store_root))

        idle = [spawn() for _ in range(n)]
        pending: dict = {}  # object ref -> (actor, task)
        queue = iter(tasks)
        budget, out = ErrorBudget(recipe, len(tasks)), []
        with _progress(len(tasks), f"units (ray, {n} workers)") as bar:
            while True:
                while idle:
                    task = next(queue, None)
                    if task is None:
                        break
                    worker = idle.pop()
                    pending[worker.run.remote(task)] = (worker, task)
                if not pending:
                    break
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                worker, task = pending.pop(ref)
                try:
                    summary = ray.get(ref)
                except ray.exceptions.RayError as exc:  # task error, dead actor or worker
                    summary = failed_unit(task, exc, store_root)
                    if isinstance(exc, ray.exceptions.RayActorError):
                        worker = spawn()  # the old one is gone for good
                idle.append(worker)
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
