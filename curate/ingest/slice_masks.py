"""Per-slice 2D mask images beside a DICOM series (layout.slice_masks).

Some sources publish a segmentation as one image per slice in a folder beside the
series, not as a label volume or a DICOM SEG: CHAOS puts `Ground/liver_GT_000.png`...
beside `DICOM_anon/i0000,0000b.dcm`..., and its organisers pair them by name order
("the orientation of the slices is determined by order of image names NOT by position
tags in DICOM files", CHAOSmetrics.py in emrekavur/CHAOS-evaluation). So:

- planning pairs the masks of each series folder with the folder's DICOM files (every
  file the image globs match there, readable or not, so one bad file cannot shift the
  others): the i-th mask with the i-th file, both in natural name order, or mask and file
  by stem; a count mismatch, a missing mask folder or an unpaired file leaves the whole
  series out with a quarantine row naming the folder, never a shifted pairing;
- reading puts each mask on the slice its own DICOM file occupies in the volume, found
  from that file's ImagePositionPatient (the volume is ordered by position, not by name),
  with the mask's pixel grid as the file's rows and columns; grey values become labels
  through the declared inclusive ranges, anything else follows layout.unknown_labels.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import SimpleITK as sitk

from curate.ingest.base import Unit, VolumeCase
from curate.ingest.files import (
    Problem,
    UnknownLabels,
    annotation_path,
    glob_match,
    outside_root,
    stem,
)
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec

GRID_TOLERANCE = 0.05  # of a slice step: a DICOM file off the volume's slice grid


class UnpairedSeries(IngestError):
    """A series folder whose slice masks cannot be paired with its DICOM files."""


def natural_key(name: str) -> tuple:
    """Sort key comparing runs of digits by value (slice2 before slice10), as the CHAOS
    evaluation's MATLAB natsortfiles does; for zero-padded names it is the plain order."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p), name


def entry_of(spec: SourceSpec, folder: str) -> int | None:
    """Index of the first slice_masks entry whose series glob matches the folder."""
    for i, entry in enumerate(spec.layout.slice_masks):
        if glob_match(entry.series, folder):
            return i
    return None


def mask_files(spec: SourceSpec, root: Path, index: int, rel: str) -> tuple[str, list[str]]:
    """The mask folder of DICOM file `rel` under entry `index`, and its mask files (the
    entry's files glob, no dotfiles) in natural name order."""
    entry = spec.layout.slice_masks[index]
    folder = annotation_path(entry.folder, rel, spec.layout.case_regex).strip("/")
    where = root / folder
    if not where.is_dir():
        return folder, []
    names = [p.name for p in where.iterdir() if p.is_file() and not p.name.startswith(".")
             and fnmatch.fnmatchcase(p.name, entry.files)]
    return folder, [f"{folder}/{n}" for n in sorted(names, key=natural_key)]


def pair_folder(spec: SourceSpec, root: Path, index: int, dicoms: list[str]
                ) -> dict[str, str]:
    """{DICOM file: its mask} for one series folder's files; UnpairedSeries when the
    folder's masks cannot be paired one to one."""
    entry = spec.layout.slice_masks[index]
    dicoms = sorted(dicoms, key=lambda r: natural_key(PurePosixPath(r).name))
    series = PurePosixPath(dicoms[0]).parent.as_posix()
    folder, masks = mask_files(spec, root, index, dicoms[0])
    if not masks:
        raise UnpairedSeries(f"series folder {series}/: no mask file ({entry.files}) in "
                             f"{folder}/; the series is left out", file=f"{series}/")
    for m in masks:
        if (why := outside_root(spec, root, m)) is not None:
            raise why
    if entry.pair == "name_order":
        if len(masks) != len(dicoms):
            raise UnpairedSeries(
                f"series folder {series}/ holds {len(dicoms)} DICOM file(s) but {folder}/ "
                f"{len(masks)} mask(s); pairing by name order needs one mask per file, so "
                "the series is left out (not shifted)", file=f"{series}/")
        return dict(zip(dicoms, masks, strict=True))
    by_stem = {stem(PurePosixPath(m).name): m for m in masks}
    lone = [d for d in dicoms if stem(PurePosixPath(d).name) not in by_stem]
    extra = sorted(set(by_stem) - {stem(PurePosixPath(d).name) for d in dicoms})
    if lone or extra:
        raise UnpairedSeries(
            f"series folder {series}/: {len(lone)} DICOM file(s) without a mask of the same "
            f"stem in {folder}/ and {len(extra)} mask(s) without a DICOM file; the series "
            "is left out", file=f"{series}/")
    return {d: by_stem[stem(PurePosixPath(d).name)] for d in dicoms}


def plan_slice_masks(spec: SourceSpec, root: Path, units: list[Unit], problems: list[Problem],
                     listed: list[str]) -> list[Unit]:
    """Attach each series' slice masks: unit.extra['slice_masks'] = [[dicom, mask, entry],
    ...] and the masks among unit.files. `listed` is every file the image globs matched
    (a folder's name order counts them all). Units of a folder that cannot be paired are
    left out, with one problem row naming the folder."""
    in_folder: dict[str, list[str]] = defaultdict(list)
    for rel in dict.fromkeys(listed):
        in_folder[PurePosixPath(rel).parent.as_posix()].append(rel)
    paired: dict[str, dict[str, str] | None] = {}
    entries: dict[str, int | None] = {}
    kept = []
    for unit in units:
        folders = list(dict.fromkeys(PurePosixPath(f).parent.as_posix() for f in unit.files))
        for folder in folders:
            if folder in paired:
                continue
            entries[folder] = entry_of(spec, folder)
            if entries[folder] is None:
                paired[folder] = {}
                continue
            try:
                paired[folder] = pair_folder(spec, root, entries[folder], in_folder[folder])
            except IngestError as exc:
                paired[folder] = None
                problems.append(Problem(exc.file or f"{folder}/", "plan", exc))
        if any(paired[f] is None for f in folders):
            continue  # the folder's row says why
        pairs = [[f, paired[folder][f], entries[folder]] for f in unit.files
                 for folder in [PurePosixPath(f).parent.as_posix()] if f in paired[folder]]
        if pairs and "iop" in unit.extra:
            unit.extra["slice_masks"] = pairs
            unit.files = unit.files + sorted({m for _, m, _ in pairs} - set(unit.files))
        kept.append(unit)
    return kept


def read_mask(path: Path, rel: str) -> np.ndarray:
    """A mask image as a 2D integer array of its stored values (1-bit masks as 0/1; a
    colour mask only when its channels agree)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise IngestError(f"slice mask not readable: {str(exc)[:200]}", file=rel) from exc
    if mode == "P":
        raise IngestError("slice mask is a palette image: its stored indices are not grey "
                          "values; convert it to grey first", file=rel)
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        if (colour != colour[..., :1]).any():
            raise IngestError("slice mask has colour channels that differ; a grey mask is "
                              "expected", file=rel)
        arr = colour[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise IngestError(f"slice mask holds {arr.dtype} values, not integers", file=rel)
    return arr


def label_slice(spec: SourceSpec, values: np.ndarray, ranges: list[tuple[int, int, int]],
                extra: dict[int, int], first_free: int, rel: str, notes: list[str]
                ) -> np.ndarray:
    """Label ids of one mask: each declared inclusive range to its id; a non-zero value in
    no range is quarantined, kept as its own label ('label N': `extra` maps such values to
    ids after the declared ones, and grows) or ignored, as layout.unknown_labels says."""
    out = np.zeros(values.shape, np.uint16)
    known = np.zeros(values.shape, bool)
    for lo, hi, ident in ranges:
        hit = (values >= lo) & (values <= hi)
        out[hit] = ident
        known |= hit
    stray = (values != 0) & ~known
    if stray.any():
        found = sorted(int(v) for v in np.unique(values[stray]))
        shown = ", ".join(map(str, found[:20])) + (" ..." if len(found) > 20 else "")
        policy = spec.layout.unknown_labels
        if policy == "quarantine":
            raise UnknownLabels(
                f"mask values {shown} are in none of the slice_masks ranges of source "
                f"{spec.name}; widen a range, or set layout.unknown_labels to keep or ignore",
                file=rel)
        if policy == "keep":
            for v in found:
                out[values == v] = extra.setdefault(v, first_free + len(extra))
        else:
            note = f"slice mask values in no declared range ignored: {shown}"
            if note not in notes:
                notes.append(note)
    return out


def attach_slice_masks(spec: SourceSpec, root: Path, cases: list, pairs: list[list],
                       datasets: list) -> None:
    """Label volumes of a series' cases from its paired slice masks. Each mask goes on the
    slice its DICOM file holds in the case's volume (by ImagePositionPatient along the
    volume's normal); a file whose position lies in another case (a sub-volume after a
    gap) is left to that case; one off the slice grid (resampled spacing) is an error,
    never a nearest-slice guess."""
    volumes = [c for c in cases if isinstance(c, VolumeCase)]
    if not volumes:
        raise IngestError("slice masks need a DICOM series with slice geometry", file=pairs[0][0])
    positions = {ds.curate_rel: [float(v) for v in ds.ImagePositionPatient]
                 for ds in datasets if ds.get("ImagePositionPatient") is not None}
    names: dict[str, int] = {}
    for _, _, index in pairs:
        for name in spec.layout.slice_masks[index].labels:
            names.setdefault(name, len(names) + 1)
    extra: dict[int, int] = {}
    placed_anywhere: set[str] = set()
    lost = {rel for c in volumes for rel, _ in c.meta.skipped}
    for case in volumes:
        if case.label is not None:
            raise IngestError("the series has slice masks and another label source; "
                              "declare one", file=pairs[0][1])
        size = case.image.GetSize()  # x, y, z
        out = np.zeros((size[2], size[1], size[0]), np.uint16)
        taken: dict[int, str] = {}
        for dicom, mask, index in pairs:
            if dicom in lost:
                continue
            if dicom not in positions:
                raise IngestError("DICOM file without ImagePositionPatient: its mask cannot "
                                  "be placed", file=dicom)
            k_real = case.image.TransformPhysicalPointToContinuousIndex(positions[dicom])[2]
            k = int(round(k_real))
            if not 0 <= k < size[2]:
                continue  # another sub-volume's slice
            if abs(k_real - k) > GRID_TOLERANCE:
                raise IngestError(
                    f"the slice of {PurePosixPath(dicom).name} lies off the volume's slice "
                    "grid (uneven spacing resampled or spaced by the median), so its mask "
                    "cannot be placed exactly; set layout.volume.uneven_spacing: reject to "
                    "leave such series out", file=mask)
            if k in taken:
                continue  # a duplicate position: the first file's pixels, the first's mask
            values = read_mask(root / mask, mask)
            if values.shape != (size[1], size[0]):
                raise IngestError(f"slice mask is {values.shape[1]}x{values.shape[0]} pixels, "
                                  f"its DICOM slice {size[0]}x{size[1]}", file=mask)
            entry = spec.layout.slice_masks[index]
            ranges = [(lo, hi, names[n]) for n, (lo, hi) in entry.labels.items()]
            out[k] = label_slice(spec, values, ranges, extra, len(names) + 1, mask,
                                 case.meta.notes)
            taken[k] = dicom
            placed_anywhere.add(dicom)
        label = sitk.GetImageFromArray(out)
        label.CopyInformation(case.image)
        case.label = label
        case.meta.label_map = {i: n for n, i in names.items()} | \
            {i: f"label {v}" for v, i in extra.items()}
    unplaced = [d for d, _, _ in pairs if d not in placed_anywhere and d not in lost]
    if unplaced:
        volumes[0].meta.notes.append(
            f"{len(unplaced)} slice mask(s) not placed: their DICOM file shares a position "
            "with an earlier one (the first file and its mask kept)")


def check_slice_masks(spec: SourceSpec, root: Path, images: list[str], sample: int = 3
                      ) -> tuple[list[str], list[str]]:
    """`curate sources check`: (problems, warnings) for the declared slice masks: series
    folders whose masks cannot be paired (count mismatch, no mask folder, stems that do not
    meet), and values in no declared range in the middle mask of a few series per entry."""
    problems, warnings, unpaired = [], [], []
    in_folder: dict[str, list[str]] = defaultdict(list)
    for rel in images:
        in_folder[PurePosixPath(rel).parent.as_posix()].append(rel)
    sampled: dict[int, int] = defaultdict(int)
    for folder, files in sorted(in_folder.items()):
        index = entry_of(spec, folder)
        if index is None:
            continue
        try:
            pairs = pair_folder(spec, root, index, files)
        except IngestError as exc:
            unpaired.append(str(exc))
            continue
        if sampled[index] >= sample:
            continue
        sampled[index] += 1
        middle = sorted(pairs.values(), key=lambda m: natural_key(PurePosixPath(m).name))
        mask = middle[len(middle) // 2]
        try:
            values = np.unique(read_mask(root / mask, mask)).tolist()
        except IngestError as exc:
            problems.append(f"{mask}: {exc}")
            continue
        spans = spec.layout.slice_masks[index].labels.values()
        stray = [v for v in values if v and not any(lo <= v <= hi for lo, hi in spans)]
        if stray:
            problems.append(f"{mask}: values {stray[:20]} are in no declared slice_masks range")
    if unpaired:
        problems.append(f"{len(unpaired)} series folder(s) cannot be paired with their slice "
                        f"masks, e.g. {unpaired[0]}")
    for index, entry in enumerate(spec.layout.slice_masks):
        if not any(entry_of(spec, f) == index for f in in_folder):
            warnings.append(f"slice_masks series {entry.series!r} matches no image folder")
    return problems, warnings
