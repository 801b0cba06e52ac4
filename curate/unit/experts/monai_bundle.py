"""Any MONAI bundle from a LOCAL folder, run with the bundle's own pre/post-processing.

A bundle folder holds configs/metadata.json (label names under
network_data_format.outputs.<pred>.channel_def), configs/inference.json (network_def,
preprocessing, inferer, postprocessing) and models/model.pt (a state dict). We parse the
config with monai.bundle.ConfigParser and take its parsed components rather than run the
whole ConfigWorkflow, because the workflow reads its inputs from files and writes its
outputs to files; here the input is an in-memory view or volume and the output is masks.

The input is handed over exactly as the bundle's LoadImage(d) would produce it (a
MetaTensor with MONAI's axis order: x first; RAS affine for volumes), and the loaders
and savers are dropped from the Compose in place, so a postprocessing Invertd that
refers to @preprocessing still inverts it. Nothing is ever downloaded: missing files are
an error that names the folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

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

SKIP_DEFAULT = ["LoadImage", "LoadImaged", "SaveImage", "SaveImaged"]


class BundleParams(ExpertParams):
    path: str = Field(description="local bundle folder (never downloaded)")
    config: str = "configs/inference.json"
    meta: str = "configs/metadata.json"
    weights: str = "models/model.pt"
    network_key: str = "network_def"
    preprocessing_key: str = "preprocessing"
    inferer_key: str = "inferer"
    postprocessing_key: str = "postprocessing"
    input_key: str = "image"
    output_key: str = "pred"
    input: Literal["raw", "image"] = Field("raw", description="2D views: raw (source units, "
                                           "HU for CT) or image (the uint8 display image)")
    labels: dict[int, str] | None = Field(None, description="override the bundle's channel_def")
    kinds: dict[str, Kind] = Field(default_factory=dict, description="label -> kind")
    default_kind: Kind = "organ"
    skip_transforms: list[str] = Field(default_factory=lambda: list(SKIP_DEFAULT))
    overrides: dict[str, Any] = Field(default_factory=dict, description="config ids to set")
    device: str = "cpu"
    num_gpus: float = Field(0.0, ge=0)
    num_cpus: float = Field(1.0, gt=0)
    min_pixels: int = Field(1, ge=1)


def bundle_files(p: BundleParams) -> tuple[Path, Path, Path, Path]:
    """(root, config, meta, weights), or a clear error naming what is missing."""
    root = Path(p.path).expanduser()
    if not root.is_dir():
        raise ExpertError(f"monai_bundle: bundle folder {root} does not exist; put an "
                          f"unpacked bundle there (this expert never downloads)")
    files = root / p.config, root / p.meta, root / p.weights
    missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
    if missing:
        what = "weights" if str(Path(p.weights)) in missing else "files"
        raise ExpertError(f"monai_bundle: {what} missing in bundle folder {root}: "
                          f"{', '.join(missing)}. Copy them there (e.g. from a bundle you "
                          f"fetched with `python -m monai.bundle download` on a machine with "
                          f"network); this expert never downloads")
    return (root, *files)


def channel_names(meta: dict, output_key: str) -> dict[int, str]:
    fmt = meta.get("network_data_format", {}).get("outputs", {}).get(output_key, {})
    return {int(k): str(v) for k, v in fmt.get("channel_def", {}).items()}


def to_monai(x: ExpertInput, which: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """(array in MONAI axis order, 4x4 affine, channel dim) like LoadImage would give."""
    if isinstance(x, View2D):
        arr = np.asarray(x.raw if which == "raw" else x.image, np.float32)
        sy, sx = x.spacing or (1.0, 1.0)
        affine = np.diag([sx, sy, 1.0, 1.0])
        if arr.ndim == 3:  # (H, W, C) -> (W, H, C), channel last like PILReader
            return arr.transpose(1, 0, 2), affine, -1
        return arr.T, affine, float("nan")
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(x).astype(np.float32).transpose(2, 1, 0)  # (x, y, z)
    direction = np.array(x.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(x.GetSpacing())
    affine[:3, 3] = x.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, float("nan")  # LPS -> RAS


def from_monai(arr: np.ndarray) -> np.ndarray:
    """Spatial array in MONAI order back to numpy (row-major) order."""
    return arr.T if arr.ndim == 2 else arr.transpose(2, 1, 0)


def nearest_resize(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.ix_(*[np.minimum((np.arange(n) + 0.5) * m / n, m - 1).astype(int)
                   for n, m in zip(shape, mask.shape, strict=True)])
    return mask[idx]


class MonaiBundle(Expert):
    """Segmentation from a local MONAI bundle; labels from its metadata channel_def."""

    name = "monai_bundle"
    Params = BundleParams
    inputs = frozenset({"2d", "3d"})

    @property
    def resources(self) -> Resources:
        return Resources(num_cpus=self.params.num_cpus, num_gpus=self.params.num_gpus)

    def load(self) -> None:
        p = self.params
        root, config, meta, weights = bundle_files(p)
        import torch
        from monai.bundle import ConfigParser
        from monai.inferers import SimpleInferer

        parser = ConfigParser()
        parser.read_meta(str(meta))
        parser.read_config(str(config))
        parser["bundle_root"] = str(root)
        parser["device"] = f"$torch.device('{p.device}')"
        for key, value in p.overrides.items():
            parser[key] = value
        self.device = torch.device(p.device)
        self.channel_first = False
        net = parser.get_parsed_content(p.network_key)
        state = torch.load(weights, map_location=self.device, weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # checkpoints saved as {"model": state_dict, ...}
        net.load_state_dict(state)
        self.net = net.to(self.device).eval()
        self.pre = self._pruned(parser, p.preprocessing_key)
        self.post = self._pruned(parser, p.postprocessing_key)
        self.inferer = (parser.get_parsed_content(p.inferer_key) if p.inferer_key in parser
                        else SimpleInferer())
        self.labels = p.labels or channel_names(parser.get("_meta_", {}), p.output_key)
        self.root = root

    def _pruned(self, parser: Any, key: str) -> Any:
        """The parsed Compose with loaders/savers removed in place (Invertd keeps its ref)."""
        if key not in parser:
            return None
        comp = parser.get_parsed_content(key)
        if hasattr(comp, "transforms"):
            for t in comp.transforms:  # LoadImaged(ensure_channel_first=True) did that step too
                loader = getattr(t, "_loader", t)
                if type(t).__name__ in self.params.skip_transforms and getattr(
                        loader, "ensure_channel_first", False):
                    self.channel_first = True
            comp.transforms = tuple(t for t in comp.transforms
                                    if type(t).__name__ not in self.params.skip_transforms)
        return comp

    def run(self, x: ExpertInput, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        import torch
        from monai.data import MetaTensor
        from monai.transforms import AsDiscrete, AsDiscreted

        p = self.params
        arr, affine, channel_dim = to_monai(x, p.input)
        image = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)),
                           affine=torch.as_tensor(affine, dtype=torch.float64),
                           meta={"original_channel_dim": channel_dim,
                                 "spatial_shape": np.array(arr.shape[:3 if arr.ndim == 3 else 2]),
                                 "filename_or_obj": "curate-input"})
        if self.channel_first:
            from monai.transforms import EnsureChannelFirst

            image = EnsureChannelFirst()(image)
        data: dict[str, Any] = {p.input_key: image}
        if self.pre is not None:
            data = self.pre(data)
        with torch.no_grad():
            batch = data[p.input_key].unsqueeze(0).to(self.device)
            data[p.output_key] = self.inferer(batch, self.net)[0]
        probs = None
        for t in (self.post.transforms if self.post is not None else ()):
            if isinstance(t, AsDiscreted | AsDiscrete):
                probs = self._probabilities(data[p.output_key])
            data = t(data)
        pred = data[p.output_key]
        pred = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
        return self._rois(pred, probs, x)

    @staticmethod
    def _probabilities(t: Any) -> np.ndarray | None:
        arr = np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, np.float32)
        return arr if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else None

    def _rois(self, pred: np.ndarray, probs: np.ndarray | None, x: ExpertInput) -> list[ExpertROI]:
        from curate.unit.experts.base import input_grid

        p = self.params
        grid = input_grid(x)
        if pred.ndim == len(grid):  # no channel dim
            pred = pred[None]
        if pred.shape[0] == 1:  # a label map
            lab = pred[0].round().astype(np.int64)
            masks = {int(v): lab == v for v in np.unique(lab) if v != 0}
            chan = {v: v for v in masks}
        else:  # one binary channel per label (multi-label outputs)
            masks = {c: pred[c] > 0.5 for c in range(pred.shape[0])
                     if self.labels.get(c, "").lower() != "background"}
            chan = {c: c for c in masks}
        rois = []
        for value, m in masks.items():
            mask = from_monai(m)
            resampled = mask.shape != grid
            if resampled:
                mask = nearest_resize(mask, grid)
            if mask.sum() < p.min_pixels:
                continue
            label = self.labels.get(value, f"label {value}")
            score = 1.0
            if probs is not None and probs.shape[1:] == m.shape and chan[value] < probs.shape[0]:
                score = float(probs[chan[value]][m].mean())
            rois.append(ExpertROI(label, mask, float(np.clip(score, 0, 1)),
                                  p.kinds.get(label, p.default_kind),
                                  {"bundle": self.root.name, "resampled": resampled}))
        return rois
