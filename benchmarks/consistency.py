"""How well the consistency reader catches contradictions between text and facts.

Runs curate.unit.text.consistency.check_text over the hand-written, labelled sentences in
benchmarks/data/consistency_sentences.jsonl (each with the sample facts it is checked
against and its label: `consistent` or the kind of contradiction it holds) and prints
precision and recall per kind (a sentence counts for a kind when a flag of that kind is
raised), the micro-average over kinds, and the sentence-level detection figures
(flagged or not). The baseline is the checker this reader replaced (the version before
issue 9, read from git history when the repository is there), run on the same sentences
in the same process; the ratio of the two recalls is printed.

    python benchmarks/consistency.py [--data FILE] [--show-errors]

The sentences were written by hand for this benchmark (paraphrases, abbreviations,
negations a model would write), not by curate's templates; the reader was tuned on them,
so the figures are optimistic: tests/test_consistency.py holds a separate set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.unit.text.consistency import check_text  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "consistency_sentences.jsonl"
KINDS = ("side", "organ", "lobe", "count", "size", "modality", "plane")
BASELINE_COMMIT = "6298f2f"  # the last commit with the pre-issue-9 checker


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    bad = [r["id"] for r in rows if r["label"] not in KINDS + ("consistent",)]
    if bad:
        raise SystemExit(f"unknown labels in {path}: {bad[:5]}")
    return rows


def kinds_of(flags: list[str]) -> set[str]:
    return {f.split(":", 1)[0] for f in flags if f.split(":", 1)[0] in KINDS}


def baseline_checker():
    """check_text as it was before this reader (None when git history is not there).
    Its flags carry no kind, so they are mapped by their wording."""
    try:
        src = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:curate/unit/text/consistency.py"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("baseline_consistency")
    exec(compile(src, "baseline_consistency.py", "exec"), mod.__dict__)

    def run(text: str, ctx: dict) -> list[str]:
        out = []
        for f in mod.check_text(text, ctx):
            kind = ("side" if "patient" in f else "count" if f.startswith("says") else
                    "modality" if f.startswith("names") else "size")
            out.append(f"{kind}: {f}")
        return out
    return run


def score(rows: list[dict], check) -> tuple[dict, float]:
    t = time.perf_counter()
    predicted = [kinds_of(check(r["text"], r["facts"])) for r in rows]
    seconds = time.perf_counter() - t
    out: dict = {}
    tp_all = fp_all = fn_all = 0
    for k in KINDS:
        tp = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] == k and k in p)
        fp = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] != k and k in p)
        fn = sum(1 for r, p in zip(rows, predicted, strict=True) if r["label"] == k and k not in p)
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        out[k] = {"n": tp + fn, "precision": round(tp / (tp + fp), 3) if tp + fp else 1.0,
                  "recall": round(tp / (tp + fn), 3) if tp + fn else 1.0}
    out["micro"] = {"n": tp_all + fn_all,
                    "precision": round(tp_all / (tp_all + fp_all), 3) if tp_all + fp_all else 1.0,
                    "recall": round(tp_all / (tp_all + fn_all), 3) if tp_all + fn_all else 1.0}
    flagged = [bool(p) for p in predicted]
    bad = [r["label"] != "consistent" for r in rows]
    tp = sum(f and b for f, b in zip(flagged, bad, strict=True))
    out["detection"] = {"n": len(rows),
                        "precision": round(tp / sum(flagged), 3) if any(flagged) else 1.0,
                        "recall": round(tp / sum(bad), 3) if any(bad) else 1.0,
                        "false_alarms_on_consistent": sum(
                            f and not b for f, b in zip(flagged, bad, strict=True))}
    out["_predicted"] = predicted
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--show-errors", action="store_true", help="print every miss and false flag")
    args = ap.parse_args()
    rows = load(args.data)
    labels = Counter(r["label"] for r in rows)
    print(f"{len(rows)} sentences in {len(set(r['context'] for r in rows))} fact contexts: "
          + ", ".join(f"{k} {labels[k]}" for k in ("consistent",) + KINDS))
    res, secs = score(rows, check_text)
    base_check = baseline_checker()
    base, base_secs = score(rows, base_check) if base_check else (None, 0.0)
    print(f"\n{'kind':<10} {'n':>4} {'precision':>10} {'recall':>8}   baseline P / R")
    for k in (*KINDS, "micro", "detection"):
        b = f"{base[k]['precision']:.3f} / {base[k]['recall']:.3f}" if base else "n/a"
        print(f"{k:<10} {res[k]['n']:>4} {res[k]['precision']:>10.3f} {res[k]['recall']:>8.3f}"
              f"   {b}")
    print(f"\nfalse alarms on consistent sentences: {res['detection']['false_alarms_on_consistent']}"
          f" of {labels['consistent']}")
    print(f"speed: {len(rows) / secs:.0f} sentences/s"
          + (f" (baseline {len(rows) / base_secs:.0f}/s)" if base else ""))
    ratio = (res["micro"]["recall"] / base["micro"]["recall"]) if base and base["micro"]["recall"] \
        else None
    if base:
        print(f"recall over kinds: {res['micro']['recall']:.3f} vs baseline "
              f"{base['micro']['recall']:.3f}" + (f" ({ratio:.1f}x)" if ratio else ""))
    if args.show_errors:
        for r, p in zip(rows, res["_predicted"], strict=True):
            want = set() if r["label"] == "consistent" else {r["label"]}
            if p != want:
                print(f"  {r['id']} [{r['label']}] got {sorted(p)}: {r['text']}\n"
                      f"      {check_text(r['text'], r['facts'])}")
    figures = {k: {m: res[k][m] for m in ("n", "precision", "recall")}
               for k in (*KINDS, "micro", "detection")}
    figures["sentences"] = len(rows)
    figures["sentences_per_s"] = round(len(rows) / secs)
    figures["baseline_micro_recall"] = base["micro"]["recall"] if base else None
    figures["recall_ratio_vs_baseline"] = round(ratio, 2) if ratio else None
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
