"""Reports from mergeable per-part aggregates: validation, data card, figures, Croissant,
verify, on small synthetic manifests."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.model.masks import pack
from curate.model.records import MANIFEST, to_table


def roi(bbox, origin="annotation", kind="mask"):
    return {"label": "lesion", "finding": "lesion", "bbox": bbox, "bbox_norm": [0.1, 0.1, 0.5, 0.5],
            "area_px": 10, "area_frac": 0.01, "area_mm2": None, "area_kind": kind,
            "longest_diameter_mm": None, "volume_mm3": None, "centroid": [5.0, 5.0],
            "laterality": None, "location": "centre", "intensity": "hyper",
            "intensity_inside": 1.0, "intensity_around": 0.5, "relations": [], "origin": origin,
            "confidence": None}


def row(i, source="a", split="train", case=None, shard="train-000000.tar", rois=None,
        modality="CT", backend="grounded-template", refs=None, keep=True, reasons=()):
    return {
        "sample_id": hashlib.md5(f"{source}{i}".encode()).hexdigest(), "unit_id": f"u{i}",
        "source": source, "case_id": case or f"{source}-case{i // 2}", "series": "s",
        "image_sha256": "0" * 64, "image_phash": "0" * 16, "license": f"lic-{source}",
        "modality": modality, "anatomy": "chest", "findings": ["lesion"], "annotated": True,
        "image_labels": [], "view": {"plane": "axial", "index": i, "count": 9},
        "width": 32, "height": 24, "channels": 1, "pixel_spacing_mm": None,
        "window": {"method": "none", "name": None, "low": None, "high": None}, "notes": [],
        "rois": [roi([1, 2, 10, 12])] if rois is None else rois,
        "levels": {"modality": "m", "organ": "o", "roi": "r", "texture": "t", "relations": "x"},
        "caption": f"caption {i} " + "x" * (i * 7 % 90), "knowledge_refs": refs or [],
        "vqa": [{"question": "q", "answer": "a", "type": "closed", "category": "c",
                 "options": [], "origin": "facts"}] * (i % 3),
        "generation": {"backend": backend, "model": None if backend == "grounded-template"
                       else "m1", "prompt_version": "p1", "cache_key": "k", "note": "n"},
        "quality": {"std": 1.0, "contrast": 1.0, "text_flags": [], "scores": [], "keep": keep,
                    "reasons": list(reasons)},
        "split": split, "shard": shard}


def manifest(n=40):
    rows = []
    for i in range(n):
        src = "abc"[i % 3]
        rows.append(row(i, source=src, split=["train", "val", "test"][(i // 2) % 3],
                        modality=None if src == "c" else ("CT" if i % 4 else "MR"),
                        backend="openai" if i % 5 == 0 else "grounded-template",
                        refs=["kb1"] if i % 6 == 0 else None,
                        rois=[roi([1, 2, 10, 12]), roi([0, 0, 5, 5], origin="expert:x",
                                                       kind="box")] if i % 2 else None))
    return to_table(rows, MANIFEST)


def png(width, height, value=0):
    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, format="PNG")
    return buf.getvalue()


def write_build(out, table, parts=True):
    """A build folder from a manifest: one tar per shard (image, record, a mask per mask ROI),
    SHA256SUMS, and manifest.parquet as one part per shard or as one file."""
    from curate.dataset.ship import checksums

    shas = [hashlib.sha256(png(w, h)).hexdigest()  # what the shards hold, for verify
            for w, h in zip(table.column("width").to_pylist(), table.column("height").to_pylist(),
                            strict=True)]
    table = table.set_column(table.schema.get_field_index("image_sha256"), "image_sha256",
                             pa.array(shas, pa.string()))
    (out / "shards").mkdir(parents=True)
    for shard in sorted(set(table.column("shard").to_pylist())):
        rows = table.filter(pa.compute.equal(table.column("shard"), shard))
        with tarfile.open(out / "shards" / shard, "w") as tar:
            for r in rows.to_pylist():
                members = {"png": png(r["width"], r["height"]),
                           "json": json.dumps({k: r[k] for k in ("sample_id", "caption",
                                               "case_id", "split", "modality")}).encode()}
                members["masks.npz"] = pack(np.ones((len(r["rois"]), r["height"], r["width"]),
                                                    np.uint8))
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{r['sample_id']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        if parts:
            (out / "manifest.parquet").mkdir(exist_ok=True)
            pq.write_table(rows, out / "manifest.parquet" / shard.replace(".tar", ".parquet"))
    if not parts:
        pq.write_table(table, out / "manifest.parquet")
    sums = checksums(out / "shards")
    (out / "shards" / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in sums.items()))
    return out


def sharded(n=40, per_shard=15):
    t = manifest(n)
    return t.set_column(t.schema.get_field_index("shard"), "shard", pa.array(
        [f"{['train', 'val', 'test'][i // 2 % 3]}-{i // per_shard:06d}.tar" for i in range(n)]))


def halves(table, seed):
    """The rows of table split at random into two tables, each in shuffled order."""
    idx = list(range(table.num_rows))
    random.Random(seed).shuffle(idx)
    cut = len(idx) // 3
    return table.take(idx[:cut]), table.take(idx[cut:])


@pytest.mark.parametrize("seed", [0, 1])
def test_card_stats_of_two_parts_merge_to_the_stats_of_the_whole(seed):
    from curate.report.datacard import card_stats, merge_all, merge_stats

    whole = manifest()
    a, b = halves(whole, seed)
    expected = card_stats(whole)
    assert merge_stats(card_stats(a), card_stats(b)) == expected
    assert merge_stats(card_stats(b), card_stats(a)) == expected
    assert merge_all([card_stats(b), {}, card_stats(a.slice(0, 0)), card_stats(a)]) == expected
    assert json.loads(json.dumps(expected)) == expected  # a worker may send it as JSON
    assert expected["rows"] == 40 and expected["per_source"] == {"a": 14, "b": 13, "c": 13}
    assert expected["roi_origins"] == {"annotation": 40, "expert:x": 20}
    # examples: a bounded few per source, the smallest sample ids
    per_source = {}
    for r in expected["examples"]:
        per_source.setdefault(r["source"], []).append(r["sample_id"])
    for source, ids in per_source.items():
        all_ids = sorted(i for i, s in zip(whole.column("sample_id").to_pylist(),
                                           whole.column("source").to_pylist(), strict=True)
                         if s == source)
        assert ids == all_ids[:len(ids)] and 0 < len(ids) <= 4
    assert set(expected["examples"][0]) == {"sample_id", "source", "shard", "split", "modality",
                                            "anatomy", "width", "height", "rois", "levels",
                                            "caption", "vqa"}


def test_dropped_and_quarantine_stats_merge_by_reason_and_error():
    from curate.model.records import QUARANTINE
    from curate.report.datacard import dropped_stats, merge_stats, quarantine_stats

    dropped = to_table([row(1, keep=False, reasons=["duplicate: same image as x"]),
                        row(2, source="b", keep=False, reasons=["duplicate: y", "blank"])],
                       MANIFEST)
    merged = merge_stats(dropped_stats(dropped.slice(1)), dropped_stats(dropped.slice(0, 1)))
    assert merged == dropped_stats(dropped)
    assert merged["reasons"] == {"blank": 1, "duplicate": 2} and merged["rows"] == 2
    q = to_table([{"source": s, "unit_id": "u", "file": f, "stage": st, "error": e,
                   "message": "m"} for s, f, st, e in [("a", "f", "ingest", "IngestError"),
                                                      ("b", "g", "describe", "X"),
                                                      ("b", "h", "ingest", "IngestError")]],
                 QUARANTINE)
    assert merge_stats(quarantine_stats(q.slice(2)), quarantine_stats(q.slice(0, 2))) == \
        quarantine_stats(q)
    assert quarantine_stats(q)["errors"] == {"describe": {"X": 1}, "ingest": {"IngestError": 2}}


def test_validate_parts_and_global_counts_flag_a_bad_box_and_a_case_in_two_splits():
    from curate.report.validate import (
        ValidationFailed,
        combine_validation,
        global_checks,
        validate_manifest,
        validate_part,
    )

    whole = manifest()
    a, b = halves(whole, 0)
    parts = [validate_part(a), validate_part(b)]
    assert json.loads(json.dumps(parts)) == parts
    ok = combine_validation(parts, global_checks(whole))
    assert ok == validate_manifest(whole)
    assert ok["success"] and ok["rows"] == 40 and len(ok["expectations"]) == 14

    rows = whole.to_pylist()
    rows[3]["rois"][0]["bbox"] = [0, 0, 40, 5]  # wider than the 32-pixel image
    bad = to_table(rows, MANIFEST)
    a, b = bad.slice(0, 10), bad.slice(10)
    with pytest.raises(ValidationFailed, match=r"bbox_ok\): 1 unexpected"):
        combine_validation([validate_part(a), validate_part(b)], global_checks(bad))
    # a case in two splits is only visible across parts: the global count carries it
    checks = dict(global_checks(whole), cases_in_several_splits=1)
    with pytest.raises(ValidationFailed, match=r"case_splits\): 1 unexpected"):
        combine_validation([validate_part(whole)], checks)
    rows = whole.to_pylist()
    rows[1]["case_id"], rows[1]["split"] = rows[0]["case_id"], "test"
    rows[0]["split"] = "train"
    assert global_checks(to_table(rows, MANIFEST))["cases_in_several_splits"] == 1
    with pytest.raises(ValidationFailed, match="parts validated hold 10 rows"):
        combine_validation([validate_part(whole.slice(0, 10))], global_checks(whole))


def test_croissant_is_the_same_on_two_days_and_reads_a_manifest_folder(tmp_path, monkeypatch):
    import datetime
    import itertools

    import mlcroissant as mlc

    from curate.report.croissant import write_croissant

    out = write_build(tmp_path / "b", sharded())
    record = {"recipe": {"name": "t", "description": "d"}, "curate_version": "0.1"}
    texts = []
    for day in (datetime.date(2024, 1, 1), datetime.date(2031, 6, 30)):
        class Frozen(datetime.date):
            @classmethod
            def today(cls, _day=day):
                return _day
        monkeypatch.setattr(datetime, "date", Frozen)
        texts.append(write_croissant(out, record, ["CC-BY-4.0"]).read_text())
    monkeypatch.undo()
    assert texts[0] == texts[1]
    rows = list(itertools.islice(mlc.Dataset(jsonld=str(out / "croissant.json")).records(
        "samples"), 100))
    assert len(rows) == 40
    # without a Parquet export (data/) the records come from the manifest, without images
    want = {r["sample_id"]: r for r in sharded().to_pylist()}
    for r in rows:
        w = want[r["samples/sample_id"].decode()]
        assert "samples/image" not in r
        assert [list(x["samples/rois/bbox"]) for x in r["samples/rois"]] == \
            [x["bbox"] for x in w["rois"]]
        assert len(r["samples/vqa"]) == len(w["vqa"])
        assert r["samples/levels"]["samples/levels/texture"] == b"t"


def test_verify_reads_a_manifest_folder_or_file(tmp_path):
    from curate.report.verify import verify

    table = sharded()
    for parts in (True, False):
        out = write_build(tmp_path / f"b{parts}", table, parts=parts)
        assert verify(out) == [] and verify(out, deep=False) == []
    out = tmp_path / "bTrue"
    part = out / "manifest.parquet" / "train-000000.parquet"
    rows = pq.read_table(part).to_pylist()
    moved, gone = rows[0]["sample_id"], rows[1]["sample_id"]
    rows[0]["shard"] = "val-000001.tar"
    rows[1]["sample_id"] = "f" * 32
    pq.write_table(to_table(rows, MANIFEST), part)
    assert verify(out, deep=False) == [
        f"{moved}: manifest says val-000001.tar, found in train-000000.tar",
        f"train-000000.tar: {gone} is not in the manifest",
        f"{'f' * 32}: in the manifest but in no shard"]


def test_contact_sheet_reads_only_the_shards_of_its_examples(tmp_path, monkeypatch):
    from curate.report.datacard import card_stats
    from curate.report.figures import contact_sheet

    table = sharded()
    out = write_build(tmp_path / "b", table)
    examples = card_stats(table)["examples"]
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda p, *a, **k: opened.append(p.name) or real_open(
        p, *a, **k))
    sheet = contact_sheet(out / "shards", examples, tmp_path / "fig" / "s.png", per_source=2)
    with Image.open(sheet) as im:
        assert im.width == 4 * 256  # 6 tiles, four across
    picked = [r for r in examples if [e["source"] for e in examples
                                      if e["sample_id"] <= r["sample_id"]].count(r["source"]) <= 2]
    assert len(picked) == 6
    assert sorted(opened) == sorted({r["shard"] for r in picked})  # each once, no other
    assert contact_sheet(out / "shards", [], tmp_path / "none.png") is None
