"""`curate eval RUN --data BUILD`: the bundled model scored on a build's held-out split.

    retrieval   image->text and text->image recall@1/5/10 over the split's first
                `max_retrieval` samples. A hit is the right *text*: phantom and template
                captions repeat, so an image retrieving another sample's identical caption
                (or a caption retrieving another image with that caption) counts.
    roi         the box the ROI head predicts for each ROI's phrase (finding or label) against
                the annotated `bbox_norm`: mean IoU and the hit rate at IoU >= 0.5.
    vqa         closed VQA by choosing among the options: each option is scored as the
                statement "question option" against the image with the contrastive head and
                the best-scoring option is the answer; a yes/no question without listed
                options chooses between "question yes" and "question no". Accuracy overall
                and per category.
The split is `val`, else `test` (said in the output), else an error. The JSON is printed
and written as eval.json in RUN.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from curate.model.errors import CurateError
from curate.train.trainer import closed_items, options_of, phrase, split_sizes, vqa_text

HELD_OUT = ("val", "test")
KS = (1, 5, 10)
EVAL_FILE = "eval.json"


def held_out_split(build_dir: Path, split: str | None) -> tuple[str, str | None]:
    """(split, note): the asked split, or val, else test with a note saying so."""
    if split:
        try:
            split_sizes(build_dir, split)
        except FileNotFoundError as exc:
            raise CurateError(f"{build_dir} has no {split} shards") from exc
        return split, None
    for name in HELD_OUT:
        try:
            split_sizes(build_dir, name)
        except FileNotFoundError:
            continue
        note = None if name == "val" else f"no val shards in {build_dir}: evaluated on test"
        return name, note
    raise CurateError(f"{build_dir} has neither val nor test shards: nothing held out to "
                      f"evaluate on (give --split train to score the training data)")


def recall_at_k(sims_rows: np.ndarray, correct: np.ndarray, ks=KS) -> dict[str, float]:
    """Recall@k of queries (rows of `sims_rows`, over candidates) given a bool matrix of
    which candidates are correct for each query."""
    order = np.argsort(-sims_rows, axis=1, kind="stable")[:, :max(ks)]
    hits = np.take_along_axis(correct, order, axis=1)
    return {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


def evaluate(run_dir: str | Path, build_dir: str | Path, *, split: str | None = None,
             batch_size: int = 64, max_retrieval: int = 5000, device: str = "cpu",
             log: Callable[[str], None] = lambda m: None) -> dict:
    import torch

    from curate.train import feed
    from curate.train.model import box_iou, load_run, prepare_images

    run_dir, build_dir = Path(run_dir), Path(build_dir)
    model, config = load_run(run_dir, device=device)
    split, note = held_out_split(build_dir, split)
    if note:
        log(note)
    image_embs, captions = [], []
    roi = {"n": 0, "iou_sum": 0.0, "hits": 0}  # running sums: nothing kept per sample
    vqa_right: dict[str, list[int]] = {}  # category -> [items, right]
    n = 0
    batch: list[tuple] = []

    def flush():
        nonlocal batch
        images = prepare_images([b[0] for b in batch], config.image_size).to(device)
        records = [b[1] for b in batch]
        with torch.inference_mode():
            fmap = model.feature_map(images)
            emb = model.embed_images(fmap)
            keep = max(0, min(len(batch), max_retrieval - len(captions)))
            image_embs.append(emb[:keep].float().cpu().numpy())
            captions.extend(r.get("caption") or "" for r in records[:keep])
            _score_rois(model, fmap, records, roi, box_iou, device)
            _score_vqa(model, emb, records, vqa_right, device)
        batch = []

    for image, _masks, record in feed.samples(build_dir, split, resize=config.image_size):
        batch.append((image, record))
        n += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not n:
        raise CurateError(f"the {split} split of {build_dir} is empty")
    out = {"run": str(run_dir), "data": str(build_dir), "split": split, "samples": n,
           "retrieval": _retrieval(model, np.concatenate(image_embs), captions, device),
           "roi": {"n": roi["n"], "mean_iou": roi["iou_sum"] / roi["n"] if roi["n"] else None,
                   "hit@0.5": roi["hits"] / roi["n"] if roi["n"] else None},
           "vqa": _vqa_summary(vqa_right)}
    if note:
        out["note"] = note
    tmp = run_dir / (EVAL_FILE + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(run_dir / EVAL_FILE)
    return out


def _texts(model, texts: list[str], device):
    import torch

    vectors = torch.from_numpy(model.text_encoder(texts)).to(device)
    return model.embed_texts(vectors)


def _score_rois(model, fmap, records, sums: dict, box_iou, device) -> None:
    import torch

    rows, phrases, boxes = [], [], []
    for i, record in enumerate(records):
        for roi in record.get("rois", []):
            if roi.get("bbox_norm") and roi.get("area_kind") != "point":  # points: no box
                rows.append(i)
                phrases.append(phrase(roi))
                boxes.append(roi["bbox_norm"])
    if not rows:
        return
    vectors = torch.from_numpy(model.text_encoder(phrases)).to(device)
    pred = model.predict_boxes(fmap[rows], vectors).float()
    iou, _ = box_iou(pred, torch.tensor(boxes, device=device, dtype=torch.float32))
    sums["n"] += len(rows)
    sums["iou_sum"] += float(iou.sum())
    sums["hits"] += int((iou >= 0.5).sum())


def _score_vqa(model, emb, records, right: dict[str, list[int]], device) -> None:
    rows, texts, spans = [], [], []
    for i, record in enumerate(records):
        for item in closed_items(record):
            options = options_of(item)
            if len(options) < 2 or item["answer"] not in options:
                continue
            spans.append((i, len(texts), len(options), options.index(item["answer"]),
                          item.get("category") or "other"))
            texts.extend(vqa_text(item, o) for o in options)
            rows.append(i)
    if not texts:
        return
    sims = (_texts(model, texts, device) @ emb.T).float().cpu().numpy()  # (texts, images)
    for i, start, count, answer, category in spans:
        chosen = int(np.argmax(sims[start:start + count, i]))
        counts = right.setdefault(category, [0, 0])
        counts[0] += 1
        counts[1] += chosen == answer


def _vqa_summary(right: dict[str, list[int]]) -> dict:
    n = sum(c[0] for c in right.values())
    return {"n": n, "accuracy": sum(c[1] for c in right.values()) / n if n else None,
            "by_category": {k: {"n": c[0], "accuracy": c[1] / c[0]}
                            for k, c in sorted(right.items())}}


def _retrieval(model, image_embs: np.ndarray, captions: list[str], device) -> dict:
    import torch

    unique = list(dict.fromkeys(captions))
    index = {t: i for i, t in enumerate(unique)}
    caption_id = np.array([index[c] for c in captions])
    with torch.inference_mode():
        text_embs = np.concatenate([_texts(model, unique[s:s + 256], device).float().cpu().numpy()
                                    for s in range(0, len(unique), 256)])
    sims = image_embs @ text_embs.T  # (images, unique captions)
    i2t = recall_at_k(sims, caption_id[:, None] == np.arange(len(unique))[None, :])
    # text -> image: each sample's caption as a query over all images
    t2i = recall_at_k(sims.T[caption_id], caption_id[:, None] == caption_id[None, :])
    return {"n": len(captions), "unique_captions": len(unique), "image_to_text": i2t,
            "text_to_image": t2i}
