"""Videos read as frames (PyAV) and whole-slide images read as tissue tiles (tiffslide).

Neither is ever decoded whole: videos are sought to evenly spaced times, slides are read
as a low-resolution level for the tissue mask and then tile by tile. Both are bounded by
the source's pixel budget (layout.max_image_pixels) from their headers before anything is
decoded: a video's frame size, a slide's lowest level (the tissue mask reads it whole) and
its tiles; an input over it is a quarantine row naming the budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curate.ingest.base import ImageCase, Unit
from curate.ingest.files import Problem, check_file, check_pixels, file_meta, list_images
from curate.model.errors import IngestError, MissingDependency
from curate.model.recipe import SourceSpec, View


def plan_files(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    """One unit per file (a video or a slide), with its class labels when declared."""
    from curate.ingest.annotations import add_classes, read_class_labels

    problems: list[Problem] = []
    table, units = read_class_labels(spec, root), []
    traced = {}
    if spec.layout.tracings:
        from curate.ingest.tracings import read_tracing_table

        traced = read_tracing_table(spec, root)
    for rel in list_images(spec, root, problems):
        extra = {}
        if spec.layout.tracings:
            from curate.ingest.annotations import lookup

            found = lookup(traced, rel)
            if found:
                extra["tracings"] = found
        if not add_classes(spec, table, rel, extra, problems):
            continue
        files = [rel]
        if spec.layout.regions:  # a slide without its XML has no annotated region
            from curate.ingest.files import annotation_path

            xml = annotation_path(spec.layout.regions.file, rel, spec.layout.case_regex)
            if (root / xml).is_file():
                extra["regions"] = xml
                files.append(xml)
        if spec.layout.frame_labels:  # one table per video and declared table, when present
            from curate.ingest.files import annotation_path

            tables = [annotation_path(t.file, rel, spec.layout.case_regex)
                      for t in spec.layout.frame_labels]
            extra["frame_labels"] = [t if (root / t).is_file() else None for t in tables]
            files += [t for t in tables if (root / t).is_file()]
        units.append(Unit(spec.name, key=rel, files=files, extra=extra))
    return units, problems


def _frame_tables(spec: SourceSpec, root: Path, unit: Unit) -> list:
    from curate.ingest.frame_labels import read_frame_table

    return [read_frame_table(root / t, cfg, t)
            for cfg, t in zip(spec.layout.frame_labels, unit.extra.get("frame_labels", []),
                              strict=False) if t]


def _meta(spec: SourceSpec, unit: Unit):
    return file_meta(spec, unit.key, image_labels=list(unit.extra.get("classes", [])))


def read_video(spec: SourceSpec, root: Path, unit: Unit) -> list[ImageCase]:
    try:
        import av
    except ImportError as exc:
        raise MissingDependency("av") from exc
    n, rel = spec.layout.max_frames, unit.files[0]
    budget = spec.layout.max_image_pixels
    check_file(spec, root, rel)
    try:
        with av.open(str(root / rel)) as container:
            if not container.streams.video:
                raise IngestError("no video stream", file=rel)
            stream = container.streams.video[0]
            size = stream.codec_context.width * stream.codec_context.height
            if size:  # 0 when the header does not say; then each frame is checked
                check_pixels(size, budget, "image", f"{Path(rel).name} (frame)", rel)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            else:
                raise IngestError("video has no duration; cannot seek")
            times = [duration * (i + 0.5) / n for i in range(n)]
            rate = stream.average_rate or stream.guessed_rate
            tables = _frame_tables(spec, root, unit)
            traced = unit.extra.get("tracings", [])
            if (tables or traced) and not rate:
                raise IngestError("video has no frame rate; its frame annotations cannot "
                                  "be placed")
            if traced:  # the traced frames are the ones read
                times = [number / float(rate) for number, _ in traced]
            cases = []
            for i, t in enumerate(times):
                container.seek(int(t / stream.time_base), stream=stream, backward=True)
                frame = next((f for f in container.decode(stream)
                              if f.time is None or f.time >= t - 1e-3), None)
                if frame is None:
                    continue
                check_pixels(frame.width * frame.height, budget, "image",
                             f"{Path(rel).name} (frame)", rel)
                meta = _meta(spec, unit)
                if tables:
                    from curate.ingest.frame_labels import labels_at

                    number = round(float(frame.time if frame.time is not None else t) *
                                   float(rate))
                    for frames, labels in tables:
                        meta.image_labels += labels_at(frames, labels, number) or []
                pixels, mask = frame.to_ndarray(format="rgb24"), None
                if traced:
                    mask = _traced_mask(spec, traced[i], frame, float(rate), pixels.shape[:2])
                    meta.label_map = {1: spec.layout.tracings.label}
                cases.append(ImageCase(pixels=pixels, meta=meta, mask=mask,
                                       view=spec.layout.view or View.none, index=i))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise IngestError(f"video not readable: {exc}") from exc
    if not cases:
        raise IngestError("no frame could be decoded")
    return cases


def _traced_mask(spec: SourceSpec, traced: list, frame, rate: float, shape) -> np.ndarray:
    """The filled tracing of the decoded frame, which must be the traced one."""
    from curate.ingest.tracings import chords_mask

    number, chords = traced
    if frame.time is not None and round(frame.time * rate) != number:
        raise IngestError(f"traced frame {number} decoded as frame "
                          f"{round(frame.time * rate)}: the video's timing does not match "
                          "the tracing table", file=spec.layout.tracings.file)
    return chords_mask(chords, shape, spec.layout.tracings.first_is_axis)


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue on a bright background: saturated or dark pixels."""
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb[..., :3])
    return (hsv[..., 1] > 0.07) & (hsv[..., 2] > 0.1) | (hsv[..., 2] < 0.8) & (hsv[..., 2] > 0.1)


def read_slide(spec: SourceSpec, root: Path, unit: Unit) -> list[ImageCase]:
    try:
        import tiffslide
    except ImportError as exc:
        raise MissingDependency("tiffslide") from exc
    lay, rel = spec.layout, unit.files[0]
    check_file(spec, root, rel)
    try:
        slide = tiffslide.TiffSlide(str(root / rel))
    except Exception as exc:  # noqa: BLE001 - any unreadable slide is a quarantine row
        raise IngestError(f"not readable as a whole-slide image: {exc}") from exc
    with slide:
        if lay.tile_level >= slide.level_count:
            raise IngestError(f"tile_level {lay.tile_level} but the slide has "
                              f"{slide.level_count} levels")
        low = slide.level_count - 1
        name = Path(rel).name
        w, h = slide.level_dimensions[low]
        check_pixels(w * h, lay.max_image_pixels, "image",
                     f"{name} (lowest level, read whole for the tissue mask; a slide without "
                     "a pyramid)", rel)
        check_pixels(lay.tile_size ** 2, lay.max_image_pixels, "image",
                     f"{name} (one tile of layout.tile_size)", rel)
        thumb = np.asarray(slide.read_region((0, 0), low, slide.level_dimensions[low]))[..., :3]
        mask = tissue_mask(thumb)
        tile_down = slide.level_downsamples[lay.tile_level]
        low_down = slide.level_downsamples[low]
        width, height = slide.level_dimensions[lay.tile_level]
        ts = lay.tile_size
        candidates = []
        for ty in range(0, height - ts + 1, ts):
            for tx in range(0, width - ts + 1, ts):
                # the tile's footprint on the low-resolution mask
                f = tile_down / low_down
                y0, x0 = int(ty * f), int(tx * f)
                y1, x1 = max(y0 + 1, int((ty + ts) * f)), max(x0 + 1, int((tx + ts) * f))
                if mask[y0:y1, x0:x1].mean() >= 0.5:
                    candidates.append((tx, ty))
        if not candidates:
            raise IngestError("no tile with enough tissue at the requested level and size")
        picks = np.unique(np.linspace(0, len(candidates) - 1, min(lay.max_tiles, len(candidates)))
                          .round().astype(int))
        regions, names = [], []
        if "regions" in unit.extra:
            from curate.ingest.slide_regions import read_asap, tile_mask

            regions = read_asap(root / unit.extra["regions"], lay.regions.groups,
                                unit.extra["regions"])
            names = sorted({v for v in lay.regions.groups.values() if v is not None})
        mpp = slide.properties.get("tiffslide.mpp-x")
        spacing = None if mpp is None else (float(mpp) * tile_down / 1000,) * 2
        cases = []
        for i in picks:
            tx, ty = candidates[i]
            region = slide.read_region((int(tx * tile_down), int(ty * tile_down)), lay.tile_level,
                                       (ts, ts))
            meta, mask = _meta(spec, unit), None
            if regions:
                mask = tile_mask(regions, names, (tx * tile_down, ty * tile_down), tile_down, ts)
                meta.label_map = {k + 1: n for k, n in enumerate(names)}
            cases.append(ImageCase(pixels=np.ascontiguousarray(np.asarray(region)[..., :3]),
                                   meta=meta, view=View.none, mask=mask,
                                   spacing=spacing, index=int(i)))
    return cases
