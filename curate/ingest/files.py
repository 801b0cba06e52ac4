"""Finding a source's files and their annotations from its declared layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from curate.ingest.base import CaseMeta
from curate.model.recipe import SourceSpec


@dataclass
class Problem:
    """A file that could not be used, with the stage and the exception."""

    file: str
    stage: str
    exc: BaseException


def list_images(spec: SourceSpec, root: Path) -> list[str]:
    """Relative paths matching the layout's image globs, minus excludes, sorted."""
    found: set[str] = set()
    for pattern in spec.layout.images:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    for pattern in spec.layout.exclude:
        found.difference_update(p.relative_to(root).as_posix() for p in root.glob(pattern))
    return sorted(found)


def stem(name: str) -> str:
    """File name without its extensions (case001.nii.gz -> case001)."""
    base = Path(name).name
    for ext in (".nii.gz", ".tar.gz"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base.split(".")[0] if not base.startswith(".") else base


def case_name(rel: str, case_regex: str | None) -> str:
    """The case part of an image's stem: group 1 of case_regex, else the whole stem."""
    s = stem(Path(rel).name)
    if case_regex:
        m = re.search(case_regex, s)
        if m and m.groups():
            return m.group(1)
    return s


def annotation_path(template: str, rel: str, case_regex: str | None = None) -> str:
    """Fill a mask/label template ({stem}, {name}, {parent}, {case}) for one image path."""
    p = Path(rel)
    parent = p.parent.as_posix()
    return template.format(stem=stem(p.name), name=p.name, parent="" if parent == "." else parent,
                           case=case_name(rel, case_regex))


def file_meta(spec: SourceSpec, key: str, series_id: str | None = None, **extra) -> CaseMeta:
    """What a file-based source says about a case: its declared modality and anatomy,
    the patient id from the path (when declared) and the file as its series."""
    return CaseMeta(modality=spec.modality, anatomy=spec.anatomy,
                    patient_id=patient_from_path(spec, key), series_id=series_id or key,
                    **extra)


def patient_from_path(spec: SourceSpec, rel: str) -> str | None:
    if not spec.layout.patient_id:
        return None
    m = re.search(spec.layout.patient_id, rel)
    return m.group(1) if m and m.groups() else None
