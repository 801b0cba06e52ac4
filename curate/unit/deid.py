"""De-identification: identifiers leave a unit only as salted hashes.

DICOM datasets are scrubbed with the PS3.15 Annex E Basic Application Level
Confidentiality Profile (as implemented and kept current by the `dicom-anonymizer`
package) right after the few values curate needs were taken from them, so nothing
identifying can travel further by accident. curate itself only ever copies a short
whitelist of attributes (modality, body part, geometry) into its records.
"""

from __future__ import annotations

import hashlib
import logging

import pydicom

from curate.model.errors import MissingDependency


def salted_hash(value: str, salt: str, n: int = 16) -> str:
    return hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:n]


def profile_tags() -> set[int]:
    """Tags the Basic Application Level Confidentiality Profile acts on (D, Z, X, U, ...)."""
    try:
        from dicomanonymizer.simpledicomanonymizer import initialize_actions
    except ImportError as exc:
        raise MissingDependency("dicom-anonymizer") from exc
    # 4-tuples are repeating-group masks (50xx curves, 60xx overlays): binary data that
    # scrub() removes; they have no string values to look for
    return {pydicom.tag.Tag(t) for t in initialize_actions() if len(t) == 2}


def scrub(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Apply the basic profile in place (private tags removed too) and return ds."""
    try:
        from dicomanonymizer.simpledicomanonymizer import anonymize_dataset
    except ImportError as exc:
        raise MissingDependency("dicom-anonymizer") from exc
    # the package logs every replaced value at INFO; those values are what we hide
    logging.getLogger("dicomanonymizer").setLevel(logging.WARNING)
    anonymize_dataset(ds, delete_private_tags=True)
    return ds


def identifying_values(ds: pydicom.Dataset) -> set[str]:
    """String values of profile attributes in ds (for tests that search outputs for them)."""
    tags = profile_tags()
    found = set()
    for elem in ds.iterall():
        if elem.tag in tags and elem.VR not in ("SQ", "OB", "OW", "UN") and elem.value not in (None, ""):
            text = str(elem.value).strip()
            # short codes ("M", "CT") and zero fillers ("000000000") can't identify anyone
            if len(text) >= 4 and not set(text) <= set("0.-+: "):
                found.add(text)
    return found
