"""Committed parts of a phantom skin-lesion source, made through the real unit pipeline:
what the describe stage reads, for its tests and for benchmarks/generate.py."""

from __future__ import annotations

from pathlib import Path


def committed_parts(root: Path, cases: int, part_size: int = 1, name: str = "skin"):
    """(spec, store, keys): `cases` phantom images, `part_size` work units to a part."""
    from curate.ingest import adapter
    from curate.model.recipe import Recipe, SourceSpec
    from curate.runner import merge_results
    from curate.sources.phantoms import ensure_phantoms, phantom_layout
    from curate.unit.pipeline import process_unit
    from curate.unit.store import UnitStore

    spec = SourceSpec(name=name, format="image_mask", modality="dermoscopy",
                      generate={"kind": "rgb_mask", "cases": cases, "seed": 0},
                      layout=phantom_layout("rgb_mask").model_dump())
    src = ensure_phantoms(spec.generate, Path(root) / "phantoms")
    store = UnitStore(Path(root) / "units")
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, src)
    recipe = Recipe(name="t", sources=[])
    keys = []
    for start in range(0, len(units), part_size):
        done = [process_unit(spec, src, unit.stamp(src, name), recipe)
                for unit in units[start:start + part_size]]
        part = merge_results(f"part{start // part_size:06d}", done)
        store.commit(spec.name, part)
        keys.append((spec.name, part.unit_id))
    return spec, store, keys


def dicom_dataset(sop_class, modality: str, patient: str, study: str | None = None,
                  series: str | None = None, pixels=None):
    """A minimal DICOM image dataset (file meta, SOP, patient, study and series UIDs), with
    `pixels` (a 2D uint8 or uint16 array) as MONOCHROME2 pixel data when given; the
    caller adds geometry and saves it (`ds.save_as(path, enforce_file_format=True)`)."""
    import numpy as np
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.Modality, ds.PatientID = modality, patient
    ds.StudyInstanceUID = study or uid.generate_uid()
    ds.SeriesInstanceUID = series or uid.generate_uid()
    if pixels is not None:
        bits = 16 if pixels.dtype == np.uint16 else 8
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
    return ds
