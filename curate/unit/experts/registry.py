"""The explicit expert registry, and the checks of recipe entries against it.

Short names in YAML map to factories here and nowhere else: no entry points, no
import-by-string, so a recipe can only name code that is reviewed in this package.
The recipe model (curate.model.recipe) does not know this registry; `expert_errors` is what
curate.load runs on a recipe's experts when it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import ValidationError, model_validator

from curate.model import recipe as config
from curate.model.errors import ConfigError
from curate.unit.experts.base import Expert, ExpertInput, ExpertROI
from curate.unit.experts.ct import CTLesionCandidates, CTLungs
from curate.unit.experts.external import Cellpose, TotalSegmentator
from curate.unit.experts.fundus import FundusOpticDisc
from curate.unit.experts.monai_bundle import MonaiBundle
from curate.unit.experts.pathology import HENuclei

EXPERTS: dict[str, Callable[..., Expert]] = {
    "ct_lungs": CTLungs,
    "ct_lesion_candidates": CTLesionCandidates,
    "he_nuclei": HENuclei,
    "fundus_optic_disc": FundusOpticDisc,
    "monai_bundle": MonaiBundle,
    "totalsegmentator": TotalSegmentator,
    "cellpose": Cellpose,
}


def expert_problem(cfg: config.ExpertConfig) -> str | None:
    """What is wrong with one recipe entry (an unknown name, bad params), or None."""
    if cfg.name not in EXPERTS:
        return f"unknown expert {cfg.name!r}; known: {sorted(EXPERTS)}"
    params_model = getattr(EXPERTS[cfg.name], "Params", None)
    if params_model is not None:
        try:
            params_model.model_validate(cfg.params)
        except ValidationError as err:
            lines = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in err.errors())
            return f"expert {cfg.name!r} params: {lines}"
    return None


def expert_errors(configs: Sequence[config.ExpertConfig]) -> list[str]:
    """One line per bad entry, located as in a recipe: 'experts.<i>: <problem>'."""
    return [f"experts.{i}: {p}" for i, c in enumerate(configs)
            if (p := expert_problem(c)) is not None]


def build_expert(cfg: config.ExpertConfig) -> Expert:
    """A new Expert instance for a recipe entry (params validated, nothing loaded yet)."""
    problem = expert_problem(cfg)
    if problem is not None:
        raise ConfigError(problem)
    return EXPERTS[cfg.name](**cfg.params)


class ExpertConfig(config.ExpertConfig):
    """A recipe's expert entry that is checked against EXPERTS as it is made.

    For code and tests that build one by hand; entries read from a recipe are checked
    all together by curate.load. Accepted wherever curate.model.recipe.ExpertConfig is.
    """

    @model_validator(mode="after")
    def _known_and_valid(self) -> ExpertConfig:
        problem = expert_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    def build(self) -> Expert:
        return build_expert(self)


def select_experts(configs: Sequence[config.ExpertConfig], source: str,
                   modality: str | None) -> list[config.ExpertConfig]:
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
