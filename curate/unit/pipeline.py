"""Everything that happens to one work unit, as plain functions (no Ray here).

ingest -> normalize -> ground -> describe -> ask -> score. A failure anywhere becomes a
quarantine row naming the file and the stage; the unit's other rows are unaffected.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curate.dataset.decontam import phash_hex
from curate.ingest import ImageCase, Unit, VolumeCase, adapter
from curate.model.recipe import Recipe, SourceSpec
from curate.model.records import MAX_SOURCE_FILES
from curate.unit.deid import salted_hash
from curate.unit.ground import box_mask, encode_png, ground, relations
from curate.unit.normalize import View2D, image_view, volume_views
from curate.unit.quality import image_scores
from curate.unit.text.consistency import check_qa, check_text
from curate.unit.text.templates import describe
from curate.unit.text.vqa import ask


@dataclass
class UnitResult:
    unit_id: str
    samples: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)


def quarantine_row(source: str, unit_id: str, file: str, stage: str, exc: BaseException,
                   root: Path | None = None) -> dict:
    message = str(exc) or exc.__class__.__name__
    if root is not None:
        message = message.replace(str(root) + "/", "").replace(str(root), "")
    return {"source": source, "unit_id": unit_id, "file": file, "stage": stage,
            "error": exc.__class__.__name__, "message": message[:1000]}


def source_files(spec: SourceSpec, unit: Unit) -> list[str]:
    """The unit's input files relative to the source root, for tracing a sample back;
    a long series is named by its folders; none when the source sets record_paths off."""
    if not spec.record_paths:
        return []
    if len(unit.files) <= MAX_SOURCE_FILES:
        return list(unit.files)
    folders = sorted({str(Path(f).parent) for f in unit.files})
    return [f"{d}/ ({sum(1 for f in unit.files if str(Path(f).parent) == d)} files)"
            for d in folders][:MAX_SOURCE_FILES]


def is_annotated(spec: SourceSpec, unit: Unit) -> bool:
    if spec.layout.boxes is not None:
        return True  # a box table lists every finding; no row means none was found
    if unit.extra.get("annotations") or "classes" in unit.extra or "voc" in unit.extra:
        return True  # DICOM SEG / RTSTRUCT, class labels, or a VOC file for this image
    if "rle" in unit.extra:
        return True  # listed in the RLE table ("-1": looked at, nothing found)
    if spec.layout.points is not None and unit.extra.get("points"):
        return True  # the point table lists this case's findings
    return bool(spec.layout.masks) and any(k in unit.extra for k in ("label", "labels", "masks",
                                                                   "label_files"))


def vocabulary(spec: SourceSpec) -> list[str]:
    classes = spec.layout.classes.label_columns if spec.layout.classes else []
    return sorted(set(spec.layout.label_map.values()) | set(spec.findings) | set(classes))


def context(spec: SourceSpec, *, modality, anatomy, plane: str, window: dict, rois: list[dict],
            annotated: bool, image_labels: list[str], spacing,
            patient_labels: list[str] = ()) -> dict:
    """What text generators may know about a sample: facts and metadata, nothing else.
    Patient labels (a cohort's diagnosis) are context about the patient, kept out of the
    labels and findings: nothing places them in this image."""
    labels = sorted(set(vocabulary(spec)) | {r["label"] for r in rois} | set(image_labels))
    findings = sorted({r["finding"] for r in rois}
                      | {spec.normalised_label(x) for x in image_labels})
    return {"modality": modality, "anatomy": anatomy, "plane": plane, "window": window,
            "rois": rois, "annotated": annotated, "labels": labels,
            "image_labels": list(image_labels), "findings": findings, "spacing": spacing,
            "patient_labels": list(patient_labels), **point_context(spec)}


def point_context(spec: SourceSpec) -> dict:
    """Whether the source marks findings as points without extent, and its zone words."""
    points = spec.layout.points
    if points is None or points.extent != "point":
        return {"point_findings": False, "zones": []}
    return {"point_findings": True, "zones": sorted(set(points.zones.values()))}


def sample_context(spec: SourceSpec, view: View2D, rois: list[dict], annotated: bool) -> dict:
    return context(spec, modality=view.meta.modality, anatomy=view.meta.anatomy,
                   plane=view.plane.value, window=view.window, rois=rois, annotated=annotated,
                   image_labels=view.meta.image_labels, spacing=view.spacing,
                   patient_labels=view.meta.patient_labels)


def build_sample(spec: SourceSpec, recipe: Recipe, unit: Unit, view: View2D,
                 annotated: bool, result: UnitResult, models: WorkerModels | None = None,
                 ordinal: int = 0) -> dict:
    t = time.perf_counter()
    label_map = view.meta.label_map or spec.layout.label_map
    rois, masks = ground(view, label_map, spec.findings, recipe.ground.min_roi_pixels)
    if models is not None and recipe.experts:
        add_expert_rois(view, spec, rois, masks, annotated, models)
    result.seconds["ground"] += time.perf_counter() - t
    result.counts["rois"] += len(rois)
    image_png = encode_png(view.image)
    sample_id = hashlib.sha256(
        f"{spec.name}\0{unit.key}\0{view.plane.value}\0{view.index}\0{ordinal}\0".encode()
        + image_png
    ).hexdigest()[:32]
    ctx = sample_context(spec, view, rois, annotated)
    t = time.perf_counter()
    levels, caption, generation = describe(ctx)
    result.seconds["describe"] += time.perf_counter() - t
    t = time.perf_counter()
    vqa = [{"question": q["question"], "answer": q["answer"],
            "type": "closed" if q.get("type") in ("closed", "yes/no") else "open",
            "category": "source", "options": [], "origin": "source"}
           for q in view.meta.source_qa] + ask(ctx, recipe.ask.max_questions, seed=sample_id,
                                                  per_category=recipe.ask.per_category)
    result.seconds["ask"] += time.perf_counter() - t
    result.counts["vqa"] += len(vqa)
    t = time.perf_counter()
    # scores only: the keep decision is taken over the whole dataset (curate.dataset.finalize),
    # so changing a threshold re-decides without redoing any unit
    memo: dict = {}  # each ROI's facts read once for all of the sample's texts
    flags = check_text(caption, ctx, memo) + [  # the same reader over the computed VQA answers
        f for q in vqa if q["origin"] == "facts" for f in check_qa(q, ctx, memo)]
    quality = {**image_scores(view.image), "text_flags": flags,
               "scores": [], "keep": None, "reasons": []}
    result.seconds["score"] += time.perf_counter() - t
    patient = view.meta.patient_id or unit.key
    h, w = view.image.shape[:2]
    return {
        "sample_id": sample_id, "unit_id": unit.unit_id,
        "source_files": source_files(spec, unit), "source": spec.name,
        "image_sha256": hashlib.sha256(image_png).hexdigest(),
        "image_phash": phash_hex(view.image),
        "case_id": salted_hash(f"{spec.name}/{patient}", recipe.salt),
        "series": salted_hash(f"{spec.name}/{view.meta.series_id or unit.key}", recipe.salt),
        "license": (spec.license.spdx or spec.license.name) if spec.license else None,
        "modality": view.meta.modality, "anatomy": view.meta.anatomy,
        "findings": ctx["findings"],
        "annotated": annotated, "image_labels": list(view.meta.image_labels),
        "patient_labels": list(view.meta.patient_labels),
        "view": {"plane": view.plane.value, "index": view.index, "count": view.count},
        "width": w, "height": h, "channels": 1 if view.image.ndim == 2 else view.image.shape[2],
        "pixel_spacing_mm": list(view.spacing) if view.spacing else None,
        "window": view.window, "notes": list(view.meta.notes), "rois": rois, "levels": levels,
        "caption": caption,
        "knowledge_refs": [], "vqa": vqa, "generation": generation, "quality": quality,
        "split": None, "shard": None, "image": image_png,
        "roi_masks": [encode_png(m.astype(np.uint8) * 255) if m is not None else None
                      for m in masks],
    }


class WorkerModels:
    """Models a worker loads once and reuses for every unit (expert ROI models).

    Experts are built and set up on first use, so a worker that never sees a CT never
    loads a CT model.
    """

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self._built: dict[int, object] = {}

    @staticmethod
    def resources(recipe: Recipe, gpu: bool | None = None) -> dict[str, float]:
        """What one worker needs: the most any configured expert declares; gpu=False
        counts only CPU experts, gpu=True only the experts that need a GPU."""
        from curate.unit.experts import build_expert

        need = {"num_cpus": 1.0, "num_gpus": 0.0}
        for cfg in recipe.experts:
            res = build_expert(cfg).resources
            if gpu is not None and (res.num_gpus > 0) != gpu:
                continue
            need["num_cpus"] = max(need["num_cpus"], res.num_cpus)
            need["num_gpus"] = max(need["num_gpus"], res.num_gpus)
        return need

    @staticmethod
    def gpu_sources(recipe: Recipe, specs: list[SourceSpec]) -> set[str]:
        """Sources that an expert needing a GPU may see: their parts run in the GPU pool,
        so parts no GPU expert touches never wait for a GPU."""
        from curate.unit.experts import build_expert

        gpu = [cfg for cfg in recipe.experts if build_expert(cfg).resources.num_gpus > 0]
        return {s.name for s in specs
                if any(cfg.applies_to(s.name, s.modality) or (s.modality is None and (
                    cfg.sources is None or s.name in cfg.sources)) for cfg in gpu)}

    def configs_for(self, source: str, modality: str | None) -> list:
        """The recipe entries of experts_for's experts, in the same order."""
        return [cfg for cfg in self.recipe.experts if cfg.applies_to(source, modality)]

    def experts_for(self, source: str, modality: str | None) -> list:
        out = []
        for i, cfg in enumerate(self.recipe.experts):
            if not cfg.applies_to(source, modality):
                continue
            if i not in self._built:
                from curate.unit.experts import build_expert

                expert = build_expert(cfg)
                expert.setup()
                self._built[i] = expert
            out.append(self._built[i])
        return out


def add_expert_rois(view: View2D, spec: SourceSpec, rois: list[dict], masks: list,
                    annotated: bool, models: WorkerModels) -> None:
    """Run the view's experts; organs become context for every ROI, lesions fill gaps.

    Expert lesions are added only where the source annotates nothing, so they never
    contradict an annotation; annotated lesions get "in the <organ>" from expert organs.
    """
    from curate.unit.experts import ExpertROI, assign_organ, expert_rois_to_facts, run_experts

    experts = [e for e in models.experts_for(spec.name, view.meta.modality) if "2d" in e.inputs]
    ran = run_experts(view, experts) if experts else []
    by_name: dict[str, list] = {}
    for name, label, kind, score, mask in view.expert_slices:  # from volume experts
        if mask.any():
            by_name.setdefault(name, []).append(ExpertROI(label, mask, score, kind))
    ran = list(by_name.items()) + ran
    if not ran:
        return
    organs = [r for _, found in ran for r in found if r.kind == "organ"]
    for roi, mask in zip(rois, masks, strict=True):
        region = mask if mask is not None else box_mask(view.image.shape[:2], roi["bbox"])
        organ = assign_organ(region, organs) if organs else None
        if organ:
            roi["relations"].append(f"in the {organ}")
    for name, found in ran:
        keep = [r for r in found if r.kind != "lesion" or not annotated]
        rois += expert_rois_to_facts(view, keep, name, spec.findings, organs=organs)
        masks += [r.mask for r in keep]
    for roi in rois:  # recompute pairwise relations over all ROIs, keep organ membership
        roi["relations"] = [r for r in roi["relations"] if r.startswith("in the ")]
    relations(rois, view.plane, masks)


def scan_experts(spec: SourceSpec, case: VolumeCase, models: WorkerModels,
                 recipe: Recipe) -> dict | None:
    """On a volume nothing annotates: the 2D experts whose recipe entry sets `scan` run
    on every scan-th slice (in recipe order, each with the ones before as context), and
    the lesions they find steer which slices are kept."""
    from curate.unit.experts import run_experts
    from curate.unit.normalize import scan_slices

    chosen = [(cfg, e) for cfg, e in zip(models.configs_for(spec.name, case.meta.modality),
                                         models.experts_for(spec.name, case.meta.modality),
                                         strict=True) if "2d" in e.inputs]
    step = min((cfg.scan for cfg, _ in chosen if cfg.scan), default=0)
    if not step:
        return None
    experts = [e for cfg, e in chosen if cfg.scan]

    def run(view):
        return [r for _, rois in run_experts(view, experts) for r in rois]

    return scan_slices(case, recipe.normalize, spec.window, step, run)


def volume_experts(spec: SourceSpec, case: VolumeCase, models: WorkerModels) -> list[tuple]:
    """(expert, ROI) pairs from experts that read whole volumes (TotalSegmentator...)."""
    from curate.unit.experts import run_experts
    from curate.unit.normalize import to_lps

    experts = [e for e in models.experts_for(spec.name, case.meta.modality)
               if "2d" not in e.inputs and "3d" in e.inputs]
    if not experts:
        return []
    return [(name, roi) for name, rois in run_experts(to_lps(case.image), experts)
            for roi in rois]


def process_unit(spec: SourceSpec, root: Path, unit: Unit, recipe: Recipe,
                 models: WorkerModels | None = None) -> UnitResult:
    result = UnitResult(unit.unit_id)
    _, read = adapter(spec.format)
    stage = "ingest"
    try:
        t = time.perf_counter()
        cases = read(spec, root, unit)
        result.seconds["ingest"] += time.perf_counter() - t
        skipped = {rel: exc for case in cases for rel, exc in case.meta.skipped}
        for rel, exc in sorted(skipped.items()):  # files the unit's cases could not use
            result.quarantine.append(quarantine_row(spec.name, unit.unit_id, rel, "ingest",
                                                    exc, root))
        result.counts["cases"] += len(cases)
        stage = "normalize"
        t = time.perf_counter()
        rng = np.random.default_rng(int(unit.unit_id[:8], 16) ^ recipe.seed)
        views: list[View2D] = []
        for case in cases:
            if isinstance(case, VolumeCase):
                found = volume_experts(spec, case, models) if models and recipe.experts else []
                steer = scan_experts(spec, case, models, recipe) \
                    if models and recipe.experts and not is_annotated(spec, unit) else None
                views.extend(volume_views(case, recipe.normalize, rng, spec.window, found,
                                          steer))
            elif isinstance(case, ImageCase):
                views.append(image_view(case, recipe.normalize))
        result.seconds["normalize"] += time.perf_counter() - t
        result.counts["views"] += len(views)
        stage = "ground"
        annotated = is_annotated(spec, unit)
        for ordinal, view in enumerate(views):  # the ordinal keeps ids unique in a unit
            result.samples.append(build_sample(spec, recipe, unit, view, annotated, result,
                                               models, ordinal))
    except Exception as exc:  # noqa: BLE001 - errors are data: one bad file never stops a build
        result.samples = []
        culprit = getattr(exc, "file", None) or unit.files[0]
        result.quarantine.append(quarantine_row(spec.name, unit.unit_id, culprit, stage, exc,
                                                root))
    result.counts["quarantined"] = len(result.quarantine)
    return result
