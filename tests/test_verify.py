"""`curate verify` on a real small build, undamaged and damaged in each way it can be:
every case exits 1 with a line naming the problem, never a traceback."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from curate.build import build
from curate.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small build (a few grey images with masks), made once for the module."""
    root = tmp_path_factory.mktemp("verify")
    src = root / "local"
    (src / "img").mkdir(parents=True)
    (src / "seg").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.normal(100, 20, (64, 80)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((64, 80), np.uint8)
        mask[10:20, 50:70] = 1
        img[mask == 1] = 220
        Image.fromarray(img).save(src / "img" / f"p{i}.png")
        Image.fromarray(mask).save(src / "seg" / f"p{i}_seg.png")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "t", "seed": 0, "salt": "test",
        "sources": [{"name": "f", "path": str(src), "format": "image_mask",
                     "layout": {"images": ["img/*.png"], "masks": "seg/{stem}_seg.png",
                                "label_map": {1: "opacity"}}}]}, sort_keys=False))
    out = root / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    return out


def copy(built, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns("units", "kb", "phantoms"))
    return dest


def run(folder, *args):
    result = CliRunner().invoke(main, ["verify", str(folder), *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def shards(folder):
    return sorted((folder / "shards").glob("*.tar"))


def first_member(shard, suffix):
    with tarfile.open(shard) as tar:
        return next(m for m in tar.getmembers() if m.name.endswith(suffix))


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def resum(folder):
    """Rewrite SHA256SUMS so that only the deep checks can see a damage."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in shards(folder)]
    (folder / "shards" / "SHA256SUMS").write_text("".join(lines))


def failed(result, *texts):
    assert result.exit_code == 1, result.output
    assert "problem(s) in" in result.output, result.output
    for text in texts:
        assert text in result.output, result.output


def test_an_undamaged_build_verifies(built, tmp_path):
    folder = copy(built, tmp_path)
    assert shards(folder) and all(
        {n.partition(".")[2] for n in tarfile.open(p).getnames()} == {"png", "json", "masks.npz"}
        for p in shards(folder))
    for args in ((), ("--shallow",)):
        ok = run(folder, *args)
        assert ok.exit_code == 0 and "verified" in ok.output, ok.output


@pytest.mark.parametrize("where", ["image", "mask"])
def test_a_flipped_byte_in_an_image_or_mask_is_caught_by_the_deep_checks(built, tmp_path,
                                                                         where):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    member = first_member(shard, ".png" if where == "image" else ".masks.npz")
    key = member.name.split(".")[0]
    flip(shard, member.offset_data + member.size // 2)
    failed(run(folder, "--shallow"), f"{shard.name}: checksum differs")
    resum(folder)
    assert run(folder, "--shallow").exit_code == 0  # checksums alone no longer see it
    bad = run(folder)
    if where == "image":
        failed(bad, f"{shard.name}: {key}: image_sha256 differs from the manifest")
    failed(bad, f"{shard.name}: {key}:", "does not decode")


def test_an_unreadable_record_is_a_line(built, tmp_path):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    member = first_member(shard, ".json")
    data = bytearray(shard.read_bytes())
    data[member.offset_data] = ord("\x00")  # a JSON object no more
    shard.write_bytes(bytes(data))
    resum(folder)
    failed(run(folder), f"{shard.name}: {member.name.split('.')[0]}: record is not readable "
           "JSON")


def test_a_truncated_shard(built, tmp_path):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    member = first_member(shard, ".png")
    shard.write_bytes(shard.read_bytes()[:member.offset_data + member.size // 2])
    failed(run(folder), f"{shard.name}: checksum differs", f"{shard.name}: damaged or truncated")
    resum(folder)
    failed(run(folder), f"{shard.name}: damaged or truncated",
           f"{member.name.split('.')[0]}")
    failed(run(folder, "--shallow"), f"{shard.name}:")


def test_a_shard_cut_at_a_member_boundary(built, tmp_path):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[1].offset  # the header of the second member
    shard.write_bytes(shard.read_bytes()[:cut])
    resum(folder)
    failed(run(folder), f"{shard.name}: truncated tar")


@pytest.mark.parametrize("which", ["first", "second"])
def test_a_damaged_tar_header(built, tmp_path, which):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    start = 0 if which == "first" else members[1].offset
    data = bytearray(shard.read_bytes())
    data[start:start + 512] = bytes(range(256)) * 2
    shard.write_bytes(bytes(data))
    resum(folder)
    bad = run(folder)
    failed(bad, f"{shard.name}: damaged")
    if which == "second":
        failed(bad, f"after {members[0].name.split('.')[0]}")
    failed(run(folder, "--shallow"), f"{shard.name}: damaged")


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_a_damaged_manifest_part(built, tmp_path, how):
    folder = copy(built, tmp_path)
    manifest = folder / "manifest.parquet"
    part = sorted(manifest.glob("*.parquet"))[0] if manifest.is_dir() else manifest
    data = part.read_bytes()
    part.write_bytes(data[:len(data) // 2] if how == "truncate"
                     else data[:4] + bytes(len(data) - 8) + data[-4:])
    for args in ((), ("--shallow",)):
        failed(run(folder, *args), f"manifest part {part.name}: unreadable")


def test_a_missing_shard(built, tmp_path):
    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    shard.unlink()
    bad = run(folder)
    failed(bad, f"{shard.name}: checksum missing", f"{shard.name}: shard missing",
           f"in the manifest but in no shard ({shard.name} is missing)")


def test_every_damage_at_once_is_still_lines(built, tmp_path):
    folder = copy(built, tmp_path)
    for shard in shards(folder):
        shard.write_bytes(shard.read_bytes()[:700])
    manifest = folder / "manifest.parquet"
    for part in [manifest] if manifest.is_file() else manifest.glob("*.parquet"):
        part.write_bytes(b"PAR1")
    (folder / "shards" / "SHA256SUMS").write_text("garbage\n")
    failed(run(folder), "SHA256SUMS line 1", "unreadable", "damaged or truncated")


def outputs(folder):
    """The output trees that a repair must restore byte for byte."""
    from tests.conftest import tree_bytes

    return {n: tree_bytes(folder / n) for n in ("shards", "manifest.parquet",
                                                "quarantine.parquet", "validation.json")}


def test_repair_rebuilds_damaged_shards_manifest_and_units_to_the_clean_bytes(built, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(built, folder)
    clean = outputs(folder)
    shard = shards(folder)[0]
    shard.write_bytes(shard.read_bytes()[:700])
    part = sorted((folder / "manifest.parquet").glob("*.parquet"))[-1]
    part.write_bytes(b"PAR1")
    unit = sorted((folder / "units").rglob("*.parquet"))[0]
    flip(unit, unit.stat().st_size // 2)
    failed(run(folder), f"{shard.name}: checksum differs")
    fixed = run(folder, "--repair", "--executor", "local")
    assert fixed.exit_code == 0 and "verified" in fixed.output, fixed.output
    assert "rebuilding" in fixed.output and "redoing part" in fixed.output, fixed.output
    assert outputs(folder) == clean


def test_repair_that_cannot_rebuild_says_why_and_what_remains(built, tmp_path):
    import json

    folder = copy(built, tmp_path)
    shard = shards(folder)[0]
    flip(shard, 600)
    record = json.loads((folder / "run.json").read_text())
    record["recipe_file"] = str(tmp_path / "gone.yaml")
    (folder / "run.json").write_text(json.dumps(record))
    failed(run(folder, "--repair", "--executor", "local"), f"{shard.name}: checksum differs",
           "cannot repair", "gone.yaml, is gone")
    record["recipe_file"] = str(tmp_path / "changed.yaml")
    changed = yaml.safe_load(open(json.loads((built / "run.json").read_text())["recipe_file"]))
    changed["salt"] = "another"
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    (folder / "run.json").write_text(json.dumps(record))
    failed(run(folder, "--repair", "--executor", "local"), "has changed since this build (salt)")
    assert (folder / "shards" / shard.name).read_bytes() != b""  # nothing was rebuilt


def half_switched(built, tmp_path):
    """A copy of the build as a build killed mid-switch leaves it; and its clean outputs."""
    import json

    from curate.workdir import JOURNAL, OUTPUTS, STAGING, TRASH

    folder = copy(built, tmp_path)
    clean = outputs(folder)
    names = json.loads((folder / OUTPUTS).read_text())
    # killed after moving run.json and the manifest of the old build aside and moving the
    # new shards in (the new build here has the same bytes as the old)
    shutil.copytree(folder, tmp_path / "new", ignore=shutil.ignore_patterns(".*"))
    (tmp_path / "new").rename(folder / STAGING)
    (folder / JOURNAL).write_text(json.dumps({"old": names, "new": names}))
    (folder / TRASH).mkdir()
    for name in ("run.json", "manifest.parquet", "shards"):
        (folder / name).rename(folder / TRASH / name)
    (folder / STAGING / "shards").rename(folder / "shards")
    return folder, clean


def test_verify_completes_a_switch_a_killed_build_left_half_done(built, tmp_path):
    from curate.report.verify import verify
    from curate.workdir import JOURNAL, STAGING, TRASH

    folder, clean = half_switched(built, tmp_path)
    assert "killed while switching" in verify(folder)[0]
    ok = run(folder)
    assert ok.exit_code == 0 and "completed an interrupted switch" in ok.output, ok.output
    assert outputs(folder) == clean
    assert not any((folder / n).exists() for n in (JOURNAL, STAGING, TRASH))


def test_curate_card_first_completes_a_switch_a_killed_build_left_half_done(built, tmp_path):
    from curate.report.card import regenerate
    from curate.workdir import JOURNAL, STAGING, TRASH

    folder, clean = half_switched(built, tmp_path)
    assert not (folder / "run.json").exists()  # moved aside: the card had nothing to read
    assert "DATACARD.md" in regenerate(folder)
    assert (folder / "run.json").is_file()
    assert not any((folder / n).exists() for n in (JOURNAL, STAGING, TRASH))
