"""Finding a source's files and their annotations from its declared layout."""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.ingest.base import CaseMeta
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec


class TooLarge(IngestError):
    """An image or volume whose header declares more pixels than the source's budget."""


class OutsideRoot(IngestError):
    """A file whose resolved path (through symlinks) leaves the source root."""


class EmptyInput(IngestError):
    """A zero-length file, an image with no pixels, or a degenerate volume."""


class UnknownLabels(IngestError):
    """Mask values that the source's label_map does not name."""


class NonFinite(IngestError):
    """NaN or infinite pixel/voxel values."""


@dataclass
class Problem:
    """A file that could not be used, with the stage and the exception."""

    file: str
    stage: str
    exc: BaseException


def list_images(spec: SourceSpec, root: Path, problems: list[Problem] | None = None) -> list[str]:
    """Relative paths matching the layout's image globs, minus excludes, sorted.

    Given a `problems` list (as planners do), files that leave the source root through a
    symlink (unless the source allows it) and zero-length files are left out, each as a
    planning problem appended to it; without one, every match is listed (layout reports)."""
    found: set[str] = set()
    for pattern in spec.layout.images:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    for pattern in spec.layout.exclude:
        found.difference_update(p.relative_to(root).as_posix() for p in root.glob(pattern))
    if problems is None:
        return sorted(found)
    kept = []
    for rel in sorted(found):
        try:
            check_file(spec, root, rel)
        except IngestError as exc:
            problems.append(Problem(rel, "plan", exc))
            continue
        kept.append(rel)
    return kept


def outside_root(spec: SourceSpec, root: Path, rel: str) -> OutsideRoot | None:
    """The error for a file whose real path leaves the root, unless the source allows it."""
    if spec.layout.allow_symlinks_outside:
        return None
    real = (root / rel).resolve()
    if real.is_relative_to(_real_root(str(root))):
        return None
    return OutsideRoot(f"{rel} resolves outside the source root (a symlink to elsewhere); "
                       "set layout.allow_symlinks_outside: true to use it", file=rel)


def glob_match(glob: str, rel: str) -> bool:
    """Whether a relative '/'-separated path (a file or a folder; '' is the root) matches
    a glob the way Path.glob would ('**' = zero or more folders)."""
    g, p = glob.strip("/").split("/"), rel.split("/") if rel else []

    def rec(a: int, b: int) -> bool:
        if a == len(g):
            return b == len(p)
        if g[a] == "**":
            return any(rec(a + 1, k) for k in range(b, len(p) + 1))
        return b < len(p) and fnmatch.fnmatchcase(p[b], g[a]) and rec(a + 1, b + 1)

    return rec(0, 0)


def read_volume_file(root: Path, rel: str, what: str = "label file"):
    """A 3D image file (NIfTI, NRRD, ...) that annotates a series, read with SimpleITK;
    an unreadable or non-3D file is an IngestError naming it."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(root / rel))
    except RuntimeError as exc:
        raise IngestError(f"{what} not readable: {str(exc).strip()[:200]}", file=rel) from exc
    if image.GetDimension() != 3:
        raise IngestError(f"{what} is {image.GetDimension()}D, the series 3D", file=rel)
    return image


@functools.lru_cache(maxsize=256)
def _real_root(root: str) -> Path:
    """A source root's real path, resolved once per process (every file is checked
    against it)."""
    return Path(root).resolve()


def check_file(spec: SourceSpec, root: Path, rel: str) -> None:
    """Refuse a file outside the source root or of zero length."""
    exc = outside_root(spec, root, rel)
    if exc is not None:
        raise exc
    if (root / rel).stat().st_size == 0:
        raise EmptyInput(f"{rel} is empty (0 bytes)", file=rel)


def check_pixels(total: int, budget: int, what: str, name: str, file: str | None = None) -> None:
    """Refuse an image/volume whose header declares no pixels or more than the budget."""
    if total <= 0:
        raise EmptyInput(f"{name}: the {what} has no pixels", file=file)
    if total > budget:
        key = "layout.max_image_pixels" if what == "image" else "layout.volume.max_voxels"
        raise TooLarge(f"{name}: the {what} declares {total:,} pixels, over the budget of "
                       f"{budget:,} ({key}); refused before decoding", file=file)


def unknown_values(values, label_map: dict[int, str]) -> list[int]:
    """Non-zero mask values that a non-empty label_map does not name, sorted."""
    if not label_map:
        return []
    return sorted(int(v) for v in values if int(v) != 0 and int(v) not in label_map)


def unknown_labels_error(spec: SourceSpec, unknown: list[int], file: str) -> UnknownLabels:
    shown = ", ".join(str(v) for v in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
    return UnknownLabels(
        f"mask values {shown} are not in the label_map of source {spec.name} "
        f"(known: {sorted(spec.layout.label_map)}); add them to label_map, or set "
        "layout.unknown_labels to keep or ignore", file=file)


def nonfinite_fix(spec: SourceSpec, arr: np.ndarray, name: str) -> tuple[np.ndarray, str | None]:
    """`arr` with NaN/inf set to 0 and a note, or unchanged; raises NonFinite when the source
    does not declare nonfinite: zero."""
    if arr.dtype.kind not in "fc":
        return arr, None
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if not bad:
        return arr, None
    if spec.layout.nonfinite != "zero":
        raise NonFinite(f"{name}: {bad:,} of {arr.size:,} values are NaN or infinite; set "
                        "layout.nonfinite: zero to replace them with 0")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0), \
        f"{bad} non-finite values (NaN/inf) in {name} set to 0"


def stem(name: str) -> str:
    """File name without its last suffix; .nii.gz and .tar.gz count as one
    (case001.nii.gz -> case001, case.v1.png -> case.v1)."""
    base = Path(name).name
    for ext in (".nii.gz", ".tar.gz"):
        if base.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    if base.startswith(".") and base.count(".") == 1:
        return base
    return base.rsplit(".", 1)[0] if "." in base else base


def case_name(rel: str, case_regex: str | None) -> str:
    """The case part of an image's stem: group 1 of case_regex, else the whole stem."""
    s = stem(Path(rel).name)
    if case_regex:
        m = re.search(case_regex, s)
        if m and m.groups():
            return m.group(1)
    return s


class _Part(str):
    """A template value that a format spec can rewrite: '{parent:^volumes/=labels/}' is
    the image's folder with the regex ^volumes/ replaced by labels/ (the pattern and its
    replacement hold no braces); escaped for globbing where the template is a pattern."""

    def __new__(cls, value: str, escape: bool = False):
        obj = super().__new__(cls, value)
        obj.escape = escape
        return obj

    def __format__(self, spec: str) -> str:
        value = str(self)
        if spec:
            pattern, sep, repl = spec.partition("=")
            if not sep:
                raise ValueError(f"template rewrite {spec!r} is not PATTERN=REPLACEMENT")
            value = re.sub(pattern, repl, value)
        if self.escape:
            import glob as globlib

            value = globlib.escape(value)
        return value


def _fill(template: str, rel: str, case_regex: str | None, escape: bool) -> str:
    p = Path(rel)
    parent = p.parent.as_posix()
    parts = {"stem": stem(p.name), "name": p.name, "parent": "" if parent == "." else parent,
             "folder": p.parent.name, "case": case_name(rel, case_regex)}
    return template.format(**{k: _Part(v, escape) for k, v in parts.items()})


def annotation_path(template: str, rel: str, case_regex: str | None = None) -> str:
    """Fill a mask/label template ({stem}, {name}, {parent}, {folder}, {case}, each
    optionally rewritten by '{parent:PATTERN=REPLACEMENT}') for one image path."""
    return _fill(template, rel, case_regex, escape=False)


GLOB_CHARS = set("*?[")


def annotation_files(template: str, rel: str, root: Path, case_regex: str | None = None
                     ) -> list[str]:
    """The annotation files of one image: the filled template, or, when the template
    itself holds * or ? outside its fields, every file its filled pattern matches (names
    from the image are escaped, so brackets in a file name are not patterns), sorted."""
    literal = re.sub(r"\{[^{}]*\}", "", template)
    if not GLOB_CHARS & set(literal):
        return [annotation_path(template, rel, case_regex)]
    pattern = _fill(template, rel, case_regex, escape=True)
    return sorted(x.relative_to(root).as_posix() for x in root.glob(pattern.lstrip("/"))
                  if x.is_file())


def present_files(spec: SourceSpec, root: Path, template: str, rel: str,
                  skip: list[str] | tuple = ()) -> list[str]:
    """The files of `template` for image `rel` that exist (never rel itself or `skip`);
    OutsideRoot for the first that leaves the source root (unless the source allows it)."""
    found = [m for m in annotation_files(template, rel, root, spec.layout.case_regex)
             if m != rel and m not in skip and (root / m).is_file()]
    for m in found:
        if (why := outside_root(spec, root, m)) is not None:
            raise why
    return found


def is_pattern(template: str) -> bool:
    """Whether a template names several files (* or ? outside its {fields})."""
    return bool(GLOB_CHARS & set(re.sub(r"\{[^{}]*\}", "", template)))


def file_meta(spec: SourceSpec, key: str, series_id: str | None = None, **extra) -> CaseMeta:
    """What a file-based source says about a case: its declared modality and anatomy,
    the patient id from the path (when declared) and the file as its series."""
    return CaseMeta(modality=spec.modality, anatomy=spec.anatomy,
                    patient_id=patient_from_path(spec, key), series_id=series_id or key,
                    patient_labels=spec.patient_labels(), **extra)


def patient_from_path(spec: SourceSpec, rel: str) -> str | None:
    if not spec.layout.patient_id:
        return None
    m = re.search(spec.layout.patient_id, rel)
    return m.group(1) if m and m.groups() else None


def structure_label(spec: SourceSpec, rel: str) -> str:
    """The label of a one-structure mask file, from its folder or stem (mask_label_from)."""
    lay = spec.layout
    part = Path(rel).parent.name if lay.mask_label_from == "folder" else stem(Path(rel).name)
    if lay.mask_label_regex:
        m = re.search(lay.mask_label_regex, part)
        if m and m.groups():
            return m.group(1)
    return part
