"""What the computed VQA asks, how its answers are spread, and how much a text-only
baseline gets right without looking at the image.

For each build (the demo and a larger phantom build by default, built here with the
local executor; or folders given with --build): distinct question templates (the bank
phrasing each question came from), the share of each category and granularity, the
answer distribution per question kind with the "yes" rate of yes/no questions, and two
baselines that never see the image, trained on the train split and scored on val+test:
`majority` (the most frequent train answer of the question's template; for multiple
choice, the most frequent train answer among the offered options) and `chance` (a
uniform guess among the options, one in two for yes/no, zero for open answers). The
ratio majority/chance says how much the question text alone gives away; it should stay
near 1. The last line is one JSON object with the figures.

    python benchmarks/vqa_stats.py [--build OUT ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.dataset as pads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.unit.text.phrasings import template_of  # noqa: E402

RECIPES = {"demo": ROOT / "recipes" / "demo.yaml",
           "phantoms-vqa": ROOT / "recipes" / "phantoms-vqa.yaml"}


def build(recipe: Path, out: Path) -> Path:
    from curate.build import build as run_build

    run_build(recipe, out, executor="local", log=lambda m: None)
    return out


def load_questions(out: Path) -> tuple[int, list[dict]]:
    """Computed questions (origin "facts") with their sample's split, read column-wise."""
    table = pads.dataset(out / "manifest.parquet").to_table(columns=["sample_id", "split", "vqa"])
    rows: list[dict] = []
    for sample_id, split, vqa in zip(table.column("sample_id").to_pylist(),
                                     table.column("split").to_pylist(),
                                     table.column("vqa").to_pylist(), strict=True):
        for q in vqa or []:
            if q["origin"] == "facts":
                rows.append({**q, "split": split or "train", "sample_id": sample_id,
                             "template": template_of(q["question"]) or "?"})
    return table.num_rows, rows


def shares(counter: Counter) -> dict[str, float]:
    total = sum(counter.values()) or 1
    return {k: round(v / total, 3) for k, v in counter.most_common()}


def baselines(rows: list[dict]) -> dict:
    """Text-only accuracy on val+test: majority answer per template (learned on train)
    against a uniform guess, overall and per category."""
    train = [q for q in rows if q["split"] == "train"]
    held = [q for q in rows if q["split"] != "train"]
    if not held:  # a tiny build with one split: hold out a fixed half of the samples
        odd = {q["sample_id"] for q in rows
               if int(hashlib.sha256(q["sample_id"].encode()).hexdigest(), 16) % 2}
        held = [q for q in rows if q["sample_id"] in odd]
        train = [q for q in rows if q["sample_id"] not in odd]
    seen: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        seen[q["template"]][q["answer"]] += 1
    rng = random.Random(0)
    hit, chance = Counter(), Counter()
    count = Counter()
    for q in held:
        answers = seen.get(q["template"], Counter())
        if q["options"]:
            ranked = sorted(q["options"], key=lambda o: (-answers.get(o, 0), rng.random()))
            guess = ranked[0]
            p = 1 / len(q["options"])
        elif q["type"] == "closed":
            guess = answers.most_common(1)[0][0] if answers else rng.choice(["yes", "no"])
            p = 0.5
        else:
            guess = answers.most_common(1)[0][0] if answers else ""
            p = 0.0
        cat = q["category"].split("/")[0]
        for key in ("all", cat):
            count[key] += 1
            hit[key] += guess == q["answer"]
            chance[key] += p
    out = {}
    for key in count:
        acc, ch = hit[key] / count[key], chance[key] / count[key]
        out[key] = {"n": count[key], "majority": round(acc, 3), "chance": round(ch, 3),
                    "ratio": round(acc / ch, 2) if ch else None}
    return out


def stats(name: str, out: Path) -> dict:
    n_samples, rows = load_questions(out)
    kinds = Counter(q["template"].split("#")[0] for q in rows)
    answers_by_kind: dict[str, Counter] = defaultdict(Counter)
    for q in rows:
        answers_by_kind[q["template"].split("#")[0]][q["answer"]] += 1
    closed = [q["answer"] for q in rows if q["type"] == "closed"]
    per_type = {t: shares(Counter(q["answer"] for q in rows if q["type"] == t))
                for t in ("closed", "choice", "open")}
    return {
        "build": name, "samples": n_samples, "questions": len(rows),
        "per_sample": round(len(rows) / max(n_samples, 1), 2),
        "templates": len({q["template"] for q in rows}),
        "unmatched": sum(q["template"] == "?" for q in rows),
        "distinct_questions": len({q["question"] for q in rows}),
        "categories": shares(Counter(q["category"].split("/")[0] for q in rows)),
        "granularity": shares(Counter(q["category"].split("/")[1] for q in rows)),
        "types": shares(Counter(q["type"] for q in rows)),
        "yes_rate": round(closed.count("yes") / len(closed), 3) if closed else None,
        "yes_rate_by_kind": {k: round(c["yes"] / (c["yes"] + c["no"]), 3)
                             for k, c in answers_by_kind.items() if c["yes"] + c["no"]},
        "top_answers_by_kind": {k: dict(list(shares(c).items())[:3])
                                for k, c in sorted(answers_by_kind.items())},
        "answers_by_type": {t: dict(list(v.items())[:5]) for t, v in per_type.items()},
        "kinds": dict(kinds.most_common()),
        "text_only": baselines(rows),
    }


def report(s: dict) -> None:
    print(f"\n== {s['build']}: {s['samples']} samples, {s['questions']} computed questions "
          f"({s['per_sample']} per sample), {s['templates']} distinct templates, "
          f"{s['distinct_questions']} distinct question texts, {s['unmatched']} unmatched")
    print("categories:  " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["categories"].items()))
    print("granularity: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["granularity"].items()))
    print("types:       " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["types"].items()))
    print(f"yes rate (all yes/no): {s['yes_rate']}")
    print("answers per question kind (top 3, share) and yes rate:")
    for kind, top in s["top_answers_by_kind"].items():
        yes = s["yes_rate_by_kind"].get(kind)
        tops = "; ".join(f"{a!r} {100 * v:.0f}%" for a, v in top.items())
        print(f"  {kind:22s} n={s['kinds'][kind]:4d}  {tops}" + (f"  yes={yes}" if yes is not None else ""))
    print("text-only baselines on held-out samples (majority per template vs uniform chance):")
    for key, v in sorted(s["text_only"].items(), key=lambda kv: kv[0] != "all"):
        ratio = "n/a (open answers)" if v["ratio"] is None else f"x{v['ratio']}"
        print(f"  {key:13s} n={v['n']:4d}  majority {v['majority']:.3f}  chance "
              f"{v['chance']:.3f}  ratio {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", type=Path, default=None,
                    help="an existing build folder (repeatable); default: build the demo "
                         "and recipes/phantoms-vqa.yaml here")
    ap.add_argument("--work", type=Path, default=None, help="where to build (default: a temp dir)")
    args = ap.parse_args()
    results = []
    if args.build:
        for out in args.build:
            results.append(stats(out.name, out))
    else:
        with tempfile.TemporaryDirectory(prefix="vqa-stats-") as tmp:
            work = args.work or Path(tmp)
            for name, recipe in RECIPES.items():
                results.append(stats(name, build(recipe, work / name)))
    for s in results:
        report(s)
    print(json.dumps({s["build"]: {
        "samples": s["samples"], "questions": s["questions"], "templates": s["templates"],
        "unmatched": s["unmatched"], "categories": s["categories"],
        "granularity": s["granularity"], "yes_rate": s["yes_rate"],
        "text_only_majority": s["text_only"].get("all", {}).get("majority"),
        "text_only_chance": s["text_only"].get("all", {}).get("chance"),
        "text_only_ratio": s["text_only"].get("all", {}).get("ratio")} for s in results}))


if __name__ == "__main__":
    main()
