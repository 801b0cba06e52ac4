"""The JSON conversation formats VLM trainers read: LLaVA, LLaMA-Factory's sharegpt, ms-swift.

One record per sample: the image (a file under OUT/images/, written once, named by the
sample id) and its caption and VQA items as turns (curate.export.turns), the image
placeholder `<image>` opening the first user turn. See docs/export.md for each format
and the trainer command lines.

Each shard task writes its records as a fragment; `merge_split` joins a split's fragments,
in shard order, into one file by copying bytes (no per-sample work in the driver): a JSON
array for llava and sharegpt (what LLaVA's loader and LLaMA-Factory's docs read), JSON
Lines for swift.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from curate.export.shards import read_shard
from curate.export.turns import turns, with_image

SUFFIX = {"llava": "json", "sharegpt": "json", "swift": "jsonl"}
PARTS = ".export-parts"


def image_relpath(sample_id: str) -> str:
    """images/<first two hex digits>/<id>.png: at most a few hundred thousand files a
    folder at 25M samples."""
    return f"images/{sample_id[:2]}/{sample_id}.png"


def image_ref(sample_id: str, image_root: str | None) -> str:
    rel = image_relpath(sample_id)
    return f"{image_root.rstrip('/')}/{rel}" if image_root else rel


def write_image(out: Path, sample_id: str, png: bytes) -> bool:
    """Write the PNG once; an existing file of the same size (an earlier export of the
    same build: ids hash the content) is kept. True when written."""
    path = out / image_relpath(sample_id)
    try:
        if path.stat().st_size == len(png):
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return True


def from_value(pairs: list[tuple[str, str]]) -> list[dict]:
    """LLaVA / sharegpt turns: {"from": "human"|"gpt", "value": ...}."""
    out = []
    for i, (question, answer) in enumerate(pairs):
        out.append({"from": "human", "value": with_image(question) if i == 0 else question})
        out.append({"from": "gpt", "value": answer})
    return out


def role_content(pairs: list[tuple[str, str]]) -> list[dict]:
    """OpenAI-style messages (ms-swift): {"role": "user"|"assistant", "content": ...}."""
    out = []
    for i, (question, answer) in enumerate(pairs):
        out.append({"role": "user", "content": with_image(question) if i == 0 else question})
        out.append({"role": "assistant", "content": answer})
    return out


def item(fmt: str, sample_id: str, image: str, pairs: list[tuple[str, str]]) -> dict:
    if fmt == "llava":
        return {"id": sample_id, "image": image, "conversations": from_value(pairs)}
    if fmt == "sharegpt":
        return {"conversations": from_value(pairs), "images": [image]}
    if fmt == "swift":
        return {"messages": role_content(pairs), "images": [image]}
    raise ValueError(f"unknown chat format {fmt!r}")


def fragment_path(out: Path, fmt: str, shard: str) -> Path:
    return out / PARTS / fmt / shard.replace(".tar", ".part")


def export_shard(build_dir: Path, shard: str, fmt: str, out: Path, opts: dict) -> dict:
    """One shard's records as a fragment, its images as files; returns the counts."""
    dest = fragment_path(out, fmt, shard)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    sep = ",\n" if SUFFIX[fmt] == "json" else "\n"
    counts = {"samples": 0, "exported": 0, "no_text": 0, "turns": 0,
              "images_written": 0, "images_kept": 0}
    with open(tmp, "w", encoding="utf-8") as f:
        for batch, pngs in read_shard(build_dir, shard):
            for record, png in zip(batch.to_pylist(), pngs, strict=True):
                counts["samples"] += 1
                pairs = turns(record, opts.get("prompt"), opts.get("caption", True),
                              opts.get("vqa", True))
                if not pairs:
                    counts["no_text"] += 1
                    continue
                sid = record["sample_id"]
                written = write_image(out, sid, png)
                counts["images_written" if written else "images_kept"] += 1
                if counts["exported"]:
                    f.write(sep)
                f.write(json.dumps(item(fmt, sid, image_ref(sid, opts.get("image_root")), pairs),
                                   ensure_ascii=False))
                counts["exported"] += 1
                counts["turns"] += len(pairs)
    os.replace(tmp, dest)
    return counts


def merge_split(out: Path, fmt: str, split: str, shards: list[str]) -> Path:
    """Join a split's fragments (in shard order) into OUT/<fmt>-<split>.<json|jsonl>."""
    dest = out / f"{fmt}-{split}.{SUFFIX[fmt]}"
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    array = SUFFIX[fmt] == "json"
    with open(tmp, "wb") as f:
        if array:
            f.write(b"[\n")
        first = True
        for shard in shards:
            part = fragment_path(out, fmt, shard)
            if part.stat().st_size == 0:
                continue
            if not first:
                f.write(b",\n" if array else b"\n")
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
            first = False
        f.write(b"\n]\n" if array else (b"" if first else b"\n"))
    os.replace(tmp, dest)
    return dest


def dataset_info(out: Path, name: str, files: dict[str, str]) -> Path:
    """LLaMA-Factory's dataset_info.json in OUT (its dataset_dir): one sharegpt entry per
    split, named <name>_<split>; entries of other datasets already there are kept."""
    path = out / "dataset_info.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    for split, file in files.items():
        info[f"{name}_{split}"] = {"file_name": file, "formatting": "sharegpt",
                                   "columns": {"messages": "conversations", "images": "images"}}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
