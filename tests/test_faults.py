"""Fault injection: a build killed (SIGKILL) at points across every stage resumes to the
bytes of a clean build, and a kill before the switch of outputs leaves the previous build
untouched, byte for byte. The kill points are the `curate.workdir.fault_point` hooks, set
by CURATE_FAULT=<stage>:<n> in a subprocess; each resume runs here, in-process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from curate.build import build
from curate.report.verify import verify
from curate.workdir import JOURNAL, OUTPUTS, STAGING, TRASH, finish_switch
from tests.conftest import ROOT, tree_bytes

pytestmark = pytest.mark.slow

# (stage, the largest n worth drawing): units pass once per part (3 parts), finalize
# twice, the switch once after its journal and once per output moved out or in
STAGES = {"plan": 1, "units": 3, "finalize": 2, "reports": 1, "switch": 19}
# the stage each seed kills in (the switch, with the most points, most often)
SEEDS = ["plan", "units", "finalize", "reports", "switch", "units", "switch", "switch"]


def kill_points(seed: int) -> tuple[str, int]:
    """The kill point of a seed: its stage, and a pass through it drawn with the seed."""
    stage = SEEDS[seed]
    return stage, random.Random(seed).randint(1, STAGES[stage])


def quiet(_msg) -> None:
    pass


def outputs(out: Path) -> dict:
    """Every output of the build in place by name; run.json aside (it holds timings), and
    the cards' lines on this run's model calls (a resumed run makes fewer)."""
    names = json.loads((out / OUTPUTS).read_text())
    assert names[-1] == "run.json" and (out / "run.json").is_file()
    found = {n: tree_bytes(out / n) for n in names if n != "run.json"}
    for files in found.values():
        for name, data in files.items():
            if name.endswith((".md", ".html")):
                files[name] = b"\n".join(line for line in data.split(b"\n")
                                         if b"this run" not in line)
    return found


def no_leftovers(out: Path) -> None:
    left = [p.name for p in out.iterdir() if p.name in (STAGING, JOURNAL, TRASH)
            or ".tmp" in p.name]
    assert not left, left


def recipe_file(path: Path, data: Path, salt: str, **extra) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "faults", "seed": 0, "salt": salt, "run": {"units_per_part": 2},
        "sources": [{"name": "f", "path": str(data), "format": "image_mask",
                     "layout": {"images": ["img/*.png"], "masks": "seg/{stem}_seg.png"}}],
        **extra}))
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Six images in three parts; recipe A and recipe B (another salt: other splits and
    shards) and their clean builds."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "seg").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.normal(100, 20, (48, 64)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[8 + i:20, 30:50] = 1
        img[mask == 1] = 220
        Image.fromarray(img).save(data / "img" / f"p{i}.png")
        Image.fromarray(mask).save(data / "seg" / f"p{i}_seg.png")
    a = recipe_file(root / "a.yaml", data, "alpha")
    b = recipe_file(root / "b.yaml", data, "beta", split={"train": 0.5, "val": 0.25,
                                                          "test": 0.25})
    build(a, root / "clean-a", executor="local", log=quiet)
    build(b, root / "clean-b", executor="local", log=quiet)
    clean_a, clean_b = outputs(root / "clean-a"), outputs(root / "clean-b")
    assert clean_a != clean_b
    return {"root": root, "a": a, "b": b, "clean_a": clean_a, "clean_b": clean_b}


def run_cli(*args: str, fault: str | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CURATE_FAULT", None)
    if fault:
        env["CURATE_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-c", "from curate.cli import main; main()",
                             *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def killed_build(recipe: Path, out: Path, fault: str) -> None:
    proc = run_cli("build", str(recipe), "--out", str(out), "--executor", "local",
                   fault=fault)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"{fault} did not kill the build:\n{err[-2000:]}"


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_a_killed_build_leaves_the_old_one_or_resumes_to_the_new(case, tmp_path, seed):
    stage, n = kill_points(seed)
    out = tmp_path / "out"
    over_a = stage not in ("plan", "units")  # later stages run over a finished build A
    if over_a:
        shutil.copytree(case["root"] / "clean-a", out, symlinks=True)
    killed_build(case["b"], out, f"{stage}:{n}")
    if not (out / JOURNAL).exists() and over_a:
        assert outputs(out) == case["clean_a"], "a kill before the switch changed the build"
    if stage == "switch":
        assert (out / JOURNAL).exists()
        assert finish_switch(out)  # what `curate verify` does first
        assert outputs(out) == case["clean_b"] and verify(out) == []
        no_leftovers(out)
    record = build(case["b"], out, executor="local", log=quiet)
    assert outputs(out) == case["clean_b"]
    no_leftovers(out)
    assert verify(out) == []
    if over_a:
        assert record["counts"]["parts_run"] == 0  # every committed part was reused


def test_a_kill_in_the_describe_stage_resumes_to_the_same_bytes(case, tmp_path):
    from tests.llm_server import FakeLLMServer

    recipe = recipe_file(tmp_path / "c.yaml", case["root"] / "data", "beta", describe={
        "backend": "openai", "options": {"max_retries": 0, "concurrency": 2}})
    with FakeLLMServer() as server:
        llm = {"base_url": server.base_url, "model": "fake-vlm"}
        build(recipe, tmp_path / "clean", executor="local", llm=llm, log=quiet)
        out = tmp_path / "out"
        proc = run_cli("build", str(recipe), "--out", str(out), "--executor", "local",
                       "--llm-endpoint", server.base_url, "--llm-model", "fake-vlm",
                       fault="describe:2")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        build(recipe, out, executor="local", llm=llm, log=quiet)
        assert outputs(out) == outputs(tmp_path / "clean")
        no_leftovers(out)
        # a damaged describe variant is redone (from the answer cache), not reused
        variant = sorted((out / "units" / "f").glob("*.*.parquet"))
        variant = [p for p in variant if not p.name.endswith(".q.parquet")][0]
        data = bytearray(variant.read_bytes())
        data[len(data) // 2] ^= 0x01
        variant.write_bytes(bytes(data))
        again = build(recipe, out, executor="local", llm=llm, log=quiet)
    assert again["counts"]["describe"]["stage"]["units"] == 1
    assert outputs(out) == outputs(tmp_path / "clean")


def test_damaged_units_after_a_kill_are_redone(case, tmp_path):
    out = tmp_path / "out"
    killed_build(case["b"], out, "units:3")
    parts = sorted((out / "units" / "f").glob("*.json"))
    assert len(parts) == 2
    data = bytearray(parts[0].with_suffix(".parquet").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in a committed part
    parts[0].with_suffix(".parquet").write_bytes(bytes(data))
    parts[1].write_bytes(b"")  # an empty marker
    record = build(case["b"], out, executor="local", log=quiet)
    assert record["counts"]["parts_run"] == 3
    assert outputs(out) == case["clean_b"]


def test_two_concurrent_starts_give_one_clean_build(case, tmp_path):
    out = tmp_path / "out"
    procs = [run_cli("build", str(case["b"]), "--out", str(out), "--executor", "local")
             for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or ("another build" in err and "Traceback" not in err), err[-2000:]
    assert outputs(out) == case["clean_b"]
    no_leftovers(out)


def test_fresh_builds_and_copies_without_times_give_the_same_bytes(tmp_path):
    """Two fresh builds in different folders (each generating its phantom NIfTI files, at
    different times), and a build of a copy of that data tree without its times, ship the
    same bytes."""
    source = {"name": "ct", "format": "nifti", "modality": "CT", "anatomy": "abdomen",
              "layout": {"images": ["images/*.nii.gz"], "masks": "labels/{name}",
                         "label_map": {1: "lesion"}}}
    common = {"name": "identity", "seed": 0, "salt": "s",
              "normalize": {"roi_slices": 1, "normal_slices": 1}}
    generated = tmp_path / "generated.yaml"
    generated.write_text(yaml.safe_dump({**common, "sources": [
        {**source, "generate": {"kind": "ct_lesion", "cases": 2, "seed": 1}}]}))
    build(generated, tmp_path / "a", executor="local", log=quiet)
    time.sleep(1.1)  # gzip headers hold whole seconds
    build(generated, tmp_path / "b", executor="local", log=quiet)
    assert outputs(tmp_path / "b") == outputs(tmp_path / "a")
    data = tmp_path / "data"
    shutil.copytree(tmp_path / "a" / "phantoms" / "ct", data, copy_function=shutil.copyfile)
    for p in data.rglob("*"):
        os.utime(p, (1, 1))
    copied = tmp_path / "copied.yaml"
    copied.write_text(yaml.safe_dump({**common, "sources": [{**source, "path": str(data)}]}))
    build(copied, tmp_path / "c", executor="local", log=quiet)
    assert outputs(tmp_path / "c")["manifest.parquet"] == outputs(tmp_path / "a")["manifest.parquet"]
    assert outputs(tmp_path / "c")["shards"] == outputs(tmp_path / "a")["shards"]
