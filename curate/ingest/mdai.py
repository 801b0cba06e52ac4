"""MD.ai annotation exports (the JSON beside MIDRC-RICORD and other MD.ai-labelled sets).

The export holds datasets[].annotations[] (each naming its StudyInstanceUID,
SeriesInstanceUID, SOPInstanceUID and labelId, with `data`) and labelGroups[].labels[]
(id, name, annotationMode, scope), as MD.ai's own client reads it
(mdai.utils.common_utils.json_to_dataframe). Outlines (freeform or polygon `vertices`,
bbox corners) are placed on their slice through its geometry, like LIDC outlines; labels
without data on a whole exam become image labels of every series of the study.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from curate.model.errors import ConfigError, IngestError


def read_mdai(spec, root: Path) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """(series UID -> [{sop, label, xy}], study UID -> [exam-level label names])."""
    cfg = spec.layout.mdai
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: MD.ai export {cfg.file} not found under {root}")
    try:
        data = json.loads(path.read_text())
        names = {lab["id"]: (lab.get("name") or lab["id"], lab.get("annotationMode"))
                 for group in data.get("labelGroups", []) for lab in group.get("labels", [])}
        annotations = [a for d in data["datasets"] for a in d.get("annotations", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"source {spec.name}: {cfg.file} is not an MD.ai export: {exc!r}") from exc
    series: dict[str, list[dict]] = defaultdict(list)
    exams: dict[str, list[str]] = defaultdict(list)
    for a in annotations:
        if a.get("labelId") not in names:
            raise ConfigError(f"source {spec.name}: {cfg.file}: label {a.get('labelId')!r} is "
                              "in no labelGroup")
        name, mode = names[a["labelId"]]
        if name in cfg.ignore:
            continue
        xy = _outline(a.get("data"), mode)
        if xy is not None and a.get("SOPInstanceUID") and a.get("SeriesInstanceUID"):
            series[a["SeriesInstanceUID"]].append({"sop": a["SOPInstanceUID"], "label": name,
                                                   "xy": xy.tolist()})
        elif not a.get("data") and a.get("StudyInstanceUID") and not a.get("SOPInstanceUID"):
            if name not in exams[a["StudyInstanceUID"]]:
                exams[a["StudyInstanceUID"]].append(name)
    return dict(series), dict(exams)


def _outline(data, mode) -> np.ndarray | None:
    """The (N, 2) column/row outline of one annotation's data, or None (no shape)."""
    if not isinstance(data, dict):
        return None
    if data.get("vertices") is not None:  # freeform, polygon: flat or paired numbers
        xy = np.asarray(data["vertices"], float).reshape(-1, 2)
        return xy if len(xy) >= 3 else None
    if mode == "bbox" or {"x", "y", "width", "height"} <= set(data):
        x, y, w, h = (float(data[k]) for k in ("x", "y", "width", "height"))
        return np.array([(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
    return None


def mdai_label(image, geometry: dict[str, tuple], outlines: list[dict]):
    """(z, y, x) label array on image's grid, value i+1 for the i-th label name (sorted),
    its label map, and how many outlines fell on a slice of it."""
    from curate.ingest.lidc import readings_label

    names = sorted({o["label"] for o in outlines})
    out, placed = None, 0
    for i, name in enumerate(names):
        mine = [{"sop": o["sop"], "xy": np.asarray(o["xy"], float), "inclusion": True}
                for o in outlines if o["label"] == name]
        mask, n = readings_label(image, geometry, [mine], 1)
        placed += n
        out = np.where(mask > 0, i + 1, 0 if out is None else out).astype(np.uint8)
    return out, {i + 1: n for i, n in enumerate(names)}, placed


def attach_mdai(case, outlines: list[dict], geometry: dict[str, tuple], rel: str) -> None:
    import SimpleITK as sitk

    arr, label_map, placed = mdai_label(case.image, geometry, outlines)
    if not placed and case.image.GetSize()[2] >= len(geometry):
        raise IngestError(f"{len(outlines)} MD.ai outline(s) for this series but none on one "
                          "of its slices", file=rel)
    label = sitk.GetImageFromArray(arr)
    label.CopyInformation(case.image)
    case.label, case.meta.label_map = label, label_map
