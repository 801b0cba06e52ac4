"""croissant.json: the build described in MLCommons Croissant (JSON-LD), so dataset
catalogues and loaders can read it; checked with mlcroissant before it is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from curate.model.errors import CurateError, MissingDependency

SCALARS = {  # manifest column -> Croissant data type name
    "sample_id": "TEXT", "source": "TEXT", "case_id": "TEXT", "license": "TEXT",
    "modality": "TEXT", "anatomy": "TEXT", "split": "TEXT", "shard": "TEXT",
    "width": "INTEGER", "height": "INTEGER", "caption": "TEXT", "image_sha256": "TEXT",
}
SPDX_URL = "https://spdx.org/licenses/{}.html"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_croissant(out: Path, record: dict, licences: list[str]) -> Path:
    """Write out/croissant.json. It depends only on the build's outputs and record (no
    clock), so two identical builds write the same file; manifest.parquet may be one file
    or a folder of parts."""
    try:
        import mlcroissant as mlc
    except ImportError as exc:
        raise MissingDependency("mlcroissant") from exc
    manifest = out / "manifest.parquet"
    if manifest.is_dir():  # one Parquet part per shard
        table = mlc.FileSet(id="manifest", name="manifest.parquet",
                            encoding_formats=["application/x-parquet"],
                            includes=["manifest.parquet/*.parquet"],
                            description="the manifest: one Parquet part per shard")
    else:
        table = mlc.FileObject(id="manifest", name="manifest.parquet",
                               content_url="manifest.parquet",
                               encoding_formats=["application/x-parquet"],
                               sha256=_sha256(manifest))
    source = ({"file_set": "manifest"} if manifest.is_dir() else {"file_object": "manifest"})
    dist = [
        table,
        mlc.FileSet(id="shards", name="shards", encoding_formats=["application/x-tar"],
                    includes=["shards/*.tar"],
                    description="WebDataset shards: <id>.png, <id>.json, <id>.masks.npz"),
    ]
    fields = [mlc.Field(id=f"samples/{col}", name=col, data_types=[getattr(mlc.DataType, dt)],
                        source=mlc.Source(**source, extract=mlc.Extract(column=col)))
              for col, dt in SCALARS.items()]
    recipe = record["recipe"]
    metadata = mlc.Metadata(
        name=recipe["name"],
        description=(recipe.get("description") or f"curate build of {recipe['name']}")
        + " ROIs, the five-level text and VQA are in each shard's JSON and in the manifest.",
        url="https://github.com/curate-medical/curate",
        license=[SPDX_URL.format(x) if " " not in x else x for x in licences],
        version=record["curate_version"],
        cite_as=f"curate {record['curate_version']} build of {recipe['name']}; cite each "
                "source as listed in DATACARD.md",
        distribution=dist,
        record_sets=[mlc.RecordSet(id="samples", name="samples", fields=fields,
                                   description="one row per kept 2D sample")],
    )
    if metadata.issues.errors:
        raise CurateError("croissant metadata invalid: " + metadata.issues.report())
    path = out / "croissant.json"
    path.write_text(json.dumps(metadata.to_json(), indent=1, default=str))
    return path
