"""`benchmarks/retrieval.py --scale N`: build time and peak memory of `curate kb build` on
a generated corpus of N and FACTOR x N passages (see retrieval.py's docstring)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ["The nodule", "A hypodense lesion", "The mass", "Consolidation", "The effusion",
            "A cystic lesion", "The tumour", "Ground-glass opacity", "The lymph node",
            "An enhancing focus", "The polyp", "A calcified granuloma", "The haematoma"]
VERBS = ["lies in", "is seen in", "involves", "arises from", "abuts", "is centred on",
         "extends into", "displaces", "is confined to", "surrounds"]
PLACES = ["the right lower lobe", "the left upper lobe", "segment VI of the liver", "the spleen",
          "the left kidney", "the peripheral zone", "the right frontal lobe", "the mediastinum",
          "the pancreatic head", "the sigmoid colon", "the left breast", "the thyroid isthmus"]
TAILS = ["and measures about {n} mm", "with irregular margins", "without calcification",
         "with a thin enhancing rim", "in keeping with a benign process",
         "with surrounding oedema", "and shows restricted diffusion", "on the portal venous phase",
         "with {n} mm of mass effect", "and has grown since the prior study"]
MODALITIES = ["CT", "MR", "US", "XR", "PET", "pathology"]


def generate(path: Path, n: int, seed: int = 0) -> int:
    """n synthetic abstracts (~6 sentences, ~70-90 words each) as JSONL; bytes written."""
    rng = np.random.default_rng(seed)
    pool = [f"{s} {v} {p} {t}." for s in SUBJECTS for v in VERBS for p in PLACES for t in TAILS]
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            picks = rng.integers(0, len(pool), size=(m, 6))
            sizes = rng.integers(3, 60, size=(m, 6))
            mods = rng.integers(0, len(MODALITIES), size=m)
            lines = []
            for i in range(m):
                text = " ".join(pool[j].replace("{n}", str(k)) for j, k in zip(picks[i], sizes[i],
                                                                               strict=True))
                lines.append(json.dumps({"id": f"syn-{start + i}", "title": f"Abstract {start + i}",
                                         "text": text,
                                         "metadata": {"modality": MODALITIES[mods[i]]}}))
            fh.write("\n".join(lines) + "\n")
    return path.stat().st_size


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    """One build (or the in-memory baseline) in this process; prints one JSON line."""
    from curate.kb import KnowledgeBase, build_kb, get_embedder

    embedder = get_embedder(args.model, args.device)
    embedder.embed_documents(["warm up the model before the memory baseline"])
    base = _rss_mb()
    t = time.perf_counter()
    if args.mode == "inmemory":
        kb = KnowledgeBase.from_corpus(args.corpus, embedder)
        chunks = len(kb)
    else:
        stats = build_kb(args.corpus, args.out, embedder, backend=args.backend,
                         batch_size=args.batch_size, license="CC0-1.0 (synthetic)")
        chunks = stats["chunks"]
    secs = time.perf_counter() - t
    peak = _rss_mb()
    print(json.dumps({"mode": args.mode, "chunks": chunks, "seconds": round(secs, 2),
                      "per_s": round(chunks / secs, 1), "rss_model_mb": round(base),
                      "peak_rss_mb": round(peak), "growth_mb": round(peak - base),
                      "model": embedder.name}))


def _run(corpus: Path, out: Path, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("retrieval.py")), "--_child", mode,
           "--corpus", str(corpus), "--out", str(out), "--model", args.model, "--device",
           args.device, "--backend", args.backend, "--batch-size", str(args.batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                                                     "HF_HUB_OFFLINE": "1"})
    if res.returncode:
        raise SystemExit(f"{mode} build failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def scale_main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description="kb build at scale: time and peak memory")
    ap.add_argument("--scale", type=int, help="passages in the smaller corpus")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", choices=["auto", "lance", "parquet"])
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--_child", dest="mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode:
        child(args)
        return {}
    if not args.scale or args.scale < 1:
        raise SystemExit("--scale N needs a positive N")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        runs, bases = [], []
        for n in (args.scale, args.scale * args.factor):
            corpus = Path(tmp) / f"corpus-{n}.jsonl"
            t = time.perf_counter()
            size = generate(corpus, n)
            print(f"generated {n} passages ({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s",
                  flush=True)
            r = _run(corpus, Path(tmp) / f"kb-{n}", "build", args)
            r["n"] = n
            runs.append(r)
            print(f"  build   N={n:>9}: {r['seconds']:8.1f} s, {r['per_s']:8.1f} passages/s, peak "
                  f"RSS {r['peak_rss_mb']} MB (+{r['growth_mb']} MB over the loaded model)",
                  flush=True)
            if not args.no_baseline:
                b = _run(corpus, Path(tmp) / "unused", "inmemory", args)
                b["n"] = n
                bases.append(b)
                print(f"  in-memory N={n:>7}: {b['seconds']:8.1f} s, peak RSS {b['peak_rss_mb']} MB "
                      f"(+{b['growth_mb']} MB): the baseline", flush=True)
            corpus.unlink()
    small, big = runs
    growth_ratio = (big["growth_mb"] + 1) / (small["growth_mb"] + 1)
    print(f"\n{args.factor}x the passages: {big['seconds'] / small['seconds']:.2f}x the time, "
          f"{big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x the peak RSS "
          f"(growth {small['growth_mb']} -> {big['growth_mb']} MB)")
    if bases:
        bs, bb = bases
        print(f"in-memory baseline: growth {bs['growth_mb']} -> {bb['growth_mb']} MB "
              f"({(bb['growth_mb'] + 1) / (bs['growth_mb'] + 1):.2f}x); streamed build at "
              f"{big['n']}: {big['growth_mb']} MB, {(bb['growth_mb'] + 1) / (big['growth_mb'] + 1):.2f}x "
              f"less than the baseline")
    figures = {"model": small["model"], "device": args.device, "backend": args.backend,
               "n": small["n"], "n_big": big["n"], "seconds": small["seconds"],
               "seconds_big": big["seconds"], "passages_per_s": small["per_s"],
               "passages_per_s_big": big["per_s"], "peak_rss_mb": small["peak_rss_mb"],
               "peak_rss_mb_big": big["peak_rss_mb"], "growth_mb": small["growth_mb"],
               "growth_mb_big": big["growth_mb"], "growth_ratio": round(growth_ratio, 2),
               "baseline_growth_mb": bases[0]["growth_mb"] if bases else None,
               "baseline_growth_mb_big": bases[1]["growth_mb"] if bases else None}
    print(json.dumps(figures, sort_keys=True))
    return figures
