"""croissant.json: the build described in MLCommons Croissant 1.1 (JSON-LD), so dataset
catalogues and loaders (mlcroissant, the hub) read it; checked with mlcroissant before it
is written.

One record set, `samples`, one record per kept sample, read from the Parquet export
(data/*.parquet, one part per shard; manifest.parquet when the export is off, then
without the image): the identifying and descriptive columns, the `image` (an
sc:ImageObject from the PNG bytes in the `image` struct), the five text levels as
subfields of `levels`, and the ROIs (with their boxes) and VQA pairs as array fields
whose subfields are read from the nested Parquet columns. The shards are listed as a
second file set with their members described.

Only the build's files and record go in (no clock), and file sets carry no per-file
hashes (the shards' are in shards/SHA256SUMS), so two identical builds write the same
file.
"""

from __future__ import annotations

import json
from pathlib import Path

from curate.model.errors import CurateError, MissingDependency

SCALARS = {  # column -> (Croissant data type name, description)
    "sample_id": ("TEXT", "the sample's id (the shard member key)"),
    "source": ("TEXT", "the source dataset"),
    "case_id": ("TEXT", "salted hash of the patient id: samples of one patient share it"),
    "license": ("TEXT", "the source's licence"),
    "modality": ("TEXT", "imaging modality (CT, MR, XR, US, ...)"),
    "anatomy": ("TEXT", "body region"),
    "split": ("TEXT", "train, val or test; a patient's samples are in one split"),
    "width": ("INTEGER", "image width in pixels"),
    "height": ("INTEGER", "image height in pixels"),
    "caption": ("TEXT", "the caption, grounded in the ROIs' computed facts"),
    "image_sha256": ("TEXT", "sha256 of the PNG"),
}
LEVELS = {
    "modality": "level 1: the modality and view",
    "organ": "level 2: the organ and anatomy",
    "roi": "level 3: the regions of interest",
    "texture": "level 4: intensity and texture of the regions",
    "relations": "level 5: the regions' relations to anatomy and each other",
}
ROI = {  # subfield -> (data type, description)
    "label": ("TEXT", "the source's label"),
    "finding": ("TEXT", "normalised finding"),
    "bbox": ("INTEGER", "box [x0, y0, x1, y1] in pixels, x1/y1 exclusive"),
    "area_px": ("INTEGER", "area in pixels"),
    "area_kind": ("TEXT", "mask (area of the mask), box (area of the box) or point (a "
                  "finding given as a point: no area)"),
    "location": ("TEXT", "where the region lies"),
    "intensity": ("TEXT", "hyper, hypo or iso relative to a ring around the region"),
    "origin": ("TEXT", "annotation, or expert:<name> for a model's region"),
}
QA = {
    "question": ("TEXT", "the question"),
    "answer": ("TEXT", "the answer"),
    "type": ("TEXT", "closed, open or choice"),
    "category": ("TEXT", "what the question asks about"),
    "origin": ("TEXT", "facts (computed) or source (the dataset's authors)"),
}
SPDX_URL = "https://spdx.org/licenses/{}.html"
CR_11 = "http://mlcommons.org/croissant/1.1"


def _source(mlc, file_set: str, column: str, path: str | None = None):
    transforms = [mlc.Transform(json_path=path)] if path else []
    return mlc.Source(file_set=file_set, extract=mlc.Extract(column=column),
                      transforms=transforms)


def _fields(mlc, images: bool, file_set: str) -> list:
    dt = mlc.DataType
    fields = [mlc.Field(id=f"samples/{col}", name=col, description=desc,
                        data_types=[getattr(dt, kind)], source=_source(mlc, file_set, col))
              for col, (kind, desc) in SCALARS.items()]
    if images:
        fields.append(mlc.Field(id="samples/image", name="image", data_types=[dt.IMAGE_OBJECT],
                                description="the image (PNG), grey or RGB",
                                source=_source(mlc, file_set, "image", "bytes")))
    fields.append(mlc.Field(
        id="samples/levels", name="levels", description="the five-level description",
        data_types=[dt.TEXT],
        sub_fields=[mlc.Field(id=f"samples/levels/{k}", name=k, description=d,
                              data_types=[dt.TEXT], source=_source(mlc, file_set, "levels", k))
                    for k, d in LEVELS.items()]))
    for name, subs, desc in (("rois", ROI, "the regions of interest, aligned with the masks"),
                             ("vqa", QA, "question-answer pairs about the image")):
        fields.append(mlc.Field(
            id=f"samples/{name}", name=name, description=desc, data_types=[dt.TEXT],
            is_array=True,
            sub_fields=[mlc.Field(id=f"samples/{name}/{k}", name=k, description=d,
                                  data_types=[getattr(dt, kind)],
                                  is_array=k == "bbox" or None,
                                  source=_source(mlc, file_set, name, k))
                        for k, (kind, d) in subs.items()]))
    return fields


def write_croissant(out: Path, record: dict, licences: list[str]) -> Path:
    """Write out/croissant.json; `out` is the build folder or its staging folder, and
    holds data/ (the Parquet export) or manifest.parquet."""
    try:
        import mlcroissant as mlc
    except ImportError as exc:
        raise MissingDependency("mlcroissant") from exc
    images = any((out / "data").glob("*.parquet"))
    if images:
        table = mlc.FileSet(id="data", name="data", encoding_formats=["application/x-parquet"],
                            includes=["data/*.parquet"],
                            description="the Parquet export, one part per shard: the "
                            "manifest columns, the image and its masks")
    else:
        table = mlc.FileSet(id="data", name="manifest.parquet",
                            encoding_formats=["application/x-parquet"],
                            includes=["manifest.parquet/*.parquet"],
                            description="the manifest, one Parquet part per shard (this "
                            "build has no Parquet export, so no image column)")
    dist = [
        table,
        mlc.FileSet(id="shards", name="shards", encoding_formats=["application/x-tar"],
                    includes=["shards/*.tar"],
                    description="WebDataset shards; per sample <id>.png (the image), "
                    "<id>.json (the record) and <id>.masks.npz (shape [R, H, W] and "
                    "packed bits of the ROI masks; curate.model.masks.unpack reads it)"),
    ]
    recipe = record["recipe"]
    metadata = mlc.Metadata(
        name=recipe["name"],
        description=(recipe.get("description") or f"curate build of {recipe['name']}")
        + " Each sample: a 2D medical image, its regions of interest (boxes and masks), "
        "a five-level description, a caption and question-answer pairs.",
        conforms_to=CR_11,
        url="https://github.com/curate-medical/curate",
        license=[SPDX_URL.format(x) if " " not in x else x for x in licences],
        version=record["curate_version"],
        cite_as=f"curate {record['curate_version']} build of {recipe['name']}; cite each "
                "source as listed in the data card (README.md)",
        distribution=dist,
        record_sets=[mlc.RecordSet(id="samples", name="samples",
                                   key=["samples/sample_id"],
                                   fields=_fields(mlc, images, "data"),
                                   description="one record per kept 2D sample")],
    )
    if metadata.issues.errors:
        raise CurateError("croissant metadata invalid: " + metadata.issues.report())
    path = out / "croissant.json"
    path.write_text(json.dumps(metadata.to_json(), indent=1, default=str))
    return path
