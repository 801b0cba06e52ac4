"""Findings given as points in patient space with a diameter (LUNA16's annotations.csv),
drawn as spheres on a volume's grid through the volume's own geometry; or, where the
source gives no extent (PROSTATEx's findings, `extent: point`), kept as bare points: their
continuous index in the volume, which normalize puts on the one slice that holds them.

The table is read once per source at plan time; each unit carries only its own rows. A
point that falls outside its volume is an error, not a silently empty label: it means the
table's frame, its key or the volume's geometry is not what the source declares.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.ingest.annotations import lookup, numbers, open_table
from curate.ingest.files import annotation_path
from curate.model.errors import ConfigError, IngestError
from curate.model.recipe import SourceSpec


def read_point_table(spec: SourceSpec, root: Path) -> dict[str, list[dict]]:
    """volume key -> [{label, xyz (LPS mm), diameter}] from layout.points."""
    cfg = spec.layout.points
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: point file {cfg.file} not found under {root}")
    xyz = [cfg.coords_column] if cfg.coords_column else [cfg.x_column, cfg.y_column, cfg.z_column]
    cols = [cfg.image_column, *xyz, *cfg.include,
            *[c for c in (cfg.diameter_column, cfg.volume_column, cfg.label_column,
                          cfg.zone_column) if c]]
    out: dict[str, list[dict]] = defaultdict(list)
    with open_table(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {cfg.file} lacks columns {missing}")
        for i, row in enumerate(reader, start=2):
            if any((row[c] or "").strip() not in vals for c, vals in cfg.include.items()):
                continue
            try:
                x, y, z = (float(v) for v in numbers(row[cfg.coords_column])) \
                    if cfg.coords_column else (float(row[c]) for c in xyz)
                if cfg.extent == "point":  # no size: none is made up
                    d = None
                elif cfg.volume_column:  # the sphere of that volume
                    d = (6 * max(float(row[cfg.volume_column]), 0.0) / np.pi) ** (1 / 3)
                else:
                    d = float(row[cfg.diameter_column]) if cfg.diameter_column \
                        else cfg.diameter_mm
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"source {spec.name}: {cfg.file} line {i}: a coordinate or "
                                  f"diameter is not a number ({exc})") from exc
            if cfg.frame == "RAS":
                x, y = -x, -y
            label = (row[cfg.label_column] or "").strip() if cfg.label_column else cfg.label
            if cfg.label_names:
                if label not in cfg.label_names:
                    raise ConfigError(f"source {spec.name}: {cfg.file} line {i}: label "
                                      f"{label!r} is not in points.label_names "
                                      f"({sorted(cfg.label_names)})")
                label = cfg.label_names[label]
            found = {"label": label or cfg.label, "xyz": [x, y, z], "diameter": d}
            if cfg.zone_column:
                found["zone"] = zone_words(spec, row[cfg.zone_column], i)
            out[row[cfg.image_column].strip()].append(found)
    return out


def zone_words(spec: SourceSpec, code: str | None, line: int) -> str | None:
    """The declared words for a zone code; None for an empty cell, an error for a code
    the source declares no words for (never a guessed zone)."""
    cfg = spec.layout.points
    code = (code or "").strip()
    if not code:
        return None
    if code not in cfg.zones:
        raise ConfigError(f"source {spec.name}: {cfg.file} line {line}: zone {code!r} is not "
                          f"in points.zones ({sorted(cfg.zones)})")
    return cfg.zones[code]


def points_of(spec: SourceSpec, table: dict[str, list[dict]], rel: str) -> list[dict]:
    """The rows of one volume (its key from points.image_key, else path, tail or stem)."""
    cfg = spec.layout.points
    key = annotation_path(cfg.image_key, rel, spec.layout.case_regex) if cfg.image_key else rel
    return lookup(table, key) or []


def sphere_labels(image: sitk.Image, points: list[dict], outside: str = "error",
                  notes: list[str] | None = None) -> tuple[sitk.Image, dict[int, str]]:
    """A label volume on image's grid with every point's sphere (value per label name,
    sorted), and its label map. A sphere smaller than a voxel still marks the voxel that
    holds its centre. A point outside the volume raises, or with outside='skip' is left
    out with a note."""
    names = sorted({p["label"] for p in points})
    size = np.array(image.GetSize())  # x, y, z
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    out = np.zeros(size[::-1], np.uint8 if len(names) < 256 else np.uint16)  # z, y, x
    for p in points:
        centre = np.array(p["xyz"], float)
        radius = float(p["diameter"]) / 2
        cidx = np.array(image.TransformPhysicalPointToContinuousIndex(centre.tolist()))
        if (np.any(cidx < -0.5) or np.any(cidx > size - 0.5)) and outside == "skip":
            if notes is not None:
                notes.append(f"a {p['label']} point lies outside this volume; not drawn")
            continue
        if np.any(cidx < -0.5) or np.any(cidx > size - 0.5):
            raise IngestError(
                f"point {p['label']} at {centre.round(1).tolist()} mm lies outside the volume "
                "(index {}); the table's frame, key or this volume's geometry is not what "
                "the source declares".format(cidx.round(1).tolist()))
        reach = np.ceil(radius / spacing.min()) + 1
        lo = np.maximum(np.floor(cidx - reach), 0).astype(int)
        hi = np.minimum(np.ceil(cidx + reach), size - 1).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)],
                                    indexing="ij"), -1)  # x, y, z index triples
        world = origin + (grid * spacing) @ direction.T
        inside = np.linalg.norm(world - centre, axis=-1) <= radius
        value = names.index(p["label"]) + 1
        xs, ys, zs = grid[inside].T
        out[zs, ys, xs] = value
        nearest = np.clip(np.rint(cidx).astype(int), 0, size - 1)
        out[nearest[2], nearest[1], nearest[0]] = value
    label = sitk.GetImageFromArray(out)
    label.CopyInformation(image)
    return label, {i + 1: n for i, n in enumerate(names)}


def inside_index(image: sitk.Image, xyz) -> np.ndarray | None:
    """The point's continuous (x, y, z) index in image, or None when it lies outside the
    volume (beyond the outer voxels' half-width)."""
    size = np.array(image.GetSize())
    cidx = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in xyz]))
    if np.any(cidx < -0.5) or np.any(cidx > size - 0.5):
        return None
    return cidx


def point_marks(image: sitk.Image, points: list[dict], outside: str = "error",
                notes: list[str] | None = None) -> list[dict]:
    """Points without extent on image's grid: [{label, zone, index}] with the continuous
    (x, y, z) index of each point that lies inside the volume. A point outside raises, or
    with outside='skip' is left out with a note (findings keyed by patient: another
    series' field of view)."""
    out = []
    for p in points:
        cidx = inside_index(image, p["xyz"])
        if cidx is None and outside == "skip":
            if notes is not None:
                notes.append(f"a {p['label']} point lies outside this volume; not placed")
            continue
        if cidx is None:
            raise IngestError(
                f"point {p['label']} at {np.round(p['xyz'], 1).tolist()} mm lies outside "
                "the volume; the table's frame, key or this volume's geometry is not what "
                "the source declares")
        out.append({"label": p["label"], "zone": p.get("zone"), "index": cidx.tolist()})
    return out
