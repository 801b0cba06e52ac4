"""Soak: kill a small build (SIGKILL) at random points for N minutes and count the kills
survived, i.e. resumed to the bytes of a clean build.

Each round copies a finished build of recipe A, runs recipe B over it in a subprocess
with CURATE_FAULT=<stage>:<n> (a stage and a pass drawn from the seeded generator; some
rounds start from an empty folder so the plan and unit stages are hit too), checks that a
kill before the switch left build A intact, then resumes B here and compares every output
with a clean build of B. A round whose kill point is never reached (the build finishes)
counts as a pass, not as a kill.

    python benchmarks/soak.py --minutes 5 --seed 0

Prints one line per failure, and last one JSON line: kills, survived, rounds, and the
ratio of a killed-and-resumed build's wall time to a clean build's (the baseline, timed
in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.build import build  # noqa: E402
from curate.report.verify import verify  # noqa: E402
from curate.workdir import JOURNAL, OUTPUTS, finish_switch  # noqa: E402

STAGES = {"plan": 1, "units": 6, "finalize": 2, "reports": 1, "switch": 24}
EARLY = ("plan", "units")  # run into an empty folder (the units of A would be reused)


def quiet(_msg) -> None:
    pass


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file but run.json, by relative path; the cards' lines on this run's
    model calls aside."""
    found = {}
    for name in json.loads((out / OUTPUTS).read_text()):
        if name == "run.json":
            continue
        path = out / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            data = p.read_bytes()
            if p.suffix in (".md", ".html"):
                data = b"\n".join(x for x in data.split(b"\n") if b"this run" not in x)
            found[str(p.relative_to(out))] = data
    return found


def make_case(root: Path, images: int) -> tuple[Path, Path]:
    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "seg").mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        img = rng.normal(100, 20, (48, 64)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[8 + i % 8:20, 30:50] = 1
        img[mask == 1] = 220
        Image.fromarray(img).save(data / "img" / f"p{i}.png")
        Image.fromarray(mask).save(data / "seg" / f"p{i}_seg.png")
    recipes = []
    for name, salt in (("a", "alpha"), ("b", "beta")):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "soak", "seed": 0, "salt": salt, "run": {"units_per_part": 2},
            "sources": [{"name": "f", "path": str(data), "format": "image_mask",
                         "layout": {"images": ["img/*.png"], "masks": "seg/{stem}_seg.png"}}]}))
        recipes.append(path)
    return recipes[0], recipes[1]


def one_round(rng: random.Random, root: Path, a: Path, b: Path, clean_a: dict,
              clean_b: dict) -> tuple[bool, str | None]:
    """(killed, failure or None) for one random kill and its resume."""
    stage = rng.choice(list(STAGES))
    n = rng.randint(1, STAGES[stage])
    out = root / "round"
    shutil.rmtree(out, ignore_errors=True)
    if stage not in EARLY:
        shutil.copytree(root / "clean-a", out, symlinks=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CURATE_FAULT": f"{stage}:{n}"}
    proc = subprocess.run([sys.executable, "-c", "from curate.cli import main; main()",
                           "build", str(b), "--out", str(out), "--executor", "local"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    killed = proc.returncode == -signal.SIGKILL
    where = f"{stage}:{n}"
    if not killed and proc.returncode != 0:
        return False, f"{where}: the build failed: {proc.stderr[-500:]}"
    if killed and stage not in EARLY and not (out / JOURNAL).exists() \
            and outputs(out) != clean_a:
        return True, f"{where}: a kill before the switch changed the previous build"
    if killed and stage == "switch" and rng.random() < 0.5:
        finish_switch(out)  # what `curate verify` does, half the time; else the next build
    build(b, out, executor="local", log=quiet)
    if outputs(out) != clean_b:
        return killed, f"{where}: the resumed build differs from a clean one"
    problems = verify(out)
    if problems:
        return killed, f"{where}: verify: {problems[:3]}"
    return killed, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="curate-soak-") as tmp:
        root = Path(tmp)
        a, b = make_case(root, args.images)
        build(a, root / "clean-a", executor="local", log=quiet)
        t = time.perf_counter()
        build(b, root / "clean-b", executor="local", log=quiet)
        clean_seconds = time.perf_counter() - t  # the baseline: a clean build of B
        clean_a, clean_b = outputs(root / "clean-a"), outputs(root / "clean-b")
        kills = survived = rounds = 0
        round_seconds = []
        stop = time.monotonic() + args.minutes * 60
        while time.monotonic() < stop:
            t = time.perf_counter()
            killed, failure = one_round(rng, root, a, b, clean_a, clean_b)
            round_seconds.append(time.perf_counter() - t)
            rounds += 1
            kills += killed
            survived += killed and failure is None
            if failure:
                print(f"FAILED {failure}", flush=True)
        ratio = (sum(round_seconds) / max(1, len(round_seconds))) / max(clean_seconds, 1e-9)
        print(f"{survived} of {kills} kills survived in {rounds} rounds "
              f"({args.minutes:g} min); a kill and resume takes {ratio:.1f}x a clean build")
        print(json.dumps({"kills": kills, "survived": survived, "rounds": rounds,
                          "minutes": args.minutes, "seed": args.seed,
                          "clean_build_s": round(clean_seconds, 2),
                          "kill_and_resume_over_clean": round(ratio, 2)}))


if __name__ == "__main__":
    main()
