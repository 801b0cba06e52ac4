"""Box tables (CSV, COCO, VOC) and image-level class labels, read once per source."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from curate.model.errors import ConfigError, IngestError
from curate.model.recipe import SourceSpec


def read_box_table(spec: SourceSpec, root: Path) -> dict[str, list[dict]]:
    """image path or name -> [{label, xyxy}] for CSV and COCO tables (VOC is per image)."""
    table = spec.layout.boxes
    path = root / table.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: box file {table.file} not found under {root}")
    if table.format == "coco":
        return _coco(path, spec.name)
    if table.label_column is None and table.label is None:
        raise ConfigError(f"source {spec.name}: boxes need a label_column or a fixed label")
    cols = [table.image_column, table.label_column, table.x0_column, table.y0_column,
            table.x1_column, table.y1_column]
    cols = [c for c in cols if c is not None] if table.label_column is None else cols
    by_image: dict[str, list[dict]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {table.file} lacks columns {missing}")
        for row in reader:
            coords = [row[c] for c in cols[-4:]]
            if any(v in ("", None) for v in coords):
                by_image.setdefault(row[table.image_column], [])  # a row saying "no finding"
                continue
            if table.coords == "xywh":
                try:
                    x, y, w, h = (float(v) for v in coords)
                except ValueError as exc:
                    raise ConfigError(f"source {spec.name}: non-numeric box {coords}") from exc
                coords = [x, y, x + w, y + h]
            label = row[table.label_column] if table.label_column else table.label
            by_image[row[table.image_column]].append({"label": label, "xyxy": coords})
    return by_image


def _coco(path: Path, name: str) -> dict[str, list[dict]]:
    try:
        data = json.loads(path.read_text())
        images = {im["id"]: im["file_name"] for im in data["images"]}
        cats = {c["id"]: c["name"] for c in data["categories"]}
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"source {name}: {path.name} is not a COCO file: {exc}") from exc
    by_image: dict[str, list[dict]] = {f: [] for f in images.values()}
    for ann in data.get("annotations", []):
        x, y, w, h = ann["bbox"]  # COCO: top-left corner, width, height
        by_image[images[ann["image_id"]]].append(
            {"label": cats[ann["category_id"]], "xyxy": [x, y, x + w, y + h]})
    return by_image


def read_voc(path: Path) -> list[dict]:
    """Pascal VOC XML: 1-based inclusive pixel corners -> 0-based, x1/y1 exclusive."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise IngestError(f"{path.name}: not a VOC annotation: {exc}") from exc
    out = []
    for obj in tree.getroot().iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append({"label": obj.findtext("name"), "xyxy": [x0 - 1, y0 - 1, x1, y1]})
    return out


def read_qa_table(spec: SourceSpec, root: Path) -> dict[str, list[dict]]:
    """image name -> [{question, answer, type, modality}] after include/exclude filters."""
    cfg = spec.layout.qa
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: QA file {cfg.file} not found under {root}")
    try:
        if cfg.format == "csv":
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        elif cfg.format == "jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            rows = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"source {spec.name}: {cfg.file} is not valid {cfg.format}: {exc}") from exc
    out: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if any(str(row.get(c)) not in vals for c, vals in cfg.include.items()):
            continue
        if any(str(row.get(c)) in vals for c, vals in cfg.exclude.items()):
            continue
        try:
            image = str(row[cfg.image_column])
            qa = {"question": str(row[cfg.question_column]).strip(),
                  "answer": str(row[cfg.answer_column]).strip()}
        except KeyError as exc:
            raise ConfigError(f"source {spec.name}: {cfg.file} rows lack {exc}") from exc
        qa["type"] = str(row.get(cfg.type_column, "") or "").lower() or None if cfg.type_column \
            else None
        qa["modality"] = str(row.get(cfg.modality_column) or "") or None \
            if cfg.modality_column else None
        out[image].append(qa)
    return out


def read_class_labels(spec: SourceSpec, root: Path) -> dict[str, list[str]]:
    """image path or name -> its positive class labels, from the declared CSV."""
    cfg = spec.layout.classes
    if cfg is None or cfg.file is None:
        return {}
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: label file {cfg.file} not found under {root}")
    out: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = [cfg.image_column] + ([cfg.label_column] if cfg.label_column else []) + \
            cfg.label_columns
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {cfg.file} lacks columns {missing}")
        for row in reader:
            labels = [row[cfg.label_column]] if cfg.label_column else []
            if cfg.separator and labels:
                labels = [x.strip() for x in labels[0].split(cfg.separator) if x.strip()]
            labels += [c for c in cfg.label_columns if row[c] in cfg.positive_values]
            out[row[cfg.image_column]] = labels
    return out
