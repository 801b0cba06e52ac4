"""2D images with masks or boxes (PNG, JPEG, TIFF, BMP ...)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from curate.ingest.annotations import (  # noqa: F401 - lookup is imported from here too
    add_classes,
    header_key,
    lookup,
    read_box_table,
    read_class_labels,
    read_qa_table,
    read_rle_table,
    read_voc,
)
from curate.ingest.base import Box, ImageCase, Unit
from curate.ingest.files import (
    EmptyInput,
    OutsideRoot,
    Problem,
    TooLarge,
    annotation_path,
    check_file,
    check_pixels,
    file_meta,
    list_images,
    nonfinite_fix,
    present_files,
    structure_label,
    unknown_labels_error,
    unknown_values,
)
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec, View

DEFAULT_MAX_PIXELS = 100_000_000


def _tiff_first_page(path: Path, why: Exception, max_pixels: int) -> np.ndarray:
    """TIFFs Pillow cannot open (multi-page, tiled, unusual compression) via tifffile."""
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            shape = tif.pages[0].shape
            spatial = [n for n in shape if n not in (3, 4)][:2] if len(shape) > 2 else shape
            check_pixels(int(np.prod(spatial)), max_pixels, "image", path.name)
            arr = tif.pages[0].asarray()
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - report both readers' reasons
        raise IngestError(f"{path.name}: not readable as an image: {why}; tifffile: {exc}") from exc
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr[:3], 0, -1)  # planar RGB
    if arr.ndim not in (2, 3):
        raise IngestError(f"{path.name}: first TIFF page has shape {arr.shape}, not an image")
    return arr


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pixels as (H, W) grey or (H, W, 3) RGB; palette and alpha are resolved.

    The size is read from the header first: an image with no pixels or over `max_pixels`
    is refused before anything is decoded."""
    try:
        with warnings.catch_warnings():  # the budget below decides, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            check_pixels(w * h, max_pixels, "image", path.name)
            im.load()
            if im.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:  # over Pillow's own limit: never decoded
        raise TooLarge(f"{path.name}: {exc}; over the budget of {max_pixels:,} pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise IngestError(f"{path.name}: not readable as an image: {exc}") from exc
        arr = _tiff_first_page(path, exc, max_pixels)
    if arr.ndim == 3 and arr.shape[2] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 1], arr[..., 2]):
        arr = arr[..., 0]  # grey stored as RGB
    return np.ascontiguousarray(arr)


def load_raw(path: Path, raw, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A headerless raw image of the declared shape and sample type (JSRT's .IMG)."""
    rows, cols = raw.shape
    check_pixels(rows * cols, max_pixels, "image", path.name)
    dtype = np.dtype(raw.dtype)
    size = path.stat().st_size
    if size != rows * cols * dtype.itemsize:
        raise IngestError(f"{path.name}: {size} bytes, but a {rows}x{cols} raw image of "
                          f"{raw.dtype} is {rows * cols * dtype.itemsize}")
    arr = np.fromfile(path, dtype=dtype).reshape(rows, cols)
    if raw.bits is not None and arr.max() > 2 ** raw.bits - 1:
        raise IngestError(f"{path.name}: a value over {raw.bits} bits; the declared "
                          "layout.raw does not fit this file")
    return arr.astype(dtype.newbyteorder("="))


def load_pixels(spec: SourceSpec, path: Path) -> np.ndarray:
    """An image file as pixels: raw where the layout declares it, else load_image."""
    raw = spec.layout.raw
    if raw is not None and path.suffix.lower() in [x.lower() for x in raw.suffixes]:
        return load_raw(path, raw, spec.layout.max_image_pixels)
    return load_image(path, spec.layout.max_image_pixels)


def plan_images(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    boxes = spec.layout.boxes
    table = read_box_table(spec, root) if boxes and boxes.format != "voc" else {}
    classes = read_class_labels(spec, root)
    units, problems = [], []
    qa_table = read_qa_table(spec, root, problems) if spec.layout.qa else {}
    rle_table = read_rle_table(spec, root) if spec.layout.rle else {}
    for rel in list_images(spec, root, problems):
        files, extra = [rel], {}
        if spec.layout.masks:
            try:
                masks = present_files(spec, root, spec.layout.masks, rel)
            except OutsideRoot as exc:
                problems.append(Problem(exc.file, "plan", exc))
                continue
            if masks:
                files.extend(masks)
                extra["masks"] = masks
        if spec.layout.rle:
            found = lookup(rle_table, rel)
            if found is not None:
                extra["rle"] = found
        if boxes and boxes.format == "voc":
            voc = annotation_path(boxes.file, rel, spec.layout.case_regex)
            if (root / voc).is_file():
                files.append(voc)
                extra["voc"] = voc
        elif boxes:
            key = annotation_path(boxes.image_key, rel, spec.layout.case_regex) \
                if boxes.image_key else rel
            if boxes.image_key_tag:  # keyed by a header value: the exact value only
                try:
                    key = header_key(root / rel, boxes.image_key_tag, rel)
                except IngestError as exc:
                    problems.append(Problem(rel, "plan", exc))
                    continue
            listed = table.get(key) if boxes.image_key_tag else lookup(table, key)
            if listed is None and boxes.listed_only:
                continue
            extra["boxes"] = listed or []
            spacing = next((b["spacing"] for b in extra["boxes"] if b.get("spacing")), None)
            if spacing:
                extra["spacing"] = spacing
        if not add_classes(spec, classes, rel, extra, problems, root):
            continue
        if spec.layout.qa:
            qkey = spec.layout.qa.image_key
            found = qa_table.get(annotation_path(qkey, rel, spec.layout.case_regex)) if qkey \
                else lookup(qa_table, rel)
            if found is None:
                continue  # an image without questions in the chosen split
            extra["qa"] = found
        if rel.lower().endswith(".npy"):  # a stack of images: one unit per index
            try:
                count = array_count(root / rel)
            except IngestError as exc:
                problems.append(Problem(rel, "plan", exc))
                continue
            units += [Unit(spec.name, key=f"{rel}#{i}", files=files, extra={**extra, "index": i})
                      for i in range(count)]
            continue
        units.append(Unit(spec.name, key=rel, files=files, extra=extra))
    return units, problems


def array_count(path: Path) -> int:
    """How many images a NumPy stack (N, H, W[, C]) holds, from its header alone."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a damaged or pickled file is a planning problem
        raise IngestError(f"{path.name}: not a NumPy array file: {exc}") from exc
    if arr.ndim not in (3, 4):
        raise IngestError(f"{path.name}: shape {arr.shape} is not a stack of images "
                          "(N, H, W[, C])")
    return int(arr.shape[0])


def array_image(path: Path, index: int, max_pixels: int) -> np.ndarray:
    """Image `index` of a NumPy stack, read through a memory map (never the whole file)."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    check_pixels(int(arr.shape[1] * arr.shape[2]), max_pixels, "image", path.name)
    img = np.asarray(arr[index])
    if img.dtype != np.uint8 and img.ndim == 3 and np.issubdtype(img.dtype, np.floating) \
            and img.max() <= 255 and img.min() >= 0:
        img = img.round().astype(np.uint8)  # PanNuke stores 0-255 RGB as float64
    return np.ascontiguousarray(img)


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def _dicom_pixels(spec: SourceSpec, root: Path, rel: str) -> ImageCase:
    """A DICOM file in a 2D family (RSNA, VinDr, SIIM): its first 2D image."""
    import SimpleITK as sitk

    from curate.ingest.dicom import read_dicom

    case = read_dicom(spec, root, Unit(spec.name, key=rel, files=[rel]))[0]
    if isinstance(case, ImageCase):
        return case
    sx, sy = case.image.GetSpacing()[:2]
    return ImageCase(pixels=sitk.GetArrayFromImage(case.image)[0], meta=case.meta,
                     spacing=(sy, sx))


def _read_mask(spec: SourceSpec, root: Path, mrel: str, shape: tuple[int, int],
               notes: list[str], index: int | None = None) -> np.ndarray:
    """One mask file as label values, by the layout's rules (array index, channels,
    threshold, outline fill, unknown values)."""
    lay = spec.layout
    try:
        if index is not None:  # the mask stack beside an image stack
            mask = np.asarray(np.load(root / mrel, mmap_mode="r", allow_pickle=False)[index])
        else:
            mask = load_mask_file(root / mrel, spec, shape)
    except IngestError as exc:
        exc.file = exc.file or mrel
        raise
    except Exception as exc:  # noqa: BLE001
        raise IngestError(f"{Path(mrel).name}: not readable as a mask: {exc}", file=mrel) from exc
    if lay.mask_channels:
        mask = channels_to_labels(mask, lay.mask_channels, mrel)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise IngestError(f"mask shape {mask.shape} differs from image {shape}", file=mrel)
    mask, note = nonfinite_fix(spec, mask, Path(mrel).name)
    notes += [note] if note else []
    if lay.mask_threshold is not None:  # lossy masks: grey edges are not labels
        value = next(v for v in lay.label_map if v)
        mask = np.where(mask >= lay.mask_threshold, value, 0).astype(
            np.uint16 if value > 255 else np.uint8)
    unknown = unknown_values(np.unique(mask), lay.label_map)
    if unknown and lay.unknown_labels == "quarantine":
        raise unknown_labels_error(spec, unknown, mrel)
    if unknown and lay.unknown_labels == "ignore":
        mask = np.where(np.isin(mask, unknown), 0, mask).astype(mask.dtype)
    if lay.mask_fill == "outline":
        mask = fill_outlines(mask)
    return mask


def load_mask_file(path: Path, spec: SourceSpec, shape: tuple[int, int]) -> np.ndarray:
    """A mask file as an integer array: an image, a MATLAB .mat or NumPy .npy/.npz array
    (layout.mask_key names the array), or XML polygons (Aperio/ImageScope Regions, ASAP
    Coordinates) rasterised onto the image's grid with value 1."""
    low = path.name.lower()
    key = spec.layout.mask_key
    try:
        if low.endswith(".mat"):
            from scipy.io import loadmat

            data = loadmat(str(path))
            arrays = {k: v for k, v in data.items() if not k.startswith("__")}
            return np.asarray(_pick(arrays, key, path))
        if low.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return np.asarray(_pick(dict(z), key, path))
        if low.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if low.endswith(".xml"):
            return polygons_mask(path, shape)
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged annotation file is a quarantine row
        raise IngestError(f"{path.name}: not readable as a mask: {exc}") from exc
    return load_pixels(spec, path)


def _pick(arrays: dict, key: str | None, path: Path):
    if key is None:
        if len(arrays) != 1:
            raise IngestError(f"{path.name} holds {sorted(arrays)}: set layout.mask_key")
        return next(iter(arrays.values()))
    if key not in arrays:
        raise IngestError(f"{path.name} has no array {key!r} (it has {sorted(arrays)})")
    return arrays[key]


def polygons_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Every polygon of an Aperio/ImageScope (Region/Vertices/Vertex) or ASAP
    (Annotation/Coordinates/Coordinate) XML file, filled with 1 on a grid of `shape`."""
    import xml.etree.ElementTree as ET

    from PIL import ImageDraw

    root = ET.parse(path).getroot()
    polys = [[(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
             for region in root.iter("Region")]
    polys += [[(float(c.get("X")), float(c.get("Y"))) for c in coords.iter("Coordinate")]
              for coords in root.iter("Coordinates")]
    canvas = Image.new("L", (shape[1], shape[0]))
    draw = ImageDraw.Draw(canvas)
    for poly in polys:
        if len(poly) >= 3:
            draw.polygon(poly, fill=1, outline=1)
    return np.asarray(canvas)


def rle_decode(text: str, shape: tuple[int, int], order: str, starts: str) -> np.ndarray:
    """One run-length encoded mask ("start length start length ...") on a (rows, cols)
    grid; "-1" or empty is an empty mask."""
    nums = [int(t) for t in str(text).split()] if str(text).strip() not in ("", "-1") else []
    if len(nums) % 2:
        raise IngestError(f"run-length code has an odd count of numbers ({len(nums)})")
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    pos = 0
    for start, length in zip(nums[0::2], nums[1::2], strict=True):
        begin = pos + start if starts == "relative" else start - 1
        if begin < 0 or length < 0 or begin + length > flat.size:
            raise IngestError(f"a run ({start}, {length}) leaves the {shape} image")
        flat[begin:begin + length] = 1
        pos = begin + length
    return flat.reshape(shape, order="F" if order == "column" else "C")


def _structure_masks(spec: SourceSpec, root: Path, files: list[str], shape: tuple[int, int]
                     ) -> tuple[np.ndarray, dict[int, str]]:
    """One file per structure: value i+1 for the i-th label (sorted), from each file's
    non-zero pixels; a later structure wins where two overlap."""
    names = sorted({structure_label(spec, f) for f in files})
    values = {n: i + 1 for i, n in enumerate(names)}
    mask = np.zeros(shape, np.uint8 if len(names) < 256 else np.uint16)
    for f in files:
        try:
            one = load_mask_file(root / f, spec, shape)
        except IngestError as exc:
            exc.file = exc.file or f
            raise
        one = one.max(axis=2) if one.ndim == 3 else one
        if one.shape != shape:
            raise IngestError(f"mask shape {one.shape} differs from image {shape}", file=f)
        mask[one > 0] = values[structure_label(spec, f)]
    return mask, {v: n for n, v in values.items()}


def channels_to_labels(mask: np.ndarray, channels: list[str | None], rel: str) -> np.ndarray:
    """(H, W, C) with one channel per class -> (H, W) label values i+1 for channel i (a
    named channel's non-zero pixels; a later channel wins where two overlap)."""
    if mask.ndim != 3 or mask.shape[2] != len(channels):
        raise IngestError(f"mask has shape {mask.shape}, but layout.mask_channels names "
                          f"{len(channels)} channels", file=rel)
    out = np.zeros(mask.shape[:2], np.uint8)
    for i, name in enumerate(channels):
        if name is not None:
            out[mask[..., i] > 0] = i + 1
    return out


def fill_outlines(mask: np.ndarray) -> np.ndarray:
    """Each label value's closed outlines filled (the ring and its inside get the value)."""
    from scipy import ndimage

    out = mask.copy()
    for value in np.unique(mask):
        if value == 0:
            continue
        inside = ndimage.binary_fill_holes(mask == value)
        out[inside & (out == 0)] = value
    return out


def read_image(spec: SourceSpec, root: Path, unit: Unit) -> list[ImageCase]:
    rel = unit.files[0]
    for f in unit.files:
        check_file(spec, root, f)
    dicom = _dicom_pixels(spec, root, rel) if is_dicom(root / rel) else None
    if "index" in unit.extra:
        pixels = array_image(root / rel, unit.extra["index"], spec.layout.max_image_pixels)
    else:
        pixels = dicom.pixels if dicom is not None else load_pixels(spec, root / rel)
    if pixels.size == 0:
        raise EmptyInput(f"{Path(rel).name}: the image has no pixels {pixels.shape}", file=rel)
    pixels, note = nonfinite_fix(spec, pixels, Path(rel).name)
    notes = [note] if note else []
    hu = False
    if spec.layout.intensity_offset is not None:  # stored values -> modality units
        pixels = pixels.astype(np.float32) + np.float32(spec.layout.intensity_offset)
        hu = (spec.modality or "").upper() == "CT"
    mask, structures = None, None
    if spec.layout.mask_label_from != "value" and unit.extra.get("masks"):
        mask, structures = _structure_masks(spec, root, unit.extra["masks"], pixels.shape[:2])
    for mrel in unit.extra.get("masks", []) if structures is None else []:
        one = _read_mask(spec, root, mrel, pixels.shape[:2], notes, unit.extra.get("index"))
        mask = one if mask is None else np.maximum(mask, one)  # one file per lesion
    if "rle" in unit.extra:
        rle, value = spec.layout.rle, next((v for v in spec.layout.label_map if v), 1)
        mask = np.zeros(pixels.shape[:2], np.uint8 if value <= 255 else np.uint16) \
            if mask is None else mask
        for code in unit.extra["rle"]:
            try:
                mask[rle_decode(code, pixels.shape[:2], rle.order, rle.starts) > 0] = value
            except IngestError as exc:
                exc.file = exc.file or rle.file
                raise
    boxes = []
    raw_boxes = read_voc(root / unit.extra["voc"]) if "voc" in unit.extra else \
        unit.extra.get("boxes", [])
    for b in raw_boxes:
        try:
            x0, y0, x1, y1 = (float(v) for v in b["xyxy"])
        except ValueError as exc:
            raise IngestError(f"box {b} has non-numeric coordinates") from exc
        if not (x1 > x0 and y1 > y0):
            raise IngestError(f"box {b['xyxy']} is empty or inverted")
        boxes.append(Box(b["label"], x0, y0, x1, y1))
    meta = file_meta(
        spec, unit.key, image_labels=list(unit.extra.get("classes", [])),
        source_qa=list(unit.extra.get("qa", [])), notes=notes,
    )
    if structures is not None:
        meta.label_map = structures
    modalities = {q["modality"] for q in meta.source_qa if q.get("modality")}
    if len(modalities) == 1:
        meta.modality = modalities.pop()
    spacing = tuple(unit.extra["spacing"]) if unit.extra.get("spacing") else \
        tuple(spec.layout.pixel_spacing_mm) if spec.layout.pixel_spacing_mm else None
    view = spec.layout.view or View.none
    window = None
    if dicom is not None:
        meta.modality = dicom.meta.modality or meta.modality
        meta.patient_id = meta.patient_id or dicom.meta.patient_id
        spacing = dicom.spacing or spacing
        window = dicom.window
        view = dicom.view if dicom.view != View.none else view
    return [ImageCase(pixels=pixels, meta=meta, view=view, spacing=spacing, mask=mask,
                      boxes=boxes, window=window, hu=hu)]
