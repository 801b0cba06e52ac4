"""Does a local copy match its source's declared layout? And a tiny synthetic copy to test it.

Layouts in sources/ are written from documentation, often without the data at hand; a
wrong glob or template only shows up as "0 images" deep inside a build. check_layout
answers the question directly on a folder (counts, missing annotations, unmapped label
values, table columns), and make_miniature writes a few tiny files in the declared layout
so that every declared source can be exercised without downloading it.
"""

from __future__ import annotations

import csv
import fnmatch
import itertools
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curate.config import SUPPORTED_FAMILIES, FormatFamily, SourceSpec, load_source_registry
from curate.errors import CurateError
from curate.ingest.files import annotation_path, list_images, patient_from_path, stem

VOLUME_EXT = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
RASTER_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv")
FILE_EXT = VOLUME_EXT + RASTER_EXT + VIDEO_EXT + (".dcm", ".dicom", ".npy")


class LayoutError(CurateError):
    """A layout cannot be checked or synthesised."""


class SynthesisError(LayoutError):
    """A glob or template cannot be turned into a concrete file in the source root."""


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
    patient_ids: int | None = None
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
    if lay.masks and lay.label_map and spec.findings:
        stray = sorted(k for k in spec.findings if k not in set(lay.label_map.values()))
        if stray:
            out.append(f"findings keys not among label_map values: {stray}")
    return out


def _mask_values(path: Path) -> np.ndarray:
    name = path.name.lower()
    if name.endswith(VOLUME_EXT):
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    elif name.endswith(RASTER_EXT):
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
    else:
        raise LayoutError(f"{path.name}: no reader for this mask format")
    return np.unique(arr)


def _templated(template: str, images: list[str], root: Path, what: str,
               rep: LayoutReport) -> tuple[list[str], list[str]]:
    """(present, missing) files of a per-image template such as masks or VOC boxes."""
    present, missing = [], []
    for rel in images:
        try:
            path = posixpath.normpath(annotation_path(template, rel))
        except (KeyError, IndexError, ValueError) as exc:
            rep.problems.append(f"{what} template {template!r} cannot be filled: {exc!r} "
                                "(use {stem}, {name}, {parent})")
            return [], []
        if path == ".." or path.startswith(("../", "/")):
            rep.problems.append(f"{what} template {template!r} leaves the source root ({path})")
            return [], []
        if path == rel:
            rep.problems.append(f"{what} template gives the image itself for {rel}")
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
        present, _ = _templated(t.file, images, root, "VOC box", rep)
        rep.box_file_present = bool(present)
        rep.box_rows = rep.images_with_boxes = len(present)
        return
    path = root / t.file
    rep.box_file_present = path.is_file()
    if not rep.box_file_present:
        rep.problems.append(f"box file {t.file} not found")
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


def _check_classes(spec: SourceSpec, images: list[str], root: Path, rep: LayoutReport) -> None:
    c = spec.layout.classes
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
    need = [c.image_column] + ([c.label_column] if c.label_column else []) + c.label_columns
    keys, _, _ = _csv_keys(root / c.file, need, rep)
    rep.classes_found = [c.label_column] if c.label_column else list(c.label_columns)
    rep.images_with_classes = _covered(images, keys)
    if images and keys and not rep.images_with_classes:
        rep.problems.append(f"no image is named in {c.file} (by relative path, name or stem)")


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
        present, rep.masks_missing = _templated(lay.masks, images, root, "mask", rep)
        rep.masks_expected = len(present) + len(rep.masks_missing)
        doubled = sorted(set(present) & set(images))
        if doubled:
            rep.warnings.append(f"{len(doubled)} mask file(s) also match the image globs, "
                                f"e.g. {doubled[0]}")
        values: set[int] = set()
        for mask in present[:sample]:
            try:
                values |= {int(v) for v in _mask_values(root / mask)}
                rep.masks_sampled += 1
            except Exception as exc:  # noqa: BLE001 - any unreadable mask is reported
                rep.problems.append(f"mask {mask} unreadable: {exc}")
        rep.label_values = sorted(values - {0})
        if lay.label_map:
            rep.unmapped_labels = [v for v in rep.label_values if v not in lay.label_map]
            if rep.unmapped_labels:
                rep.problems.append(f"mask values {rep.unmapped_labels} are not in label_map")
    if lay.boxes:
        _check_boxes(spec, root, images, rep)
    if lay.classes:
        _check_classes(spec, images, root, rep)
    if lay.patient_id and images:
        rep.patient_ids = sum(1 for r in images if patient_from_path(spec, r))
        if not rep.patient_ids:
            rep.warnings.append(f"patient_id regex {lay.patient_id!r} matches no image path")
    return rep


def check_command(name: str, path: str | Path) -> tuple[bool, str]:
    """`curate sources check NAME PATH`: (ok, human-readable report)."""
    registry = load_source_registry()
    if name not in registry:
        return False, f"unknown source {name!r}; declared: {', '.join(sorted(registry))}"
    rep = check_layout(registry[name], Path(path))
    return rep.ok, rep.summary()


# --- miniature copies -------------------------------------------------------------------

NOTES_FILE = ".miniature.json"
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"
DICOM_FAMILIES = {FormatFamily.dicom, FormatFamily.dicom_seg, FormatFamily.rtstruct}
FAMILY_NOTES = {
    FormatFamily.wsi: "slides are written as one-tile single-level TIFFs, not pyramidal WSI files",
    FormatFamily.vqa: "question-answer files are not synthesised (the layout names no path)",
    FormatFamily.dicom_seg: "DICOM SEG objects are not synthesised (the layout names no path)",
    FormatFamily.rtstruct: "RTSTRUCT objects are not synthesised (the layout names no path)",
}


def _parse(component: str) -> list[tuple[str, str]]:
    """One glob component as ('lit', c), ('*', ''), ('?', '') and ('[', class) pieces."""
    out, i = [], 0
    while i < len(component):
        c = component[i]
        if c in "*?":
            out.append((c, ""))
            i += 1
            continue
        if c == "[":
            j = i + 1 + (component[i + 1:i + 2] == "!")
            j = component.find("]", j + (component[j:j + 1] == "]"))
            if j > 0:
                out.append(("[", component[i:j + 1]))
                i = j + 1
                continue
        out.append(("lit", c))
        i += 1
    return out


def _regex_sample(pattern: str, i: int) -> str | None:
    """A string the patient_id regex matches (digit runs numbered by case), or None.

    Uses the stdlib's regex parser (private, hence the fallback to None if it moves).
    """
    try:
        from re import _parser as sre
    except ImportError:
        return None

    def cls(av) -> str:
        neg = any(op is sre.NEGATE for op, _ in av)
        for ch in ALPHABET:
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


def glob_match(glob: str, rel: str) -> bool:
    """Whether rel matches glob the way Path.glob would ('**' = zero or more folders)."""
    g, p = glob.split("/"), rel.split("/")

    def rec(a: int, b: int) -> bool:
        if a == len(g):
            return b == len(p)
        if g[a] == "**":
            return any(rec(a + 1, k) for k in range(b, len(p) + 1))
        return b < len(p) and fnmatch.fnmatchcase(p[b], g[a]) and rec(a + 1, b + 1)

    return rec(0, 0)


def synth_path(glob: str, i: int, score, hints: list[str] = ()) -> str:
    """A concrete relative path matching glob for case i, the best by score(path)."""
    parts = glob.split("/")
    if glob.startswith("/") or ".." in parts or not glob:
        raise SynthesisError(f"glob {glob!r} leaves the source root")
    parsed = [None if p == "**" else _parse(p) for p in parts]
    star = [f"case{i + 1:03d}"] + [f"{i + 1:0{k}d}" for k in (1, 2, 3, 4, 5, 6, 8)]
    for h in hints:  # pieces of a patient_id example, without a file extension first
        if h and "/" not in h:
            ext = next((e for e in FILE_EXT if h.lower().endswith(e)), "")
            star += [x for x in (h[: len(h) - len(ext)], h) if x]
    star.append("")
    choices: list[list[str]] = []
    for seg in parsed:
        for kind, text in seg or []:
            if kind == "*":
                choices.append(star)
            elif kind == "?":
                choices.append([str((i + 1) % 10), "x"])
            elif kind == "[":
                ok = [c for c in ALPHABET if fnmatch.fnmatchcase(c, text)]
                if not ok:
                    raise SynthesisError(f"glob {glob!r}: no safe character matches {text}")
                choices.append([ok[i % len(ok)]] + ok[:2])
    best, best_score = None, None
    for combo in itertools.islice(_by_rank([len(c) for c in choices]), 20000):
        it, out = iter(ch[k] for ch, k in zip(choices, combo, strict=True)), []
        for seg in parsed:
            out.append("sub" if seg is None else
                       "".join(text if kind == "lit" else next(it) for kind, text in seg))
        path = "/".join(out)
        if any(c in ("", ".", "..") for c in out):
            continue
        s = score(path)
        if best_score is None or s > best_score:
            best, best_score = path, s
            if all(s):
                break
    if best is None:
        raise SynthesisError(f"glob {glob!r}: no path could be synthesised")
    return best


def _by_rank(sizes: list[int]):
    """Index tuples in order of increasing sum, so the simplest tokens are tried first."""
    for total in range(sum(sizes) - len(sizes) + 1):
        yield from _with_sum(sizes, total)


def _with_sum(sizes: list[int], total: int):
    if not sizes:
        if total == 0:
            yield ()
        return
    for k in range(min(total, sizes[0] - 1) + 1):
        for rest in _with_sum(sizes[1:], total - k):
            yield (k, *rest)


def _kind(name: str, family: FormatFamily) -> str | None:
    low = name.lower()
    if low.endswith(VOLUME_EXT):
        return "volume"
    if low.endswith((".dcm", ".dicom")) or ("." not in name and family in DICOM_FAMILIES):
        return "dicom"
    for kind, ext in (("raster", RASTER_EXT), ("video", VIDEO_EXT), ("npy", (".npy",))):
        if low.endswith(ext):
            return kind
    return None


SHAPES = {"volume": (4, 8, 8), "dicom": (8, 8), "raster": (16, 16), "npy": (2, 16, 16, 3),
          "video": (4, 32, 32, 3)}


def _write(path: Path, kind: str, arr: np.ndarray, spec: SourceSpec, patient: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "volume":
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    elif kind == "raster":
        from PIL import Image

        if path.suffix.lower() in (".jpg", ".jpeg"):
            arr = arr.clip(0, 255).astype(np.uint8)
        tiff = path.suffix.lower() in (".tif", ".tiff") and arr.dtype == np.uint8
        Image.fromarray(arr).save(path, **({"compression": "tiff_deflate"} if tiff else {}))
    elif kind == "npy":
        np.save(path, arr)
    elif kind == "video":
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=4)
            stream.height, stream.width, stream.pix_fmt = arr.shape[1], arr.shape[2], "yuv420p"
            for frame in arr.astype(np.uint8):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    else:
        _write_dicom(path, arr, spec, patient)


def _write_dicom(path: Path, arr: np.ndarray, spec: SourceSpec, patient: str) -> None:
    """A minimal valid single-frame DICOM: CT or MR storage when the modality says so."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    modality = {"CT": "CT", "MR": "MR", "XR": "DX"}.get((spec.modality or "").upper(), "OT")
    sop = {"CT": uid.CTImageStorage, "MR": uid.MRImageStorage,
           "DX": uid.DigitalXRayImageStorageForPresentation}.get(modality,
                                                                 uid.SecondaryCaptureImageStorage)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, "MINIATURE^" + patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.InstanceNumber, ds.SliceThickness = 1, 1.0
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_miniature(spec: SourceSpec, dest: Path, n: int = 2) -> Path:
    """Write n tiny cases per image glob in the declared layout into dest; returns dest.

    Wildcards become tokens chosen so that the patient_id regex and the excludes behave
    as on real data. What cannot be synthesised is listed in dest/.miniature.json (see
    miniature_notes) instead of being silently dropped.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lay, fam = spec.layout, spec.format
    skipped = [FAMILY_NOTES[fam]] if fam in FAMILY_NOTES else []
    pid_re = re.compile(lay.patient_id) if lay.patient_id else None
    images: list[str] = []

    def image_score(path: str) -> tuple[bool, ...]:
        return (not any(glob_match(x, path) for x in lay.exclude),
                _kind(path, fam) is not None, pid_re is None or bool(pid_re.search(path)))

    for glob in lay.images:
        for i in range(n):
            sample = _regex_sample(lay.patient_id, i) if lay.patient_id else None
            try:
                rel = synth_path(glob, i, image_score, [sample, *sample.split("/")] if sample else [])
            except SynthesisError as exc:
                skipped.append(str(exc))
                break
            if not image_score(rel)[0]:
                skipped.append(f"glob {glob!r}: every synthesised path is excluded ({rel})")
                break
            if rel not in images:
                images.append(rel)
    if not images:
        raise SynthesisError(f"{spec.name}: no image could be synthesised: {'; '.join(skipped)}")
    label = next(iter(spec.findings), "finding")
    masks: list[str] = []
    for i, rel in enumerate(images):
        kind = _kind(rel, fam)
        patient = patient_from_path(spec, rel) or f"MINI{i + 1:03d}"
        if kind is None:
            skipped.append(f"{rel}: no writer for this extension; empty placeholder written")
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(b"")
        elif fam is FormatFamily.wsi and kind == "raster":  # one tile of pink "tissue"
            arr = np.empty((lay.tile_size, lay.tile_size, 3), np.uint8)
            arr[...] = (200, 110 + 10 * i, 160)
            _write(dest / rel, kind, arr, spec, patient)
        else:
            arr = (np.arange(np.prod(SHAPES[kind])).reshape(SHAPES[kind]) * (i + 3)) % 200
            _write(dest / rel, kind, arr.astype(np.int16 if kind == "volume" else np.uint8),
                   spec, patient)
        if lay.boxes and lay.boxes.format == "voc":
            voc = _template_target(lay.boxes.file, rel, "VOC box", skipped)
            if voc:
                (dest / voc).parent.mkdir(parents=True, exist_ok=True)
                (dest / voc).write_text(
                    f"<annotation><filename>{Path(rel).name}</filename><object><name>{label}"
                    "</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>6</xmax><ymax>6</ymax>"
                    "</bndbox></object></annotation>")
        mask = _template_target(lay.masks, rel, "mask", skipped) if lay.masks else None
        if mask is None:
            continue
        mkind = _kind(mask, fam)
        if mkind not in ("volume", "raster"):
            skipped.append(f"mask {mask!r}: no writer for its extension")
            continue
        labels = sorted(v for v in lay.label_map if v) or [1]
        arr = np.zeros(SHAPES[mkind], np.uint16 if max(labels) > 255 else np.uint8)
        block = arr.size // (len(labels) + 1)
        for j, v in enumerate(labels):
            arr.flat[(j + 1) * block:(j + 2) * block] = v
        if mkind == "raster" and mask.lower().endswith((".jpg", ".jpeg")):
            skipped.append(f"mask {mask}: JPEG is lossy, label values are not kept exactly")
        _write(dest / mask, mkind, arr, spec, patient)
        masks.append(mask)
    ext, excluded = [e for e in FILE_EXT if images[0].lower().endswith(e)], []
    for x in lay.exclude:  # the junk real data has (macOS ._ files) must stay out
        try:
            junk = synth_path(x, 0, lambda p: (any(glob_match(g, p) for g in lay.images),),
                              [f"case001{e}" for e in ext])
        except SynthesisError as exc:
            skipped.append(f"exclude {exc}")
            continue
        if junk not in images and junk not in masks and any(glob_match(g, junk)
                                                            for g in lay.images):
            (dest / junk).parent.mkdir(parents=True, exist_ok=True)
            (dest / junk).write_bytes(b"\x00\x05\x16\x07 resource fork, not an image")
            excluded.append(junk)
    _write_tables(spec, dest, images, label)
    (dest / NOTES_FILE).write_text(json.dumps(
        {"source": spec.name, "images": images, "masks": masks, "excluded": excluded,
         "skipped": skipped}, indent=1))
    return dest


def _template_target(template: str, rel: str, what: str, skipped: list[str]) -> str | None:
    """The normalised per-image path of a template, or None (noted) when it can't be made."""
    try:
        path = posixpath.normpath(annotation_path(template, rel))
    except (KeyError, IndexError, ValueError) as exc:
        skipped.append(f"{what} template {template!r} cannot be filled: {exc!r}")
        return None
    if path == ".." or path.startswith(("../", "/")):
        skipped.append(f"{what} template {template!r} leaves the source root ({path})")
        return None
    return path


def _write_tables(spec: SourceSpec, dest: Path, images: list[str], label: str) -> None:
    """Box (CSV, COCO) and class-label tables naming every image by its relative path."""
    t, c = spec.layout.boxes, spec.layout.classes

    def csv_file(rel: str, header: list[str], rows: list[list]) -> None:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(dest / rel, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])

    if t and t.format == "csv":  # 1, 1, 4, 4 is a valid box as corners and as x, y, w, h
        with_label = t.label_column is not None
        header = [t.image_column] + [t.label_column] * with_label + [
            t.x0_column, t.y0_column, t.x1_column, t.y1_column]
        csv_file(t.file, header, [[r] + [label] * with_label + [1, 1, 4, 4] for r in images])
    elif t and t.format == "coco":
        (dest / t.file).parent.mkdir(parents=True, exist_ok=True)
        (dest / t.file).write_text(json.dumps({
            "images": [{"id": k, "file_name": r} for k, r in enumerate(images)],
            "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 4, 4]}
                            for k in range(len(images))],
            "categories": [{"id": 1, "name": label}]}))
    if c and c.file:
        header = [c.image_column] + ([c.label_column] if c.label_column else []) + c.label_columns
        flags = ["1" if k == 0 else "0" for k in range(len(c.label_columns))]
        csv_file(c.file, header, [[r] + [label] * bool(c.label_column) + flags for r in images])


def miniature_notes(dest: Path) -> dict:
    """What make_miniature wrote (images, masks, excluded junk) and could not (skipped)."""
    return json.loads((Path(dest) / NOTES_FILE).read_text())
