"""Expert models that propose ROIs where a source gives none (see docs/experts.md).

Importing this package is cheap: torch, monai, TotalSegmentator and Cellpose are imported
only inside the `setup()` of the experts that need them.
"""

from curate.unit.experts.base import (
    KINDS,
    Expert,
    ExpertError,
    ExpertParams,
    ExpertROI,
    Kind,
    Resources,
    assign_organ,
    expert_rois_to_facts,
)
from curate.unit.experts.registry import (
    EXPERTS,
    ExpertConfig,
    build_expert,
    expert_errors,
    run_experts,
    select_experts,
)

__all__ = [
    "EXPERTS",
    "KINDS",
    "Expert",
    "ExpertConfig",
    "ExpertError",
    "ExpertParams",
    "ExpertROI",
    "Kind",
    "Resources",
    "assign_organ",
    "build_expert",
    "expert_errors",
    "expert_rois_to_facts",
    "run_experts",
    "select_experts",
]
