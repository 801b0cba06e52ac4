"""ROI masks published as DICOM images in per-abnormality folders (CBIS-DDSM).

A case folder <case>/.../1-1.dcm holds the full image; each abnormality n has a folder
<case>_<n>/.../ holding its ROI mask and a cropped image, both plain DICOM images (not
SEG objects), in one series folder or two. Case tables (one row per abnormality) give
each abnormality's labels, keyed by the first path component of a path column, which is
the abnormality folder's name (the UID folders below it differ between copies).

The declared rule (layout.roi_folders) decides which file is the mask, with no guessing:
the file whose SeriesDescription is mask_series; failing that, the one file at the
image's Rows x Columns whose pixels are binary (0 and one other value). No such file,
two, a mask of another size than the image (never resized), a missing table row or a
mask overlapping another abnormality's is an error naming the files, so the image is a
quarantine row instead of an image whose ROIs are incomplete. The crops are consumed
with their folder and never read as images of their own.

Planning (attach_roi_folders) works from paths and the tables only; reading
(roi_masks) reads the abnormality files' headers and decodes the masks in the worker.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

from curate.ingest.base import Unit
from curate.ingest.dicom_io import dcmread, pixel_array
from curate.ingest.files import Problem
from curate.model.errors import ConfigError, IngestError
from curate.model.recipe import SourceSpec

ROI_TAGS = ["SeriesDescription", "Rows", "Columns"]


def first_part(path: str) -> str:
    """The first component of a table's path cell ('Mass-Training_P_00001_LEFT_CC_1/1.3.6...
    /000000.dcm' -> 'Mass-Training_P_00001_LEFT_CC_1'); cells may end in a line break."""
    return str(path or "").strip().replace("\\", "/").lstrip("/").split("/")[0].strip()


def read_roi_tables(spec: SourceSpec, root: Path) -> dict[str, dict]:
    """abnormality folder -> {label, number, image, table} from every declared case table;
    a key in two rows (of one table or two) is an error."""
    from curate.ingest.annotations import open_table

    cfg = spec.layout.roi_folders
    paths = sorted({p for g in cfg.tables for p in root.glob(g) if p.is_file()})
    if not paths:
        raise ConfigError(f"source {spec.name}: no case table matches {cfg.tables} under "
                          f"{root}")
    wanted = [cfg.key_column, *cfg.label_columns] + \
        [c for c in (cfg.number_column, cfg.image_column) if c]
    out: dict[str, dict] = {}
    for path in paths:
        rel = path.relative_to(root).as_posix()
        with open_table(path) as f:
            reader = csv.DictReader(f)
            names = {n.strip(): n for n in reader.fieldnames or []}
            missing = [c for c in wanted if c not in names]
            if missing:
                raise ConfigError(f"source {spec.name}: {rel} lacks columns {missing}")
            for row in reader:
                key = first_part(row[names[cfg.key_column]])
                if not key:
                    continue
                if key in out:
                    raise ConfigError(f"source {spec.name}: two rows for {key} ({out[key]['table']}"
                                      f" and {rel})")
                values = [str(row[names[c]] or "").strip() for c in cfg.label_columns]
                values = [cfg.label_words.get(c, {}).get(v, v)
                          for c, v in zip(cfg.label_columns, values, strict=True)]
                out[key] = {
                    "label": " ".join(values) if all(values) else None,
                    "number": str(row[names[cfg.number_column]] or "").strip()
                    if cfg.number_column else None,
                    "image": first_part(row[names[cfg.image_column]])
                    if cfg.image_column else None,
                    "table": rel}
    return out


def _folder(rel: str) -> str:
    return rel.split("/", 1)[0]


def _row_problem(row: dict | None, folder: str, image: str, number: str) -> str | None:
    """Why a table row cannot label abnormality folder `folder`, or None."""
    if row is None:
        return "no case-table row names this abnormality folder"
    if row["label"] is None:
        return f"its row in {row['table']} leaves a label column empty"
    if row["number"] is not None and row["number"].lstrip("0") != number.lstrip("0"):
        return (f"its row in {row['table']} gives abnormality {row['number']!r}, the folder "
                f"{number!r}")
    if row["image"] is not None and row["image"] != image:
        return f"its row in {row['table']} names image folder {row['image']!r}"
    return None


def attach_roi_folders(spec: SourceSpec, root: Path, units: list[Unit],
                       problems: list[Problem]) -> list[Unit]:
    """Units without the abnormality folders' series: each abnormality's files and label
    attached to its image's unit (extra['roi_folders'], files consumed). An abnormality
    that cannot be attached makes its image and its own files planning problems."""
    cfg = spec.layout.roi_folders
    pattern = re.compile(cfg.folder_regex)
    by_folder: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        by_folder[_folder(unit.files[0])].append(unit)
    abnormal: dict[str, list[str]] = {}
    for folder, group in by_folder.items():
        m = pattern.search(folder)
        if m and len(m.groups()) >= 2:
            abnormal[folder] = sorted(f for u in group for f in u.files)
    if not abnormal:
        return units
    table = read_roi_tables(spec, root)
    rois: dict[str, list[dict]] = defaultdict(list)
    failed: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for folder, files in sorted(abnormal.items()):
        m = pattern.search(folder)
        image, number = m.group(1), m.group(2)
        images = [u for u in by_folder.get(image, []) if image not in abnormal]
        if len(images) != 1:
            why = (f"abnormality folder {folder}: its image folder {image} "
                   + ("is not under the source root" if not images else
                      f"holds {len(images)} series, and which one the ROI is drawn on is "
                      "not stated"))
            problems += [Problem(f, "plan", IngestError(why, file=f)) for f in files]
            continue
        why = _row_problem(table.get(folder), folder, image, number)
        if why:
            failed[image].append((f"abnormality folder {folder}: {why}", files))
            continue
        rois[image].append({"folder": folder, "number": number,
                            "label": table[folder]["label"], "files": files})
    kept = []
    for unit in units:
        folder = _folder(unit.files[0])
        if folder in abnormal:
            continue
        if failed.get(folder):
            reasons = "; ".join(r for r, _ in failed[folder])
            names = sorted(f for _, fs in failed[folder] for f in fs)
            exc = IngestError(f"{reasons} (files: {', '.join(names)}); the image is left out "
                              "rather than read with some of its ROIs", file=unit.files[0])
            problems += [Problem(f, "plan", exc) for f in [*unit.files, *names]]
            continue
        if rois.get(folder):
            found = sorted(rois[folder], key=lambda r: (int(r["number"]), r["folder"]))
            unit.extra["roi_folders"] = found
            unit.files = unit.files + [f for r in found for f in r["files"]]
        kept.append(unit)
    return kept


def consumed_files(unit: Unit) -> set[str]:
    """The abnormality folders' files of a unit: read by roi_masks, never as images."""
    return {f for r in unit.extra.get("roi_folders", []) for f in r["files"]}


def _is_binary(arr: np.ndarray) -> bool:
    values = np.unique(arr)
    return len(values) == 2 and values[0] == 0


def choose_mask(spec: SourceSpec, root: Path, roi: dict, shape: tuple[int, int]
                ) -> tuple[str, np.ndarray]:
    """(file, boolean mask) of one abnormality by the declared rule; IngestError naming
    the folder's files when there is no such file, two, or a mask of another size."""
    cfg = spec.layout.roi_folders
    heads = {}
    for rel in roi["files"]:
        try:
            heads[rel] = dcmread(root / rel, stop_before_pixels=True, specific_tags=ROI_TAGS)
        except Exception as exc:  # noqa: BLE001 - any unreadable header names the file
            raise IngestError(f"abnormality folder {roi['folder']}: header not readable: {exc}",
                              file=rel) from exc

    def described(rel: str) -> str:
        return str(heads[rel].get("SeriesDescription", "") or "").strip().casefold()

    def size(rel: str) -> tuple[int, int]:
        return int(heads[rel].get("Rows", 0) or 0), int(heads[rel].get("Columns", 0) or 0)

    def listing() -> str:
        return ", ".join(f"{r} ({size(r)[0]}x{size(r)[1]}, "
                         f"{described(r) or 'no SeriesDescription'!s})" for r in roi["files"])

    def pixels(rel: str) -> np.ndarray:
        try:
            ds = dcmread(root / rel)
        except Exception as exc:  # noqa: BLE001 - any unreadable file names itself
            raise IngestError(f"abnormality folder {roi['folder']}: not readable as DICOM: "
                              f"{exc}", file=rel) from exc
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            raise IngestError(f"abnormality folder {roi['folder']}: {rel} is MONOCHROME1 (0 "
                              "shown white), so which value marks the ROI is not stated",
                              file=rel)
        try:
            arr = pixel_array(ds)
        except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
            raise IngestError(f"abnormality folder {roi['folder']}: pixel data not decodable: "
                              f"{str(exc).strip()[:200]}", file=rel) from exc
        if arr.ndim != 2:
            raise IngestError(f"abnormality folder {roi['folder']}: the mask is not one grey "
                              f"frame ({arr.shape})", file=rel)
        return arr

    where = f"abnormality folder {roi['folder']}"
    image = f"{shape[0]}x{shape[1]}"
    named = [r for r in roi["files"] if described(r) == cfg.mask_series.casefold()]
    if len(named) > 1:
        raise IngestError(f"{where}: {len(named)} files are described as "
                          f"{cfg.mask_series!r}: {listing()}", file=named[0])
    if named:
        rel = named[0]
        if size(rel) != tuple(shape):
            raise IngestError(f"{where}: the ROI mask {rel} is {size(rel)[0]}x{size(rel)[1]}, "
                              f"the image {image}; a mask is never resized", file=rel)
        arr = pixels(rel)
        if not _is_binary(arr):
            raise IngestError(f"{where}: the ROI mask {rel} is not binary (values "
                              f"{np.unique(arr)[:6].tolist()})", file=rel)
        return rel, arr > 0
    crop = (cfg.crop_series or "").casefold()
    fits = [r for r in roi["files"] if size(r) == tuple(shape) and not
            (crop and described(r) == crop)]
    masks = [(r, a) for r in fits if _is_binary(a := pixels(r))]
    if len(masks) != 1:
        found = "no file" if not masks else f"{len(masks)} files ({', '.join(r for r, _ in masks)})"
        raise IngestError(f"{where}: {found} at the image's size {image} with binary pixels "
                          f"and no {cfg.mask_series!r} description: {listing()}",
                          file=roi["files"][0])
    return masks[0][0], masks[0][1] > 0


def roi_masks(spec: SourceSpec, root: Path, unit: Unit, shape: tuple[int, int]
              ) -> tuple[np.ndarray, dict[int, str]]:
    """A label mask at the image's size (abnormality i of the unit is value i + 1) and its
    label map; abnormalities whose masks overlap are an error (one value per pixel)."""
    rois = unit.extra["roi_folders"]
    out = np.zeros(shape, np.uint8 if len(rois) < 256 else np.uint16)
    label_map: dict[int, str] = {}
    for i, roi in enumerate(rois):
        rel, mask = choose_mask(spec, root, roi, shape)
        clash = np.unique(out[mask])
        if clash.any():
            other = rois[int(clash[clash > 0][0]) - 1]["folder"]
            raise IngestError(f"the ROI masks of {other} and {roi['folder']} overlap; one "
                              "label per pixel cannot hold both", file=rel)
        out[mask] = i + 1
        label_map[i + 1] = roi["label"]
    return out, label_map


def attach_roi_masks(spec: SourceSpec, root: Path, unit: Unit, cases: list) -> None:
    """Set the mask and label map of the unit's one image case from its abnormality
    folders; the image must be a single 2D image kept as stored (not turned for display)."""
    from curate.ingest.base import ImageCase

    images = [c for c in cases if isinstance(c, ImageCase)]
    if len(cases) != 1 or len(images) != 1 or images[0].pixels.ndim != 2:
        raise IngestError(f"ROI folders belong to one grey 2D image; {unit.files[0]} read as "
                          f"{len(cases)} case(s)", file=unit.files[0])
    head = dcmread(root / unit.files[0], stop_before_pixels=True,
                   specific_tags=["ViewPosition", "PatientOrientation"])
    if len(list(head.get("PatientOrientation") or [])) == 2 and \
            str(head.get("ViewPosition", "")).upper() in {"PA", "AP"}:
        raise IngestError("the image is turned for display (PA/AP with PatientOrientation); "
                          "its ROI masks would need the same turn, which is not built",
                          file=unit.files[0])
    case = images[0]
    case.mask, case.meta.label_map = roi_masks(spec, root, unit, case.pixels.shape)
    case.meta.roi_per_value = True  # an abnormality's mask in pieces is still one ROI


def _write_roi_file(path: Path, arr: np.ndarray, image, description: str | None,
                    series: str | None = None) -> None:
    """A plain 8-bit DICOM image of the image's patient and modality (a mask or a crop)."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.Modality, ds.PatientID = str(image.Modality), str(image.PatientID)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), series or uid.generate_uid()
    if description:
        ds.SeriesDescription = description
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def raw_values(cfg, label: str) -> list[str]:
    """The table values (one per label column) that read as `label`: a column with
    label_words takes the coded value whose words start what is left of the label, the
    last column the rest, others one word ('finding' for each when nothing fits)."""
    values, rest = [], label
    for i, column in enumerate(cfg.label_columns):
        words = cfg.label_words.get(column, {})
        hit = next((raw for raw, w in sorted(words.items(), key=lambda kv: -len(kv[1]))
                    if rest == w or rest.startswith(w + " ")), None)
        if hit is not None:
            value, rest = hit, rest[len(words[hit]):].strip()
        elif i == len(cfg.label_columns) - 1:
            value, rest = rest, ""
        else:
            value, _, rest = rest.partition(" ")
        values.append(value)
    if rest or not all(values):
        return ["finding"] * len(cfg.label_columns)
    return values


def write_roi_miniature(spec: SourceSpec, dest: Path, images: list[str]) -> list[str]:
    """For make_miniature: abnormality 1 of each written image (a 3 x 3 square mask and a
    crop) in the published layout, alternately in two described series folders and in one
    undescribed folder (the size-and-binary rule), and a case table row for each; returns
    the ROI files written."""
    cfg = spec.layout.roi_folders
    values = raw_values(cfg, next(iter(spec.findings), "finding"))
    written, rows = [], []
    for i, rel in enumerate(images):
        image = pydicom.dcmread(dest / rel, stop_before_pixels=True)
        top, _, rest = rel.partition("/")
        folder, stem_ = f"{top}_1", Path(rel).stem
        study = str(Path(rest).parent) if "/" in rest else "study"
        mask = np.zeros((int(image.Rows), int(image.Columns)), np.uint8)
        mask[2:5, 2:5] = 255
        crop = np.full((3, 3), 100 + i, np.uint8)
        if i % 2 == 0:  # two series folders, each described
            files = [(f"{folder}/{study}/ROI mask images/{stem_}.dcm", mask, cfg.mask_series),
                     (f"{folder}/{study}/cropped images/{stem_}.dcm", crop, cfg.crop_series)]
            series = None
        else:  # one series folder, the crop first, nothing described
            files = [(f"{folder}/{study}/series/{stem_}-1.dcm", crop, None),
                     (f"{folder}/{study}/series/{stem_}-2.dcm", mask, None)]
            series = pydicom.uid.generate_uid()
        for path, arr, description in files:
            _write_roi_file(dest / path, arr, image, description, series)
            written.append(path)
        row = {cfg.key_column: f"{folder}/1.2.3/1.2.4/000001.dcm",
               **dict(zip(cfg.label_columns, values, strict=True))}
        if cfg.number_column:
            row[cfg.number_column] = "1"
        if cfg.image_column:
            row[cfg.image_column] = f"{top}/1.2.3/1.2.5/000000.dcm"
        rows.append(row)
    table = dest / cfg.tables[0].replace("*", "miniature").replace("?", "x")
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return written


def check_roi_folders(spec: SourceSpec, root: Path, images: list[str]
                      ) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a copy against layout.roi_folders, from paths and the case
    tables only: abnormality folders without their image folder or without a table row."""
    cfg = spec.layout.roi_folders
    pattern = re.compile(cfg.folder_regex)
    tops = {_folder(r) for r in images}
    abnormal = {t: m for t in sorted(tops) if (m := pattern.search(t)) and len(m.groups()) >= 2}
    if not abnormal:
        return [], [f"no abnormality folder matches {cfg.folder_regex!r}: images are read "
                    "without ROIs"]
    try:
        table = read_roi_tables(spec, root)
    except ConfigError as exc:
        return [str(exc)], []
    problems = []
    orphans = [t for t, m in abnormal.items() if m.group(1) not in tops]
    unlisted = [t for t, m in abnormal.items() if m.group(1) in tops and
                _row_problem(table.get(t), t, m.group(1), m.group(2))]
    for found, what in ((orphans, "without their image folder"),
                        (unlisted, "without a matching case-table row (their images are "
                                   "quarantined)")):
        if found:
            problems.append(f"{len(found)} of {len(abnormal)} abnormality folders {what}, "
                            f"e.g. {found[0]}")
    return problems, []
