"""Does a local copy match its source's declared layout?

Layouts in sources/ are written from documentation, often without the data at hand; a
wrong glob or template only shows up as "0 images" deep inside a build. check_layout
answers the question directly on a folder (counts, missing annotations, unmapped label
values, table columns). curate.sources.miniature writes a few tiny files in the declared layout
so that every declared source can be exercised without downloading it (make_miniature
and miniature_notes are still importable from here).
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curate.ingest.files import (
    annotation_files,
    annotation_path,
    is_pattern,
    list_images,
    patient_from_path,
    stem,
)
from curate.model.errors import CurateError
from curate.model.recipe import SUPPORTED_FAMILIES, FormatFamily, SourceSpec, load_source_registry

VOLUME_EXT = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
RASTER_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv")
FILE_EXT = VOLUME_EXT + RASTER_EXT + VIDEO_EXT + (".dcm", ".dicom", ".npy")
SAFE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"


class LayoutError(CurateError):
    """A layout cannot be checked or synthesised."""


@dataclass
class LayoutReport:
    """What check_layout found; `problems` make it fail, `warnings` are worth a look."""

    source: str
    root: str
    images: int = 0
    per_glob: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    masks_expected: int = 0
    masks_missing: list[str] = field(default_factory=list)
    masks_sampled: int = 0
    label_values: list[int] = field(default_factory=list)
    unmapped_labels: list[int] = field(default_factory=list)
    box_file: str | None = None
    box_file_present: bool | None = None
    box_columns_missing: list[str] = field(default_factory=list)
    box_rows: int = 0
    images_with_boxes: int = 0
    class_file: str | None = None
    images_with_classes: int = 0
    classes_found: list[str] = field(default_factory=list)
    point_file: str | None = None
    frame_tables: int = 0
    region_files: int = 0
    role_series: int = 0  # series a segmentations role table names with its role
    segmented_folders: int = 0  # series folders with a declared segmentation file
    traced_videos: int = 0
    point_rows: int = 0
    images_with_points: int = 0
    patient_ids: int | None = None
    unmatched: list[str] = field(default_factory=list)  # image-like files no glob takes
    unpaired_masks: list[str] = field(default_factory=list)  # mask files no image uses
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.images > 0 and not self.problems

    def summary(self, examples: int = 5) -> str:
        lines = [f"{self.source} at {self.root}: {'OK' if self.ok else 'DOES NOT MATCH'}"]
        lines += [f"  images: {n} match {g}" for g, n in self.per_glob.items()]
        lines.append(f"  images in all: {self.images} ({self.excluded} left out by exclude)")
        if self.masks_expected:
            lines.append(f"  masks: {self.masks_expected - len(self.masks_missing)} of "
                         f"{self.masks_expected} present")
            lines += [f"    missing: {m}" for m in self.masks_missing[:examples]]
            if len(self.masks_missing) > examples:
                lines.append(f"    ... and {len(self.masks_missing) - examples} more")
        if self.masks_sampled:
            vals = ", ".join(map(str, self.label_values)) or "none (all background)"
            lines.append(f"  label values in {self.masks_sampled} sampled mask(s): {vals}")
            if self.unmapped_labels:
                lines.append(f"    not in label_map: {self.unmapped_labels}")
        if self.box_file:
            state = "present" if self.box_file_present else "MISSING"
            lines.append(f"  boxes {self.box_file}: {state}, {self.box_rows} rows/files, "
                         f"{self.images_with_boxes} of {self.images} images covered")
        if self.class_file:
            lines.append(f"  classes {self.class_file}: {self.images_with_classes} of "
                         f"{self.images} images labelled; classes seen: "
                         f"{', '.join(self.classes_found[:10]) or 'none'}")
        if self.traced_videos:
            lines.append(f"  traced videos: {self.traced_videos} of {self.images}")
        if self.region_files:
            lines.append(f"  region files (ASAP XML): {self.region_files} of {self.images} slides")
        if self.frame_tables:
            lines.append(f"  frame label tables: {self.frame_tables}")
        if self.point_file:
            lines.append(f"  points {self.point_file}: {self.point_rows} rows, "
                         f"{self.images_with_points} of {self.images} volumes with findings")
        if self.unmatched:
            lines.append(f"  files no image glob takes: {len(self.unmatched)}")
            lines += [f"    {m}" for m in self.unmatched[:examples]]
        if self.unpaired_masks:
            lines.append(f"  mask files paired with no image: {len(self.unpaired_masks)}")
            lines += [f"    {m}" for m in self.unpaired_masks[:examples]]
        if self.patient_ids is not None:
            lines.append(f"  patient_id regex: {self.patient_ids} of {self.images} images yield an id")
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def lint_spec(spec: SourceSpec) -> list[str]:
    """Layout declarations that look wrong without any data."""
    lay, out = spec.layout, []
    if spec.format not in SUPPORTED_FAMILIES:
        out.append(f"the build does not read the {spec.format.value} family yet")
    if lay.label_map and not lay.masks:
        out.append("label_map is declared but there is no masks template, so no label is read")
    if lay.masks and not lay.label_map:
        out.append("masks are declared without a label_map: every non-zero value is one label")
    if spec.format is FormatFamily.image_boxes and not lay.boxes:
        out.append("image_boxes source without layout.boxes: no box will be read")
    if spec.format is FormatFamily.image_labels and not lay.classes:
        out.append("image_labels source without layout.classes: no class will be read")
    templates = [t for t in (lay.masks, lay.boxes.file if lay.boxes else None) if t]
    if not lay.case_regex and any("{case}" in t for t in templates):
        out.append("a template uses {case} but no case_regex is declared: {case} is the whole stem")
    if lay.case_regex and not any("{case}" in t for t in templates):
        out.append("case_regex is declared but no template uses {case}")
    if lay.masks and lay.label_map and spec.findings and not lay.classes:  # classes key them too
        stray = sorted(k for k in spec.findings if k not in set(lay.label_map.values()))
        if stray:
            out.append(f"findings keys not among label_map values: {stray}")
    return out


def _mask_values(path: Path, spec: SourceSpec | None = None) -> np.ndarray:
    name = path.name.lower()
    if name.endswith(".xml"):  # polygons are filled with 1
        import xml.etree.ElementTree as ET

        root = ET.parse(path).getroot()
        any_polygon = next(root.iter("Vertex"), None) is not None or \
            next(root.iter("Coordinate"), None) is not None
        return np.array([0, 1] if any_polygon else [0])
    if name.endswith((".mat", ".npy", ".npz")) and spec is not None:
        from curate.ingest.image2d import channels_to_labels, load_mask_file

        if spec.layout.mask_channels:  # a stack of per-class channels: its first mask
            first = np.load(path, mmap_mode="r", allow_pickle=False)[0] \
                if name.endswith(".npy") else load_mask_file(path, spec, (1, 1))
            return np.unique(channels_to_labels(np.asarray(first), spec.layout.mask_channels,
                                                path.name))
        return np.unique(load_mask_file(path, spec, (1, 1)))
    if name.endswith(VOLUME_EXT):
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    elif name.endswith(RASTER_EXT):  # as the reader sees it: palettes resolved, RGB -> max
        from curate.ingest.image2d import load_image

        arr = load_image(path)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
    else:
        raise LayoutError(f"{path.name}: no reader for this mask format")
    return np.unique(arr)


def regex_example(pattern: str, i: int = 0) -> str | None:
    """A string the regex matches (digit runs numbered i + 1), or None.

    Uses the stdlib's regex parser (private, hence the fallback to None if it moves).
    """
    try:
        from re import _parser as sre
    except ImportError:
        return None

    def cls(av) -> str:
        neg = any(op is sre.NEGATE for op, _ in av)
        for ch in SAFE_CHARS:
            hit = any((op is sre.LITERAL and a == ord(ch))
                      or (op is sre.RANGE and a[0] <= ord(ch) <= a[1])
                      or (op is sre.CATEGORY and ((a is sre.CATEGORY_DIGIT and ch.isdigit())
                                                  or (a is sre.CATEGORY_WORD and ch.isalnum())))
                      for op, a in av)
            if hit != neg:
                return ch
        raise ValueError("empty class")

    def emit(items) -> str:
        out = []
        for op, av in items:
            if op is sre.LITERAL:
                out.append(chr(av))
            elif op in (sre.ANY, sre.NOT_LITERAL):
                out.append("y" if av == ord("x") else "x")
            elif op is sre.IN:
                out.append(cls(av))
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                lo, hi, sub = av
                k = max(lo, 1) if hi else 0
                piece = emit(sub)
                out.append(f"{i + 1:0{k}d}"[-k:] if k and piece.isdigit() and len(piece) == 1
                           else piece * k)
            elif op is sre.SUBPATTERN:
                out.append(emit(av[-1]))
            elif op is sre.BRANCH:
                out.append(emit(av[1][0]))
            elif op not in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
                raise ValueError(f"regex construct {op} not synthesised")
        return "".join(out)

    try:
        return emit(sre.parse(pattern))
    except (ValueError, re.error, TypeError, AttributeError):
        return None


def fill_template(template: str, rel: str, case_regex: str | None, what: str) -> str:
    """A per-image template filled for rel and normalised; LayoutError when it cannot be."""
    try:
        path = posixpath.normpath(annotation_path(template, rel, case_regex))
    except (KeyError, IndexError, ValueError) as exc:
        raise LayoutError(f"{what} template {template!r} cannot be filled: {exc!r} "
                          "(use {stem}, {name}, {parent}, {case})") from exc
    if path == ".." or path.startswith(("../", "/")):
        raise LayoutError(f"{what} template {template!r} leaves the source root ({path})")
    return path


def _templated(template: str, images: list[str], root: Path, what: str, rep: LayoutReport,
               case_regex: str | None = None) -> tuple[list[str], list[str]]:
    """(present, missing) files of a per-image template such as masks or VOC boxes."""
    present, missing = [], []
    for rel in images:
        try:
            path = fill_template(template, rel, case_regex, what)
        except LayoutError as exc:
            rep.problems.append(str(exc))
            return [], []
        if path == rel:
            rep.problems.append(f"{what} template gives the image itself for {rel}")
        if is_pattern(template):  # several files per image
            found = annotation_files(template, rel, root, case_regex)
            present += found
            missing += [] if found else [path]
            continue
        (present if (root / path).is_file() else missing).append(path)
    if missing:
        rep.problems.append(f"{len(missing)} of {len(images)} {what} files missing, "
                            f"e.g. {missing[0]}")
    return present, missing


def _csv_keys(path: Path, need: list[str], rep: LayoutReport) -> tuple[set[str], int, list]:
    """Values of the first needed column, the row count and the missing columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            rep.problems.append(f"{path.name} lacks declared columns {missing} "
                                f"(has {reader.fieldnames})")
            return set(), 0, missing
        keys, rows = set(), 0
        for row in reader:
            keys.add(row[need[0]])
            rows += 1
    return keys, rows, []


def _covered(images: list[str], keys: set[str]) -> int:
    """Images named in a table by relative path, file name or stem (as ingest matches them)."""
    return sum(1 for r in images if keys & {r, Path(r).name, stem(r)})


def _check_boxes(spec: SourceSpec, root: Path, images: list[str], rep: LayoutReport) -> None:
    t = spec.layout.boxes
    rep.box_file = t.file
    if t.format == "voc":
        present, _ = _templated(t.file, images, root, "VOC box", rep, spec.layout.case_regex)
        rep.box_file_present = bool(present)
        rep.box_rows = rep.images_with_boxes = len(present)
        return
    path = root / t.file
    rep.box_file_present = path.is_file()
    if not rep.box_file_present:
        rep.problems.append(f"box file {t.file} not found")
        return
    if t.format == "json" or t.coords_column or t.image_key or t.spacing_column or \
            t.image_key_tag:
        _check_boxes_as_read(spec, root, images, rep)
        return
    if t.format == "coco":
        try:
            data = json.loads(path.read_text())
            keys = {im["file_name"] for im in data["images"]}
            rep.box_rows = len(data.get("annotations", []))
        except (ValueError, KeyError, TypeError) as exc:
            rep.problems.append(f"{t.file} is not a COCO file: {exc!r}")
            return
    else:
        if t.label_column is None and t.label is None:
            rep.problems.append("boxes declare neither a label_column nor a fixed label")
        need = [c for c in (t.image_column, t.label_column, t.x0_column, t.y0_column,
                            t.x1_column, t.y1_column) if c is not None]
        keys, rep.box_rows, rep.box_columns_missing = _csv_keys(path, need, rep)
    rep.images_with_boxes = _covered(images, keys)
    if images and keys and not rep.images_with_boxes:
        rep.problems.append(f"no image is named in {t.file} (by relative path, name or stem)")


def _check_boxes_as_read(spec: SourceSpec, root: Path, images: list[str],
                         rep: LayoutReport) -> None:
    """Box tables curate reads with more than column names (JSON, coordinate strings,
    keys made from the path): read them as ingest does and count the images covered."""
    from curate.ingest.annotations import read_box_table
    from curate.ingest.image2d import lookup
    from curate.model.errors import ConfigError

    t = spec.layout.boxes
    try:
        table = read_box_table(spec, root)
    except ConfigError as exc:
        rep.problems.append(str(exc))
        return
    rep.box_rows = sum(len(v) for v in table.values())
    if t.image_key_tag:
        from curate.ingest.annotations import header_key
        from curate.model.errors import IngestError

        keys = []
        for r in images:
            try:
                keys.append(header_key(root / r, t.image_key_tag, r))
            except IngestError as exc:
                rep.problems.append(str(exc) + f" ({r})")
                return
    else:
        keys = [annotation_path(t.image_key, r, spec.layout.case_regex) if t.image_key else r
                for r in images]
    found = (lambda k: table.get(k)) if t.image_key_tag else (lambda k: lookup(table, k))
    rep.images_with_boxes = sum(1 for k in keys if found(k) is not None)
    if images and table and not rep.images_with_boxes:
        how = f"by the header's {t.image_key_tag}" if t.image_key_tag else \
            f"by the key {t.image_key!r}" if t.image_key else "by relative path, name or stem"
        rep.problems.append(f"no image is named in {t.file} ({how})")


def _check_classes(spec: SourceSpec, images: list[str], root: Path, rep: LayoutReport) -> None:
    c = spec.layout.classes
    if c.from_name:
        from curate.ingest.annotations import class_from_name
        from curate.model.errors import IngestError

        rep.class_file = f"(file names, {c.from_name!r})"
        found, bad = set(), []
        for r in images:
            try:
                found.update(class_from_name(spec, r))
            except IngestError:
                bad.append(r)
        rep.classes_found, rep.images_with_classes = sorted(found), len(images) - len(bad)
        if bad:
            rep.problems.append(f"{len(bad)} image name(s) give no class by "
                                f"classes.from_name/name_values, e.g. {bad[0]}")
        return
    if c.from_folder:
        rep.class_file = "(parent folder names)"
        rep.classes_found = sorted({Path(r).parent.name for r in images})
        rep.images_with_classes = len(images)
        if len(rep.classes_found) == 1 and len(images) > 1:
            rep.warnings.append(f"from_folder: every image is in a folder named "
                                f"{rep.classes_found[0]!r}, so there is one class")
        return
    if c.file is None:
        rep.problems.append("layout.classes names neither a file nor from_folder")
        return
    rep.class_file = c.file
    if not (root / c.file).is_file():
        rep.problems.append(f"class label file {c.file} not found")
        return
    if c.image_key or c.readers or c.image_key_tags or \
            c.file.lower().endswith((".gz", ".xlsx")):
        _check_classes_as_read(spec, images, root, rep)
        return
    need = [c.image_column] + ([c.label_column] if c.label_column else []) + c.label_columns
    keys, _, _ = _csv_keys(root / c.file, need, rep)
    rep.classes_found = [c.label_column] if c.label_column else list(c.label_columns)
    rep.images_with_classes = _covered(images, keys)
    if images and keys and not rep.images_with_classes:
        rep.problems.append(f"no image is named in {c.file} (by relative path, name or stem)")


def _check_classes_as_read(spec: SourceSpec, images: list[str], root: Path,
                           rep: LayoutReport) -> None:
    """Class tables keyed by a template, read by several readers or compressed: read as
    ingest reads them and count the images (DICOM files: their series') with a row."""
    from curate.ingest.annotations import classes_of, read_class_labels
    from curate.model.errors import ConfigError

    c = spec.layout.classes
    try:
        table = read_class_labels(spec, root)
    except ConfigError as exc:
        rep.problems.append(str(exc))
        return
    from curate.model.errors import IngestError

    try:
        found = [classes_of(spec, table, r, root) for r in images]
    except (IngestError, ConfigError) as exc:
        rep.problems.append(str(exc))
        return
    rep.images_with_classes = sum(1 for f in found if f is not None)
    rep.classes_found = sorted({x for f in found if f for x in f}) or \
        ([c.label_column] if c.label_column else list(c.label_columns))
    if images and table and not rep.images_with_classes:
        how = f"by the key {c.image_key!r}" if c.image_key else "by relative path, name or stem"
        rep.problems.append(f"no image is named in {c.file} ({how})")


def _check_points(spec: SourceSpec, images: list[str], root: Path, rep: LayoutReport) -> None:
    """The point table is present, has its columns, and names some of the volumes."""
    from curate.ingest.world_points import points_of, read_point_table
    from curate.model.errors import ConfigError

    p = spec.layout.points
    rep.point_file = p.file
    try:
        table = read_point_table(spec, root)
    except ConfigError as exc:
        rep.problems.append(str(exc))
        return
    rep.point_rows = sum(len(v) for v in table.values())
    rep.images_with_points = sum(1 for r in images if points_of(spec, table, r))
    if images and table and not rep.images_with_points:
        how = f"by the key {p.image_key!r}" if p.image_key else "by relative path, name or stem"
        rep.problems.append(f"no volume is named in {p.file} ({how})")


def _suffix(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1].lower()
    return ".nii.gz" if name.endswith(".nii.gz") else posixpath.splitext(name)[1]


def mask_marker(template: str | None, images: list[str], case_regex: str | None) -> str:
    """What a mask's name adds to its image's stem ("_mask", "_Annotation"), or ""."""
    for rel in images[:20]:
        try:
            name = posixpath.basename(fill_template(template, rel, case_regex, "mask"))
        except LayoutError:
            return ""
        name = name.replace("*", "").replace("?", "")
        core = name[:-len(_suffix(name))] if _suffix(name) else name
        base = stem(rel).rsplit("/", 1)[-1]
        if base and base in core and core != base:
            return core.replace(base, "", 1)
    return ""


def _check_leftovers(root: Path, images: list[str], matched: set[str], masks: list[str],
                     rep: LayoutReport, marker: str = "", limit: int = 2_000_000) -> None:
    """Files the layout never reads: image-like files beside the matched images that no
    glob takes (a glob too narrow: a subject's further images), and mask-like files in
    the mask folders that no image is paired with (a second mask per image, a renamed
    mask). Where images and masks share a folder, a file is mask-like when its name holds
    what the mask template adds to an image's stem (`marker`, e.g. "_mask")."""
    used = set(images) | matched | set(masks)
    image_dirs = {(posixpath.dirname(r), _suffix(r)) for r in images}
    mask_dirs = {posixpath.dirname(m) for m in masks}
    shared = {d for d, _ in image_dirs} & mask_dirs
    seen = 0
    for path in root.rglob("*"):
        seen += 1
        if seen > limit:
            rep.warnings.append(f"more than {limit} files: stopped looking for unread ones")
            break
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if rel in used or _suffix(rel) not in FILE_EXT:
            continue
        folder = posixpath.dirname(rel)
        masklike = folder in mask_dirs and (
            folder not in shared or bool(marker) and marker in posixpath.basename(rel))
        if masklike:
            rep.unpaired_masks.append(rel)
        elif (folder, _suffix(rel)) in image_dirs:
            rep.unmatched.append(rel)
    rep.unmatched.sort()
    rep.unpaired_masks.sort()
    if rep.unmatched:
        rep.problems.append(f"{len(rep.unmatched)} file(s) beside the images match no image "
                            f"glob (nor exclude), e.g. {rep.unmatched[0]}")
    if rep.unpaired_masks:
        rep.problems.append(f"{len(rep.unpaired_masks)} file(s) in the mask folders are "
                            f"paired with no image, e.g. {rep.unpaired_masks[0]}")


def check_layout(spec: SourceSpec, root: Path, sample: int = 3) -> LayoutReport:
    """Compare a local folder with the declared layout; reads at most `sample` masks."""
    root, lay = Path(root), spec.layout
    rep = LayoutReport(spec.name, str(root))
    if not root.is_dir():
        rep.problems.append(f"{root} is not a folder")
        return rep
    rep.warnings += lint_spec(spec)
    matched: set[str] = set()
    for glob in lay.images:
        if glob.startswith("/") or ".." in glob.split("/"):
            rep.problems.append(f"image glob {glob!r} leaves the source root")
            continue
        hits = {p.relative_to(root).as_posix() for p in root.glob(glob) if p.is_file()}
        rep.per_glob[glob] = len(hits)
        matched |= hits
        if not hits:
            rep.problems.append(f"no file matches image glob {glob!r}")
    images = list_images(spec, root) if rep.per_glob else []
    rep.images, rep.excluded = len(images), len(matched) - len(images)
    if lay.masks:
        present, rep.masks_missing = _templated(lay.masks, images, root, "mask", rep,
                                                lay.case_regex)
        rep.masks_expected = len(present) + len(rep.masks_missing)
        doubled = sorted(set(present) & set(images))
        if doubled:
            rep.warnings.append(f"{len(doubled)} mask file(s) also match the image globs, "
                                f"e.g. {doubled[0]}")
        values: set[int] = set()
        for mask in present[:sample]:
            try:
                values |= {int(v) for v in _mask_values(root / mask, spec)}
                rep.masks_sampled += 1
            except Exception as exc:  # noqa: BLE001 - any unreadable mask is reported
                rep.problems.append(f"mask {mask} unreadable: {exc}")
        if lay.mask_threshold is not None:  # what the reader makes of lossy values
            one = next(v for v in lay.label_map if v)
            values = {one if v >= lay.mask_threshold else 0 for v in values}
        rep.label_values = sorted(values - {0})
        if lay.label_map and lay.unknown_labels != "ignore":
            rep.unmapped_labels = [v for v in rep.label_values if v not in lay.label_map]
            if rep.unmapped_labels:
                rep.problems.append(f"mask values {rep.unmapped_labels} are not in label_map")
    _check_leftovers(root, images, matched, present if lay.masks else [], rep,
                     mask_marker(lay.masks, images, lay.case_regex) if lay.masks else "")
    if lay.boxes:
        _check_boxes(spec, root, images, rep)
    if lay.classes:
        _check_classes(spec, images, root, rep)
    if lay.points:
        _check_points(spec, images, root, rep)
    if lay.mdai:  # the export is there and reads as MD.ai's
        from curate.ingest.mdai import read_mdai
        from curate.model.errors import ConfigError

        try:
            outlines, exams = read_mdai(spec, root)
        except ConfigError as exc:
            rep.problems.append(str(exc))
        else:
            rep.warnings += [] if outlines or exams else [
                f"{lay.mdai.file} holds no outline and no exam label"]
    if lay.roi_folders:  # abnormality folders: their image folders and case-table rows
        from curate.ingest.dicom_roi_files import check_roi_folders

        problems, warnings = check_roi_folders(spec, root, images)
        rep.problems += problems
        rep.warnings += warnings
    if lay.slice_masks:  # per-slice mask images: every series pairs, values in range
        from curate.ingest.slice_masks import check_slice_masks

        problems, warnings = check_slice_masks(spec, root, images, sample)
        rep.problems += problems
        rep.warnings += warnings
    if lay.segmentations:  # the role table, and Slicer files beside some series
        from curate.ingest.slicer_seg import check_segmentations

        rep.role_series, rep.segmented_folders, problems, warnings = check_segmentations(
            spec, root, images)
        rep.problems += problems
        rep.warnings += warnings
    if lay.regions:  # one XML per annotated slide; normal slides have none
        present, _ = _templated(lay.regions.file, images, root, "regions", rep, lay.case_regex)
        rep.region_files = len(present)
        if images and not present:
            rep.problems.append(f"no region file {lay.regions.file!r} is present for any slide")
    if lay.tracings:
        from curate.ingest.annotations import lookup
        from curate.ingest.tracings import read_tracing_table
        from curate.model.errors import ConfigError

        try:
            traced = read_tracing_table(spec, root)
        except ConfigError as exc:
            rep.problems.append(str(exc))
        else:
            rep.traced_videos = sum(1 for r in images if lookup(traced, r))
            if images and traced and not rep.traced_videos:
                rep.problems.append(f"no video is named in {lay.tracings.file}")
    for fl in lay.frame_labels:  # one table per video
        present, missing = _templated(fl.file, images, root, "frame labels", rep,
                                      lay.case_regex)
        rep.frame_tables += len(present)
        if images and not present:
            rep.problems.append(f"no frame label table {fl.file!r} is present "
                                f"(e.g. {missing[0] if missing else fl.file})")
        elif missing:
            rep.warnings.append(f"{len(missing)} video(s) without a frame label table "
                                f"{fl.file!r}, e.g. {missing[0]}")
    if lay.case_regex and images:
        unmatched = [r for r in images if not re.search(lay.case_regex, stem(r))]
        if unmatched:
            rep.warnings.append(f"case_regex {lay.case_regex!r} does not match {len(unmatched)} "
                                f"image stem(s), e.g. {stem(unmatched[0])!r} (it expects "
                                f"something like {regex_example(lay.case_regex)!r}); {{case}} is "
                                f"then the whole stem")
    if lay.patient_id and images:
        rep.patient_ids = sum(1 for r in images if patient_from_path(spec, r))
        if not rep.patient_ids:
            rep.warnings.append(f"patient_id regex {lay.patient_id!r} matches no image path "
                                f"(it expects something like {regex_example(lay.patient_id)!r})")
    return rep


def check_command(name: str, path: str | Path) -> tuple[bool, str]:
    """`curate sources check NAME PATH`: (ok, human-readable report)."""
    registry = load_source_registry()
    if name not in registry:
        return False, f"unknown source {name!r}; declared: {', '.join(sorted(registry))}"
    rep = check_layout(registry[name], Path(path))
    return rep.ok, rep.summary()


_MOVED = {"SynthesisError", "glob_match", "make_miniature", "miniature_notes", "synth_path"}


def __getattr__(name: str):
    """The miniature half lives in curate.sources.miniature; keep the old names importable here."""
    if name in _MOVED:
        from curate.sources import miniature

        return getattr(miniature, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
