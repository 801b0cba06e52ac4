"""What the curated text is worth: the bundled model trained on curated vs degraded shards.

Builds recipes/phantoms-utility.yaml (a few hundred phantom samples, 30% held out as val),
then writes a degraded copy of its train shards the way uncurated image-text data is
degraded, trains the bundled model for the same steps with the same seed on each, and
evaluates both on the same (curated) val split. Prints the two evals side by side and the
ratio curated/degraded, and ends with one JSON line.

Degradation (train split only; images are untouched):
  - shuffled: in `--shuffle` (30%) of samples the annotation text is moved to another
    sample of that group (a derangement): caption, per-level text, VQA, finding list and
    the ROI descriptions with the boxes they name (an uncurated caption's regions belong to
    the caption, not to the image it landed on). The masks member is redrawn from the moved
    boxes at this image's size so the shard stays consistent.
  - flipped: in another `--flip` (20%) the words left/right are swapped in all text (caption,
    levels, VQA questions/answers/options, ROI laterality and location); boxes stay.

    python benchmarks/utility.py [--steps 300] [--workers 2] [--out /tmp/utility]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.model import masks as mask_member  # noqa: E402

RECIPE = ROOT / "recipes" / "phantoms-utility.yaml"
MOVED_FIELDS = ("caption", "levels", "vqa", "rois", "findings", "image_labels")
_SIDE = re.compile(r"\b(left|right|Left|Right)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}


def flip_sides(value):
    """`value` (str, list or dict, nested) with left and right swapped in every string."""
    if isinstance(value, str):
        return _SIDE.sub(lambda m: _SWAP[m.group(0)], value)
    if isinstance(value, list):
        return [flip_sides(v) for v in value]
    if isinstance(value, dict):
        return {k: flip_sides(v) for k, v in value.items()}
    return value


def _read_shard(path: Path) -> list[dict[str, bytes]]:
    """The samples of one shard as {member suffix: bytes} with "__key__", in order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, suffix = member.name.partition(".")
            samples.setdefault(key, {"__key__": key})[suffix] = tar.extractfile(member).read()
    return list(samples.values())


def _write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for suffix, data in sample.items():
                if suffix == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{suffix}")
                info.size, info.mode = len(data), 0o444
                tar.addfile(info, io.BytesIO(data))


def degrade(build: Path, dest: Path, shuffle: float, flip: float, seed: int) -> dict:
    """Write `dest`, a copy of `build`'s shards with the train split degraded."""
    rng = np.random.default_rng(seed)
    src, out = build / "shards", dest / "shards"
    if dest.exists():
        shutil.rmtree(dest)
    out.mkdir(parents=True)
    for path in src.iterdir():
        if not path.name.startswith("train-") and path.name != "SHA256SUMS":
            shutil.copy2(path, out / path.name)
    shards = sorted(src.glob("train-*.tar"))
    samples = [(i, s) for i, path in enumerate(shards) for s in _read_shard(path)]
    records = [json.loads(s["json"]) for _, s in samples]
    order = rng.permutation(len(records))
    n_shuffle, n_flip = round(shuffle * len(records)), round(flip * len(records))
    moved, flipped = order[:n_shuffle], order[n_shuffle:n_shuffle + n_flip]
    new = [copy.deepcopy(r) for r in records]
    donors = np.roll(moved, 1)  # every chosen sample gets the next one's text
    for target, donor in zip(moved, donors, strict=True):
        for field in MOVED_FIELDS:
            new[target][field] = copy.deepcopy(records[donor][field])
        h, w = new[target]["height"], new[target]["width"]
        for roi in new[target]["rois"]:
            x0, y0, x1, y1 = roi["bbox_norm"]
            roi["bbox"] = [int(x0 * w), int(y0 * h), max(int(x0 * w) + 1, round(x1 * w)),
                           max(int(y0 * h) + 1, round(y1 * h))]
        array = mask_member.masks_array(new[target]["rois"], [None] * len(new[target]["rois"]),
                                        h, w)
        samples[target][1][mask_member.MEMBER] = mask_member.pack(array)
    sided = 0
    for target in flipped:
        before = json.dumps({f: new[target][f] for f in MOVED_FIELDS})
        for field in MOVED_FIELDS:
            new[target][field] = flip_sides(new[target][field])
        sided += json.dumps({f: new[target][f] for f in MOVED_FIELDS}) != before
    for (_, sample), record in zip(samples, new, strict=True):
        sample["json"] = json.dumps(record, sort_keys=True).encode()
    for i, path in enumerate(shards):
        _write_shard(out / path.name, [s for j, s in samples if j == i])
    return {"train_samples": len(records), "shuffled": int(n_shuffle),
            "flipped": int(n_flip), "flipped_with_a_side": int(sided)}


METRICS = [("image->text R@1", ("retrieval", "image_to_text", "R@1")),
           ("image->text R@5", ("retrieval", "image_to_text", "R@5")),
           ("image->text R@10", ("retrieval", "image_to_text", "R@10")),
           ("text->image R@1", ("retrieval", "text_to_image", "R@1")),
           ("text->image R@5", ("retrieval", "text_to_image", "R@5")),
           ("text->image R@10", ("retrieval", "text_to_image", "R@10")),
           ("ROI mean IoU", ("roi", "mean_iou")),
           ("ROI hit@0.5", ("roi", "hit@0.5")),
           ("closed VQA accuracy", ("vqa", "accuracy"))]


def _get(result: dict, path: tuple[str, ...]) -> float:
    for key in path:
        result = result[key]
    return float(result)


def table(curated: dict, degraded: dict) -> tuple[str, dict]:
    lines = [f"{'metric (val, same split)':28s} {'curated':>9s} {'degraded':>9s} {'ratio':>7s}"]
    figures = {}
    for name, path in METRICS:
        c, d = _get(curated, path), _get(degraded, path)
        ratio = c / d if d else float("inf")
        lines.append(f"{name:28s} {c:9.3f} {d:9.3f} {ratio:7.2f}")
        figures[name] = {"curated": round(c, 4), "degraded": round(d, 4)}
    for category in sorted(curated["vqa"]["by_category"]):
        c = curated["vqa"]["by_category"][category]["accuracy"]
        d = degraded["vqa"]["by_category"].get(category, {}).get("accuracy", 0.0)
        lines.append(f"{'  VQA ' + category:28s} {c:9.3f} {d:9.3f} "
                     f"{(c / d if d else float('inf')):7.2f}")
    return "\n".join(lines), figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=None, help="an existing build of the recipe")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shuffle", type=float, default=0.3)
    ap.add_argument("--flip", type=float, default=0.2)
    args = ap.parse_args()

    import ray

    from curate.build import build as run_build
    from curate.train.evaluate import evaluate
    from curate.train.trainer import train

    work = args.out or Path(tempfile.mkdtemp(prefix="curate-utility-"))
    work.mkdir(parents=True, exist_ok=True)
    built = args.build or work / "build"
    t0 = time.perf_counter()
    if args.build is None and not (built / "shards").is_dir():
        run_build(RECIPE, built, executor="local", log=lambda m: None)
    t_build = time.perf_counter() - t0
    degraded = work / "degraded"
    counts = degrade(built, degraded, args.shuffle, args.flip, args.seed)
    print(f"degraded copy: {counts}", flush=True)
    ray.init(address="local", num_cpus=max(2, args.workers), include_dashboard=False,
             log_to_driver=False)
    results, times = {}, {}
    try:
        for name, data in (("curated", built), ("degraded", degraded)):
            run = work / f"run-{name}"
            if run.exists():
                shutil.rmtree(run)
            t = time.perf_counter()
            train(data, run, workers=args.workers, steps=args.steps, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, log_every=max(1, args.steps // 10),
                  checkpoint_every=args.steps, log=lambda m, n=name: print(f"[{n}] {m}", flush=True))
            times[name] = time.perf_counter() - t
            results[name] = evaluate(run, built, split="val")  # the same held-out split
    finally:
        ray.shutdown()
    text, figures = table(results["curated"], results["degraded"])
    print(f"\nval samples: {results['curated']['samples']}, steps: {args.steps}, batch "
          f"{args.batch_size} x {args.workers} workers, seed {args.seed}")
    print(text)
    wins = all(v["curated"] > v["degraded"] for v in figures.values())
    print(f"curated wins on every metric: {wins}")
    print(json.dumps({"benchmark": "utility", "steps": args.steps, "batch_size": args.batch_size,
                      "workers": args.workers, "val_samples": results["curated"]["samples"],
                      "degradation": counts, "metrics": figures, "curated_wins_all": wins,
                      "train_s": {k: round(v, 1) for k, v in times.items()},
                      "build_s": round(t_build, 1)}))


if __name__ == "__main__":
    main()
