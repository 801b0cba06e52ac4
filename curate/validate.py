"""The manifest's contract, checked with great-expectations before a build is reported done.

GX has no Arrow/polars backend, so the manifest is flattened to a pandas frame of the
scalar facts the expectations need (one row per sample).
"""

from __future__ import annotations

import logging

import pyarrow as pa

from curate.errors import CurateError

SPLITS = ["train", "val", "test"]


class ValidationFailed(CurateError):
    """The manifest broke an expectation: a bug to fix, not data to ship."""


def flatten(manifest: pa.Table):
    import pandas as pd

    rows = []
    for r in manifest.select(["sample_id", "source", "case_id", "split", "shard", "width",
                              "height", "caption", "rois", "generation", "quality"]).to_pylist():
        w, h = r["width"], r["height"]
        bbox_ok = all(0 <= b["bbox"][0] < b["bbox"][2] <= w and 0 <= b["bbox"][1] < b["bbox"][3] <= h
                      for b in r["rois"])
        rows.append({"sample_id": r["sample_id"], "source": r["source"], "case_id": r["case_id"],
                     "split": r["split"], "shard": r["shard"], "width": w, "height": h,
                     "caption": r["caption"], "bbox_ok": bbox_ok,
                     "backend": r["generation"]["backend"], "keep": r["quality"]["keep"]})
    df = pd.DataFrame(rows, columns=["sample_id", "source", "case_id", "split", "shard", "width",
                                     "height", "caption", "bbox_ok", "backend", "keep"])
    df["case_splits"] = df.groupby("case_id")["split"].transform("nunique") if len(df) else []
    return df


def expectations():
    import great_expectations as gx

    E = gx.expectations
    out = [E.ExpectColumnValuesToBeUnique(column="sample_id"),
           E.ExpectColumnValuesToMatchRegex(column="sample_id", regex=r"^[0-9a-f]{32}$"),
           E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
           E.ExpectColumnValuesToBeBetween(column="width", min_value=1),
           E.ExpectColumnValuesToBeBetween(column="height", min_value=1),
           E.ExpectColumnValuesToBeInSet(column="bbox_ok", value_set=[True]),
           E.ExpectColumnValuesToBeInSet(column="keep", value_set=[True]),
           E.ExpectColumnValuesToBeInSet(column="case_splits", value_set=[1]),
           E.ExpectColumnValueLengthsToBeBetween(column="caption", min_value=1)]
    out += [E.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("source", "case_id", "shard", "caption", "backend")]
    return out


def validate_manifest(manifest: pa.Table) -> dict:
    """Run the suite; returns a JSON-able summary. Raises ValidationFailed on any failure."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    df = flatten(manifest)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    batch_def = context.data_sources.add_pandas("manifest").add_dataframe_asset(
        "samples").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="curate-manifest"))
    for exp in expectations():
        suite.add_expectation(exp)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name="manifest", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    summary = {"success": bool(result.success), "rows": len(df), "expectations": [
        {"type": r.expectation_config.type, "column": r.expectation_config.kwargs.get("column"),
         "success": bool(r.success),
         "unexpected": (r.result or {}).get("unexpected_count")} for r in result.results]}
    if not result.success:
        bad = [f"{e['type']}({e['column']}): {e['unexpected']} unexpected"
               for e in summary["expectations"] if not e["success"]]
        raise ValidationFailed("manifest failed validation: " + "; ".join(bad))
    return summary
