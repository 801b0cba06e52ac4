"""The explicit expert registry and the recipe-side config that chooses experts.

Short names in YAML map to factories here and nowhere else: no entry points, no
import-by-string, so a recipe can only name code that is reviewed in this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from curate.config import ExpertConfig
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
