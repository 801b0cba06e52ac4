"""The manifest's contract, checked with great-expectations before a build is reported done.

The suite runs per manifest part (`validate_part`, on the worker that wrote the part) and
the per-part results are summed (`combine_validation`). Two expectations cannot be decided
inside one part: unique sample ids and one split per case. The build counts those over the
whole manifest with distributed aggregates and hands them to `combine_validation` as
`global_checks`; `global_checks(table)` computes the same counts for a table in memory.

GX has no Arrow backend, so a part is flattened to a pandas frame of the scalar facts the
expectations need (one row per sample), computed with pyarrow.compute.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.model.errors import CurateError

SPLITS = ["train", "val", "test"]
FLAT_COLUMNS = ["sample_id", "source", "case_id", "split", "shard", "width", "height",
                "caption", "bbox_ok", "backend", "keep"]
# (expectation type, column) decided over the whole manifest, not per part
UNIQUE_IDS = ("expect_column_values_to_be_unique", "sample_id")
ONE_SPLIT_PER_CASE = ("expect_column_values_to_be_in_set", "case_splits")
GLOBAL = {UNIQUE_IDS, ONE_SPLIT_PER_CASE}


class ValidationFailed(CurateError):
    """The manifest broke an expectation: a bug to fix, not data to ship."""


def _bbox_ok(manifest: pa.Table) -> pa.Array:
    """Per row: every ROI box lies inside the image, x0 < x1 and y0 < y1 (a null box fails)."""
    n = manifest.num_rows
    rois = manifest.column("rois").combine_chunks() if n else pa.array([], manifest.schema.field(
        "rois").type)
    flat = pc.list_flatten(rois)
    parents = pc.list_parent_indices(rois)
    bbox = pc.struct_field(flat, "bbox")
    x0, y0, x1, y1 = (pc.list_element(bbox, i) for i in range(4))
    w = pc.take(manifest.column("width"), parents)
    h = pc.take(manifest.column("height"), parents)
    ok = pc.and_kleene(
        pc.and_kleene(pc.and_kleene(pc.greater_equal(x0, 0), pc.less(x0, x1)),
                      pc.less_equal(x1, w)),
        pc.and_kleene(pc.and_kleene(pc.greater_equal(y0, 0), pc.less(y0, y1)),
                      pc.less_equal(y1, h)))
    bad_rows = pc.filter(parents, pc.invert(pc.fill_null(ok, False)))
    return pc.invert(pc.is_in(pa.array(np.arange(n, dtype=np.int64)),
                              value_set=pc.cast(bad_rows, pa.int64())))


def flatten(manifest: pa.Table):
    """The pandas frame the per-part expectations run on."""
    gen, quality = manifest.column("generation"), manifest.column("quality")
    flat = pa.table({
        **{c: manifest.column(c) for c in ("sample_id", "source", "case_id", "split", "shard",
                                           "width", "height", "caption")},
        "bbox_ok": _bbox_ok(manifest),
        "backend": pc.struct_field(gen, "backend") if manifest.num_rows else pa.array(
            [], pa.string()),
        "keep": pc.struct_field(quality, "keep") if manifest.num_rows else pa.array(
            [], pa.bool_()),
    })
    return flat.select(FLAT_COLUMNS).to_pandas()


def expectations():
    """The whole suite, in the order validation.json lists it."""
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


def validate_part(table: pa.Table) -> dict:
    """Run the per-part expectations on one manifest part (MANIFEST schema, or at least its
    sample_id, source, case_id, split, shard, width, height, caption, rois, generation and
    quality columns). Never raises on a broken expectation: returns
    {"rows": n, "expectations": [{"type", "column", "success", "element_count",
    "unexpected_count"}, ...]} for `combine_validation`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    df = flatten(table)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    batch_def = context.data_sources.add_pandas("manifest").add_dataframe_asset(
        "samples").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="curate-manifest"))
    for exp in expectations():
        if (exp.expectation_type, exp.column) not in GLOBAL:
            suite.add_expectation(exp)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name="manifest", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    return {"rows": len(df), "expectations": [
        {"type": r.expectation_config.type, "column": r.expectation_config.kwargs.get("column"),
         "success": bool(r.success),
         "element_count": int((r.result or {}).get("element_count") or 0),
         "unexpected_count": int((r.result or {}).get("unexpected_count") or 0)}
        for r in result.results]}


def global_checks(table: pa.Table) -> dict:
    """The whole-manifest counts `combine_validation` needs, for a table held in memory.
    duplicate_sample_ids: rows whose sample_id another row shares (GX's unexpected count);
    cases_in_several_splits: case ids found in more than one split; rows: all rows."""
    ids = pc.value_counts(table.column("sample_id"))
    dup = pc.filter(ids.field("counts"), pc.greater(ids.field("counts"), 1))
    per_case = table.select(["case_id", "split"]).group_by("case_id").aggregate(
        [("split", "count_distinct")])
    several = pc.sum(pc.greater(per_case.column("split_count_distinct"), 1)).as_py()
    return {"duplicate_sample_ids": int(pc.sum(dup).as_py() or 0),
            "cases_in_several_splits": int(several or 0), "rows": table.num_rows}


def combine_validation(parts: list[dict], global_checks: dict) -> dict:
    """Sum `validate_part` results and add the global expectations; the validation.json
    summary {"success", "rows", "expectations": [{"type", "column", "success",
    "unexpected"}]}, in suite order. Raises ValidationFailed on any failure, including
    parts that do not add up to global_checks["rows"]."""
    totals: dict[tuple, dict] = {}
    for part in parts:
        for e in part["expectations"]:
            t = totals.setdefault((e["type"], e["column"]), {"success": True, "unexpected": 0})
            t["success"] = t["success"] and e["success"]
            t["unexpected"] += e["unexpected_count"]
    totals[UNIQUE_IDS] = {"success": global_checks["duplicate_sample_ids"] == 0,
                          "unexpected": int(global_checks["duplicate_sample_ids"])}
    totals[ONE_SPLIT_PER_CASE] = {"success": global_checks["cases_in_several_splits"] == 0,
                                  "unexpected": int(global_checks["cases_in_several_splits"])}
    rows = int(global_checks["rows"])
    summary = {"success": all(t["success"] for t in totals.values()), "rows": rows,
               "expectations": []}
    order = [(e.expectation_type, e.column) for e in expectations()]
    for key in order + sorted(set(totals) - set(order), key=str):
        t = totals.get(key, {"success": True, "unexpected": 0})
        summary["expectations"].append({"type": key[0], "column": key[1], **t})
    bad = [f"{e['type']}({e['column']}): {e['unexpected']} unexpected"
           for e in summary["expectations"] if not e["success"]]
    part_rows = sum(p["rows"] for p in parts)
    if part_rows != rows:
        summary["success"] = False
        bad.append(f"the parts validated hold {part_rows} rows, the manifest {rows}")
    if bad:
        raise ValidationFailed("manifest failed validation: " + "; ".join(bad))
    return summary


def validate_manifest(manifest: pa.Table) -> dict:
    """Run the suite on a table in memory; returns the JSON-able summary. Raises
    ValidationFailed on any failure."""
    return combine_validation([validate_part(manifest)], global_checks(manifest))
