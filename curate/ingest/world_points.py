"""Findings given as points in patient space with a diameter (LUNA16's annotations.csv),
drawn as spheres on a volume's grid through the volume's own geometry.

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
            *[c for c in (cfg.diameter_column, cfg.volume_column, cfg.label_column) if c]]
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
                if cfg.volume_column:  # the sphere of that volume
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
            out[row[cfg.image_column].strip()].append(
                {"label": label or cfg.label, "xyz": [x, y, z], "diameter": d})
    return out


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
