"""Throughput of the describe stage and its generator against a zero-latency loopback server.

The baseline, measured in the same run, is the plainest use of the same client: the
prebuilt request bodies sent with asyncio.gather under a semaphore of the same size. The
ratio says how much the generator's own work (prompt building, hashing, validation,
grounding check, cache writes, accounting) costs ("+overlays": the requests come without
ROI-marked copies, so the generator draws them; "+cache": answers written to disk;
"rerun": every answer read back from the cache); with a real model the server is the
bottleneck by orders of magnitude, so the ratio only has to stay near 1.

    python benchmarks/generate.py [--n 1000] [--concurrency 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import openai
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.describe.backends import DescribeRequest, OpenAIChatGenerator, roi_overlay_png  # noqa: E402
from tests.phantom_parts import committed_parts  # noqa: E402

MODEL = "fake-vlm"


def start_server() -> tuple[subprocess.Popen, str]:
    """The fake server in its own process, so it does not share the client's GIL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"),
                             "--port", "0", "--no-record"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        raise RuntimeError("the fake LLM server did not start")
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def make_requests(n: int, size: int) -> list[DescribeRequest]:
    """n distinct CT-like views with two ROIs; overlays drawn up front, as a build would."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.42 * size) ** 2) * 90.0
    rois = [{"label": "tumor", "bbox": [int(0.6 * size), int(0.3 * size), int(0.7 * size),
                                        int(0.4 * size)], "location": "anterior patient's left",
             "laterality": "left", "area_mm2": 412.5, "area_kind": "mask",
             "longest_diameter_mm": 25.3, "intensity": "hyper",
             "relations": ["lateral to the cyst #2"]},
            {"label": "cyst", "bbox": [int(0.3 * size), int(0.5 * size), int(0.38 * size),
                                       int(0.58 * size)], "location": "posterior patient's right",
             "laterality": "right", "area_mm2": 160.0, "area_kind": "mask",
             "longest_diameter_mm": 15.1, "intensity": "hypo", "relations": []}]
    ctx = {"modality": "CT", "anatomy": "liver", "plane": "axial",
           "window": {"method": "ct_window", "name": "liver", "low": -45.0, "high": 105.0},
           "rois": rois, "annotated": True, "labels": ["cyst", "tumor"]}
    passages = [{"id": f"kb-{k}", "title": "Liver lesions", "text": "Background text. " * 40}
                for k in range(3)]
    out = []
    for i in range(n):
        img = (body + rng.normal(0, 4, body.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        png = buf.getvalue()
        out.append(DescribeRequest(f"s{i}", ctx, png, roi_overlay_png(png, rois),
                                   "CT of the abdomen, portal venous phase", passages))
    return out


async def baseline(base_url: str, bodies: list[dict], concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> str | None:
        async with sem:
            completion = await client.chat.completions.create(**body)
            return completion.choices[0].message.content

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    seconds = time.perf_counter() - t0
    await client.close()
    return seconds


def run_generator(base_url: str, reqs: list[DescribeRequest], concurrency: int,
                  cache_dir: str | None) -> float:
    gen = OpenAIChatGenerator(base_url, MODEL, concurrency=concurrency, cache_dir=cache_dir)
    t0 = time.perf_counter()
    results = gen.generate_many(reqs)
    seconds = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return seconds


def stage_recipe(base_url: str, concurrency: int, actors: int = 1):
    from curate.model.recipe import Recipe

    return Recipe.model_validate({"name": "b", "sources": [], "describe": {
        "backend": "openai", "options": {"base_url": base_url, "model": MODEL,
                                         "concurrency": concurrency, "actors": actors}}})


def forget(store, out: Path) -> None:
    """Forget earlier variants and answers: the next run redoes every part."""
    import shutil

    for old in store.root.glob("*/*.*.done"):
        old.unlink()
    shutil.rmtree(out / "llm-cache", ignore_errors=True)


def run_stage(base_url: str, spec, store, keys, concurrency: int, out: Path) -> float:
    """The driver's describe stage (local executor): load, build requests, call, commit."""
    from curate.describe.stage import run_describe

    forget(store, out)
    t0 = time.perf_counter()
    stats = run_describe(keys, {spec.name: spec}, stage_recipe(base_url, concurrency), store,
                         out, lambda m: None)
    seconds = time.perf_counter() - t0
    assert stats["generator"]["failed"] == 0, stats["generator"]
    return seconds


def run_parts(base_url: str, spec, store, keys, concurrency: int, out: Path,
              actors: int) -> tuple[int, float]:
    """describe_parts over `keys` on local Ray: (samples described, seconds), the actor
    pool's start-up included."""
    import ray

    from curate.describe.ray_stage import describe_parts

    forget(store, out)
    recipe = stage_recipe(base_url, concurrency, actors)
    parts = ray.data.from_items([{"source": s, "part": p,
                                  "views": store.summary(s, p)["counts"]["views"]}
                                 for s, p in keys])
    t0 = time.perf_counter()
    rows = describe_parts(parts, {spec.name: spec}, recipe, out, lambda m: None,
                          store_root=store.root).take_all()
    seconds = time.perf_counter() - t0
    assert len(rows) == len(keys) and sum(r["failed"] for r in rows) == 0
    return sum(r["described"] for r in rows), seconds


def marginal_rate(base_url: str, spec, store, keys, concurrency: int, out: Path,
                  actors: int) -> tuple[float, float]:
    """(samples/s once the pool is up, samples/s including the start-up): the first from
    a run over all parts minus a run over one part, so the pool's start-up (paid once per
    build, seconds) cancels out."""
    n1, t1 = run_parts(base_url, spec, store, keys[:1], concurrency, out, actors)
    n, t = run_parts(base_url, spec, store, keys, concurrency, out, actors)
    return (n - n1) / max(1e-9, t - t1), n / t


def cpu_seconds() -> float:
    """User + system CPU of this process (the server runs in another): steadier than wall
    time on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="samples (at most 1000 phantoms)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stage-only", action="store_true",
                    help="only the describe stage figures (skip the generator's own)")
    ap.add_argument("--part-size", type=int, default=16,
                    help="work units (one sample each) per committed part")
    ap.add_argument("--cache-root", default=".",
                    help="where the temporary answer caches go (file creation speed differs "
                         "a lot between filesystems; on some VMs /tmp is 20x slower)")
    args = ap.parse_args(argv)
    reqs = make_requests(args.n, args.size)
    stage_root = Path(tempfile.mkdtemp(dir=args.cache_root, prefix=".bench-stage-"))
    spec, store, keys = committed_parts(stage_root, args.n, args.part_size, name="bench")
    from curate.describe.stage import make_requests as stage_requests
    stage_rows = [r for k in keys for r in store.load(key=k).to_pylist()]
    stage_bodies = [OpenAIChatGenerator("http://127.0.0.1:9/v1", MODEL).payload(r)
                    for r in stage_requests(stage_rows, spec, None)]
    bare = [replace(r, overlay_png=None) for r in reqs]  # the generator draws the overlays
    bodies = [OpenAIChatGenerator("http://127.0.0.1:9/v1", MODEL).payload(r) for r in reqs]
    kb = sum(len(str(b)) for b in bodies) / len(bodies) / 1024
    proc, url = start_server()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def measure(name: str, fn) -> None:
        c0 = cpu_seconds()
        seconds = fn()
        wall[name] = min(wall.get(name, float("inf")), seconds)
        cpu[name] = min(cpu.get(name, float("inf")), cpu_seconds() - c0)

    try:
        run_generator(url, reqs[:50], args.concurrency, None)  # warm-up: imports, pools
        asyncio.run(baseline(url, bodies[:50], args.concurrency))
        for _ in range(args.repeat):  # interleaved, best of N: the machine's noise cancels
            measure("baseline", lambda: asyncio.run(baseline(url, bodies, args.concurrency)))
            if not args.stage_only:
                measure("generator", lambda: run_generator(url, reqs, args.concurrency, None))
                measure("generator+overlays",
                        lambda: run_generator(url, bare, args.concurrency, None))
            measure("stage baseline", lambda: asyncio.run(
                baseline(url, stage_bodies, args.concurrency)))
            measure("describe stage", lambda: run_stage(url, spec, store, keys, args.concurrency,
                                                        stage_root))
            for actors in (1, 2):
                steady, total = marginal_rate(url, spec, store, keys, args.concurrency,
                                              stage_root, actors)
                name = f"ray {actors} actor{'s' if actors > 1 else ''}"
                # kept as seconds per n samples, like the other entries
                wall[name] = min(wall.get(name, float("inf")), args.n / steady)
                wall[name + " total"] = min(wall.get(name + " total", float("inf")),
                                            args.n / total)
            if args.stage_only:
                continue
            with tempfile.TemporaryDirectory(dir=args.cache_root, prefix=".bench-cache-") as tmp:
                measure("generator+cache",
                        lambda: run_generator(url, reqs, args.concurrency, tmp))
                measure("rerun (all cached)",
                        lambda: run_generator(url, reqs, args.concurrency, tmp))
    finally:
        ray.shutdown()
        proc.terminate()
        proc.wait(5)
        import shutil
        shutil.rmtree(stage_root, ignore_errors=True)
    base = args.n / wall["baseline"]
    print(f"{args.n} requests, concurrency {args.concurrency}, {args.size}px images, "
          f"~{kb:.0f} KiB per request body, best of {args.repeat}")
    for name, seconds in wall.items():
        if name.startswith(("stage", "ray")) or name == "describe stage":
            continue
        rate = args.n / seconds
        print(f"  {name:20s} {rate:8.1f} req/s   ratio to baseline {rate / base:5.2f}   "
              f"client CPU {cpu[name] / args.n * 1e3:5.2f} ms/request")
    stage_base = args.n / wall["stage baseline"]
    rates = {name: args.n / wall[name] for name in
             ("describe stage", "ray 1 actor", "ray 2 actors", "ray 1 actor total",
              "ray 2 actors total")}
    print(f"describe stage end to end (parts loaded, requests built with ROI overlays, answers "
          f"validated and committed; {args.n} phantom samples in parts of {args.part_size}):")
    print(f"  {'plain asyncio loop':28s} {stage_base:8.1f} req/s   (prebuilt bodies)")
    for name, label in (("describe stage", "run_describe (local)"),
                        ("ray 1 actor", "describe_parts, 1 actor"),
                        ("ray 2 actors", "describe_parts, 2 actors")):
        print(f"  {label:28s} {rates[name]:8.1f} req/s   ratio to plain "
              f"{rates[name] / stage_base:5.2f}   with pool start-up "
              f"{rates.get(name + ' total', rates[name]):7.1f} req/s")
    print(f"  2 actors / 1 actor: {rates['ray 2 actors'] / rates['ray 1 actor']:.2f}")
    print(json.dumps({
        "n": args.n, "concurrency": args.concurrency,
        "plain_asyncio_rps": round(stage_base, 1),
        "run_describe_rps": round(rates["describe stage"], 1),
        "curate_1_actor_rps": round(rates["ray 1 actor"], 1),
        "curate_2_actors_rps": round(rates["ray 2 actors"], 1),
        "curate_1_actor_with_startup_rps": round(rates["ray 1 actor total"], 1),
        "curate_2_actors_with_startup_rps": round(rates["ray 2 actors total"], 1),
        "ratio_vs_plain": round(rates["ray 2 actors"] / stage_base, 3),
        "ratio_1_actor_vs_plain": round(rates["ray 1 actor"] / stage_base, 3),
        "ratio_2_vs_1": round(rates["ray 2 actors"] / rates["ray 1 actor"], 3)}))


if __name__ == "__main__":
    main()
