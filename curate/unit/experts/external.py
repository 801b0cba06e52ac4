"""Adapters for TotalSegmentator (CT/MR organs) and Cellpose (cells and nuclei).

Both are optional: they are used when the package is installed AND its weights are
already on local disk. Both packages download weights on first use, which a build
must never do silently (clusters are often offline, and a run must be reproducible), so
`setup()` checks for the weights first and fails with a message that says what is
missing and how to get it. Neither package is imported before `setup()`.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from curate.model.errors import MissingDependency
from curate.unit.experts.base import (
    Expert,
    ExpertError,
    ExpertInput,
    ExpertParams,
    ExpertROI,
    Kind,
    Resources,
)
from curate.unit.normalize import View2D


def installed(module: str) -> bool:
    """Whether a module can be imported (a seam tests patch)."""
    return importlib.util.find_spec(module) is not None


# nnU-Net dataset ids each TotalSegmentator v2 task needs (python_api.py of v2.x)
TOTALSEG_DATASETS: dict[tuple[str, str], list[int]] = {
    ("total", "normal"): [291, 292, 293, 294, 295], ("total", "fast"): [297],
    ("total", "fastest"): [298], ("total_mr", "normal"): [730, 731],
    ("total_mr", "fast"): [732], ("total_mr", "fastest"): [733],
    ("body", "normal"): [299], ("body", "fast"): [300], ("lung_vessels", "normal"): [258],
}


class TotalSegParams(ExpertParams):
    task: str = "total"
    fast: bool = False
    fastest: bool = False
    roi_subset: list[str] | None = None
    home_dir: str | None = Field(None, description="TOTALSEG_HOME_DIR; else the env var, "
                                 "else ~/.totalsegmentator")
    dataset_ids: list[int] | None = Field(None, description="weights to require; default "
                                          "from the task")
    device: str = "cpu"
    num_gpus: float = Field(0.0, ge=0)
    num_cpus: float = Field(2.0, gt=0)
    confidence: float = Field(0.9, ge=0, le=1, description="recorded as the score: the "
                              "python API returns labels, not probabilities")
    kinds: dict[str, Kind] = Field(default_factory=dict)
    default_kind: Kind = "organ"


def totalseg_weights_dir(home_dir: str | None) -> Path:
    """Where TotalSegmentator looks for nnU-Net results (mirrors totalsegmentator.config)."""
    if home_dir is None and "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = home_dir or os.environ.get("TOTALSEG_HOME_DIR")
    root = Path(home).expanduser() if home else Path.home() / ".totalsegmentator"
    return root / "nnunet" / "results"


class TotalSegmentator(Expert):
    """Organs on a CT (task total) or MR (total_mr) volume, on the volume's own grid."""

    name = "totalsegmentator"
    Params = TotalSegParams
    inputs = frozenset({"3d"})

    @property
    def resources(self) -> Resources:
        return Resources(num_cpus=self.params.num_cpus, num_gpus=self.params.num_gpus)

    def required_datasets(self) -> list[int]:
        p = self.params
        if p.dataset_ids is not None:
            return list(p.dataset_ids)
        mode = "fastest" if p.fastest else "fast" if p.fast else "normal"
        ids = list(TOTALSEG_DATASETS.get((p.task, mode), []))
        if p.roi_subset:  # a rough 6 mm (MR: 3 mm) model crops first
            ids.append(733 if p.task == "total_mr" else 298)
        return ids

    def load(self) -> None:
        p = self.params
        if not installed("totalsegmentator"):
            raise MissingDependency("TotalSegmentator")
        weights = totalseg_weights_dir(p.home_dir)
        ids = self.required_datasets()
        missing = [i for i in ids if not any(weights.glob(f"Dataset{i:03d}_*"))]
        if missing or not ids:
            raise ExpertError(
                f"totalsegmentator: weights for task {p.task!r} "
                f"(nnU-Net datasets {missing or 'unknown: set dataset_ids'}) are not in "
                f"{weights}. On a machine with network run `totalseg_download_weights -t "
                f"{p.task}` and copy the folder here, or point TOTALSEG_HOME_DIR (params."
                f"home_dir) at a copy; curate never downloads weights")
        if p.home_dir:
            os.environ["TOTALSEG_HOME_DIR"] = str(Path(p.home_dir).expanduser())
        from totalsegmentator.map_to_binary import class_map
        from totalsegmentator.python_api import totalsegmentator

        self._run = totalsegmentator
        self.classes = {int(k): v for k, v in class_map[p.task].items()}

    def run(self, x: ExpertInput, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        import nibabel as nib
        import SimpleITK as sitk

        from curate.unit.experts.monai_bundle import to_monai

        p = self.params
        arr, affine, _ = to_monai(x, "raw")  # (x, y, z) with a RAS affine, as NIfTI stores it
        seg = self._run(nib.Nifti1Image(arr, affine), None, ml=True, task=p.task, fast=p.fast,
                        fastest=p.fastest, roi_subset=p.roi_subset, device=p.device,
                        quiet=True, skip_saving=True)
        lab = np.asarray(seg.dataobj).astype(np.int32).transpose(2, 1, 0)
        if lab.shape != sitk.GetArrayViewFromImage(x).shape:
            raise ExpertError(f"totalsegmentator returned {lab.shape} for a "
                              f"{sitk.GetArrayViewFromImage(x).shape} volume")
        rois = []
        for value in np.unique(lab):
            if value == 0:
                continue
            label = self.classes.get(int(value), f"label {int(value)}").replace("_", " ")
            rois.append(ExpertROI(label, lab == value, p.confidence,
                                  p.kinds.get(label, p.default_kind)))
        return rois


class CellposeParams(ExpertParams):
    model: str = Field("nuclei", description="model name (nuclei, cyto3, cpsam, ...) or a "
                       "path to a weights file")
    model_dir: str | None = Field(None, description="else CELLPOSE_LOCAL_MODELS_PATH, else "
                                  "~/.cellpose/models")
    diameter: float | None = Field(None, description="cell diameter in pixels; None: estimate")
    channel: Literal["hematoxylin", "grey", "rgb"] = "hematoxylin"
    per_cell: bool = True
    label: str = "nucleus"
    kind: Kind = "structure"
    max_rois: int = Field(200, ge=1)
    gpu: bool = False
    num_gpus: float = Field(0.0, ge=0)


def cellpose_model_dir(model_dir: str | None) -> Path:
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    raw = model_dir or env
    return Path(raw).expanduser() if raw else Path.home() / ".cellpose" / "models"


def cellpose_weights(model: str, model_dir: Path) -> Path | None:
    """The local weights file for a model name (cellpose names them e.g. nucleitorch_0)."""
    direct = Path(model).expanduser()
    if direct.is_file():
        return direct
    if not model_dir.is_dir():
        return None
    hits = sorted(f for f in model_dir.iterdir()
                  if f.is_file() and (f.name == model or f.name.startswith(f"{model}torch")))
    return hits[0] if hits else None


class Cellpose(Expert):
    """Cells or nuclei with a local Cellpose model; one ROI per instance or merged."""

    name = "cellpose"
    Params = CellposeParams

    @property
    def resources(self) -> Resources:
        return Resources(num_cpus=1.0, num_gpus=self.params.num_gpus)

    def load(self) -> None:
        p = self.params
        if not installed("cellpose"):
            raise MissingDependency("cellpose")
        folder = cellpose_model_dir(p.model_dir)
        weights = cellpose_weights(p.model, folder)
        if weights is None:
            raise ExpertError(
                f"cellpose: no local weights for model {p.model!r} in {folder}. On a machine "
                f"with network run `python -c \"from cellpose import models; "
                f"models.CellposeModel(model_type='{p.model}')\"` and copy {folder} here, "
                f"or set CELLPOSE_LOCAL_MODELS_PATH (params.model_dir); curate never "
                f"downloads weights")
        os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = str(folder)  # read when cellpose imports
        from cellpose import models

        self.model = models.CellposeModel(gpu=p.gpu, pretrained_model=str(weights))

    def run(self, view: View2D, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        p = self.params
        img = view.image
        if p.channel == "hematoxylin":
            from curate.unit.experts.pathology import hematoxylin

            if img.ndim != 3:
                raise ExpertError("cellpose with channel=hematoxylin needs an RGB view")
            img = hematoxylin(img)
        elif p.channel == "grey" and img.ndim == 3:
            img = img[..., :3].mean(axis=2)
        kwargs: dict[str, Any] = {"diameter": p.diameter}
        if "channels" in inspect.signature(self.model.eval).parameters and img.ndim == 2:
            kwargs["channels"] = [0, 0]  # cellpose < 4: grey input
        out = self.model.eval(img, **kwargs)
        lab = np.asarray(out[0])
        prob = None
        try:  # flows[2] is the cell probability logit in cellpose 2-4
            prob = 1.0 / (1.0 + np.exp(-np.asarray(out[1][2], np.float32)))
        except (IndexError, TypeError, ValueError):
            pass
        values = [int(v) for v in np.unique(lab) if v != 0]
        scores = {v: float(prob[lab == v].mean()) if prob is not None and prob.shape == lab.shape
                  else 1.0 for v in values}
        if not values:
            return []
        if not p.per_cell:
            mean = float(np.mean(list(scores.values())))
            return [ExpertROI(f"{p.label}s", lab > 0, mean, p.kind, {"count": len(values)})]
        keep = sorted(sorted(values, key=lambda v: (-scores[v], v))[:p.max_rois])
        return [ExpertROI(p.label, lab == v, scores[v], p.kind, {"count": len(values)})
                for v in keep]
