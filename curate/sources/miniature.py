"""A tiny synthetic copy of a declared source, to test its layout without the data.

make_miniature writes a few tiny files in the declared layout (images for every glob, masks
with every label_map value, DICOM SEG/RTSTRUCT objects on their series, box, class and QA
tables with the declared columns, junk the excludes must leave out), so that check_layout
and curate's own readers can run on every source. What cannot be synthesised is listed in
the copy's notes (miniature_notes) instead of being silently dropped.
"""

from __future__ import annotations

import csv
import fnmatch
import itertools
import json
import posixpath
import re
from pathlib import Path

import numpy as np

from curate.ingest.files import glob_match, patient_from_path, stem
from curate.model.recipe import FormatFamily, Layout, SourceSpec
from curate.sources.layout_check import (
    FILE_EXT,
    RASTER_EXT,
    SAFE_CHARS,
    VIDEO_EXT,
    VOLUME_EXT,
    LayoutError,
    fill_template,
    regex_example,
)

NOTES_FILE = ".miniature.json"
DICOM_FAMILIES = {FormatFamily.dicom, FormatFamily.dicom_seg, FormatFamily.rtstruct}
ANNOTATION_OBJECTS = {FormatFamily.dicom_seg: "SEG", FormatFamily.rtstruct: "RTSTRUCT"}
VOLUMETRIC = {"CT": "CT", "MR": "MR", "PET": "PT", "PT": "PT"}  # source modality -> DICOM
PROJECTION = {"XR": "DX", "DX": "DX", "CR": "DX", "MG": "MG"}
SHAPES = {"volume": (4, 8, 8), "dicom": (8, 8), "raster": (16, 16), "npy": (2, 16, 16, 3),
          "video": (4, 32, 32, 3)}
_TOKEN = re.compile(r"\*|\?|\[!?(?:\][^\]]*|[^\]]+)\]|.")


class SynthesisError(LayoutError):
    """A glob or template cannot be turned into a concrete file in the source root."""


def _parse(component: str) -> list[tuple[str, str]]:
    """One glob component as ('lit', c), ('*', ''), ('?', '') and ('[', class) pieces."""
    return [(t, "") if t in ("*", "?") else ("[", t) if len(t) > 1 else ("lit", t)
            for t in _TOKEN.findall(component)]


def synth_path(glob: str, i: int, score, hints: list[str] = ()) -> str:
    """A concrete relative path matching glob for case i, the best by score(path)."""
    parts = glob.split("/")
    if glob.startswith("/") or ".." in parts or not glob:
        raise SynthesisError(f"glob {glob!r} leaves the source root")
    parsed = [None if p == "**" else _parse(p) for p in parts]
    star = [f"case{i + 1:03d}"] + [f"{i + 1:0{k}d}" for k in (1, 2, 3, 4, 5, 6, 8)]
    for h in hints:  # pieces of a regex example, without a file extension first
        if h and "/" not in h:
            ext = next((e for e in FILE_EXT if h.lower().endswith(e)), "")
            star += [x for x in (h[: len(h) - len(ext)], h) if x]
    star.append("")
    choices: list[list[str]] = []
    for kind, text in (piece for seg in parsed for piece in seg or []):
        if kind == "*":
            choices.append(star)
        elif kind == "?":
            choices.append([str((i + 1) % 10), "x"])
        elif kind == "[":
            ok = [c for c in SAFE_CHARS if fnmatch.fnmatchcase(c, text)]
            if not ok:
                raise SynthesisError(f"glob {glob!r}: no safe character matches {text}")
            choices.append([ok[i % len(ok)]] + ok[:2])
    best, best_score = None, None
    for combo in itertools.islice(_by_rank([len(c) for c in choices]), 20000):
        it = iter(ch[k] for ch, k in zip(choices, combo, strict=True))
        out = ["sub" if seg is None else "".join(text if kind == "lit" else next(it)
                                                  for kind, text in seg) for seg in parsed]
        if any(c in ("", ".", "..") for c in out):
            continue
        s = score("/".join(out))
        if best_score is None or s > best_score:
            best, best_score = "/".join(out), s
            if all(s):
                break
    if best is None:
        raise SynthesisError(f"glob {glob!r}: no path could be synthesised")
    return best


def _by_rank(sizes: list[int]):
    """Index tuples in order of increasing sum, so the simplest tokens are tried first."""
    def with_sum(k: int, total: int):
        if k == len(sizes):
            yield from [()] if total == 0 else []
            return
        for v in range(min(total, sizes[k] - 1) + 1):
            yield from ((v, *rest) for rest in with_sum(k + 1, total - v))

    for total in range(sum(sizes) - len(sizes) + 1):
        yield from with_sum(0, total)


def _kind(name: str, family: FormatFamily) -> str | None:
    low = name.lower()
    if low.endswith(VOLUME_EXT):
        return "volume"
    if low.endswith((".dcm", ".dicom")) or ("." not in name and family in DICOM_FAMILIES):
        return "dicom"
    for kind, ext in (("raster", RASTER_EXT), ("video", VIDEO_EXT), ("npy", (".npy",))):
        if low.endswith(ext):
            return kind
    return None


def _put(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


def _write(path: Path, kind: str, arr: np.ndarray, spec: SourceSpec, patient: str):
    """Write one file; returns the dataset for DICOM (its series is what SEG refers to)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "volume":
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    elif kind == "raster":
        from PIL import Image

        if path.suffix.lower() in (".jpg", ".jpeg"):
            arr = arr.clip(0, 255).astype(np.uint8)
        tiff = path.suffix.lower() in (".tif", ".tiff") and arr.dtype == np.uint8
        Image.fromarray(arr).save(path, **({"compression": "tiff_deflate"} if tiff else {}))
    elif kind == "npy":
        np.save(path, arr)
    elif kind == "video":
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=4)
            stream.height, stream.width, stream.pix_fmt = arr.shape[1], arr.shape[2], "yuv420p"
            for frame in arr.astype(np.uint8):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    else:
        return _write_dicom(path, arr, spec, patient)
    return None


def _dataset(sop: str, modality: str, patient: str):
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, "MINIATURE^" + patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    return ds


def _write_dicom(path: Path, arr: np.ndarray, spec: SourceSpec, patient: str):
    """A minimal valid single-frame DICOM: a CT/MR/PET slice in patient space, a DX or MG
    projection, else a secondary capture with geometry."""
    from pydicom import uid

    mod = (spec.modality or "").upper()
    modality = VOLUMETRIC.get(mod) or PROJECTION.get(mod) or "OT"
    sop = {"CT": uid.CTImageStorage, "MR": uid.MRImageStorage,
           "PT": uid.PositronEmissionTomographyImageStorage,
           "DX": uid.DigitalXRayImageStorageForPresentation,
           "MG": uid.DigitalMammographyXRayImageStorageForPresentation,
           }.get(modality, uid.SecondaryCaptureImageStorage)
    ds = _dataset(sop, modality, patient)
    ds.InstanceNumber, ds.SliceThickness, ds.PixelSpacing = 1, 1.0, [1.0, 1.0]
    if modality not in PROJECTION.values():
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, 0.0]
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = arr.astype(np.uint16).tobytes()
    c = spec.layout.classes
    for tag in c.image_key_tags if c else []:  # header values a class table is keyed by
        if tag not in ds:
            setattr(ds, tag, "L")
    ds.save_as(path, enforce_file_format=True)
    return ds


def _write_annotation(path: Path, image, what: str, label: str) -> None:
    """A SEG (one 8-bit frame) or an RTSTRUCT (one square contour) on image's single slice."""
    from pydicom import uid
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def seq(**kw) -> Sequence:
        item = Dataset()
        for k, v in kw.items():
            setattr(item, k, v)
        return Sequence([item])

    ds = _dataset(uid.SegmentationStorage if what == "SEG" else uid.RTStructureSetStorage, what,
                  str(image.PatientID))
    if what == "SEG":
        ds.ReferencedSeriesSequence = seq(SeriesInstanceUID=image.SeriesInstanceUID)
        ds.SegmentSequence = seq(SegmentNumber=1, SegmentLabel=label)
        ds.PerFrameFunctionalGroupsSequence = seq(
            SegmentIdentificationSequence=seq(ReferencedSegmentNumber=1),
            PlanePositionSequence=seq(ImagePositionPatient=list(image.ImagePositionPatient)))
        frame = np.zeros((image.Rows, image.Columns), np.uint8)
        frame[2:5, 2:5] = 1
        ds.NumberOfFrames, ds.Rows, ds.Columns = 1, image.Rows, image.Columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.SegmentationType, ds.PixelData = "BINARY", frame.tobytes()
    else:
        ds.ReferencedFrameOfReferenceSequence = seq(RTReferencedStudySequence=seq(
            RTReferencedSeriesSequence=seq(SeriesInstanceUID=image.SeriesInstanceUID)))
        ds.StructureSetROISequence = seq(ROINumber=1, ROIName=label)
        z = float(image.ImagePositionPatient[2])
        square = [v for x, y in ((2, 2), (5, 2), (5, 5), (2, 5)) for v in (x, y, z)]
        ds.ROIContourSequence = seq(ReferencedROINumber=1, ContourSequence=seq(
            ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=4, ContourData=square))
    ds.save_as(path, enforce_file_format=True)


def _annotation_path(rel: str, lay: Layout, fam: FormatFamily) -> str | None:
    """A sibling of rel that the image globs match (SEG/RTSTRUCT are found among images)."""
    parent, name = posixpath.split(rel)
    ext = name[len(stem(name)):]
    for cand in (f"SEG_{name}", f"{stem(name)}_seg{ext}", f"seg{name}", f"{name}_seg"):
        path = posixpath.join(parent, cand)
        if any(glob_match(g, path) for g in lay.images) and _kind(path, fam) == "dicom" \
                and not any(glob_match(x, path) for x in lay.exclude):
            return path
    return None


def _target(template: str, rel: str, lay: Layout, what: str, skipped: list[str]) -> str | None:
    try:
        return fill_template(template, rel, lay.case_regex, what)
    except LayoutError as exc:
        skipped.append(str(exc))
        return None


def _write_mask_file(path: Path, shape: tuple[int, ...], lay: Layout) -> None:
    """A .mat array (an instance map: two instances) or an XML polygon file (Aperio
    Regions) covering part of an image of `shape`."""
    h, w = shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mat":
        from scipy.io import savemat

        inst = np.zeros((h, w), np.int32)
        inst[1:h // 2, 1:w // 2], inst[h // 2:h - 1, w // 2:w - 1] = 1, 2
        savemat(str(path), {lay.mask_key or "inst_map": inst})
        return
    verts = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in
                    ((1, 1), (w // 2, 1), (w // 2, h // 2), (1, h // 2)))
    _put(path, f"<Annotations><Annotation><Regions><Region><Vertices>{verts}</Vertices>"
               "</Region></Regions></Annotation></Annotations>")


def _write_readings(path: Path, ds, readers: int) -> None:
    """A LIDC-IDRI reading file: `readers` sessions outlining one square on ds's slice."""
    square = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                     for x, y in ((2, 2), (5, 2), (5, 5), (2, 5)))
    session = ("<readingSession><annotationVersion>3.12</annotationVersion>"
               "<unblindedReadNodule><noduleID>1</noduleID><roi><imageZposition>"
               f"{float(ds.ImagePositionPatient[2])}</imageZposition><imageSOP_UID>"
               f"{ds.SOPInstanceUID}</imageSOP_UID><inclusion>TRUE</inclusion>{square}</roi>"
               "</unblindedReadNodule></readingSession>")
    _put(path, '<?xml version="1.0" encoding="UTF-8"?><LidcReadMessage '
               'xmlns="http://www.nih.gov"><ResponseHeader><SeriesInstanceUid>'
               f"{ds.SeriesInstanceUID}</SeriesInstanceUid></ResponseHeader>"
               + session * readers + "</LidcReadMessage>")


def _write_pyramid(path: Path, arr: np.ndarray, tile: int) -> None:
    """A tiled pyramidal TIFF (full resolution and 1/2 as a reduced level), the way slide
    scanners' generic TIFFs are laid out; tiffslide reads its levels."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        tif.write(arr, tile=(tile, tile), subifds=1, photometric="rgb", compression="deflate")
        tif.write(arr[::2, ::2], tile=(tile, tile), subfiletype=1, photometric="rgb",
                  compression="deflate")


def _codes(pattern: re.Pattern, path: str, values: dict[str, str]) -> bool:
    m = pattern.search(Path(path).name)
    return bool(m and m.groups() and (not values or m.group(1) in values))


def make_miniature(spec: SourceSpec, dest: Path, n: int = 2) -> Path:
    """Write n tiny cases per image glob in the declared layout into dest; returns dest.

    Wildcards become tokens chosen so that the patient_id and case_regex regexes and the
    excludes behave as on real data; mask and VOC files are named through the templates
    with the case's {case} value.
    """
    dest, lay, fam = Path(dest), spec.layout, spec.format
    dest.mkdir(parents=True, exist_ok=True)
    skipped = []
    if fam is FormatFamily.vqa and not lay.qa:
        skipped.append("no question-answer file is declared (layout.qa), so none is written")
    pid_re = re.compile(lay.patient_id) if lay.patient_id else None
    name_re = lay.classes.from_name if lay.classes is not None else None
    code_re = re.compile(name_re) if name_re else None
    case_re = re.compile(lay.case_regex) if lay.case_regex else None
    images: list[str] = []

    def image_score(path: str) -> tuple[bool, ...]:
        return (not any(glob_match(x, path) for x in lay.exclude),
                _kind(path, fam) is not None, pid_re is None or bool(pid_re.search(path)),
                code_re is None or _codes(code_re, path, lay.classes.name_values),
                case_re is None or bool(case_re.search(stem(path))))

    for glob in lay.images:
        for i in range(n):
            hints = [h for r in (lay.patient_id, lay.case_regex, name_re) if r
                     for s in [regex_example(r, i)] if s for h in [s, *s.split("/")]]
            try:
                rel = synth_path(glob, i, image_score, hints)
            except SynthesisError as exc:
                skipped.append(str(exc))
                break
            if not image_score(rel)[0]:
                skipped.append(f"glob {glob!r}: every synthesised path is excluded ({rel})")
                break
            if rel not in images:
                images.append(rel)
    if not images:
        raise SynthesisError(f"{spec.name}: no image could be synthesised: {'; '.join(skipped)}")
    label = next(iter(spec.findings), "finding")
    masks: list[str] = []
    annotations: list[str] = []
    raw_suffixes = [x.lower() for x in lay.raw.suffixes] if lay.raw else []
    for i, rel in enumerate(images):
        kind = "raw" if Path(rel).suffix.lower() in raw_suffixes else _kind(rel, fam)
        if kind is None:
            skipped.append(f"{rel}: no writer for this extension; empty placeholder written")
            _put(dest / rel, b"")
            continue
        if fam is FormatFamily.wsi and kind == "raster":  # 2 x 2 tiles of pink "tissue"
            arr = np.empty((2 * lay.tile_size, 2 * lay.tile_size, 3), np.uint8)
            arr[...] = (200, 110 + 10 * i, 160)
        elif kind == "raw":  # the declared shape, values within the declared bits
            top = 2 ** (lay.raw.bits or 8) - 1
            arr = (np.arange(np.prod(lay.raw.shape)).reshape(lay.raw.shape) * (i + 3)) % top
        else:
            arr = (np.arange(np.prod(SHAPES[kind])).reshape(SHAPES[kind]) * (i + 3)) % 200
            arr = arr.astype(np.int16 if kind == "volume" else np.uint8)
        patient = patient_from_path(spec, rel) or f"MINI{i + 1:03d}"
        if kind == "raw":
            _put(dest / rel, arr.astype(np.dtype(lay.raw.dtype)).tobytes())
            ds = None
        elif fam is FormatFamily.wsi and rel.lower().endswith((".tif", ".tiff")):
            _write_pyramid(dest / rel, arr, tile=min(256, lay.tile_size))
            ds = None
        else:
            ds = _write(dest / rel, kind, arr, spec, patient)
        what = ANNOTATION_OBJECTS.get(fam)
        if what and ds is not None:
            target = _annotation_path(rel, lay, fam)
            if target is None or target in images or "ImagePositionPatient" not in ds:
                skipped.append(f"{what} for {rel}: no sibling path the image globs match")
            else:
                _write_annotation(dest / target, ds, what, label)
                annotations.append(target)
        if lay.readings and ds is not None and "ImagePositionPatient" in ds:
            xml = _target(lay.readings.file, rel, lay, "readings", skipped)
            if xml:  # a pattern names the series' one file: the image's stem fills it
                xml = xml.replace("*", stem(Path(rel).name)).replace("?", "x")
                _write_readings(dest / xml, ds, lay.readings.min_readers)
                masks.append(xml)
        voc = _target(lay.boxes.file, rel, lay, "VOC box", skipped) \
            if lay.boxes and lay.boxes.format == "voc" else None
        if voc:
            _put(dest / voc, f"<annotation><filename>{Path(rel).name}</filename><object><name>"
                 f"{label}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>6</xmax><ymax>6</ymax>"
                 "</bndbox></object></annotation>")
        mask = _target(lay.masks, rel, lay, "mask", skipped) if lay.masks else None
        if mask:  # a pattern for several masks per image: write one that it matches
            mask = mask.replace("*", "").replace("?", "x")
        if mask and mask.lower().endswith(".npy") and kind == "npy":  # a stack of masks
            chans = lay.mask_channels or [None]
            marr = np.zeros(arr.shape[:3] + (len(chans),), np.uint8)
            for j, name in enumerate(chans):
                if name is not None:
                    marr[:, j * 2:j * 2 + 2, 1:5, j] = j + 1  # an instance id per channel
            _write(dest / mask, "npy", marr, spec, patient)
            masks.append(mask)
        elif mask and mask.lower().endswith((".mat", ".xml")):
            _write_mask_file(dest / mask, arr.shape[:2], lay)
            masks.append(mask)
        elif mask and _kind(mask, fam) not in ("volume", "raster"):
            skipped.append(f"mask {mask!r}: no writer for its extension")
        elif mask:
            mkind, labels = _kind(mask, fam), sorted(v for v in lay.label_map if v) or [1]
            marr = np.zeros(arr.shape[:2] if mkind == "raster" else SHAPES[mkind],
                            np.uint16 if max(labels) > 255 else np.uint8)
            block = marr.size // (len(labels) + 1)
            for j, v in enumerate(labels):
                marr.flat[(j + 1) * block:(j + 2) * block] = v
            if mkind == "raster" and mask.lower().endswith((".jpg", ".jpeg")) \
                    and lay.mask_threshold is None:
                skipped.append(f"mask {mask}: JPEG is lossy, label values are not kept exactly")
            _write(dest / mask, mkind, marr, spec, patient)
            masks.append(mask)
    ext, excluded = [e for e in FILE_EXT if images[0].lower().endswith(e)], []
    for x in lay.exclude:  # the junk real data has (macOS ._ files) must stay out
        try:
            junk = synth_path(x, 0, lambda p: (any(glob_match(g, p) for g in lay.images),),
                              [f"case001{e}" for e in ext])
        except SynthesisError as exc:
            skipped.append(f"exclude {exc}")
            continue
        if junk not in images + masks + annotations and any(glob_match(g, junk)
                                                            for g in lay.images):
            _put(dest / junk, b"\x00\x05\x16\x07 resource fork, not an image")
            excluded.append(junk)
    _write_tables(spec, dest, images, label)
    if lay.slice_masks:  # a mask image per DICOM file, in each series' mask folder
        from curate.sources.slice_mask_miniature import write_slice_masks

        masks += write_slice_masks(spec, dest, images)
    if lay.segmentations:  # Slicer label files, and the role table naming their series
        from curate.sources.slicer_miniature import write_segmentations

        masks += write_segmentations(spec, dest, images)
    if lay.roi_folders:  # each image's abnormality folder (mask, crop) and a case table
        from curate.ingest.dicom_roi_files import write_roi_miniature

        annotations += write_roi_miniature(spec, dest, images)
    _put(dest / NOTES_FILE, json.dumps(
        {"source": spec.name, "images": images, "masks": masks, "annotations": annotations,
         "excluded": excluded, "skipped": skipped}, indent=1))
    return dest


def _write_tables(spec: SourceSpec, dest: Path, images: list[str], label: str) -> None:
    """Box (CSV, COCO), class-label and QA tables naming every image by its relative path."""
    t, c, q = spec.layout.boxes, spec.layout.classes, spec.layout.qa

    def table(rel: str, header: list[str], rows: list[list], fmt: str = "csv") -> None:
        if fmt == "csv":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel.lower().endswith(".xlsx"):
                import openpyxl

                book = openpyxl.Workbook()
                for r in [header, *rows]:
                    book.active.append(list(r))
                book.save(dest / rel)
                return
            if rel.lower().endswith(".gz"):
                import gzip

                with gzip.open(dest / rel, "wt", newline="") as f:
                    csv.writer(f).writerows([header, *rows])
                return
            with open(dest / rel, "w", newline="") as f:
                csv.writer(f).writerows([header, *rows])
            return
        records = [dict(zip(header, r, strict=True)) for r in rows]
        if fmt == "pickle":  # as PathVQA ships its QA: a pickled list of plain dicts
            import pickle

            _put(dest / rel, pickle.dumps(records, protocol=4))
            return
        _put(dest / rel, json.dumps(records) if fmt == "json"
             else "".join(json.dumps(r) + "\n" for r in records))

    def key(rel: str) -> str:  # how the table names the image
        if t.image_key_tag:  # a header value of the written DICOM file
            from curate.ingest.annotations import header_key

            return header_key(dest / rel, t.image_key_tag, rel)
        return fill_template(t.image_key, rel, spec.layout.case_regex, "image key") \
            if t.image_key else rel

    if t and t.format == "csv":  # 1, 1, 4, 4 is a valid box as corners and as x, y, w, h
        with_label = t.label_column is not None
        xy = [t.coords_column] if t.coords_column else \
            [t.x0_column, t.y0_column, t.x1_column, t.y1_column]
        box = ["1, 1, 4, 4"] if t.coords_column else [1, 1, 4, 4]
        spacing = [t.spacing_column] if t.spacing_column else []
        header = [t.image_column] + [t.label_column] * with_label + xy + spacing
        table(t.file, header, [[key(r)] + [label] * with_label + box + ["0.8, 0.8, 5"] *
                               bool(spacing) for r in images])
    elif t and t.format == "json":
        def record(rel: str) -> dict:
            b = [1, 1, 4, 4] if t.labels_key else {
                t.x0_column: 1, t.y0_column: 1, t.x1_column: 4, t.y1_column: 4,
                **({t.label_column: label} if t.label_column else {})}
            return {t.boxes_key: [b], **({t.labels_key: [label]} if t.labels_key else {})}
        data = {stem(key(r)): record(r) for r in images} if t.records == "keyed" else \
            [{t.image_column: key(r), **record(r)} for r in images]
        _put(dest / t.file, json.dumps(data))
    elif t and t.format == "coco":
        _put(dest / t.file, json.dumps({
            "images": [{"id": k, "file_name": r} for k, r in enumerate(images)],
            "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 4, 4]}
                            for k in range(len(images))],
            "categories": [{"id": 1, "name": label}]}))
    r = spec.layout.rle
    if r:  # one run of 8 pixels per image (relative or absolute starts alike: start 1)
        table(r.file, [r.image_column, r.rle_column], [[stem(x), "1 8"] for x in images])
    if c and c.file:  # the first class positive (by every reader), the others not
        from curate.ingest.annotations import class_columns

        header = class_columns(c)
        flags = [c.positive_values[0] if k < max(1, len(c.readers)) else "0"
                 for k in range(len(header) - 1 - bool(c.label_column))]
        cell = repr([label]) if c.list_in_cell else label
        keys = [fill_template(c.image_key, r, spec.layout.case_regex, "class key")
                if c.image_key else r for r in images]
        if c.image_key_tags:  # the rest of the key is in each file's header
            from curate.ingest.annotations import header_key

            parts = [(k, *[header_key(dest / r, t, r) for t in c.image_key_tags])
                     for k, r in zip(keys, images, strict=True)]
        else:
            parts = [(k,) for k in keys]
        rows = [[*k] + [cell] * bool(c.label_column) + flags for k in dict.fromkeys(parts)]
        table(c.file, header, rows)
    m = spec.layout.mdai
    if m:  # an MD.ai export: a square outline on each slice and a label on each exam
        import pydicom

        anns = []
        for r in images:
            ds = pydicom.dcmread(dest / r, stop_before_pixels=True)
            uids = {k: str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                      "SOPInstanceUID")}
            anns += [{**uids, "labelId": "L_outline", "data": {"vertices": [
                [2, 2], [5, 2], [5, 5], [2, 5]]}},
                {"StudyInstanceUID": uids["StudyInstanceUID"], "labelId": "L_exam",
                 "data": None}]
        _put(dest / m.file, json.dumps({
            "datasets": [{"name": "miniature", "studies": [], "annotations": anns}],
            "labelGroups": [{"id": "G_1", "name": "Default group", "labels": [
                {"id": "L_outline", "name": label, "annotationMode": "freeform",
                 "scope": "INSTANCE"},
                {"id": "L_exam", "name": "exam finding", "annotationMode": None,
                 "scope": "EXAM"}]}]}))
    g = spec.layout.regions
    if g:  # an ASAP polygon of the first labelled group on each slide's single tile
        group = next((k for k, v in g.groups.items() if v is not None), None)
        for r in images if group is not None else []:
            _put(dest / fill_template(g.file, r, spec.layout.case_regex, "regions"),
                 f'<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation '
                 f'Name="Annotation 0" Type="Polygon" PartOfGroup="{group}"><Coordinates>'
                 + "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>' for k, (x, y) in
                           enumerate(((10, 10), (120, 10), (120, 90), (10, 90))))
                 + "</Coordinates></Annotation></Annotations></ASAP_Annotations>")
    tr = spec.layout.tracings
    if tr:  # frames 1 and 2 of each video traced: a long axis, then chords across it
        rows = [[Path(r).name, *chord, k] for r in images for k in (1, 2) for chord in
                [[16, 4, 16, 28]] + [[10, y, 22, y] for y in range(8, 25, 4)]]
        table(tr.file, [tr.image_column, tr.x1_column, tr.y1_column, tr.x2_column,
                        tr.y2_column, tr.frame_column], rows)
    for fl in spec.layout.frame_labels:  # a row per frame of the miniature videos
        n_frames = SHAPES["video"][0]
        header = [fl.frame_column] + ([fl.label_column] if fl.label_column else []) + \
            fl.label_columns
        flags = [fl.positive_values[0]] + ["0"] * (len(fl.label_columns) - 1) \
            if fl.label_columns else []
        for r in images:
            path = dest / fill_template(fl.file, r, spec.layout.case_regex, "frame labels")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f, delimiter=fl.separator).writerows(
                    [header] + [[k] + [label] * bool(fl.label_column) + flags
                                for k in range(n_frames)])
    p = spec.layout.points
    if p:  # one sphere at the centre of each miniature volume (origin 0, spacing 1 mm)
        dicom = _kind(images[0], spec.format) == "dicom"  # one slice at z = 0
        z, y, x = (0.0, 3.5, 3.5) if dicom else (n / 2 - 0.5 for n in SHAPES["volume"])
        x, y = (-x, -y) if p.frame == "RAS" else (x, y)
        xyz = [p.coords_column] if p.coords_column else [p.x_column, p.y_column, p.z_column]
        header = [p.image_column, *xyz] + \
            [col for col in (p.diameter_column, p.volume_column, p.label_column,
                             p.zone_column) if col] + list(p.include)
        code = next((c for c, words in p.label_names.items() if words == label),
                    next(iter(p.label_names), label))  # the code the table holds
        extra = ([3.0] if p.diameter_column else []) + \
            ([round(np.pi / 6 * 27, 3)] if p.volume_column else []) + \
            ([code] if p.label_column else []) + \
            ([next(iter(p.zones), "")] if p.zone_column else []) + \
            [v[0] for v in p.include.values()]
        keys = [fill_template(p.image_key, r, spec.layout.case_regex, "point key")
                if p.image_key else stem(r) for r in images]
        coords = [f"{x} {y} {z}"] if p.coords_column else [x, y, z]
        table(p.file, header, [[k, *coords, *extra] for k in dict.fromkeys(keys)])
    if q:  # rows pass the include filters and miss the exclude values
        fixed = {col: vals[0] for col, vals in q.include.items()}
        fixed |= {col: "miniature" for col in q.exclude if col not in fixed}
        fixed |= {q.type_column: "CLOSED"} if q.type_column else {}
        fixed |= {q.modality_column: spec.modality or "CT"} if q.modality_column else {}
        table(q.file, [q.image_column, q.question_column, q.answer_column, *fixed],
              [[fill_template(q.image_key, r, spec.layout.case_regex, "QA image key")
                if q.image_key else r, f"Is there a {label}?", "yes", *fixed.values()]
               for r in images], q.format)


def miniature_notes(dest: Path) -> dict:
    """What make_miniature wrote (images, masks, SEG/RTSTRUCT annotations, excluded junk)
    and could not (skipped)."""
    return json.loads((Path(dest) / NOTES_FILE).read_text())
