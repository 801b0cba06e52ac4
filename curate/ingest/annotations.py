"""Box tables (CSV, COCO, VOC) and image-level class labels, read once per source."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from curate.ingest.files import Problem
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
    if table.format == "json":
        return _json_boxes(path, table, spec.name)
    if table.label_column is None and table.label is None:
        raise ConfigError(f"source {spec.name}: boxes need a label_column or a fixed label")
    xy = [table.coords_column] if table.coords_column else \
        [table.x0_column, table.y0_column, table.x1_column, table.y1_column]
    cols = [c for c in [table.image_column, table.label_column, *xy, table.spacing_column]
            if c is not None]
    by_image: dict[str, list[dict]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {table.file} lacks columns {missing}")
        for row in reader:
            coords = [row[c] for c in xy]
            if table.coords_column:
                coords = numbers(coords[0])
                if len(coords) not in (0, 4):
                    raise ConfigError(f"source {spec.name}: {table.coords_column} "
                                      f"{row[table.coords_column]!r} is not four numbers")
            if not coords or any(v in ("", None) for v in coords):
                by_image.setdefault(row[table.image_column], [])  # a row saying "no finding"
                continue
            if table.coords == "xywh":
                try:
                    x, y, w, h = (float(v) for v in coords)
                except ValueError as exc:
                    raise ConfigError(f"source {spec.name}: non-numeric box {coords}") from exc
                coords = [x, y, x + w, y + h]
            label = row[table.label_column] if table.label_column else table.label
            box = {"label": label, "xyxy": coords}
            if table.spacing_column:
                mm = [float(v) for v in numbers(row[table.spacing_column])]
                box["spacing"] = [mm[0], mm[0]] if len(mm) != 2 else mm
            by_image[row[table.image_column]].append(box)
    return by_image


def header_key(path: Path, tag: str, rel: str) -> str:
    """The value of one DICOM header attribute of a file (a table key such as its SOP
    Instance UID), read without its pixels."""
    from curate.ingest.dicom_io import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=[tag])
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a planning problem
        raise IngestError(f"DICOM header not readable for {tag}: {exc}", file=rel) from exc
    value = str(ds.get(tag, "") or "").strip()
    if not value:
        raise IngestError(f"the DICOM header has no {tag} to find its boxes by", file=rel)
    return value


def numbers(text: str) -> list[str]:
    """The numbers in '226.2, 276.0, 268.8, 312.2' (commas and/or spaces), as text."""
    return [t for t in str(text or "").replace(",", " ").split() if t]


def _json_boxes(path: Path, table, name: str) -> dict[str, list[dict]]:
    """Boxes from a JSON file: a list of records naming their image, or an object keyed
    by image; each record's boxes are [x0, y0, x1, y1] lists (labels in a parallel list)
    or objects with the declared corner keys."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"source {name}: {table.file} is not JSON: {exc}") from exc
    if table.records == "keyed":
        if not isinstance(data, dict):
            raise ConfigError(f"source {name}: {table.file} is not an object keyed by image")
        records = list(data.items())
    else:
        if not isinstance(data, list):
            raise ConfigError(f"source {name}: {table.file} is not a list of records")
        try:
            records = [(str(r[table.image_column]), r) for r in data]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"source {name}: a record of {table.file} lacks "
                              f"{table.image_column!r}") from exc
    out: dict[str, list[dict]] = {}
    for image, rec in records:
        boxes = rec.get(table.boxes_key) or [] if isinstance(rec, dict) else []
        labels = rec.get(table.labels_key) or [] if table.labels_key else []
        if table.labels_key and len(labels) != len(boxes):
            raise ConfigError(f"source {name}: {image}: {len(boxes)} boxes but "
                              f"{len(labels)} labels")
        found = []
        for i, b in enumerate(boxes):
            if isinstance(b, dict):
                keys = (table.x0_column, table.y0_column, table.x1_column, table.y1_column)
                try:
                    xyxy = [b[k] for k in keys]
                except KeyError as exc:
                    raise ConfigError(f"source {name}: {image}: a box lacks {exc}") from exc
                label = labels[i] if labels else b.get(table.label_column or "", table.label)
            else:
                xyxy, label = list(b), labels[i] if labels else table.label
            if table.coords == "xywh":
                xyxy = [xyxy[0], xyxy[1], float(xyxy[0]) + float(xyxy[2]),
                        float(xyxy[1]) + float(xyxy[3])]
            found.append({"label": str(label) if label is not None else "finding",
                          "xyxy": xyxy})
        out[str(image)] = found
    return out


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


def read_qa_table(spec: SourceSpec, root: Path, problems: list | None = None
                  ) -> dict[str, list[dict]]:
    """image name -> [{question, answer, type, modality}] after include/exclude filters;
    a pickle's bad rows become planning problems appended to `problems` (qa_pickle)."""
    cfg = spec.layout.qa
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: QA file {cfg.file} not found under {root}")
    try:
        if cfg.format == "pickle":
            from curate.ingest.qa_pickle import pickle_rows

            rows = pickle_rows(path, cfg, problems)
        elif cfg.format == "csv":
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


def list_cell(text: str) -> list[str]:
    """A cell holding a list literal ("['a', 'b']", '["a"]', "[]"), read without eval; a
    cell that is not a list is one label (or none when empty/nan)."""
    import ast

    text = (text or "").strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
    return [] if text.lower() in ("", "nan", "none") else [text]


def class_from_name(spec: SourceSpec, rel: str) -> list[str]:
    """The class a file name encodes (layout.classes.from_name + name_values)."""
    import re

    cfg = spec.layout.classes
    m = re.search(cfg.from_name, Path(rel).name)
    if not m or not m.groups():
        raise IngestError(f"file name does not match classes.from_name {cfg.from_name!r}",
                          file=rel)
    code = m.group(1)
    if cfg.name_values and code not in cfg.name_values:
        raise IngestError(f"class code {code!r} in the file name is not in "
                          f"classes.name_values {sorted(cfg.name_values)}", file=rel)
    return [cfg.name_values.get(code, code)]


def open_table(path: Path):
    """A CSV file opened as text; .gz files (MIMIC-CXR-JPG's label tables) decompressed."""
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def lookup(table: dict, rel: str):
    """A table row keyed by the image's relative path, any trailing part of it, or its stem."""
    from curate.ingest.files import stem

    parts = rel.split("/")
    for key in ["/".join(parts[i:]) for i in range(len(parts))] + [stem(parts[-1])]:
        if key in table:
            return table[key]
    return None


def class_columns(cfg) -> list[str]:
    """The columns a class table must have (each reader's column of each class)."""
    classes = [f"{r}{c}" for c in cfg.label_columns for r in cfg.readers] if cfg.readers \
        else list(cfg.label_columns)
    return [cfg.image_column, *cfg.key_columns] + \
        ([cfg.label_column] if cfg.label_column else []) + classes


def _xlsx_rows(path: Path, name: str):
    """(header, rows as dicts of text) of an Excel file's first sheet."""
    try:
        import openpyxl
    except ImportError as exc:
        from curate.model.errors import MissingDependency

        raise MissingDependency("openpyxl") from exc
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable workbook is a config error
        raise ConfigError(f"source {name}: {path.name} is not a readable .xlsx: {exc}") from exc
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows, [])]
        out = [{h: _cell_text(v) for h, v in zip(header, r, strict=False)}
               for r in rows if any(v is not None for v in r)]
    finally:
        book.close()
    return header, out


def _cell_text(value) -> str:
    """A spreadsheet cell as the text a CSV would hold (1.0 stored for 1 reads '1')."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def table_key(values: list[str]) -> str:
    """One key from several parts (a patient and a side): joined by '|'."""
    return "|".join(v.strip() for v in values)


def read_class_labels(spec: SourceSpec, root: Path) -> dict[str, list[str]]:
    """image key -> its positive class labels, from the declared CSV (a class read by
    several readers is positive with classes.min_votes of them)."""
    cfg = spec.layout.classes
    if cfg is None or cfg.file is None:
        return {}
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: label file {cfg.file} not found under {root}")
    out: dict[str, list[str]] = {}
    with (open_table(path) if not path.name.lower().endswith(".xlsx") else _nullcontext()) as f:
        if f is None:
            fieldnames, rows = _xlsx_rows(path, spec.name)
        else:
            reader = csv.DictReader(f)
            fieldnames, rows = reader.fieldnames, reader
        missing = [c for c in class_columns(cfg) if c not in (fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {cfg.file} lacks columns {missing}")
        for row in rows:
            labels = [row[cfg.label_column]] if cfg.label_column else []
            if cfg.list_in_cell and labels:
                labels = list_cell(labels[0])
            elif cfg.separator and labels:
                labels = [x.strip() for x in labels[0].split(cfg.separator) if x.strip()]
            if cfg.readers:
                labels += [c for c in cfg.label_columns if cfg.min_votes <= sum(
                    (row[f"{r}{c}"] or "").strip() in cfg.positive_values for r in cfg.readers)]
            else:
                labels += [c for c in cfg.label_columns
                           if (row[c] or "").strip() in cfg.positive_values]
            key = table_key([row[c] for c in [cfg.image_column, *cfg.key_columns]]) \
                if cfg.key_columns else row[cfg.image_column]
            if cfg.key_columns and key in out:
                raise ConfigError(f"source {spec.name}: {cfg.file} has two rows for {key}")
            out[key] = labels
    return out


def _nullcontext():
    from contextlib import nullcontext

    return nullcontext()


def add_classes(spec: SourceSpec, table: dict[str, list[str]], rel: str, extra: dict,
                problems: list, root: Path | None = None) -> bool:
    """A planner's step for image-level labels: rel's classes into extra["classes"] (when
    the source declares classes and the table has them); False, with a plan problem, when
    rel's name or header gives no valid class key, so the planner leaves the file out."""
    if spec.layout.classes is None:
        return True
    try:
        found = classes_of(spec, table, rel, root)
    except IngestError as exc:  # a file name without a valid class code
        problems.append(Problem(rel, "plan", exc))
        return False
    if found is not None:
        extra["classes"] = found
    return True


def classes_of(spec: SourceSpec, table: dict[str, list[str]], rel: str,
               root: Path | None = None) -> list[str] | None:
    """The class labels of one image (or of the series whose first file is rel): from its
    file name, its folder, or its row of the table found by classes.image_key, followed by
    the header values of classes.image_key_tags (read under root; then matched exactly).
    None when the table has no row for it. A file name without a valid code, or a header
    without a key value, raises IngestError."""
    from curate.ingest.files import annotation_path

    cfg = spec.layout.classes
    if cfg is None:
        return None
    if cfg.from_name:
        return class_from_name(spec, rel)
    if cfg.from_folder:
        return [Path(rel).parent.name]
    key = annotation_path(cfg.image_key, rel, spec.layout.case_regex) if cfg.image_key else rel
    if cfg.image_key_tags:
        if root is None:
            raise ConfigError(f"source {spec.name}: classes.image_key_tags need DICOM files "
                              f"({spec.format.value} does not read headers)")
        return table.get(table_key([key] + [header_key(root / rel, t, rel)
                                             for t in cfg.image_key_tags]))
    return lookup(table, key)


def read_rle_table(spec: SourceSpec, root: Path) -> dict[str, list[str]]:
    """image key -> its run-length codes (several rows per image are several masks)."""
    cfg = spec.layout.rle
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: RLE file {cfg.file} not found under {root}")
    out: dict[str, list[str]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = {n.strip(): n for n in reader.fieldnames or []}  # " EncodedPixels" (SIIM)
        missing = [c for c in (cfg.image_column, cfg.rle_column) if c.strip() not in names]
        if missing:
            raise ConfigError(f"source {spec.name}: {cfg.file} lacks columns {missing}")
        image, code = names[cfg.image_column.strip()], names[cfg.rle_column.strip()]
        for row in reader:
            out[row[image].strip()].append((row[code] or "").strip())
    return out
