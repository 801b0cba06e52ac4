"""`curate verify DIR`: do a build's shards still hold exactly what its manifest says?

Checks the shard checksums, that every manifest row is in its shard with its image, its
record and its masks member, that the record matches the manifest row, and that
no shard holds a sample the manifest does not list. Unless shallow, it also decodes every
image and masks member (one plane per ROI, at the image's size) and compares the sha256 of each image member with the manifest's
`image_sha256`.

Damage never stops it: a shard or manifest part that cannot be read (a damaged or
truncated tar, a truncated Parquet part, a missing shard, a record that is not JSON) is a
problem line naming the shard, or the part, and the sample where known, and the check goes
on with the rest.

The manifest is read one shard's rows at a time (only the columns checked), and a shard's
members are checked one sample at a time as the tar streams by, so memory stays bounded by
the largest shard's manifest rows; manifest.parquet may be one file (older builds) or a
folder of Parquet parts.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image

from curate.dataset.hub import verify_parquet
from curate.model.masks import MEMBER as MASKS_MEMBER
from curate.model.masks import unpack as unpack_masks
from curate.workdir import JOURNAL

COLUMNS = ["sample_id", "shard", "rois", "caption", "case_id", "split", "modality", "width",
           "height", "image_sha256"]
RECORD_FIELDS = ("caption", "case_id", "split", "modality")
# what reading a damaged Parquet part or tar can raise
PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError)
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _parts(manifest: Path) -> list[Path]:
    return sorted(manifest.glob("*.parquet")) if manifest.is_dir() else [manifest]


def _rows(parts: list[Path], where) -> dict[str, dict]:
    """sample_id -> row of the manifest rows matching an Arrow filter expression (parts
    that cannot be read are skipped: the index already reported them)."""
    rows: dict[str, dict] = {}
    for part in parts:
        try:
            table = ds.dataset(part, format="parquet").to_table(columns=COLUMNS, filter=where)
        except PARQUET_ERRORS:
            continue
        rows.update((r["sample_id"], r) for r in table.to_pylist())
    return rows


def _shard_index(parts: list[Path], problems: list[str]) -> tuple[dict, list[Path]]:
    """shard name -> the manifest parts that hold rows of it (one each in a new build), and
    the parts that could be read (the others are reported)."""
    index: dict[str | None, list[Path]] = {}
    good = []
    for part in parts:
        names: set[str] = set()
        try:
            for batch in ds.dataset(part, format="parquet").to_batches(columns=COLUMNS):
                names.update(pc.unique(batch.column("shard")).to_pylist())
        except PARQUET_ERRORS as exc:
            problems.append(f"manifest part {part.name}: unreadable ({_why(exc)})")
            continue
        good.append(part)
        for name in names:
            index.setdefault(name, []).append(part)
    return index, good


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _declared(sums_file: Path, problems: list[str]) -> dict[str, str]:
    declared = {}
    for n, line in enumerate(sums_file.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if len(fields) != 2:
            if fields:
                problems.append(f"SHA256SUMS line {n}: not '<sha256>  <shard>'")
            continue
        declared[fields[1]] = fields[0]
    return declared


def verify(out: Path, deep: bool = True) -> list[str]:
    """Problems found (empty when the build verifies)."""
    out = Path(out)
    problems: list[str] = []
    if (out / JOURNAL).exists():
        return [f"{out}: a build was killed while switching its outputs in ({JOURNAL}); "
                "`curate verify` or the next build completes the switch"]
    sums_file = out / "shards" / "SHA256SUMS"
    if not sums_file.is_file() or not (out / "manifest.parquet").exists():
        return [f"{out} is not a curate build (no manifest.parquet or shards/SHA256SUMS)"]
    declared = _declared(sums_file, problems)
    tars = sorted((out / "shards").glob("*.tar"))
    actual = {p.name: _sha256(p) for p in tars}
    for name in sorted(set(declared) | set(actual)):
        if name in actual and actual[name] is None:
            problems.append(f"{name}: cannot be read")
        elif declared.get(name) != actual.get(name):
            problems.append(f"{name}: checksum {'missing' if name not in actual else 'differs'}")
    parts = _parts(out / "manifest.parquet")
    index, good = _shard_index(parts, problems)
    # shards whose manifest rows may be lost with an unreadable part: their samples are not
    # reported one by one as "not in the manifest"
    lost_all = len(good) < len(parts) and not (out / "manifest.parquet").is_dir()
    lost = {p.with_suffix(".tar").name for p in parts if p not in good}
    missing: dict[str, str | None] = {}  # rows not in the shard they name -> that shard
    misplaced: set[str] = set()  # ... found in another shard instead
    found_names = {p.name for p in tars}
    for name in sorted(set(index) - found_names, key=str):
        if name is not None:
            problems.append(f"{name}: shard missing (named by the manifest)")
        rows = _rows(index[name], pc.field("shard").is_null() if name is None
                     else pc.field("shard") == name)
        missing.update(dict.fromkeys(rows, name))
    for tar_path in tars:
        try:
            problems += _verify_shard(tar_path, index, good, deep, missing, misplaced,
                                      lost_all or tar_path.name in lost)
        except Exception as exc:  # noqa: BLE001 - damage must be a line, never a traceback
            problems.append(f"{tar_path.name}: cannot be checked ({_why(exc)})")
    for key in sorted(set(missing) - misplaced):
        shard = missing[key]
        if shard is not None and shard not in found_names:
            problems.append(f"{key}: in the manifest but in no shard ({shard} is missing)")
        else:
            problems.append(f"{key}: in the manifest but in no shard")
    problems += verify_parquet(out, deep)  # the Parquet export (data/), if the build has one
    return problems


def _verify_shard(tar_path: Path, index: dict, good: list[Path], deep: bool,
                  missing: dict, misplaced: set, manifest_lost: bool) -> list[str]:
    """Problems of one shard; updates missing and misplaced (rows of other shards)."""
    name = tar_path.name
    rows = _rows(index.get(name, []), pc.field("shard") == name)
    problems: list[str] = []
    samples: dict[str, dict] = {}  # sample id -> what was read of it
    damaged = _read_tar(tar_path, deep, samples, problems)
    absent = set(rows) - set(samples)
    if damaged:
        for key in sorted(absent):
            problems.append(f"{name}: {key} is in the manifest but could not be read from "
                            "the damaged shard")
    else:
        missing.update(dict.fromkeys(absent, name))
    unknown = sorted(set(samples) - set(rows))
    elsewhere = _rows(good, pc.field("sample_id").isin(unknown)) if unknown else {}
    misplaced.update(elsewhere)
    for key, sample in samples.items():
        row = rows.get(key) or elsewhere.get(key)
        problems += [f"{name}: {key}: {p}" for p in sample["problems"]]
        if row is None:
            if not manifest_lost:
                problems.append(f"{name}: {key} is not in the manifest")
            continue
        if not sample["complete"]:
            continue  # cut short by damage, already reported
        problems += _check(key, row, sample, name, deep)
    return problems


def _read_tar(tar_path: Path, deep: bool, samples: dict, problems: list[str]) -> bool:
    """Read a shard's members into per-sample summaries; report damage and say if any."""
    name = tar_path.name
    last = None
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                sample = samples.setdefault(key, {"exts": set(), "problems": [],
                                                  "complete": True})
                sample["exts"].add(ext)
                last = key
                if deep and m.isfile():
                    sample["complete"] = False
                    _summarize(ext, tar.extractfile(m).read(), sample)
                    sample["complete"] = True
            end = tar.offset
    except TAR_ERRORS as exc:
        where = f" after {last}" if last else ""
        problems.append(f"{name}: damaged or truncated tar{where} ({_why(exc)})")
        if last and not samples[last]["complete"]:
            problems.append(f"{name}: {last}: cut short by the damage")
        return True
    # tarfile stops quietly at a damaged header after the first: what follows the last
    # member must be the end-of-archive zero blocks
    try:
        with open(tar_path, "rb") as f:
            f.seek(end)
            if len(f.read(1024)) < 1024:
                problems.append(f"{name}: truncated tar (no end-of-archive blocks)")
                return True
            f.seek(end)
            for block in iter(lambda: f.read(1 << 20), b""):
                if block.count(0) != len(block):
                    where = f" after {last}" if last else ""
                    problems.append(f"{name}: damaged tar header at byte {end}{where}; "
                                    "the members after it cannot be read")
                    return True
    except OSError as exc:
        problems.append(f"{name}: cannot be read ({_why(exc)})")
        return True
    return False


def _decodes(data: bytes) -> tuple[tuple[int, int] | None, str | None]:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size, None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a corrupt PNG
        return None, _why(exc)


def _summarize(ext: str, data: bytes, sample: dict) -> None:
    """Decode one member of a sample and keep what the manifest checks need."""
    if ext == "png":
        sample["sha256"] = hashlib.sha256(data).hexdigest()
        sample["size"], why = _decodes(data)
        if why:
            sample["problems"].append(f"image does not decode ({why})")
    elif ext == "json":
        try:
            record = json.loads(data)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            sample["problems"].append(f"record is not readable JSON ({_why(exc)})")
            record = None
        sample["record"] = record
    elif ext == MASKS_MEMBER:
        try:
            sample["masks_shape"] = tuple(unpack_masks(data).shape)
        except Exception as exc:  # noqa: BLE001 - zip, npy and key errors for a damaged member
            sample["problems"].append(f"{MASKS_MEMBER} does not decode ({_why(exc)})")


def _check(key: str, row: dict, sample: dict, tar_name: str, deep: bool) -> list[str]:
    """What differs between one sample's shard members and its manifest row."""
    problems = []
    exts = sample["exts"]
    if row["shard"] != tar_name:
        problems.append(f"{key}: manifest says {row['shard']}, found in {tar_name}")
    if "png" not in exts or "json" not in exts:
        return problems + [f"{key}: image or record missing"]
    if MASKS_MEMBER not in exts:
        problems.append(f"{key}: {MASKS_MEMBER} missing")
    if not deep:
        return problems
    record = sample.get("record")
    if record is not None:
        for field in RECORD_FIELDS:
            if record.get(field) != row[field]:
                problems.append(f"{key}: record {field} differs from the manifest")
    shape = sample.get("masks_shape")
    want = (len(row["rois"] or []), row["height"], row["width"])
    if shape is not None and shape != want:
        problems.append(f"{key}: {MASKS_MEMBER} holds {shape}, manifest says "
                        f"{want} (ROIs, height, width)")
    if row.get("image_sha256") and sample.get("sha256") != row["image_sha256"]:
        problems.append(f"{tar_name}: {key}: image_sha256 differs from the manifest")
    size = sample.get("size")
    if size is not None and size != (row["width"], row["height"]):
        problems.append(f"{key}: image is {size}, manifest says "
                        f"{(row['width'], row['height'])}")
    return problems


def repair(out: Path, executor: str = "ray", address: str | None = None,
           data_root: str | None = None, deep: bool = True, log=print) -> list[str]:
    """Redo what is damaged, then verify again; returns the problems that remain.

    An interrupted switch of outputs is completed first. If problems remain, the build is
    run again in place from the recipe its run.json names: every committed part that still
    verifies is reused (a damaged one is redone from the source files), and the shards,
    manifest and every other output are rewritten from the parts and switched in together,
    so the result is the bytes of a clean build.
    """
    from curate.model.errors import CurateError
    from curate.workdir import finish_switch

    out = Path(out)
    try:
        if finish_switch(out):
            log(f"{out}: completed an interrupted switch of outputs")
    except CurateError as exc:
        return [str(exc)]
    problems = verify(out, deep=deep)
    if not problems:
        return []
    log(f"{len(problems)} problem(s); rebuilding {out} in place from its committed parts")
    try:
        recipe_file, llm = _recorded_recipe(out)
        from curate.build import build

        build(recipe_file, out, executor=executor, address=address, data_root=data_root,
              llm=llm, log=log)
    except CurateError as exc:
        return problems + [f"cannot repair: {exc}"]
    return verify(out, deep=deep)


def _recorded_recipe(out: Path) -> tuple[Path, dict | None]:
    """The recipe file a build was made from, and the --llm-* options it ran with; an
    error if the file is gone or has changed since (a repair must not change the data)."""
    from curate.load import load_recipe
    from curate.model.errors import CurateError

    try:
        record = json.loads((out / "run.json").read_text())
        recipe_file, recorded = Path(record["recipe_file"]), record["recipe"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CurateError(f"{out}/run.json cannot be read ({_why(exc)}), so the recipe is "
                          f"unknown; run curate build RECIPE --out {out}") from None
    if not recipe_file.is_file():
        raise CurateError(f"the recipe it was built from, {recipe_file}, is gone; run "
                          f"curate build RECIPE --out {out}")
    current = load_recipe(recipe_file).model_dump(mode="json")
    llm = None
    described = recorded.get("describe") or {}
    if current.get("describe") != described and described.get("backend") == "openai":
        llm = dict(described.get("options") or {})  # it ran with --llm-endpoint/--llm-model
        current["describe"] = described
    if current != recorded:
        changed = sorted(k for k in set(current) | set(recorded)
                         if current.get(k) != recorded.get(k))
        raise CurateError(f"{recipe_file} has changed since this build ({', '.join(changed)}); "
                          f"a repair rebuilds the same data: restore it, or run curate "
                          f"build {recipe_file} --out {out}")
    return recipe_file, llm
