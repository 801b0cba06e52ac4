"""The expert interface: models that propose ROIs where a source annotates none.

An expert is built once from its YAML params, loads its model in `setup()` (once per
process, later once per Ray actor) and maps one input to a list of `ExpertROI`. Inputs
are either a normalised 2D view (`View2D`) or a volume (`SimpleITK.Image`); masks always
come back on the input's own grid, so grounding needs no resampling guesswork.

Expert ROIs become ordinary ROI facts through `expert_rois_to_facts`, with
`origin = "expert:<name>"` and `confidence = score`, so every downstream record says
which expert proposed a region and how sure it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from curate.model.errors import CurateError
from curate.unit.normalize import View2D

Kind = Literal["organ", "lesion", "structure"]
KINDS: tuple[str, ...] = ("organ", "lesion", "structure")


class ExpertError(CurateError):
    """An expert cannot run: bad input, missing weights, missing local files."""


@dataclass(frozen=True, eq=False)
class ExpertROI:
    """One region an expert proposes.

    `mask` is bool on the input's grid ((H, W) for a view, (z, y, x) for a volume);
    `score` in [0, 1] is the expert's own confidence (a heuristic for the classical
    experts, not a calibrated probability); `meta` carries extras such as a count.
    Unpacks as the 4-tuple (label, mask, score, kind).
    """

    label: str
    mask: np.ndarray
    score: float
    kind: Kind
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.dtype != bool:
            mask = mask.astype(bool)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "score", float(self.score))
        if not self.label:
            raise ExpertError("an expert ROI needs a label")
        if mask.ndim not in (2, 3) or not mask.any():
            raise ExpertError(f"ROI {self.label!r}: mask must be a non-empty 2D or 3D array")
        if not (0.0 <= self.score <= 1.0):
            raise ExpertError(f"ROI {self.label!r}: score {self.score} is outside [0, 1]")
        if self.kind not in KINDS:
            raise ExpertError(f"ROI {self.label!r}: kind {self.kind!r} is not one of {KINDS}")

    def __iter__(self) -> Iterator[Any]:
        return iter((self.label, self.mask, self.score, self.kind))


@dataclass(frozen=True)
class Resources:
    """What one instance needs; the runner turns this into Ray actor options."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def ray_options(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


class ExpertParams(BaseModel):
    """Base for each expert's params: unknown keys fail, so YAML typos are caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ExpertInput = Any  # View2D | SimpleITK.Image; SimpleITK is imported only where volumes are used


def input_grid(x: ExpertInput) -> tuple[int, ...]:
    """The array shape masks must have for this input."""
    if isinstance(x, View2D):
        return tuple(x.image.shape[:2])
    size = getattr(x, "GetSize", None)
    if size is None:
        raise ExpertError(f"expert input must be a View2D or a SimpleITK image, got {type(x)!r}")
    return tuple(reversed(size()))


class Expert(ABC):
    """Base class: subclasses set `name`, `Params`, `inputs`, and implement `run`.

    Construction only validates params (cheap, happens on the driver); `setup()` loads
    the model and is idempotent, so a Ray actor calls it once and reuses the instance.
    `__call__` runs `setup()` when nobody did, checks the input kind, and checks that
    every mask is on the input's grid: a wrong-grid mask would give wrong mm² facts.
    """

    name: ClassVar[str]
    Params: ClassVar[type[ExpertParams]] = ExpertParams
    inputs: ClassVar[frozenset[str]] = frozenset({"2d"})  # "2d" (View2D) and/or "3d"

    def __init__(self, **params: Any) -> None:
        self.params = self.Params.model_validate(params)
        self._ready = False

    @property
    def resources(self) -> Resources:
        return Resources()

    def setup(self) -> None:
        """Load the model once; safe to call again."""
        if not self._ready:
            self.load()
            self._ready = True

    def load(self) -> None:  # noqa: B027 - an optional hook, not an abstract step
        """Override to load weights or check dependencies; classical experts need nothing."""

    @abstractmethod
    def run(self, x: ExpertInput, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        """Propose ROIs for one input; `context` holds ROIs from experts that ran before."""

    def __call__(self, x: ExpertInput, context: Sequence[ExpertROI] = ()) -> list[ExpertROI]:
        kind = "2d" if isinstance(x, View2D) else "3d"
        if kind not in self.inputs:
            want = " or ".join("a View2D" if k == "2d" else "a volume" for k in sorted(self.inputs))
            raise ExpertError(f"expert {self.name!r} takes {want}, not {type(x).__name__}")
        grid = input_grid(x)
        self.setup()
        rois = self.run(x, context)
        for roi in rois:
            if roi.mask.shape != grid:
                raise ExpertError(f"expert {self.name!r} returned a {roi.mask.shape} mask for a "
                                  f"{grid} input")
        return rois

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def overlap_fraction(lesion: np.ndarray, organ: np.ndarray) -> float:
    """Share of the lesion's pixels that lie inside the organ."""
    n = int(lesion.sum())
    return float((lesion & organ).sum()) / n if n else 0.0


def assign_organ(lesion_roi: ExpertROI | np.ndarray,
                 organ_rois: Sequence[ExpertROI] | Mapping[str, np.ndarray],
                 min_fraction: float = 0.5) -> str | None:
    """The organ whose mask holds most of the lesion, or None when none holds `min_fraction`.

    Used so a location phrase can say "in the left lung". Ties go to the first organ given.
    """
    lesion = lesion_roi.mask if isinstance(lesion_roi, ExpertROI) else np.asarray(lesion_roi, bool)
    pairs = (list(organ_rois.items()) if isinstance(organ_rois, Mapping)
             else [(r.label, r.mask) for r in organ_rois])
    best, best_frac = None, 0.0
    for label, mask in pairs:
        if mask.shape != lesion.shape:
            continue
        frac = overlap_fraction(lesion, np.asarray(mask, bool))
        if frac > best_frac:
            best, best_frac = label, frac
    return best if best is not None and best_frac >= min_fraction else None


def expert_rois_to_facts(view: View2D, rois: Sequence[ExpertROI], name: str,
                         findings: Mapping[str, str] | None = None,
                         organs: Sequence[ExpertROI] = ()) -> list[dict]:
    """ROI fact dicts (curate.unit.ground.roi_facts) for expert ROIs on a 2D view, in order.

    Lesions get a relation "in the <organ>" when an organ ROI (from `rois` or `organs`)
    holds most of them; ground.relations adds the geometric relations afterwards.
    """
    from curate.unit.ground import roi_facts  # ground imports normalize; keep import order simple

    findings = findings or {}
    pool = [r for r in rois if r.kind == "organ"] + list(organs)
    facts = []
    for roi in rois:
        if roi.mask.shape != view.image.shape[:2]:
            raise ExpertError(f"ROI {roi.label!r} from expert {name!r} is not on the view's grid")
        fact = roi_facts(view, roi.mask, roi.label, findings.get(roi.label, roi.label), "mask",
                         origin=f"expert:{name}", confidence=roi.score)
        if roi.kind == "lesion":
            organ = assign_organ(roi, [o for o in pool if o is not roi])
            if organ:
                fact["relations"].append(f"in the {organ}")
        facts.append(fact)
    return facts


def components(mask: np.ndarray, connectivity: int = 2) -> tuple[np.ndarray, int]:
    """Connected components with 8-connectivity in 2D (the same rule as curate.unit.ground)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return ndimage.label(mask, structure=structure)
