"""Exports of a build for VLM trainers: LLaVA, LLaMA-Factory (sharegpt), ms-swift, and
Hugging Face Parquet (see docs/export.md). `export_build` is the library call behind
`curate export`."""

from curate.export.run import FORMATS, export_build

__all__ = ["FORMATS", "export_build"]
