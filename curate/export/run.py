"""`curate export`: a finished build to the files a VLM trainer reads, one task per shard.

Each shard is a task on the executor (`local`: this process; `ray`: the cluster), which
reads the shard's manifest part and tar in step and writes its own output (image files
and a fragment of records, or a Parquet file). The driver holds the list of shards and
their counts, never a sample: it joins each split's fragments by copying bytes and
writes the small side files (LLaMA-Factory's dataset_info.json, the hf README, and
OUT/export-<format>.json with the counts).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa

from curate.export import chat, hf
from curate.export.shards import shard_list
from curate.model.errors import CurateError

FORMATS = ("llava", "sharegpt", "swift", "hf")
COUNTS = ("samples", "exported", "no_text", "turns", "images_written", "images_kept")
RESULT = pa.schema([("shard", pa.string()), ("split", pa.string()), ("counts", pa.string())])


def export_batch(batch: pa.Table, build_dir: str, fmt: str, out: str, opts: dict) -> pa.Table:
    """The executor's task: export every shard named in the batch (usually one)."""
    rows = []
    for job in batch.to_pylist():
        if fmt == "hf":
            counts = hf.export_shard(Path(build_dir), job["shard"], Path(out), opts)
        else:
            counts = chat.export_shard(Path(build_dir), job["shard"], fmt, Path(out), opts)
        rows.append({**job, "counts": json.dumps(counts)})
    return pa.Table.from_pylist(rows, schema=RESULT)


def clear_outputs(out: Path, fmt: str) -> None:
    """Remove what an earlier export of this format left in OUT (images are kept: they
    are named by content-derived ids and shared by the JSON formats)."""
    if fmt == "hf":
        for p in (out / "data").glob("*.parquet"):
            p.unlink()
    else:
        for p in out.glob(f"{fmt}-*.{chat.SUFFIX[fmt]}"):
            p.unlink()
        shutil.rmtree(out / chat.PARTS / fmt, ignore_errors=True)


def build_name(build_dir: Path) -> str:
    try:
        return json.loads((build_dir / "run.json").read_text())["recipe"]["name"]
    except (OSError, KeyError, TypeError, ValueError):
        return build_dir.resolve().name


def export_build(build_dir: str | Path, fmt: str, out: str | Path, *,
                 splits: list[str] | None = None, image_root: str | None = None,
                 prompt: str | None = None, caption: bool = True, vqa: bool = True,
                 executor: str = "local", address: str | None = None, log=print) -> dict:
    """Export BUILD_DIR's splits to OUT in `fmt`; returns the summary also written to
    OUT/export-<fmt>.json.

    image_root: the prefix written before `images/...` in the JSON formats (default:
    relative paths for llava and sharegpt, OUT's absolute path for swift, which resolves
    relative paths against its working directory).
    prompt: one caption prompt for every sample (default: one of a few, by sample id).
    caption / vqa: include the caption turn / the VQA turns.
    """
    if fmt not in FORMATS:
        raise CurateError(f"unknown export format {fmt!r} (one of: {', '.join(FORMATS)})")
    if executor not in ("local", "ray"):
        raise CurateError(f"unknown executor {executor!r} (local | ray)")
    if not (caption or vqa):
        raise CurateError("nothing to export: both the caption and the VQA turns are off")
    build_dir, out = Path(build_dir), Path(out)
    jobs = shard_list(build_dir, splits)
    if out.resolve() == build_dir.resolve() or build_dir.resolve() in out.resolve().parents:
        raise CurateError(f"--out {out} is inside the build {build_dir}; export elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out, fmt)
    if fmt == "swift" and image_root is None:
        image_root = str(out.resolve())
    opts = {"image_root": image_root, "prompt": prompt, "caption": caption, "vqa": vqa}
    log(f"exporting {len(jobs)} shard(s) of {build_dir} as {fmt} to {out} ({executor})")

    results = []
    args = (str(build_dir), fmt, str(out), opts)
    if executor == "local":  # the shards one by one here, without importing the build stack
        every = max(1, len(jobs) // 10)
        for i, job in enumerate(jobs, 1):
            results += export_batch(pa.Table.from_pylist([job]), *args).to_pylist()
            if i % every == 0 or i == len(jobs):
                log(f"  {i}/{len(jobs)} shards")
    else:
        from curate.runner import Executor

        with Executor(executor, address=address) as ex:
            frame = ex.frame(pa.Table.from_pylist(jobs), blocks=len(jobs))
            ex.consume(frame.map_batches(export_batch, args=args, batch_size=1),
                       on_table=lambda t: results.extend(t.to_pylist()))
    by_split: dict[str, dict] = {}
    for r in results:
        totals = by_split.setdefault(r["split"], dict.fromkeys(COUNTS, 0))
        for k, v in json.loads(r["counts"]).items():
            totals[k] += v
    order = sorted(by_split, key=lambda s: (list(hf.HF_SPLIT).index(s)
                                            if s in hf.HF_SPLIT else 9, s))
    files = write_side_files(build_dir, out, fmt, order, jobs)
    summary = {"format": fmt, "build": str(build_dir), "files": files,
               "splits": {s: {k: v for k, v in by_split[s].items() if v or k == "samples"}
                          for s in order}}
    (out / f"export-{fmt}.json").write_text(json.dumps(summary, indent=1) + "\n")
    for s in order:
        c = by_split[s]
        log(f"  {s}: {c['exported']} of {c['samples']} samples"
            + (f", {c['turns']} turns" if fmt != "hf" else "")
            + (f" ({c['no_text']} without text, left out)" if c["no_text"] else ""))
    return summary


def write_side_files(build_dir: Path, out: Path, fmt: str, splits: list[str],
                     jobs: list[dict]) -> dict[str, str]:
    """Join the fragments (JSON formats) or write the README (hf); {split: file}."""
    name = build_name(build_dir)
    if fmt == "hf":
        card = build_dir / "DATACARD.md"
        hf.write_readme(out, name, splits, card.read_text() if card.is_file() else None)
        return {s: f"data/{s}-*.parquet" for s in splits}
    files = {}
    for split in splits:
        shards = [j["shard"] for j in jobs if j["split"] == split]
        files[split] = chat.merge_split(out, fmt, split, shards).name
    shutil.rmtree(out / chat.PARTS / fmt, ignore_errors=True)
    parts = out / chat.PARTS
    if parts.is_dir() and not any(parts.iterdir()):
        parts.rmdir()
    if fmt == "sharegpt":
        chat.dataset_info(out, name, files)
    return files
