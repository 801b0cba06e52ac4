"""Executors: the same dataflow in this process (`local`) or on Ray Data (`ray`).

The build is written once against a small dataflow interface (`Frame`): map a function or
a per-actor class over batches (pyarrow tables), group by a column and map each group,
union, materialize, and iterate small results. `RayFrame` is a Ray Data dataset: blocks
live in the cluster's object store, stages stream into one another, callable classes
run on actor pools with their own CPUs and GPUs, and group-bys are distributed shuffles.
`LocalFrame` does the same with a list of tables in this process, for debugging and
tiny builds (it holds the data in memory; use `ray` for anything large).

This is the only module that imports Ray.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from curate.model.errors import CurateError, TooManyErrors
from curate.model.recipe import Recipe, SourceSpec
from curate.unit.pipeline import UnitResult, WorkerModels, process_unit, quarantine_row
from curate.unit.store import UnitStore

UNIT_OUT = pa.schema([("source", pa.string()), ("part", pa.string()), ("views", pa.int64())])


class ErrorBudget:
    """Stops a build when too many work units fail (one instance per build)."""

    def __init__(self, max_error_frac: float, min_units: int):
        self.max_frac, self.min_units, self.done, self.failed = max_error_frac, min_units, 0, 0

    def add(self, units: int, failed: int) -> str | None:
        self.done += units
        self.failed += failed
        if self.done >= self.min_units and self.failed / self.done > self.max_frac:
            return (f"{self.failed} of {self.done} finished work units failed (limit "
                    f"{self.max_frac:.0%}); see quarantine rows under units/ and fix the "
                    "source layout, or raise run.max_error_frac")
        return None


def merge_results(part_id: str, results: list[UnitResult]) -> UnitResult:
    merged = UnitResult(part_id)
    for r in results:
        merged.samples += r.samples
        merged.quarantine += r.quarantine
        merged.counts.update(r.counts)
        merged.seconds.update(r.seconds)
    merged.counts["units"] = len(results)
    merged.counts["units_failed"] = sum(bool(r.quarantine) for r in results)
    return merged


def failed_part(source: str, part: str, units: list, exc: BaseException, root: Path,
                run_id: str) -> UnitResult:
    """A part whose processing or commit failed outside the pipeline's own handling (a
    crash in a C library, an out-of-memory kill, a failed write): one quarantine row per
    unit, so the build goes on. Delete units/<source>/<part>.* to try it again."""
    results = []
    for unit in units:
        r = UnitResult(unit.unit_id)
        r.quarantine.append(quarantine_row(source, unit.unit_id, unit.files[0], "worker",
                                           exc, root))
        r.counts["quarantined"] = 1
        results.append(r)
    merged = merge_results(part, results)
    merged.run = run_id
    return merged


class WorkerCrashed(CurateError):
    """The worker process died (twice) while processing a part."""


MAX_ATTEMPTS = 2


class UnitStage:
    """Processes and commits parts; on Ray one per actor, so models load once per actor.

    Input rows: plan parts (source, part, n_units, units); output rows: (source, part,
    views). A part that already has a marker is passed through without work (resume).
    """

    def __init__(self, recipe: Recipe, specs: dict[str, SourceSpec], store_root: str,
                 run_id: str, budget=None):
        self.recipe, self.specs, self.run_id, self.budget = recipe, specs, run_id, budget
        self.store = UnitStore(Path(store_root))
        self.models = WorkerModels(recipe)

    def run_part(self, source: str, part: str, units: list) -> dict:
        spec = self.specs[source]
        root = Path(spec.path)
        results = []
        for unit in units:
            try:
                results.append(process_unit(spec, root, unit, self.recipe, self.models))
            except Exception as exc:  # noqa: BLE001 - one failing unit never stops a build
                results.append(failed_part(source, unit.unit_id, [unit], exc, root,
                                           self.run_id))
        merged = merge_results(part, results)
        merged.run = self.run_id
        try:
            return self.store.commit(source, merged)
        except Exception as exc:  # noqa: BLE001 - a failed write costs this part only
            return self.store.commit(source, failed_part(source, part, units, exc, root,
                                                         self.run_id))

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for row in batch.to_pylist():
            source, part = row["source"], row["part"]
            damage = self.store.verify(source, part) if self.store.is_done(source, part) \
                else "not committed"
            if damage is None:
                summary = self.store.summary(source, part)
            else:
                if damage != "not committed":  # a notice on the driver's log, then redo
                    print(f"curate: redoing part {source}/{part}: {damage}", flush=True)
                summary = self._attempt(source, part, pickle.loads(row["units"]))
                self._check(summary["counts"])
            out.append({"source": row["source"], "part": row["part"],
                        "views": summary["counts"].get("views", 0)})
        return pa.Table.from_pylist(out, schema=UNIT_OUT)

    def _attempt(self, source: str, part: str, units: list) -> dict:
        """Run a part, counting attempts on disk: a part that killed its worker
        MAX_ATTEMPTS times (a crash in a C library, an out-of-memory kill; Ray restarts
        the actor and retries) is quarantined instead of being retried forever."""
        marker = self.store.root / source / f"{part}.attempts"
        marker.parent.mkdir(parents=True, exist_ok=True)
        tries = int(marker.read_text() or 0) if marker.exists() else 0
        if tries >= MAX_ATTEMPTS:
            exc = WorkerCrashed(f"the worker died {tries} times while processing this part")
            summary = self.store.commit(source, failed_part(
                source, part, units, exc, Path(self.specs[source].path), self.run_id))
        else:
            marker.write_text(str(tries + 1))
            summary = self.run_part(source, part, units)
        marker.unlink(missing_ok=True)
        return summary

    def _check(self, counts: dict) -> None:
        if self.budget is None:
            return
        args = (counts.get("units", 0), counts.get("units_failed", 0))
        if isinstance(self.budget, ErrorBudget):
            message = self.budget.add(*args)
        else:  # a Ray actor handle shared by every worker
            import ray

            message = ray.get(self.budget.add.remote(*args))
        if message:
            raise TooManyErrors(message)


class LocalFrame:
    """A list of pyarrow tables processed in this process."""

    def __init__(self, tables: list[pa.Table]):
        self.tables = [t for t in tables if t.num_rows]

    def map_batches(self, fn, *, args: tuple = (), batch_size: int | None = None,
                    **_resources) -> LocalFrame:
        f = fn(*args) if isinstance(fn, type) else (lambda t: fn(t, *args))
        out = []
        for t in self.tables:
            step = batch_size or t.num_rows
            out += [f(t.slice(i, step)) for i in range(0, t.num_rows, step)]
        return LocalFrame(out)

    def groupby_map(self, key: str, fn, *, args: tuple = (), **_resources) -> LocalFrame:
        if not self.tables:
            return LocalFrame([])
        t = pa.concat_tables(self.tables).sort_by(key)
        keys = t.column(key)
        starts = [0] + [i for i in range(1, t.num_rows) if keys[i] != keys[i - 1]] + [t.num_rows]
        return LocalFrame([fn(t.slice(a, b - a), *args) for a, b in zip(starts[:-1], starts[1:],
                                                                       strict=True)])

    def partition_map(self, key: str, fn, *, args: tuple = (), partitions: int = 1,
                      **_resources) -> LocalFrame:
        """fn over all rows at once: in one process every key is in one partition."""
        if not self.tables:
            return LocalFrame([])
        return LocalFrame([fn(pa.concat_tables(self.tables), *args)])

    def union(self, *others: LocalFrame) -> LocalFrame:
        return LocalFrame(self.tables + [t for o in others for t in o.tables])

    def materialize(self) -> LocalFrame:
        return self

    def count(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def spread(self, blocks: int) -> LocalFrame:
        return self

    def tables_iter(self) -> Iterator[pa.Table]:
        yield from self.tables


class RayFrame:
    """A Ray Data dataset; every method returns a new lazy dataset except the iterators."""

    def __init__(self, ds, cpus: int):
        self.ds, self.cpus = ds, cpus

    def _wrap(self, ds) -> RayFrame:
        return RayFrame(ds, self.cpus)

    def map_batches(self, fn, *, args: tuple = (), batch_size: int | None = None,
                    num_cpus: float = 1, num_gpus: float = 0,
                    concurrency: int | None = None) -> RayFrame:
        kwargs = dict(batch_format="pyarrow", zero_copy_batch=True, batch_size=batch_size,
                      num_cpus=num_cpus)
        if num_gpus:
            kwargs["num_gpus"] = num_gpus
        if isinstance(fn, type):
            kwargs.update(fn_constructor_args=args, max_restarts=-1,
                          max_task_retries=MAX_ATTEMPTS + 1,
                          concurrency=concurrency or max(1, int(self.cpus // max(num_cpus, 1))))
            return self._wrap(self.ds.map_batches(fn, **kwargs))
        return self._wrap(self.ds.map_batches(fn, fn_args=args, **kwargs))

    def groupby_map(self, key: str, fn, *, args: tuple = (), num_cpus: float = 1) -> RayFrame:
        """fn(group, *args) once per value of `key`: for few, large groups (shards)."""
        return self._wrap(self.ds.groupby(key).map_groups(
            fn, fn_args=args, batch_format="pyarrow", num_cpus=num_cpus))

    def partition_map(self, key: str, fn, *, args: tuple = (), partitions: int = 1,
                      num_cpus: float = 1) -> RayFrame:
        """fn over hash partitions of `key`: every row of a key lands in one call, with
        the rows of many other keys. One call per partition instead of one per key
        (millions of image hashes or bands), so fn should handle many keys at once."""
        ds = self.ds.map_batches(add_partition, fn_args=(key, max(1, partitions)),
                                 batch_format="pyarrow")
        return self._wrap(ds.groupby(PARTITION).map_groups(
            drop_partition, fn_args=(fn, *args), batch_format="pyarrow", num_cpus=num_cpus))

    def union(self, *others: RayFrame) -> RayFrame:
        return self._wrap(self.ds.union(*[o.ds for o in others])) if others else self

    def materialize(self) -> RayFrame:
        return self._wrap(self.ds.materialize())

    def count(self) -> int:
        """Rows, from block metadata once materialized: no rows pass through the driver."""
        return self.ds.count()

    def spread(self, blocks: int) -> RayFrame:
        """The rows in `blocks` blocks, so an actor pool downstream gets work for every
        actor (a source plans into one block, and one block goes to one actor)."""
        return self._wrap(self.ds.repartition(max(1, blocks)).materialize())

    def tables_iter(self) -> Iterator[pa.Table]:
        for batch in self.ds.iter_batches(batch_format="pyarrow", batch_size=None):
            if batch.num_rows:
                yield batch


PARTITION = "_partition"


def add_partition(t: pa.Table, key: str, partitions: int) -> pa.Table:
    parts = [zlib.crc32(v.encode()) % partitions if v is not None else 0
             for v in t.column(key).to_pylist()]
    return t.append_column(PARTITION, pa.array(parts, pa.int32()))


def drop_partition(t: pa.Table, fn, *args) -> pa.Table:
    return fn(t.drop_columns([PARTITION]), *args)


def unwrap(exc: BaseException) -> BaseException:
    """The CurateError inside a Ray task error, if there is one."""
    seen = exc
    for _ in range(10):
        if isinstance(seen, CurateError):
            return seen
        nxt = getattr(seen, "cause", None) or seen.__cause__
        if nxt is None:
            break
        seen = nxt
    return exc


class Executor:
    """Starts (or joins) Ray once per build and makes frames; a context manager."""

    def __init__(self, kind: str, address: str | None = None, workers: int | None = None):
        if kind not in ("local", "ray"):
            raise ValueError(f"unknown executor {kind!r} (local | ray)")
        self.kind, self.address, self.workers = kind, address, workers
        self.started_here = False
        self.cpus = 1

    def __enter__(self) -> Executor:
        if self.kind == "ray":
            import ray

            address = self.address or os.environ.get("RAY_ADDRESS")
            if not ray.is_initialized():
                ray.init(address=address, logging_level=logging.WARNING,
                         include_dashboard=False, configure_logging=True, log_to_driver=True)
                self.started_here = True
            from ray.data.context import ShuffleStrategy

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = True
            # sort-based shuffles start no aggregator actors: ~0.1 s per group-by on small
            # tables instead of ~5 s, and they are Ray's proven path at terabyte scale
            ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
            self.cpus = int(ray.cluster_resources().get("CPU", 1))
            if self.workers:
                self.cpus = min(self.cpus, self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self.started_here:
            import ray

            ray.shutdown()

    def frame(self, table: pa.Table, blocks: int | None = None):
        if self.kind == "local":
            return LocalFrame([table])
        import ray

        n = max(1, min(table.num_rows, blocks or table.num_rows))
        step = -(-table.num_rows // n)  # one block per slice, so small rows spread out
        return RayFrame(ray.data.from_arrow([table.slice(i, step)
                                             for i in range(0, table.num_rows, step)]),
                        self.cpus)

    def read_parquet(self, path: Path, columns: list[str] | None = None):
        """A frame over a Parquet file or folder of parts, or None if there is none."""
        path = Path(path)
        if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
            return None
        if self.kind == "local":
            import pyarrow.parquet as pq

            return LocalFrame([pq.read_table(path, columns=columns)])
        import ray

        return RayFrame(ray.data.read_parquet(str(path), columns=columns), self.cpus)

    def budget(self, recipe: Recipe):
        b = ErrorBudget(recipe.run.max_error_frac, recipe.run.min_units_for_error_check)
        if self.kind == "local":
            return b
        import ray

        return ray.remote(num_cpus=0)(ErrorBudget).remote(
            recipe.run.max_error_frac, recipe.run.min_units_for_error_check)

    def gpus(self) -> float:
        if self.kind == "local":
            return 0.0
        import ray

        return float(ray.cluster_resources().get("GPU", 0))

    def consume(self, frame, on_table: Callable[[pa.Table], None] | None = None) -> float:
        """Run a frame to the end, feeding each small result table to on_table."""
        t = time.perf_counter()
        try:
            for table in frame.tables_iter():
                if on_table:
                    on_table(table)
        except Exception as exc:  # noqa: BLE001 - surface the CurateError a worker raised
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise
        return time.perf_counter() - t

