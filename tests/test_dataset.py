"""Whole-dataset steps: plain functions, then the dataflow on local Ray and on a cluster.

The functions are tested on small tables; the builds check the promises of the scale-out:
patients linked across sources share a split, outputs are byte-identical whatever the
executor, worker or node count, and a killed build resumes to the same bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.build import build
from curate.dataset import decide as D
from curate.model.recipe import SplitConfig
from tests.conftest import tree_bytes

OUTPUTS = ["shards", "manifest.parquet", "filtered.parquet", "quarantine.parquet",
           "croissant.json", "validation.json", "DATACARD.md"]


def outputs(out) -> dict:
    return {name: tree_bytes(out / name) for name in OUTPUTS}


def _rows(rows):
    base = {"source": "s", "part": "p", "image_sha256": "x", "usable": True, "keep": True,
            "reasons": [], "bytes": 10}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=D.DECISION)


def test_exact_duplicates_keep_the_smallest_id():
    t = _rows([{"sample_id": i, "case_id": "c", "image_phash": "0"} for i in ("b", "a", "c")])
    out = D.exact_duplicates(t).to_pylist()
    assert sorted(r["sample_id"] for r in out) == ["b", "c"]
    assert all(r["reason"] == "duplicate: same image as a" for r in out)


def test_band_pairs_find_every_pair_within_the_distance_once_per_band():
    h = 0x0F0F_0F0F_0F0F_0F0F
    t = _rows([{"sample_id": "a", "case_id": "c1", "image_phash": f"{h:016x}"},
               {"sample_id": "b", "case_id": "c2", "image_phash": f"{h ^ 0b111:016x}"},
               {"sample_id": "c", "case_id": "c3", "image_phash": f"{~h & (2**64 - 1):016x}"},
               {"sample_id": "d", "case_id": "c1", "image_phash": f"{h:016x}"}])
    bands = D.bands(t, 4)
    assert bands.num_rows == 4 * 5  # every usable sample once per band
    pairs = []
    for key in set(bands.column("band").to_pylist()):
        group = bands.filter(pa.compute.equal(bands.column("band"), key))
        pairs += [(p["a"], p["b"], p["dist"]) for p in D.band_pairs(group, 4).to_pylist()]
    # a-b and d-b are 3 bits apart in other cases; a-d share a case; c is far from all
    assert set(pairs) == {("a", "b", 3), ("b", "d", 3)}


def test_linked_groups_and_owners():
    groups = D.link_groups([("c2", "c3"), ("c1", "c2"), ("c7", "c8")])
    assert groups == {"c1": "c1", "c2": "c1", "c3": "c1", "c7": "c7", "c8": "c7"}
    rows = [{"a_case": "c1", "b_case": "c2", "first": "s9", "first_case": "c2"},
            {"a_case": "c2", "b_case": "c3", "first": "s1", "first_case": "c3"}]
    assert D.owners(rows, groups) == {"c1": "c3"}


def test_split_follows_the_linked_group_and_shards_are_seeded():
    cfg = SplitConfig(train=0.5, val=0.5, test=0.0)
    t = _rows([{"sample_id": f"s{i}", "case_id": f"c{i}", "image_phash": "0"}
               for i in range(40)])
    groups = {f"c{i}": "c0" for i in range(40)}  # all linked: one split for everything
    counts = D.split_counts(t, groups, "salt", cfg)
    assert counts.column("samples").to_pylist() == [40] and counts.num_rows == 1
    assert D.shard_counts({"train": (40, 400)}, max_samples=15, max_bytes=10**9) == {"train": 3}
    assert D.shard_counts({"train": (40, 400)}, max_samples=100, max_bytes=150) == {"train": 3}
    assert D.shard_of("s1", 0, 3) == D.shard_of("s1", 0, 3) != D.shard_of("s1", 1, 3)


def _scan_folders(tmp_path, n=8):
    """Source a: n patients of 2 slices; source b republishes one slice of every patient."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    yy, xx = np.mgrid[:96, :96]
    for i in range(n):
        base = (127 + 100 * np.sin(xx / (5 + i)) * np.cos(yy / (3 + 2 * i))).astype(np.uint8)
        Image.fromarray(base).save(a / f"p{i}_s1.png")
        Image.fromarray(np.roll(base, 40, axis=1)).save(a / f"p{i}_s2.png")
        Image.fromarray(np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)).save(
            b / f"copy{i}.png")
    return [{"name": "a", "path": str(a), "format": "image_mask",
             "layout": {"images": ["*.png"], "patient_id": r"(p\d+)_"}},
            {"name": "b", "path": str(b), "format": "image_mask",
             "layout": {"images": ["*.png"]}}]


def _split_pairs(out) -> list[tuple[str, str]]:
    """(split of the copy in b, split of its nearest image in a) for every copy."""
    import polars as pl
    m = pl.read_parquet(out / "manifest.parquet")
    a = [(int(r["image_phash"], 16), r["split"]) for r in m.iter_rows(named=True)
         if r["source"] == "a"]
    return [(r["split"], min(a, key=lambda x: (x[0] ^ int(r["image_phash"], 16)).bit_count())[1])
            for r in m.iter_rows(named=True) if r["source"] == "b"]


def test_a_patient_republished_by_two_sources_lands_in_one_split(tmp_path, write_recipe):
    sources = _scan_folders(tmp_path)
    split = {"train": 0.5, "val": 0.5, "test": 0.0}
    off = build(write_recipe(sources, split=split), tmp_path / "off", executor="local",
                log=lambda m: None)
    assert off["counts"]["linked_cases"] == 0
    assert any(x != y for x, y in _split_pairs(tmp_path / "off")), "with this salt some republished scans fall in two splits when not linked"
    on = build(write_recipe(sources, split={**split, "link_near_duplicates_bits": 4}),
               tmp_path / "on", executor="local", log=lambda m: None)
    assert on["counts"]["linked_cases"] == 16  # 8 patients of a + their 8 copies in b
    pairs = _split_pairs(tmp_path / "on")
    assert len(pairs) == 8 and all(x == y for x, y in pairs)
    assert on["counts"]["filter"]["kept"] == off["counts"]["filter"]["kept"] == 24


@pytest.mark.slow
def test_same_bytes_locally_and_on_ray_with_one_or_two_workers(tmp_path, write_recipe):
    ray = pytest.importorskip("ray")
    sources = _scan_folders(tmp_path, n=5)
    recipe = write_recipe(sources, split={"train": 0.6, "val": 0.2, "test": 0.2,
                                          "link_near_duplicates_bits": 4},
                          filters={"cross_case_duplicate_bits": 2},
                          run={"units_per_part": 2})
    build(recipe, tmp_path / "local", executor="local", log=lambda m: None)
    expected = outputs(tmp_path / "local")
    assert expected["shards"] and expected["filtered.parquet"]
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
        try:
            build(recipe, tmp_path / f"ray{cpus}", executor="ray", log=lambda m: None)
        finally:
            ray.shutdown()
        assert outputs(tmp_path / f"ray{cpus}") == expected, f"{cpus} CPUs"


def _many_images(root, n):
    (root / "img").mkdir(parents=True)
    (root / "seg").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.normal(100, 30, (48, 48)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        mask[5 + i % 20:15 + i % 20, 10:20] = 1
        Image.fromarray(img).save(root / "img" / f"p{i:03d}.png")
        Image.fromarray(mask).save(root / "seg" / f"p{i:03d}.png")


@pytest.mark.slow
def test_a_killed_build_resumes_to_the_same_bytes_redoing_only_unfinished_parts(
        tmp_path, write_recipe):
    _many_images(tmp_path / "data", 60)
    recipe = write_recipe([{"name": "m", "path": str(tmp_path / "data"), "format": "image_mask",
                            "layout": {"images": ["img/*.png"], "masks": "seg/{stem}.png"}}],
                          run={"units_per_part": 1})
    clean = build(recipe, tmp_path / "clean", executor="local", log=lambda m: None)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "build", str(recipe), "--out",
                             str(out), "--executor", "local"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "units").glob("*/*.json"))) < 10:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "units").glob("*/*.json")))
    assert 10 <= done < 60, "the build was killed mid-run"
    resumed = build(recipe, out, executor="local", log=lambda m: None)
    assert resumed["counts"]["parts_run"] == 60 - done
    assert outputs(out) == outputs(tmp_path / "clean")
    assert resumed["counts"]["filter"] == clean["counts"]["filter"]
    assert json.loads((out / "run.json").read_text())["counts"]["units_planned"] == 60


def test_a_copy_of_the_data_without_times_gives_the_same_dataset(tmp_path, write_recipe):
    import shutil
    _many_images(tmp_path / "data", 6)
    recipe = write_recipe([{"name": "m", "path": str(tmp_path / "data"), "format": "image_mask",
                            "layout": {"images": ["img/*.png"], "masks": "seg/{stem}.png"}}],
                          run={"units_per_part": 2})
    build(recipe, tmp_path / "a", executor="local", log=lambda m: None)
    shutil.move(tmp_path / "data", tmp_path / "orig")
    shutil.copytree(tmp_path / "orig", tmp_path / "data", copy_function=shutil.copyfile)
    for p in (tmp_path / "data").rglob("*.png"):
        os.utime(p, (1, 1))  # times from the epoch: nothing depends on them
    again = build(recipe, tmp_path / "a", executor="local", log=lambda m: None)
    assert again["counts"]["parts_run"] == 0  # every committed part is reused
    build(recipe, tmp_path / "b", executor="local", log=lambda m: None)
    assert outputs(tmp_path / "b") == outputs(tmp_path / "a")
    # changed contents redo exactly their part
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(tmp_path / "data" / "img" / "p000.png")
    changed = build(recipe, tmp_path / "a", executor="local", log=lambda m: None)
    assert changed["counts"]["parts_run"] == 1


def test_the_build_folder_is_locked_marked_and_never_emptied_by_mistake(tmp_path, mask_folder,
                                                                         write_recipe):
    from curate.model.errors import CurateError
    from curate.workdir import LOCK, MARKER, FolderInUse

    recipe = write_recipe([{"name": "f", "path": str(mask_folder), "format": "image_mask",
                            "layout": {"images": ["img/p*.png"], "masks": "seg/{stem}_seg.png"}}])
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    for fresh in (True, False):
        with pytest.raises(CurateError, match="not a curate build"):
            build(recipe, precious, executor="local", fresh=fresh, log=lambda m: None)
    assert (precious / "chapter1.tex").read_text() == "years of work"
    out = tmp_path / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    assert (out / MARKER).is_file() and not (out / LOCK).exists()
    (out / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    with pytest.raises(FolderInUse, match="another build"):
        build(recipe, out, executor="local", log=lambda m: None)
    with pytest.raises(FolderInUse):
        build(recipe, out, executor="local", fresh=True, log=lambda m: None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (out / LOCK).write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    (out / ".staging").mkdir()
    (out / "units" / "f" / "x.parquet.tmp123").write_bytes(b"half")
    logs = []
    build(recipe, out, executor="local", log=logs.append)  # a stale lock is taken over
    assert any("interrupted build" in m for m in logs)
    assert not (out / "units" / "f" / "x.parquet.tmp123").exists()


def test_damaged_parts_are_redone_not_reused(tmp_path, write_recipe, capfd):
    _many_images(tmp_path / "data", 8)
    recipe = write_recipe([{"name": "m", "path": str(tmp_path / "data"), "format": "image_mask",
                            "layout": {"images": ["img/*.png"], "masks": "seg/{stem}.png"}}],
                          run={"units_per_part": 2})
    out = tmp_path / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    clean = outputs(out)
    parts = sorted((out / "units" / "m").glob("*.json"))
    assert len(parts) == 4
    data = bytearray(parts[0].with_suffix(".parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in a committed part's image column
    parts[0].with_suffix(".parquet").write_bytes(bytes(data))
    parts[1].write_text(parts[1].read_text()[:20])  # a truncated marker
    again = build(recipe, out, executor="local", log=lambda m: None)
    assert again["counts"]["parts_run"] == 2
    assert "redoing part m/" in capfd.readouterr().out
    assert outputs(out) == clean
