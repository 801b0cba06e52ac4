"""The explicit expert registry and the recipe-side config that chooses experts.

Short names in YAML map to factories here and nowhere else: no entry points, no
import-by-string, so a recipe can only name code that is reviewed in this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curate.experts.base import Expert, ExpertInput, ExpertROI
from curate.experts.ct import CTLesionCandidates, CTLungs
from curate.experts.external import Cellpose, TotalSegmentator
from curate.experts.fundus import FundusOpticDisc
from curate.experts.monai_bundle import MonaiBundle
from curate.experts.pathology import HENuclei

EXPERTS: dict[str, Callable[..., Expert]] = {
    "ct_lungs": CTLungs,
    "ct_lesion_candidates": CTLesionCandidates,
    "he_nuclei": HENuclei,
    "fundus_optic_disc": FundusOpticDisc,
    "monai_bundle": MonaiBundle,
    "totalsegmentator": TotalSegmentator,
    "cellpose": Cellpose,
}


class ExpertConfig(BaseModel):
    """One recipe entry: which expert, its params, and where it applies.

    `modality` and `sources` filter which views the expert sees (None: all). Params are
    validated against the expert's own model when the recipe loads, so a typo fails
    before any work starts, not on a worker an hour in.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a key of curate.experts.EXPERTS")
    params: dict[str, Any] = Field(default_factory=dict)
    modality: list[str] | None = Field(None, description="run only on these modalities")
    sources: list[str] | None = Field(None, description="run only on these source names")

    @model_validator(mode="after")
    def _known_and_valid(self) -> ExpertConfig:
        if self.name not in EXPERTS:
            raise ValueError(f"unknown expert {self.name!r}; known: {sorted(EXPERTS)}")
        params_model = getattr(EXPERTS[self.name], "Params", None)
        if params_model is not None:
            try:
                params_model.model_validate(self.params)
            except ValidationError as err:
                lines = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in err.errors())
                raise ValueError(f"expert {self.name!r} params: {lines}") from None
        return self

    def applies_to(self, source: str, modality: str | None) -> bool:
        """Whether this expert should run on a view of this source and modality."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.modality is not None:
            wanted = {m.upper() for m in self.modality}
            return (modality or "").upper() in wanted
        return True

    def build(self) -> Expert:
        return EXPERTS[self.name](**self.params)


def select_experts(configs: Sequence[ExpertConfig], source: str,
                   modality: str | None) -> list[ExpertConfig]:
    """The configured experts that apply to one source/modality, in recipe order."""
    return [c for c in configs if c.applies_to(source, modality)]


def run_experts(x: ExpertInput, experts: Sequence[Expert]) -> list[tuple[str, list[ExpertROI]]]:
    """Run experts in order; each sees the ROIs of those before it as context.

    That is how organ masks become context: `ct_lungs` first, then
    `ct_lesion_candidates` with `within: organs` searches inside its lungs.
    """
    done: list[tuple[str, list[ExpertROI]]] = []
    context: list[ExpertROI] = []
    for expert in experts:
        rois = expert(x, context)
        done.append((expert.name, rois))
        context.extend(rois)
    return done
