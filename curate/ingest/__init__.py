"""Format-family adapters: an explicit registry from family to (plan, read).

A source is data, an adapter is code: a new source of a known family needs no code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from curate.ingest.base import Box, CaseMeta, ImageCase, Unit, VolumeCase
from curate.ingest.dicom import plan_dicom, read_dicom
from curate.ingest.files import Problem
from curate.ingest.image2d import plan_images, read_image
from curate.ingest.media import plan_files, read_slide, read_video
from curate.ingest.volume import plan_volumes, read_volume
from curate.model.errors import UnsupportedFormat
from curate.model.recipe import FormatFamily, SourceSpec

Planner = Callable[[SourceSpec, Path], tuple[list[Unit], list[Problem]]]
Reader = Callable[[SourceSpec, Path, Unit], list]

ADAPTERS: dict[FormatFamily, tuple[Planner, Reader]] = {
    FormatFamily.dicom: (plan_dicom, read_dicom),
    # SEG/RTSTRUCT objects sit beside their images and are attached to their series
    FormatFamily.dicom_seg: (plan_dicom, read_dicom),
    FormatFamily.rtstruct: (plan_dicom, read_dicom),
    FormatFamily.nifti: (plan_volumes, read_volume),
    FormatFamily.image_mask: (plan_images, read_image),
    FormatFamily.image_boxes: (plan_images, read_image),
    FormatFamily.image_labels: (plan_images, read_image),
    FormatFamily.video: (plan_files, read_video),
    FormatFamily.vqa: (plan_images, read_image),
    FormatFamily.image: (plan_images, read_image),
    FormatFamily.wsi: (plan_files, read_slide),
}


def adapter(family: FormatFamily) -> tuple[Planner, Reader]:
    if family not in ADAPTERS:
        raise UnsupportedFormat(
            f"format family {family.value!r} is declared but has no adapter yet; "
            f"supported: {', '.join(sorted(f.value for f in ADAPTERS))}"
        )
    return ADAPTERS[family]


__all__ = ["ADAPTERS", "Box", "CaseMeta", "ImageCase", "Problem", "Unit", "VolumeCase", "adapter"]
