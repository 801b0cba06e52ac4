"""`curate train BUILD --out RUN`: the bundled model trained on a build's shards with Ray Train.

One `TorchTrainer` with N workers (DDP; gloo on CPU, NCCL on GPU). Each worker reads its
share of the train shards through `curate.train.feed.samples` (shards are split by rank;
a build with fewer shards than workers is split by sample instead, so the two-worker demo
run works) and repeats it until the step budget is spent, so every rank takes the same
number of steps. The loss sums three terms:

    caption  CLIP loss between images and their captions
    vqa      for every closed/choice VQA item, cross-entropy of choosing the answer among
             the item's options, each scored as the statement "question option" against
             the image (what closed-VQA evaluation measures)
    roi      1 - GIoU + L1 between the predicted and the annotated box of one ROI per image,
             for the ROI's phrase (its finding or label)

The contrastive negatives are the other samples of the worker's own batch (no all-gather).
Rank 0 writes RUN: config.json and model.pt (what `load_run` reads), optimizer.pt,
state.json (step, samples seen, training arguments) and metrics.jsonl (one line per log
step). RUN must be a folder every node sees, like a build's --out.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from curate.model.errors import CurateError
from curate.train.model import ModelConfig, preset

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
METRICS_FILE = "metrics.jsonl"
CLOSED_TYPES = ("closed", "choice")


def split_sizes(build_dir: str | Path, split: str) -> tuple[int, int]:
    """(shards, samples) of one split, from its wids index (or the tar names alone)."""
    from curate.train.feed import shard_paths

    shards = shard_paths(build_dir, split)
    index = Path(build_dir) / "shards" / f"{split}.wids.json"
    if index.is_file():
        listed = json.loads(index.read_text()).get("shardlist", [])
        return len(shards), sum(int(s.get("nsamples", 0)) for s in listed)
    return len(shards), 0


def phrase(roi: dict) -> str:
    """The text naming an ROI: its finding, else its label (underscores as spaces)."""
    return str(roi.get("finding") or roi.get("label") or "region").replace("_", " ")


def vqa_text(item: dict, answer: str | None = None) -> str:
    """A VQA item as one statement, "question answer", the form eval scores options in."""
    return f"{item['question']} {item['answer'] if answer is None else answer}"


def closed_items(record: dict) -> list[dict]:
    return [q for q in record.get("vqa", []) if q.get("type") in CLOSED_TYPES]


def options_of(item: dict) -> list[str]:
    """The answers a closed item chooses among (yes/no when it lists none)."""
    options = list(item.get("options") or [])
    if not options and str(item.get("answer")).lower() in ("yes", "no"):
        options = ["yes", "no"]
    return options


def choice_items(record: dict) -> list[tuple[list[str], int]]:
    """Each closed VQA item as (option statements, index of the answer)."""
    out = []
    for item in closed_items(record):
        options = options_of(item)
        if len(options) >= 2 and item["answer"] in options:
            out.append(([vqa_text(item, o) for o in options], options.index(item["answer"])))
    return out


def training_example(image, record: dict, rng: random.Random) -> dict:
    """One image's targets: its caption, its closed VQA items and one ROI (a region: a
    point ROI's 1-pixel box is where it lies, not a box to learn)."""
    rois = [r for r in record.get("rois", [])
            if r.get("bbox_norm") and r.get("area_kind") != "point"]
    roi = rng.choice(rois) if rois else None
    return {"image": image, "caption": record.get("caption") or "",
            "choices": choice_items(record),
            "phrase": phrase(roi) if roi else "", "box": roi["bbox_norm"] if roi else None}


def rank_samples(build_dir: str, split: str, rank: int, world: int, *, shuffle: int, seed: int,
                 image_size: int, data_workers: int) -> Iterator[tuple[Any, dict]]:
    """(image, record) forever: this rank's share of the split, repeated epoch after epoch.

    `seed` must be the same on every rank: it shuffles the shard list before the feed
    splits it by rank, and different orders would overlap the ranks' shares."""
    import torch

    from curate.train import feed

    n_shards, _ = split_sizes(build_dir, split)
    by_sample = n_shards < world * max(1, data_workers)
    epoch = 0
    while True:
        if not by_sample:
            data = feed.samples(build_dir, split, shuffle=shuffle, seed=seed + epoch,
                                resize=image_size)
        else:
            data = _every_nth(build_dir, split, rank, world, image_size)
        loader = torch.utils.data.DataLoader(data, batch_size=None,
                                             num_workers=0 if by_sample else data_workers)
        seen = 0
        for image, _masks, record in loader:
            seen += 1
            yield image, record
        if not seen:
            raise CurateError(f"rank {rank} got no {split} samples from {build_dir}")
        epoch += 1


def _every_nth(build_dir: str, split: str, rank: int, world: int, image_size: int):
    """Every rank reads all shards and keeps samples rank, rank+world, ... (tiny builds)."""
    import webdataset as wds

    from curate.train import feed

    def keep(src):
        for i, sample in enumerate(src):
            if i % world == rank:
                yield sample

    return wds.DataPipeline(wds.SimpleShardList(feed.shard_paths(build_dir, split)),
                            wds.tarfile_to_samples(handler=wds.reraise_exception), keep,
                            wds.map(lambda s: feed.decode(s, size=(image_size, image_size))))


def learning_rate(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_step_loss(model, batch: list[dict], device, amp: bool):
    """(loss, parts) for one batch of training examples."""
    import torch

    from curate.train.model import box_iou, caption_keys, gathered_contrastive_loss, prepare_images

    inner = getattr(model, "module", model)
    n = len(batch)
    images = prepare_images([b["image"] for b in batch], inner.image_size).to(device)
    captions = [b["caption"] for b in batch]
    statements, owners, groups = [], [], []  # one group per VQA item: its statements' rows
    for i, b in enumerate(batch):
        for options, answer in b["choices"]:
            groups.append((len(statements), len(options), answer))
            statements.extend(options)
            owners.extend([i] * len(options))
    texts = torch.from_numpy(inner.text_encoder(captions + statements)).to(device)
    phrases = torch.from_numpy(inner.text_encoder([b["phrase"] for b in batch])).to(device)
    has_box = torch.tensor([b["box"] is not None for b in batch], device=device)
    boxes = torch.tensor([b["box"] or [0.0, 0.0, 1.0, 1.0] for b in batch], device=device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        img, txt, pred, scale = model(images, texts, phrases)
    img, txt, pred, scale = img.float(), txt.float(), pred.float(), scale.float()
    # every rank's captions are negatives (one process group: the global batch)
    loss_caption = gathered_contrastive_loss(img, txt[:n], scale, caption_keys(captions, device))
    loss_vqa = _choice_loss(img, txt[n:], scale, owners, groups, device)
    if has_box.any():
        iou, giou = box_iou(pred[has_box], boxes[has_box])
        loss_roi = (1 - giou).mean() + (pred[has_box] - boxes[has_box]).abs().sum(-1).mean()
    else:
        loss_roi = pred.sum() * 0.0  # keeps the head in the graph for DDP
    loss = loss_caption + loss_vqa + loss_roi
    return loss, {"caption": loss_caption.item(), "vqa": loss_vqa.item(), "roi": loss_roi.item()}


def _choice_loss(img, statements, scale, owners: list[int], groups: list[tuple], device):
    """Cross-entropy of choosing each VQA item's answer among its option statements, each
    scored against its own image: the task closed-VQA evaluation measures."""
    import torch

    if not groups:
        return statements.sum() * 0.0 + img.sum() * 0.0
    scores = scale * (img[torch.tensor(owners, device=device)] * statements).sum(-1)
    width = max(count for _, count, _ in groups)
    logits = torch.full((len(groups), width), float("-inf"), device=device)
    index = torch.tensor([[start + j if j < count else start for j in range(width)]
                          for start, count, _ in groups], device=device)
    valid = torch.tensor([[j < count for j in range(width)] for _, count, _ in groups],
                         device=device)
    logits = torch.where(valid, scores[index], logits)
    target = torch.tensor([answer for _, _, answer in groups], device=device)
    return torch.nn.functional.cross_entropy(logits, target)


def train_loop(cfg: dict) -> None:
    """The per-worker loop TorchTrainer runs."""
    import ray.train
    import ray.train.torch
    import torch

    from curate.train.model import build_model, save_run

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    device = ray.train.torch.get_device()
    amp = device.type == "cuda" and cfg["amp"]
    config = ModelConfig(**cfg["model"])
    run_dir = Path(cfg["run_dir"])
    model = build_model(config)
    start = 0
    if cfg["resume"]:
        model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu",
                                         weights_only=True))
        start = json.loads((run_dir / STATE_FILE).read_text())["step"]
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.05)
    if cfg["resume"]:
        optimizer.load_state_dict(torch.load(run_dir / OPTIMIZER_FILE, map_location=device,
                                             weights_only=True))
    rng = random.Random(cfg["seed"] * 1000 + rank + start)
    stream = rank_samples(cfg["build_dir"], "train", rank, world, shuffle=cfg["shuffle"],
                          seed=cfg["seed"], image_size=config.image_size,
                          data_workers=cfg["data_workers"])
    total, warmup = cfg["steps"], max(1, cfg["steps"] // 20)
    window_start, window_samples, window_steps = time.perf_counter(), 0, 0
    parts_sum, loss_sum = {}, 0.0
    model.train()
    for step in range(start, total):
        batch = [training_example(image, record, rng)
                 for image, record in (next(stream) for _ in range(cfg["batch_size"]))]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, cfg["lr"], warmup)
        loss, parts = train_step_loss(model, batch, device, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window_samples += len(batch)
        window_steps += 1
        loss_sum += loss.item()
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v
        done = step + 1
        if done % cfg["log_every"] == 0 or done == total:
            stats = torch.tensor([loss_sum, *parts_sum.values(), window_samples],
                                 dtype=torch.float64, device=device)
            if world > 1:
                torch.distributed.all_reduce(stats)
            elapsed = time.perf_counter() - window_start
            n = window_steps * world
            metrics = {"step": done, "loss": stats[0].item() / n,
                       **{k: stats[i + 1].item() / n for i, k in enumerate(parts_sum)},
                       "lr": optimizer.param_groups[0]["lr"],
                       "samples_per_s": stats[-1].item() / elapsed,
                       "samples": (done * cfg["batch_size"] * world)}
            metrics["of"] = total
            if rank == 0:
                with open(run_dir / METRICS_FILE, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if done % cfg["checkpoint_every"] == 0 or done == total:
                    _checkpoint(model, optimizer, config, run_dir, done, cfg, save_run)
            ray.train.report(metrics)
            window_start, window_samples, window_steps = time.perf_counter(), 0, 0
            parts_sum, loss_sum = {}, 0.0


def _checkpoint(model, optimizer, config, run_dir: Path, step: int, cfg: dict, save_run) -> None:
    import torch

    save_run(model, config, run_dir)
    tmp = run_dir / (OPTIMIZER_FILE + ".tmp")
    torch.save(optimizer.state_dict(), tmp)
    tmp.replace(run_dir / OPTIMIZER_FILE)
    state = {"step": step, "train": {k: cfg[k] for k in TRAIN_ARGS}}
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(run_dir / STATE_FILE)


TRAIN_ARGS = ("build_dir", "steps", "batch_size", "lr", "seed", "shuffle")


def train(build_dir: str | Path, run_dir: str | Path, *, workers: int = 1,
          gpus_per_worker: float = 0, cpus_per_worker: int | None = None,
          address: str | None = None, steps: int | None = None, epochs: float | None = None,
          batch_size: int = 32, lr: float = 1e-3, model: ModelConfig | str = "tiny",
          resume: bool = False, seed: int = 0, shuffle: int = 256, log_every: int = 10,
          checkpoint_every: int = 100, data_workers: int = 0, amp: bool = True,
          log: Callable[[str], None] = print) -> dict:
    """Train the bundled model on BUILD's train split into RUN; returns the last metrics."""
    build_dir, run_dir = Path(build_dir).resolve(), Path(run_dir).resolve()
    try:
        n_shards, n_samples = split_sizes(build_dir, "train")
    except FileNotFoundError as exc:
        raise CurateError(f"{build_dir} has no train shards: is it a finished curate build? "
                          f"({exc})") from exc
    if workers < 1 or batch_size < 1:
        raise CurateError("--workers and --batch-size must be at least 1")
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise CurateError(f"--resume: {run_dir} has no {STATE_FILE} (no checkpoint yet)")
        config = ModelConfig.model_validate_json((run_dir / "config.json").read_text())
        done = json.loads((run_dir / STATE_FILE).read_text())["step"]
    else:
        if (run_dir / "config.json").exists() or (run_dir / STATE_FILE).exists():
            raise CurateError(f"{run_dir} already holds a run: pass --resume to continue it, "
                              f"or choose another --out")
        config = preset(model) if isinstance(model, str) else model
        done = 0
    if steps is None:
        if not n_samples:
            raise CurateError("give --steps: the build's train index has no sample counts")
        steps = math.ceil((epochs or 1.0) * n_samples / (batch_size * workers))
    if resume and steps <= done:
        raise CurateError(f"{run_dir} is already at step {done}; ask for more --steps")
    run_dir.mkdir(parents=True, exist_ok=True)
    cpus = cpus_per_worker or 1
    cfg = {"build_dir": str(build_dir), "run_dir": str(run_dir), "model": config.model_dump(),
           "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "shuffle": shuffle,
           "log_every": max(1, log_every), "checkpoint_every": max(1, checkpoint_every),
           "data_workers": data_workers, "threads": cpus, "amp": amp, "resume": resume}
    log(f"training on {n_samples or '?'} samples in {n_shards} shard(s) with {workers} "
        f"worker(s): steps {done}->{steps}, batch {batch_size} per worker -> {run_dir}")
    _fit(cfg, workers, gpus_per_worker, cpus, address, run_dir, log)
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def progress_line(metrics: dict) -> str:
    return (f"step {metrics['step']}/{metrics.get('of', '?')}  loss {metrics['loss']:.4f}  "
            f"(caption {metrics['caption']:.3f} vqa {metrics['vqa']:.3f} roi "
            f"{metrics['roi']:.3f})  {metrics['samples_per_s']:.1f} samples/s")


class _Follow:
    """Prints the lines rank 0 appends to metrics.jsonl while training runs (the workers'
    own output is not forwarded: Ray's per-report logging would drown it)."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        import threading

        self.path, self.log = path, log
        self.offset = path.stat().st_size if path.exists() else 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.poll()
        self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            self.log(progress_line(json.loads(line)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _fit(cfg: dict, workers: int, gpus_per_worker: float, cpus: int, address: str | None,
         run_dir: Path, log: Callable[[str], None]) -> None:
    import logging
    import os

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = False
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING,
                 include_dashboard=False, log_to_driver=False)
        started = True
    try:
        resources = {"CPU": cpus, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        trainer = TorchTrainer(
            train_loop, train_loop_config=cfg,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker=resources),
            run_config=RunConfig(name="ray", storage_path=str(run_dir)))
        try:
            with _Follow(run_dir / METRICS_FILE, log):
                trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error
            raise CurateError(f"training failed: {_root(exc)}") from exc
    finally:
        if started:
            ray.shutdown()


def _root(exc: BaseException) -> str:
    seen = exc
    while getattr(seen, "__cause__", None) is not None:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {seen}"
