"""Synthetic sources with known ground truth.

Each phantom writes files in the same layout a public source uses, plus a `truth/`
folder with the facts a correct pipeline must recover (lesion side, size, box). The demo
recipe uses them so that every stage has something real to find, offline.
Generation is deterministic for a given (kind, cases, seed); files are written only when
missing so that re-runs keep their cache.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from curate.model.recipe import BoxTable, Layout, PhantomSpec, View

DONE = ".phantom.json"


def phantom_layout(kind: str) -> Layout:
    """The layout a phantom kind is written in (used when a recipe gives none)."""
    if kind == "ct_lesion":
        return Layout(images=["images/*.nii.gz"], masks="labels/{name}", label_map={1: "lesion"})
    if kind == "xray_boxes":
        return Layout(images=["images/*.png"], boxes=BoxTable(file="boxes.csv"), view=View.frontal)
    if kind == "rgb_mask":
        return Layout(
            images=["images/*.png"], masks="masks/{stem}_mask.png", label_map={255: "lesion"},
            view=View.none,
        )
    raise ValueError(f"unknown phantom kind {kind!r}")


def ensure_phantoms(spec: PhantomSpec, dest: Path) -> Path:
    """Write the phantom source into dest unless the same spec is already there."""
    marker = dest / DONE
    want = spec.model_dump(mode="json")
    if marker.exists() and json.loads(marker.read_text()) == want:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    writer = {"ct_lesion": _ct_lesion, "xray_boxes": _xray_boxes, "rgb_mask": _rgb_mask}[spec.kind]
    for i in range(spec.cases):
        writer(dest, f"case{i:03d}", rng, i)
    marker.write_text(json.dumps(want))
    return dest


def _write_truth(dest: Path, stem: str, truth: dict) -> None:
    (dest / "truth").mkdir(exist_ok=True)
    (dest / "truth" / f"{stem}.json").write_text(json.dumps(truth, indent=1, sort_keys=True))


def _ct_lesion(dest: Path, stem: str, rng: np.random.Generator, i: int) -> None:
    """Axial CT-like volume in HU: air, an elliptic body, a spherical hyperdense lesion.

    Written in LPS physical space; the lesion alternates between the patient's left and
    right so that laterality is tested both ways.
    """
    nx, ny, nz = 96, 80, 24
    spacing = (0.8, 0.8, 2.5)
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx].astype(np.float32)
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    body = ((x - cx) / 42) ** 2 + ((y - cy) / 34) ** 2 <= 1
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    hu[body] = 40.0
    hu += rng.normal(0, 8, hu.shape).astype(np.float32)
    side = "left" if i % 2 == 0 else "right"
    # LPS: +x is the patient's left, so a left lesion sits at larger column index
    lx = cx + (22 if side == "left" else -22) + rng.integers(-3, 4)
    ly = cy + rng.integers(-6, 7)
    lz = nz / 2 + rng.integers(-3, 4)
    r_mm = float(rng.uniform(6.0, 9.0))
    d2 = ((x - lx) * spacing[0]) ** 2 + ((y - ly) * spacing[1]) ** 2 + ((z - lz) * spacing[2]) ** 2
    lesion = d2 <= r_mm**2
    hu[lesion] = 130.0 + rng.normal(0, 8, int(lesion.sum()))
    img = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin((-cx * spacing[0], -cy * spacing[1], 0.0))
    lab = sitk.GetImageFromArray(lesion.astype(np.uint8))
    lab.CopyInformation(img)
    for sub, im in (("images", img), ("labels", lab)):
        (dest / sub).mkdir(exist_ok=True)
        sitk.WriteImage(im, str(dest / sub / f"{stem}.nii.gz"))
    _write_truth(dest, stem, {
        "side": side, "radius_mm": r_mm, "voxels": int(lesion.sum()),
        "center_voxel_xyz": [float(lx), float(ly), float(lz)], "spacing": spacing,
    })


def _xray_boxes(dest: Path, stem: str, rng: np.random.Generator, i: int) -> None:
    """Frontal chest-X-ray-like image: two dark lung fields, one bright nodule, a box CSV."""
    h, w = 256, 240
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w), 170.0, np.float32)
    lungs = []
    for lcx in (w * 0.3, w * 0.7):
        field = ((xx - lcx) / (w * 0.16)) ** 2 + ((yy - h * 0.5) / (h * 0.32)) ** 2 <= 1
        img[field] = 60.0
        lungs.append(field)
    # radiological display: the patient's left lung is on the image right
    side = "left" if i % 2 == 0 else "right"
    ncx = w * (0.7 if side == "left" else 0.3) + rng.integers(-8, 9)
    ncy = h * 0.45 + rng.integers(-20, 21)
    r = float(rng.uniform(8, 13))
    nodule = (xx - ncx) ** 2 + (yy - ncy) ** 2 <= r**2
    img[nodule] = 200.0
    img += rng.normal(0, 5, img.shape)
    (dest / "images").mkdir(exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(dest / "images" / f"{stem}.png")
    ys, xs = np.nonzero(nodule)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    path = dest / "boxes.csv"
    new = not path.exists() or i == 0
    with open(path, "w" if new else "a", newline="") as f:
        wr = csv.writer(f)
        if new:
            wr.writerow(["image", "label", "x0", "y0", "x1", "y1"])
        wr.writerow([f"{stem}.png", "nodule", *box])
    _write_truth(dest, stem, {"side": side, "box": box, "radius_px": r})


def _rgb_mask(dest: Path, stem: str, rng: np.random.Generator, i: int) -> None:
    """Dermoscopy-like RGB image: skin background, a darker brown lesion, a mask PNG."""
    h, w = 200, 240
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (225, 180, 160)
    cx, cy = w / 2 + rng.integers(-40, 41), h / 2 + rng.integers(-30, 31)
    a, b = float(rng.uniform(25, 45)), float(rng.uniform(20, 35))
    lesion = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
    img[lesion] = (110, 70, 50)
    img += rng.normal(0, 6, img.shape)
    for sub in ("images", "masks"):
        (dest / sub).mkdir(exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(dest / "images" / f"{stem}.png")
    Image.fromarray((lesion * 255).astype(np.uint8)).save(dest / "masks" / f"{stem}_mask.png")
    _write_truth(dest, stem, {"pixels": int(lesion.sum()), "center_xy": [float(cx), float(cy)]})


def write_dicom_series(dest: Path, hu: np.ndarray, spacing: tuple[float, float, float],
                       patient_id: str = "PHANTOM^PATIENT", series_uid: str | None = None,
                       shuffle_seed: int | None = None) -> list[Path]:
    """Write an axial CT series (hu is (z, y, x), LPS) as one DICOM file per slice.

    InstanceNumber is shuffled against position when shuffle_seed is given, so that a
    reader that orders by InstanceNumber gets the volume wrong.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    dest.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    order = np.arange(hu.shape[0])
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber = "19700101", "O", "ACC0001"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "20000101", "120000", "1", 1
        ds.ReferringPhysicianName, ds.Manufacturer = "", "curate-phantom"
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[2])]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.clip(hu[k] + 1024, 0, 65535).astype(np.uint16).tobytes()
        path = dest / f"{series_uid.rsplit('.', 1)[-1]}_IM{ds.InstanceNumber:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
