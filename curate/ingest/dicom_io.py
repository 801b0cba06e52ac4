"""Reading DICOM files: headers (also without the preamble and file meta) and pixels (also
the 12-bit JPEG Extended syntax that only GDCM's own reader decodes). Used by every module
that opens a DICOM file, so that all read the same files the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from curate.model.errors import IngestError


def dcmread(path: Path, **kwargs) -> pydicom.Dataset:
    """Read a DICOM file, also when it lacks the preamble and file meta (older exports);
    a file that parses to neither an image nor a known object is not DICOM."""
    try:
        return pydicom.dcmread(path, **kwargs)
    except pydicom.errors.InvalidDicomError:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        if not any(k in ds for k in ("SOPClassUID", "Rows", "Modality")):
            raise IngestError("not a DICOM file") from None
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            ds.file_meta = getattr(ds, "file_meta", pydicom.dataset.FileMetaDataset())
            ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian
                                              if ds.is_implicit_VR else
                                              pydicom.uid.ExplicitVRLittleEndian
                                              if ds.is_little_endian else
                                              pydicom.uid.ExplicitVRBigEndian)
        return ds


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def gdcm_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """Pixels decoded by GDCM itself, for the JPEG Extended 12-bit syntax that pydicom's
    plugins (including its GDCM plugin) refuse; grey images only, as stored."""
    import gdcm

    path = getattr(ds, "filename", None)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not path or not reader.Read():
        raise IngestError("GDCM could not read the file")
    image = reader.GetImage()
    fmt = image.GetPixelFormat()
    if fmt.GetSamplesPerPixel() != 1 or fmt.GetBitsAllocated() not in (8, 16):
        raise IngestError("GDCM fallback reads grey 8- or 16-bit images only")
    dtype = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}[
        (fmt.GetBitsAllocated(), fmt.GetPixelRepresentation())]
    raw = image.GetBuffer().encode("utf-8", "surrogateescape")  # SWIG hands bytes as str
    dims = [image.GetDimension(i) for i in range(image.GetNumberOfDimensions())]
    frames = dims[2] if len(dims) > 2 else 1
    arr = np.frombuffer(raw, dtype=dtype)
    if arr.size != frames * dims[0] * dims[1]:
        raise IngestError(f"GDCM decoded {arr.size} pixels, expected "
                          f"{frames * dims[0] * dims[1]}")
    arr = arr.reshape(frames, dims[1], dims[0])
    return arr if frames > 1 else arr[0]


def pixel_array(ds: pydicom.Dataset) -> np.ndarray:
    """ds.pixel_array, with GDCM's own decoder for 12-bit JPEG Extended."""
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        error = exc
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax == JPEG_EXTENDED and int(ds.get("BitsStored", 8) or 8) > 8:
        try:
            return gdcm_pixels(ds)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001
            error = exc
    raise IngestError(f"pixel data not decodable: {str(error).strip()[:300]}",
                      file=getattr(ds, "curate_rel", None)) from error
